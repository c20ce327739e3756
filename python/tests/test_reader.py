"""decrypt / verify / query over files, bytes and memory sinks, including tampering."""
from __future__ import annotations

import glob

import pytest

import phiaudit
from phiaudit import errors


@pytest.fixture
def written(key_file, log_path):
    with phiaudit.Logger(key_file=key_file, sinks=["file:" + log_path], blind_index=True,
                         app_name="reader-test") as lg:
        for i in range(30):
            with lg.scope(f"dr-{i % 3}", f"p-{i % 5}", "RU"[i % 2]) as s:
                if i == 7:
                    s.set_outcome(4)
                s.set_event_type("chart")
    return log_path


def _frames(path):
    """(offset, length) of every frame, parsed independently from FORMAT.md §4."""
    data = open(path, "rb").read()
    out, off = [], 0
    while off < len(data):
        n = int.from_bytes(data[off + 8:off + 12], "big")
        out.append((off, n))
        off += n
    return data, out


def test_decrypt(written, key_file):
    recs = phiaudit.decrypt(written, key_file)
    assert [r.kind for r in recs] == ["open"] + ["data"] * 30 + ["close"]
    assert all(r.error is None and r.payload for r in recs)
    assert recs[0].payload["app"] == "reader-test"
    assert recs[8].payload["outcome"] == 4
    assert recs[1].source == written and recs[1].offset == recs[0].frame_len
    data_only = phiaudit.decrypt(written, key_file, include_stream_records=False)
    assert len(data_only) == 30


def test_decrypt_memory_logger_and_bytes(key_file):
    with phiaudit.Logger(key_file=key_file, memory_sink=True) as lg:
        with lg.scope("dr-1", "p-1"):
            pass
        recs = phiaudit.decrypt(lg, key_file)
        assert [r.kind for r in recs] == ["open", "data"]
        raw = b"".join(lg._memory_frames())
    recs2 = phiaudit.decrypt(raw, key_file)
    assert [r.payload for r in recs2] == [r.payload for r in recs]
    assert phiaudit.verify(raw, key_file).errors == []


def test_in_memory_source_must_be_alone(written, key_file):
    """The library's reader reads one buffer per reader: bytes or a Logger cannot be mixed
    with other sources in a list (an argument error, before anything is read)."""
    raw = open(written, "rb").read()
    for bad in ([raw, raw], [written, raw], [raw, written]):
        with pytest.raises(errors.InvalidArgumentError):
            phiaudit.verify(bad, key_file)
        with pytest.raises(errors.InvalidArgumentError):
            phiaudit.decrypt(bad, key_file)
        with pytest.raises(errors.InvalidArgumentError):
            phiaudit.query(bad, key_file, patient="p-0")
    assert len(phiaudit.decrypt([raw], key_file)) == 32  # alone in a list is fine


def test_memory_logger_records_detect_modified_frame(key_file):
    """Logger.records() authenticates every memory-sink frame through the library's reader."""
    from phiaudit import reader

    with phiaudit.Logger(key_file=key_file, memory_sink=True) as lg:
        with lg.scope("dr-1", "p-1"):
            pass
        assert [r["patient"] for r in lg.records()] == ["p-1"]  # records() flushes
        frames = lg._memory_frames()
        forged = bytearray(frames[1])
        forged[120] ^= 0x01  # inside the ciphertext
        with phiaudit.Keyring(key_file) as kr:
            recs = reader._open_frames(kr._h, frames)
            assert [r.kind for r in recs] == ["open", "data"]
            with pytest.raises(errors.AuthenticationError):
                reader._open_frames(kr._h, [frames[0], bytes(forged)])
            with pytest.raises(errors.FormatError):
                reader._open_frames(kr._h, [frames[0], frames[1][:-5]])


def test_verify_intact(written, key_file):
    rep = phiaudit.verify(written, key_file)
    assert rep.ok and rep.problems == [] and rep.records == 32 and rep.keyed
    assert rep.verdict == "intact"
    (st,) = rep.streams.values()
    assert (st.records, st.data_records, st.first_seq, st.last_seq, st.closed,
            st.authenticated) == (32, 30, 0, 31, True, 32)
    keyless = phiaudit.verify(written)
    assert keyless.ok and not keyless.keyed


def test_query(written, key_file):
    hits = phiaudit.query(written, key_file, patient="p-2")
    assert [r.payload["patient"] for r in hits] == ["p-2"] * 6
    hits = phiaudit.query(written, key_file, clinician="dr-1", action="U")
    assert all(r.payload["clinician"] == "dr-1" and r.payload["action"] == "U" for r in hits)
    assert len(hits) == 5
    assert [r.seq for r in phiaudit.query(written, key_file, outcome=4)] == [8]
    assert phiaudit.query(written, key_file, patient="nobody") == []
    t = phiaudit.decrypt(written, key_file)[10].time_us
    assert all(r.time_us >= t for r in phiaudit.query(written, key_file, since_us=t))


def test_modified_ciphertext_detected_only_with_key(written, key_file):
    data, frames = _frames(written)
    off, n = frames[5]
    b = bytearray(data)
    b[off + 120] ^= 0x01  # inside the ciphertext; tag unchanged
    open(written, "wb").write(bytes(b))
    rep = phiaudit.verify(written, key_file)
    assert not rep.ok
    assert [(p.kind, p.seq) for p in rep.errors] == [("auth", 5)]
    assert phiaudit.verify(written).ok  # FORMAT.md §5: a keyless check cannot see this
    with pytest.raises(errors.AuthenticationError):
        phiaudit.decrypt(written, key_file)
    lax = phiaudit.decrypt(written, key_file, strict=False)
    assert lax[5].payload is None and lax[5].error == "PHIAUDIT_E_AUTH"


def test_modified_header_breaks_chain_without_key(written, key_file):
    data, frames = _frames(written)
    off, n = frames[5]
    b = bytearray(data)
    b[off + 55] ^= 0x01  # the time field of record 5
    open(written, "wb").write(bytes(b))
    kinds = {p.kind for p in phiaudit.verify(written).errors}
    assert kinds == {"chain"}  # record 6's prev link no longer matches
    assert {p.kind for p in phiaudit.verify(written, key_file).errors} == {"chain", "auth"}


def test_deleted_record_is_a_gap(written, key_file):
    data, frames = _frames(written)
    off, n = frames[10]
    open(written, "wb").write(data[:off] + data[off + n:])
    rep = phiaudit.verify(written, key_file)
    assert [(p.kind, p.seq) for p in rep.errors] == [("gap", 11)]
    assert rep.verdict == "tampered"


def test_swapped_records_detected(written):
    data, frames = _frames(written)
    (o1, n1), (o2, n2) = frames[3], frames[4]
    open(written, "wb").write(data[:o1] + data[o2:o2 + n2] + data[o1:o1 + n1] + data[o2 + n2:])
    assert not phiaudit.verify(written).ok


def test_duplicate_is_benign_conflict_is_not(written, key_file):
    data, frames = _frames(written)
    off, n = frames[-2]
    open(written, "wb").write(data + data[off:off + n])
    rep = phiaudit.verify(written, key_file)
    # a byte-identical copy of a recent record (seq 30, re-appended): a benign duplicate
    # (the library's reader recognises copies within its 16-record window)
    assert [p.kind for p in rep.problems] == ["duplicate"]
    assert rep.ok and rep.verdict == "intact"
    off, n = frames[3]
    # the same seq with different bytes is a conflict
    data2 = bytearray(data)
    off5, n5 = frames[5]
    forged = bytearray(data[off:off + n])
    forged[120] ^= 1
    open(written, "wb").write(bytes(data2[:off5]) + bytes(forged) + bytes(data2[off5:]))
    rep = phiaudit.verify(written, key_file)
    assert not rep.ok and rep.verdict == "tampered"


def test_torn_tail_is_incomplete_not_tampering(written, key_file):
    data, frames = _frames(written)
    off, n = frames[-1]
    open(written, "wb").write(data[:off + n // 2])
    rep = phiaudit.verify(written, key_file)
    assert rep.ok and rep.verdict == "incomplete"
    assert {p.kind for p in rep.problems} == {"torn-tail", "incomplete"}
    assert len(phiaudit.decrypt(written, key_file)) == 31


def test_garbage_in_the_middle_is_damage(written):
    data, frames = _frames(written)
    off, _ = frames[4]
    open(written, "wb").write(data[:off] + b"garbage!" * 4 + data[off:])
    rep = phiaudit.verify(written)
    assert [p.kind for p in rep.errors] == ["damage"]
    assert rep.records == 32


def test_wrong_key(written, tmp_path):
    other = str(tmp_path / "other.key")
    phiaudit.generate_key_file(other)
    with pytest.raises(errors.UnknownKeyError):
        phiaudit.decrypt(written, other)
    rep = phiaudit.verify(written, other)
    assert not rep.ok and {p.kind for p in rep.problems} == {"unknown-key"}
    assert rep.verdict == "error"  # could not be checked


def test_rotated_files_verify_as_one_stream(key_file, tmp_path):
    path = str(tmp_path / "rot.pha")
    with phiaudit.Logger(key_file=key_file, sinks=[f"file:{path}?max_bytes=4096"]) as lg:
        for i in range(100):
            with lg.scope("dr-1", f"p-{i}") as s:
                s.set_detail("x" * 100)
            lg.flush()  # one batch per record: the sink rotates between batches
    files = sorted(glob.glob(path + "*"))
    assert len(files) > 3
    rep = phiaudit.verify(files[::-1], key_file)  # ordered by first record time, not argv
    assert rep.ok and rep.problems == [], rep.problems
    (st,) = rep.streams.values()
    assert st.data_records == 100 and st.closed
    # a reader given only the newest file sees a stream missing its predecessor
    rep = phiaudit.verify(path, key_file)
    assert rep.ok and "missing-predecessor" in {p.kind for p in rep.problems}


def test_keyring_object(written, key_file):
    with phiaudit.Keyring(key_file) as kr:
        assert len(kr) == 1
        assert len(phiaudit.decrypt(written, keyring=kr)) == 32
        assert len(phiaudit.query(written, keyring=kr, patient="p-0")) == 6
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.decrypt(written)
    with pytest.raises(errors.InvalidArgumentError):
        phiaudit.Keyring(keys=[(b"short", b"k" * 32)])
    with pytest.raises(FileNotFoundError):
        phiaudit.decrypt(str(written) + ".missing", key_file)
