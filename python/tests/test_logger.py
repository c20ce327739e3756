"""Logger and Scope behaviour: context managers, setters, errors, records()."""
from __future__ import annotations

import os
import stat

import pytest

import phiaudit
from phiaudit import errors
from phiaudit.testing import assert_no_access, assert_single_access, find_records


class Boom(Exception):
    pass


def test_scope_success(mem_logger):
    with mem_logger.scope("dr-1", "p-1", "R") as s:
        s.set_purpose("TREAT").set_event_type("chart").set_subtype("view")
        s.set_detail("looked at labs")
    assert s.ended
    rec = assert_single_access(mem_logger.records(), patient="p-1", clinician="dr-1",
                               action="R", outcome=0)
    assert rec["purpose"] == "TREAT"
    assert rec["type"] == "chart"
    assert rec["subtype"] == "view"
    assert rec["detail"] == "looked at labs"
    assert rec["app"] == "test"
    assert rec["pid"] == os.getpid()
    assert rec["duration_us"] >= 0
    assert "break_glass" not in rec


def test_scope_exception_marks_serious_failure_and_reraises(mem_logger):
    with pytest.raises(Boom):
        with mem_logger.scope("dr-1", "p-2", "U"):
            raise Boom("no")
    assert_single_access(mem_logger.records(), patient="p-2", clinician="dr-1", action="U",
                         outcome=8)


def test_set_outcome_and_explicit_end(mem_logger):
    with mem_logger.scope("dr-1", "p-3", "D") as s:
        s.set_outcome(phiaudit.OUTCOME_MINOR_FAILURE).set_break_glass()
    s2 = mem_logger.scope("dr-1", "p-4", "create")
    s2.end(12)
    with pytest.raises(errors.StateError):
        s2.end()
    with pytest.raises(errors.StateError):
        s2.set_detail("x")
    recs = mem_logger.records()
    r = assert_single_access(recs, patient="p-3", clinician="dr-1", action="D", outcome=4)
    assert r["break_glass"] is True
    assert_single_access(recs, patient="p-4", clinician="dr-1", action="C", outcome=12)


def test_exception_inside_scope_with_set_outcome_still_8(mem_logger):
    with pytest.raises(Boom):
        with mem_logger.scope("dr-1", "p-5") as s:
            s.set_outcome(0)
            raise Boom()
    assert_single_access(mem_logger.records(), patient="p-5", clinician="dr-1", outcome=8)


def test_garbage_collected_scope_is_ended(mem_logger):
    s = mem_logger.scope("dr-1", "p-6", "E")
    del s
    assert_single_access(mem_logger.records(), patient="p-6", clinician="dr-1", action="E")


def test_log_event(mem_logger):
    mem_logger.log_event("dr-2", "p-7", "R", 0, start_us=1_700_000_000_000_000,
                         duration_us=2500, purpose="ETREAT", detail="imported",
                         break_glass=True, event_type="import", subtype="hl7")
    r = assert_single_access(mem_logger.records(), patient="p-7", clinician="dr-2")
    assert r["start"] == "2023-11-14T22:13:20.000000Z"
    assert r["end"] == "2023-11-14T22:13:20.002500Z"
    assert r["duration_us"] == 2500
    assert (r["purpose"], r["detail"], r["break_glass"]) == ("ETREAT", "imported", True)
    assert (r["type"], r["subtype"]) == ("import", "hl7")


def test_stream_records_and_stats(mem_logger):
    with mem_logger.scope("dr-1", "p-1"):
        pass
    recs = mem_logger.records(include_stream_records=True)
    assert recs[0]["event"] == "stream-open" and recs[0]["reason"] == "start"
    assert len(recs) == 2
    st = mem_logger.stats()
    assert st.records_sealed == 1 and st.streams == 1 and st.sink_failing == 0
    mem_logger.clear_records()
    assert mem_logger.records() == []


def test_testing_helpers_fail_loudly(mem_logger):
    for _ in range(2):
        with mem_logger.scope("dr-1", "p-1"):
            pass
    recs = mem_logger.records()
    with pytest.raises(AssertionError, match="found 2"):
        assert_single_access(recs, patient="p-1", clinician="dr-1")
    with pytest.raises(AssertionError, match="found 0"):
        assert_single_access(recs, patient="p-1", clinician="dr-1", action="U")
    assert_no_access(recs, patient="p-2")
    with pytest.raises(AssertionError):
        assert_no_access(recs, patient="p-1")
    assert len(find_records(recs, clinician="dr-1", outcome=0)) == 2


def test_file_sink_durability_modes(key_file, tmp_path):
    for mode in ("none", "group", "sync"):
        path = str(tmp_path / f"{mode}.pha")
        with phiaudit.Logger(key_file=key_file, sinks=["file:" + path], durability=mode,
                             app_name="t") as lg:
            for i in range(20):
                with lg.scope("dr-1", f"p-{i}"):
                    pass
        recs = phiaudit.decrypt(path, key_file)
        assert [r.kind for r in recs] == ["open"] + ["data"] * 20 + ["close"]
        assert recs[0].payload["durability"] == {"none": 0, "group": 1, "sync": 2}[mode]
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_text_format(key_file):
    with phiaudit.Logger(key_file=key_file, memory_sink=True, payload_format="text") as lg:
        with lg.scope("dr-1", "p-1", "R"):
            pass
        (rec,) = lg.records()
    assert rec["text"].startswith("Clinician dr-1 processed action R on Patient p-1 in ")
    assert rec["text"].endswith("s")


def test_memory_sink_and_key_file_together(key_file, log_path):
    with phiaudit.Logger(key_file=key_file, sinks=["file:" + log_path], memory_sink=True) as lg:
        with lg.scope("dr-1", "p-1"):
            pass
        assert len(lg.records()) == 1
    assert len(phiaudit.decrypt(log_path, key_file, include_stream_records=False)) == 1


# ---- bad arguments -----------------------------------------------------------------------

@pytest.mark.parametrize("action", ["X", "", "RR", 5, None, 3.0, True])
def test_bad_action(mem_logger, action):
    with pytest.raises(errors.InvalidArgumentError):
        mem_logger.scope("dr-1", "p-1", action)


@pytest.mark.parametrize("outcome", [1, -1, 16, "0", None, True])
def test_bad_outcome(mem_logger, outcome):
    with pytest.raises(errors.InvalidArgumentError):
        mem_logger.log_event("dr-1", "p-1", "R", outcome)
    s = mem_logger.scope("dr-1", "p-1")
    with pytest.raises(errors.InvalidArgumentError):
        s.set_outcome(outcome)
    if outcome is not None:  # end(None) means "the outcome set before"
        with pytest.raises(errors.InvalidArgumentError):
            s.end(outcome)
    s.end()


@pytest.mark.parametrize("bad,exc", [
    ("", errors.EmptyError),
    ("a" * 257, errors.TooLongError),
    ("tab\there", errors.BadCharError),
    ("new\nline", errors.BadCharError),
    ("del\x7f", errors.BadCharError),
    ("c1\x85", errors.BadCharError),
    (b"bytes", TypeError),
    (42, TypeError),
    (None, TypeError),
])
def test_bad_identifiers(mem_logger, bad, exc):
    with pytest.raises(exc):
        mem_logger.scope(bad, "p-1")
    with pytest.raises(exc):
        mem_logger.scope("dr-1", bad)
    with pytest.raises(exc):
        mem_logger.log_event(bad, "p-1")
    assert mem_logger.records() == []


def test_errors_carry_strerror_and_code(mem_logger):
    with pytest.raises(errors.EmptyError) as ei:
        mem_logger.scope("", "p-1")
    e = ei.value
    assert e.code == -5 and e.name == "PHIAUDIT_E_EMPTY"
    assert e.message == phiaudit._lib.lib().phiaudit_strerror(-5).decode()
    assert e.message in str(e)
    assert isinstance(e, ValueError) and isinstance(e, phiaudit.PhiauditError)


def test_bad_logger_arguments(key_file, tmp_path):
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Logger(key_file=key_file)  # no sink
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Logger(memory_sink=True)  # no key
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Logger(key_file=key_file, key=b"k" * 32, key_id=b"i" * 16, memory_sink=True)
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Logger(key=b"short", key_id=b"i" * 16, memory_sink=True)
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Logger(key=b"k" * 32, key_id=b"i" * 15, memory_sink=True)
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Logger(key_file=key_file, memory_sink=True, durability="fast")
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Logger(key_file=key_file, memory_sink=True, payload_format="xml")
    with pytest.raises(TypeError):
        phiaudit.Logger(key_file=key_file, sinks="file:/tmp/x")
    with pytest.raises(errors.UriError):
        phiaudit.Logger(key_file=key_file, sinks=["nosuch:thing"])
    with pytest.raises(errors.NotFoundError):
        phiaudit.Logger(key_file=str(tmp_path / "missing.key"), memory_sink=True)
    with pytest.raises(ValueError):
        phiaudit.Logger(key_file=key_file, memory_sink=True, app_name="a\0b")
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Logger(key_file=key_file, memory_sink=True, flush_interval_ms=10001)
    with pytest.raises(errors.InvalidArgumentError):  # would wrap around in a uint32_t
        phiaudit.Logger(key_file=key_file, memory_sink=True, max_block_ms=-1)


def test_key_file_permissions_refused(key_file):
    os.chmod(key_file, 0o644)
    with pytest.raises(errors.KeyPermissionError) as ei:
        phiaudit.Logger(key_file=key_file, memory_sink=True)
    assert ei.value.code == -11


def test_generate_key_file_never_overwrites(key_file):
    with pytest.raises(errors.IOFailedError):
        phiaudit.generate_key_file(key_file)


def test_closed_logger(key_file):
    lg = phiaudit.Logger(key_file=key_file, memory_sink=True)
    s = lg.scope("dr-1", "p-1")
    lg.close()
    lg.close()  # idempotent
    assert lg.closed
    with pytest.raises(errors.ClosedError):
        lg.scope("dr-1", "p-1")
    with pytest.raises(errors.ClosedError):
        lg.log_event("dr-1", "p-1")
    with pytest.raises(errors.ClosedError):
        lg.flush()
    with pytest.raises(errors.ClosedError):  # the open scope was recorded as abandoned
        s.end()
    assert s.ended


def test_abandoned_scope_recorded_at_close(key_file, log_path):
    lg = phiaudit.Logger(key_file=key_file, sinks=["file:" + log_path])
    s = lg.scope("dr-1", "p-1", "U")
    lg.close()
    with pytest.raises(errors.ClosedError):
        s.end()
    recs = phiaudit.decrypt(log_path, key_file)
    data = [r.payload for r in recs if r.kind == "data"]
    assert len(data) == 1 and data[0]["abandoned"] is True and data[0]["outcome"] == 8
    assert recs[-1].payload["abandoned"] == 1


def test_logger_context_manager_closes(key_file, log_path):
    with phiaudit.Logger(key_file=key_file, sinks=["file:" + log_path]) as lg:
        with lg.scope("dr-1", "p-1"):
            pass
    assert lg.closed
    assert phiaudit.decrypt(log_path, key_file)[-1].kind == "close"
