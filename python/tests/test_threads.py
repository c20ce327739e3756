"""Many Python threads logging through one Logger."""
from __future__ import annotations

import threading

import pytest

import phiaudit
from phiaudit import errors

THREADS = 8
PER_THREAD = 1500


def _hammer(lg, t, n, barrier, failures):
    barrier.wait()
    try:
        for i in range(n):
            if i % 3 == 0:
                lg.log_event(f"dr-{t}", f"p-{t}-{i}", "R")
            else:
                with lg.scope(f"dr-{t}", f"p-{t}-{i}", "U") as s:
                    s.set_detail(f"thread {t} record {i}")
    except BaseException as e:  # pragma: no cover - reported below
        failures.append(e)


@pytest.mark.parametrize("durability", ["none", "group"])
def test_threads_all_records_decrypt_with_unique_seqs(key_file, tmp_path, durability):
    path = str(tmp_path / "threads.pha")
    barrier = threading.Barrier(THREADS)
    failures: list = []
    with phiaudit.Logger(key_file=key_file, sinks=["file:" + path], memory_sink=True,
                         durability=durability) as lg:
        ts = [threading.Thread(target=_hammer, args=(lg, t, PER_THREAD, barrier, failures))
              for t in range(THREADS)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        assert not failures
        mem = lg.records()
        assert lg.stats().records_sealed == THREADS * PER_THREAD
    assert len(mem) == THREADS * PER_THREAD
    recs = phiaudit.decrypt(path, key_file)
    data = [r for r in recs if r.kind == "data"]
    assert len(data) == THREADS * PER_THREAD
    seqs = [r.seq for r in recs]
    assert seqs == list(range(len(recs)))  # one stream, unique, gap-free, in file order
    assert len({r.stream_id for r in recs}) == 1
    # every (thread, i) pair is there exactly once
    pairs = sorted((r.payload["clinician"], r.payload["patient"]) for r in data)
    assert pairs == sorted((f"dr-{t}", f"p-{t}-{i}") for t in range(THREADS)
                           for i in range(PER_THREAD))
    rep = phiaudit.verify(path, key_file)
    assert rep.ok and not rep.problems, rep.problems
    assert rep.streams[recs[0].stream_id].authenticated == len(recs)


def test_close_while_threads_log_never_crashes(key_file, tmp_path):
    """close() waits for calls inside the library; later calls raise ClosedError."""
    path = str(tmp_path / "race.pha")
    lg = phiaudit.Logger(key_file=key_file, sinks=["file:" + path])
    started = threading.Barrier(5)
    counts = [0] * 4
    odd: list = []

    def worker(t):
        started.wait()
        try:
            while True:
                with lg.scope("dr", f"p-{t}"):
                    pass
                counts[t] += 1
        except errors.ClosedError:
            pass
        except BaseException as e:  # pragma: no cover
            odd.append(e)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in ts:
        th.start()
    started.wait()
    while sum(counts) < 2000:
        pass
    lg.close()
    for th in ts:
        th.join()
    assert not odd
    recs = phiaudit.decrypt(path, key_file)
    data = [r for r in recs if r.kind == "data"]
    # a scope that began before close and ended after it is recorded as abandoned
    assert sum(counts) <= len(data) <= sum(counts) + 4
    assert recs[-1].kind == "close"
    assert phiaudit.verify(path, key_file).ok
