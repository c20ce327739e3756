"""fork(): a child that logs starts its own stream; nothing is lost or written twice."""
from __future__ import annotations

import multiprocessing
import os

import pytest

import phiaudit

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


def _streams(recs):
    by = {}
    for r in recs:
        by.setdefault(r.stream_id, []).append(r)
    return by


def test_os_fork_parent_and_child_both_log(key_file, log_path):
    lg = phiaudit.Logger(key_file=key_file, sinks=["file:" + log_path], durability="group")
    for i in range(50):
        with lg.scope("dr-parent", f"p-{i}"):
            pass
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            for i in range(50):
                with lg.scope("dr-child", f"p-{i}"):
                    pass
            lg.close()
            code = 0
        finally:
            os._exit(code)
    for i in range(50, 100):
        with lg.scope("dr-parent", f"p-{i}"):
            pass
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    lg.close()

    recs = phiaudit.decrypt(log_path, key_file)  # strict: every record authenticates
    streams = _streams(recs)
    assert len(streams) == 2
    parent = next(s for s in streams.values() if s[0].payload["reason"] == "start")
    child = next(s for s in streams.values() if s[0].payload["reason"] == "fork")
    for s in (parent, child):
        assert [r.seq for r in s] == list(range(len(s)))
        assert s[0].kind == "open" and s[-1].kind == "close"
    assert {r.payload["clinician"] for r in parent if r.kind == "data"} == {"dr-parent"}
    assert {r.payload["clinician"] for r in child if r.kind == "data"} == {"dr-child"}
    assert sum(r.kind == "data" for r in parent) == 100
    assert sum(r.kind == "data" for r in child) == 50
    # the child's OPEN record names where the parent's stream stood
    assert child[0].payload["parent_stream"] == parent[0].stream_id
    assert child[0].payload["parent_next_seq"] == 51
    assert {r.payload["pid"] for r in child if r.kind == "data"} == {pid}
    rep = phiaudit.verify(log_path, key_file)
    assert rep.ok and not rep.problems, rep.problems


def test_fork_with_records_still_queued(key_file, log_path):
    """Records the parent had queued at fork time are written once (by the parent)."""
    lg = phiaudit.Logger(key_file=key_file, sinks=["file:" + log_path],
                         flush_interval_ms=10000)  # keep them queued
    for i in range(20):
        with lg.scope("dr-parent", f"p-{i}"):
            pass
    pid = os.fork()
    if pid == 0:
        try:
            with lg.scope("dr-child", "p-c"):
                pass
            lg.flush()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    lg.close()
    recs = phiaudit.decrypt(log_path, key_file)
    data = [r.payload for r in recs if r.kind == "data"]
    assert sorted(d["patient"] for d in data if d["clinician"] == "dr-parent") == \
        sorted(f"p-{i}" for i in range(20))
    assert [d["patient"] for d in data if d["clinician"] == "dr-child"] == ["p-c"]
    assert phiaudit.verify(log_path, key_file).errors == []


def _mp_worker(n):
    lg = _MP_LOGGER
    for i in range(n):
        with lg.scope("dr-mp", f"p-{os.getpid()}-{i}"):
            pass
    lg.flush()  # workers exit through os._exit(): flush before returning
    return os.getpid()


_MP_LOGGER = None


def test_multiprocessing_fork_start_method(key_file, log_path):
    global _MP_LOGGER
    _MP_LOGGER = phiaudit.Logger(key_file=key_file, sinks=["file:" + log_path])
    try:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(3) as pool:
            pids = pool.map(_mp_worker, [10] * 6, chunksize=1)
    finally:
        _MP_LOGGER.close()
        _MP_LOGGER = None
    recs = phiaudit.decrypt(log_path, key_file)
    data = [r for r in recs if r.kind == "data"]
    assert len(data) == 60
    assert {r.payload["pid"] for r in data} == set(pids)
    rep = phiaudit.verify(log_path, key_file)
    assert rep.errors == []
    # worker streams are not closed (pool workers exit via os._exit): incomplete, not tampered
    assert all(p.kind == "incomplete" for p in rep.problems)


def _spawn_worker(args):
    key_file, path = args
    import phiaudit as pa

    with pa.Logger(key_file=key_file, sinks=["file:" + path]) as lg:
        with lg.scope("dr-spawn", f"p-{os.getpid()}"):
            pass
    return os.getpid()


def test_multiprocessing_spawn_opens_own_logger(key_file, log_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pids = pool.map(_spawn_worker, [(key_file, log_path)] * 2)
    recs = phiaudit.decrypt(log_path, key_file)
    streams = _streams(recs)
    assert len(streams) == 2
    assert all(s[0].payload["reason"] == "start" and s[-1].kind == "close"
               for s in streams.values())
    assert {r.payload["pid"] for r in recs if r.kind == "data"} == set(pids)
    assert phiaudit.verify(log_path, key_file).ok
