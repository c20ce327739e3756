#!/usr/bin/python3
"""Python audit logging: the seed's naive AESGCM logger versus the phiaudit binding.

The baseline is the seed article's audit logger, kept as it was: a context manager that,
per access, formats "Clinician {c} processed action {a} on Patient {p} in {elapsed:.4f}s",
encrypts it with ``AESGCM(key).encrypt(os.urandom(12), message, None)`` and writes the
hex through ``logging.info`` to a file handler. (As in the seed, the nonce is not stored,
so those records cannot even be decrypted; nothing is chained, synced or authenticated.)

Against it, the phiaudit Python binding writes the same number of records to a file sink
as durable, chained, authenticated records:
  - durability "group": end() queues, the flusher does one write + fdatasync per batch,
    and a final flush() waits until everything is durable (timed);
  - durability "sync": every end() returns only once its record is fdatasync'ed.
Everything runs in one process, one after the other, on the same file system.

Usage:  bench_python.py [-n RECORDS] [--dir DIR] [--library PATH] [--threads T]
Prints one JSON object.  Needs python3-cryptography for the baseline.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from contextlib import contextmanager


def _import_phiaudit(library):
    if library:
        os.environ["PHIAUDIT_LIBRARY"] = library
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.join(here, "..", "python"))
    import phiaudit

    return phiaudit


# ---- the seed's logger (baseline) ---------------------------------------------------

class NaiveAuditLogger:
    """The seed article's audit logger, unchanged in substance."""

    def __init__(self, key: bytes, path: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._AESGCM = AESGCM
        self.key = key
        self.log = logging.getLogger("naive-audit")
        self.log.propagate = False
        self.log.setLevel(logging.INFO)
        self.handler = logging.FileHandler(path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        self.log.addHandler(self.handler)

    @contextmanager
    def access(self, clinician: str, patient: str, action: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            msg = f"Clinician {clinician} processed action {action} on Patient {patient} in {elapsed:.4f}s"
            ct = self._AESGCM(self.key).encrypt(os.urandom(12), msg.encode(), None)
            self.log.info(ct.hex())

    def close(self) -> None:
        self.log.removeHandler(self.handler)
        self.handler.close()


def _ids(i):
    return f"clinician-{i % 97}", f"patient-{i % 10007}", "R"


def _run_threads(threads, n, body):
    """Split n accesses over `threads` threads; return the start time (perf_counter)."""
    per = [n // threads + (1 if t < n % threads else 0) for t in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def worker(t):
        barrier.wait()
        base = sum(per[:t])
        for i in range(base, base + per[t]):
            body(i)

    ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
    for th in ts:
        th.start()
    barrier.wait()
    t0 = time.perf_counter()
    for th in ts:
        th.join()
    return t0


def bench_naive(n, d, threads):
    lg = NaiveAuditLogger(os.urandom(32), os.path.join(d, "naive.log"))

    def body(i):
        c, p, a = _ids(i)
        with lg.access(c, p, a):
            pass

    t0 = _run_threads(threads, n, body)
    lg.handler.flush()
    elapsed = time.perf_counter() - t0
    lg.close()
    return elapsed, os.path.getsize(os.path.join(d, "naive.log"))


def bench_phiaudit(phiaudit, n, d, durability, key_file, threads):
    path = os.path.join(d, f"phiaudit-{durability}.pha")
    lg = phiaudit.Logger(key_file=key_file, sinks=["file:" + path], app_name="bench",
                         durability=durability)

    def body(i):
        c, p, a = _ids(i)
        with lg.scope(c, p, a):
            pass

    t0 = _run_threads(threads, n, body)
    lg.flush()  # everything ended is now durable (group: fdatasync'ed batches)
    elapsed = time.perf_counter() - t0
    lg.close()
    data = [r for r in phiaudit.decrypt(path, key_file, include_stream_records=False)]
    assert len(data) == n, (len(data), n)
    return elapsed, os.path.getsize(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("-n", "--records", type=int, default=20000)
    ap.add_argument("--dir", default=None, help="where to write (default: a temp dir)")
    ap.add_argument("--library", default=None, help="path of libphiaudit.so.0")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sync-records", type=int, default=None,
                    help="records for durability=sync (default: same as -n)")
    args = ap.parse_args()
    phiaudit = _import_phiaudit(args.library)

    d = tempfile.mkdtemp(prefix="phiaudit-bench-", dir=args.dir)
    try:
        key_file = os.path.join(d, "bench.key")
        phiaudit.generate_key_file(key_file)
        n = args.records
        ns = args.sync_records or n
        results = {}
        t, size = bench_naive(n, d, args.threads)
        results["naive_aesgcm_logging"] = {"records": n, "seconds": round(t, 4),
                                           "records_per_s": round(n / t), "bytes": size,
                                           "durable": False}
        for mode, count in (("group", n), ("sync", ns)):
            t, size = bench_phiaudit(phiaudit, count, d, mode, key_file, args.threads)
            results[f"phiaudit_{mode}"] = {"records": count, "seconds": round(t, 4),
                                           "records_per_s": round(count / t), "bytes": size,
                                           "durable": True}
        base = results["naive_aesgcm_logging"]["records_per_s"]
        out = {
            "benchmark": "python audit logging: seed naive AESGCM+logging vs phiaudit binding",
            "threads": args.threads,
            "results": results,
            "ratio_phiaudit_group_vs_naive": round(results["phiaudit_group"]["records_per_s"] / base, 2),
            "ratio_phiaudit_sync_vs_naive": round(results["phiaudit_sync"]["records_per_s"] / base, 3),
            "python": platform.python_version(),
            "library": phiaudit.library_version(),
            "cpus": os.cpu_count(),
            "dir": d if args.dir else tempfile.gettempdir(),
        }
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
