"""The write side: :class:`Logger` and its :class:`Scope` context manager.

Threads
    A Logger may be used from any number of Python threads at once: ``scope()``,
    ``log_event()``, ``flush()`` and ``records()`` are thread-safe.  The C library is
    thread-safe for these calls and ctypes releases the GIL while C runs, so threads really
    do seal in parallel.  ``close()`` waits for calls already inside the library and makes
    later calls raise :class:`~phiaudit.errors.ClosedError` instead of touching freed memory.
    A single :class:`Scope` belongs to one thread at a time.

Fork
    The C library notices ``fork()`` (``pthread_atfork`` plus a ``getpid()`` check before
    every record): a child process that logs starts a **new stream** automatically — new
    random stream ID, so a new stream key and nonce space — whose OPEN record names the
    parent's stream.  Records the parent had queued but not yet written belong to the parent,
    which writes them; the child never writes them twice.  So ``os.fork()`` and
    ``multiprocessing`` with the ``fork`` start method both just work with a Logger created
    before the fork.  The child must call ``logger.flush()`` or ``logger.close()`` before it
    exits if it may exit through ``os._exit()`` (as ``multiprocessing`` workers do): records
    still queued in memory are lost with the process otherwise (a normal interpreter exit
    closes open loggers automatically).  With the ``spawn`` or ``forkserver`` start methods
    a worker does not inherit the Logger; it simply opens its own (a new stream as well).
"""
from __future__ import annotations

import os
import threading
import weakref
from ctypes import byref, c_char_p, c_size_t, c_void_p, create_string_buffer
from typing import Any, Dict, List, Optional, Sequence, Union

from . import _lib
from ._util import StrPath, action_code, check, cpath, cstr, invalid, outcome_code
from .errors import error_for

__all__ = ["Logger", "Scope", "Stats"]

DURABILITY = {"none": _lib.DURABILITY_NONE, "group": _lib.DURABILITY_GROUP,
              "sync": _lib.DURABILITY_SYNC}
FORMATS = {"json": _lib.FORMAT_JSON, "text": _lib.FORMAT_TEXT}

# Codes for which the logger's errmsg carries useful detail.
_DETAILED = (-7, -8, -9, -19, -23)

# Every live Logger, so that a forked child can reset the binding's own Python locks (a
# lock held by a parent thread at fork time would otherwise stay locked in the child).
_live: "weakref.WeakSet[Logger]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lg in list(_live):
        lg._reinit_locks_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class _Use:
    """Counts calls inside the C library so close() can wait for them (internal).

    States: open -> closing (no new calls; waiting for running ones, then the C close)
    -> closed.  A call arriving while closing waits for closed, then is refused.
    """

    def __init__(self) -> None:
        # The plain lock is the hot path (a C-level context manager); the condition shares it
        # and is only waited on while closing.
        self.lock = threading.Lock()
        self.cv = threading.Condition(self.lock)
        self.active = 0
        self.closing = False
        self.closed = False

    def enter(self) -> bool:
        """True: counted, call leave() after.  False: the logger is closed."""
        with self.lock:
            if not self.closing:
                self.active += 1
                return True
            while not self.closed:
                self.cv.wait()
            return False

    def leave(self) -> None:
        with self.lock:
            self.active -= 1
            if self.closing and self.active == 0:
                self.cv.notify_all()

    def begin_close(self) -> bool:
        """Stop new calls and wait for running ones. False if already closing/closed."""
        with self.cv:
            if self.closing:
                return False
            self.closing = True
            while self.active:
                self.cv.wait()
            return True

    def end_close(self) -> None:
        with self.cv:
            self.closed = True
            self.cv.notify_all()


class Stats:
    """Snapshot of ``phiaudit_logger_stats`` (no PHI)."""

    __slots__ = ("sink_failing", "records_sealed", "records_written", "queued_bytes",
                 "sink_errors", "streams")

    def __init__(self, s: _lib.Stats) -> None:
        for name in self.__slots__:
            setattr(self, name, int(getattr(s, name)))

    def __repr__(self) -> str:
        return "Stats(" + ", ".join(f"{n}={getattr(self, n)}" for n in self.__slots__) + ")"


def _close_handles(handle: c_void_p, sinks: List[c_void_p], keyring: c_void_p) -> None:
    """Finalizer: close the C logger, then the sinks it borrowed, then the keyring."""
    L = _lib.lib()
    if handle.value:
        L.phiaudit_logger_close(byref(handle))
    for s in sinks:
        if s.value:
            L.phiaudit_sink_close(byref(s))
    if keyring.value:
        L.phiaudit_keyring_free(byref(keyring))


class Logger:
    """An open phiaudit logger (one stream per process).

    Args:
        key_file: path of a key file (``PHIAUDIT-KEY-1`` format, mode 0600).
        key, key_id: alternatively the raw 32-byte key and its 16-byte ID. The library
            copies them; Python ``bytes`` cannot be wiped, so prefer ``key_file`` outside
            tests.
        sinks: sink URIs, e.g. ``["file:/var/log/app.pha"]``.
        memory_sink: also attach an in-memory sink whose decrypted records
            :meth:`records` returns (for unit tests: no file, no key on disk needed).
        app_name: source application name written into every record (not PHI).
        host_name: source host; None = the library uses ``gethostname()``.
        durability: ``'none'``, ``'group'`` or ``'sync'`` (see ``phiaudit.h``).
        blind_index: store keyed blind-index tags of patient/clinician IDs in headers.
        payload_format: ``'json'`` (FHIR-shaped, default) or ``'text'``.
        flush_interval_ms, max_queue_bytes, max_block_ms: tuning; None = library default.

    At least one of ``sinks`` / ``memory_sink`` is required, and exactly one key source.
    Raises a :class:`~phiaudit.errors.PhiauditError` subclass if the library refuses.
    Use as a context manager, or call :meth:`close`; an unclosed logger is closed when it
    is garbage-collected or at interpreter exit.
    """

    def __init__(self, *, key_file: Optional[StrPath] = None, key: Optional[bytes] = None,
                 key_id: Optional[bytes] = None, sinks: Sequence[str] = (),
                 memory_sink: bool = False, app_name: str = "python",
                 host_name: Optional[str] = None, durability: Union[str, int] = "none",
                 blind_index: bool = False, payload_format: str = "json",
                 flush_interval_ms: Optional[int] = None,
                 max_queue_bytes: Optional[int] = None,
                 max_block_ms: Optional[int] = None) -> None:
        L = _lib.lib()
        self._h = c_void_p()
        self._sinks: List[c_void_p] = []
        self._keyring = c_void_p()
        self._use = _Use()
        self._kr_lock = threading.Lock()
        self._memory: Optional[c_void_p] = None
        self._format = FORMATS.get(payload_format, -1) if isinstance(payload_format, str) else -1
        # The finalizer holds the handle objects (not self), so it can run after self dies.
        self._finalizer = weakref.finalize(self, _close_handles, self._h, self._sinks,
                                           self._keyring)

        if self._format < 0:
            raise invalid("payload_format must be 'json' or 'text'")
        if isinstance(durability, str):
            dur = DURABILITY.get(durability.lower(), -1)
        elif isinstance(durability, int) and not isinstance(durability, bool):
            dur = durability
        else:
            dur = -1
        if dur not in DURABILITY.values():
            raise invalid("durability must be 'none', 'group' or 'sync'")
        if isinstance(sinks, (str, bytes)):
            raise TypeError("sinks must be a sequence of URI strings, not a single string")
        uris = [cstr(u, "sink URI") for u in sinks]
        if not uris and not memory_sink:
            raise invalid("at least one sink URI or memory_sink=True is required")
        nsources = (key_file is not None) + (key is not None or key_id is not None)
        if nsources != 1:
            raise invalid("exactly one key source: key_file, or key and key_id")

        cfg = _lib.Config()
        L.phiaudit_config_init(byref(cfg))
        cfg.durability = dur
        cfg.payload_format = self._format
        if blind_index:
            cfg.flags |= _lib.FLAG_BLIND_INDEX
        if flush_interval_ms is not None:
            cfg.flush_interval_ms = _uint(flush_interval_ms, 32, "flush_interval_ms")
        if max_queue_bytes is not None:
            cfg.max_queue_bytes = _uint(max_queue_bytes, 64, "max_queue_bytes")
        if max_block_ms is not None:
            cfg.max_block_ms = _uint(max_block_ms, 32, "max_block_ms")
        cfg.app_name = cstr(app_name, "app_name")
        cfg.host_name = cstr(host_name, "host_name", optional=True)

        key_buf = None
        key_file_b = None
        if key_file is not None:
            key_file_b = cpath(key_file, "key_file")
            cfg.key_file = key_file_b
        else:
            if not isinstance(key, (bytes, bytearray)) or len(key) != _lib.KEY_LEN:
                raise invalid("key must be 32 bytes")
            if not isinstance(key_id, (bytes, bytearray)) or len(key_id) != _lib.KEY_ID_LEN:
                raise invalid("key_id must be 16 bytes")
            key_buf = create_string_buffer(bytes(key), _lib.KEY_LEN)
            kid_buf = create_string_buffer(bytes(key_id), _lib.KEY_ID_LEN)
            cfg.key = c_void_p(_addr(key_buf))
            cfg.key_id = c_void_p(_addr(kid_buf))

        uri_arr = (c_char_p * max(1, len(uris)))(*uris)
        cfg.sink_uris = uri_arr
        cfg.sink_uri_count = len(uris)

        try:
            if memory_sink:
                mem = c_void_p()
                check(L.phiaudit_sink_memory_open(byref(mem)))
                self._sinks.append(mem)
                self._memory = mem
                check(L.phiaudit_keyring_new(byref(self._keyring)))
                if key_file_b is not None:
                    check(L.phiaudit_keyring_add_file(self._keyring, key_file_b))
                else:
                    check(L.phiaudit_keyring_add(self._keyring, kid_buf, key_buf))
            sink_arr = (c_void_p * max(1, len(self._sinks)))(*[s.value for s in self._sinks])
            cfg.sinks = sink_arr
            cfg.sink_count = len(self._sinks)
            rc = L.phiaudit_logger_open(byref(self._h), byref(cfg))
            if rc < 0:
                raise error_for(rc, _text(L.phiaudit_logger_errmsg(None)))
        except BaseException:
            self._finalizer()
            raise
        finally:
            if key_buf is not None:
                L.phiaudit_wipe(key_buf, _lib.KEY_LEN)
        _live.add(self)

    # ---- lifecycle ----------------------------------------------------------------------

    def _reinit_locks_after_fork(self) -> None:
        # Only this thread exists in the child: nobody is inside the library any more.
        old = self._use
        self._use = _Use()
        self._use.closing = self._use.closed = old.closing
        self._kr_lock = threading.Lock()

    def _enter(self) -> c_void_p:
        if not self._use.enter():
            raise error_for(-12, "logger is closed")
        return self._h

    def close(self) -> None:
        """Write the stream-close record, flush and sync every sink, free the logger.

        Waits for calls running in other threads; later calls raise ClosedError.  Scopes
        still open are recorded as abandoned.  Idempotent.  Raises SinkError if some
        records could not be delivered (the logger is closed anyway).
        """
        if not self._use.begin_close():
            return
        try:
            _live.discard(self)
            L = _lib.lib()
            rc = L.phiaudit_logger_close(byref(self._h)) if self._h.value else 0
            self._finalizer()  # sinks and keyring
        finally:
            self._use.end_close()
        check(rc, "records could not be delivered at close")

    @property
    def closed(self) -> bool:
        """True once close() has begun."""
        return self._use.closing

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def flush(self) -> None:
        """Wait until every record ended before this call is written (and, in 'group'/'sync'
        durability, synced). Thread-safe. Raises SinkError if a sink is failing."""
        h = self._enter()
        try:
            rc = _lib.lib().phiaudit_logger_flush(h)
            check(rc, self._errmsg(h) if rc else None)
        finally:
            self._use.leave()

    def stats(self) -> Stats:
        """Counters for monitoring (no PHI)."""
        h = self._enter()
        try:
            s = _lib.Stats()
            s.version = _lib.STATS_VERSION
            check(_lib.lib().phiaudit_logger_stats(h, byref(s)))
            return Stats(s)
        finally:
            self._use.leave()

    @staticmethod
    def _errmsg(h: c_void_p) -> Optional[str]:
        return _text(_lib.lib().phiaudit_logger_errmsg(h))

    # ---- writing ------------------------------------------------------------------------

    def scope(self, clinician: str, patient: str, action: Union[str, int] = "R") -> "Scope":
        """Begin timing an access; use as ``with logger.scope(c, p, 'R') as s:``.

        The scope ends when the block exits: with outcome 0 (success, or what
        :meth:`Scope.set_outcome` chose) on a normal exit, with 8 (serious failure) if the
        block raised — the exception is re-raised.  Raises on invalid arguments
        (ValueError subclasses) or if the logger is closed.
        """
        return Scope(self, clinician, patient, action)

    def log_event(self, clinician: str, patient: str, action: Union[str, int] = "R",
                  outcome: int = 0, *, start_us: int = 0, duration_us: int = 0,
                  event_type: Optional[str] = None, subtype: Optional[str] = None,
                  purpose: Optional[str] = None, detail: Optional[str] = None,
                  break_glass: bool = False) -> None:
        """Seal one already-timed event (``phiaudit_log_event``).

        ``start_us``: wall-clock start in µs since the epoch (0 = now minus duration).
        """
        ev = _lib.Event()
        L = _lib.lib()
        L.phiaudit_event_init(byref(ev))
        ev.action = action_code(action)
        ev.outcome = outcome_code(outcome)
        ev.break_glass = 1 if break_glass else 0
        if not isinstance(start_us, int) or not isinstance(duration_us, int):
            raise TypeError("start_us and duration_us must be int")
        if start_us < 0 or duration_us < 0:
            raise invalid("start_us and duration_us must be >= 0")
        ev.start_us = start_us
        ev.duration_us = duration_us
        ev.clinician_id = cstr(clinician, "clinician")
        ev.patient_id = cstr(patient, "patient")
        ev.event_type = cstr(event_type, "event_type", optional=True)
        ev.event_subtype = cstr(subtype, "subtype", optional=True)
        ev.purpose = cstr(purpose, "purpose", optional=True)
        ev.detail = cstr(detail, "detail", optional=True)
        h = self._enter()
        try:
            rc = L.phiaudit_log_event(h, byref(ev))
            check(rc, self._errmsg(h) if rc in _DETAILED else None)
        finally:
            self._use.leave()

    # ---- test-harness helpers -----------------------------------------------------------

    def _memory_frames(self) -> List[bytes]:
        if self._memory is None:
            raise error_for(-21, "logger has no memory sink (memory_sink=True)")
        L = _lib.lib()
        out = []
        buf = create_string_buffer(_lib.MAX_FRAME_LEN)
        n = L.phiaudit_sink_memory_count(self._memory)
        for i in range(n):
            ln = c_size_t(len(buf))
            check(L.phiaudit_sink_memory_get(self._memory, i, buf, byref(ln)))
            out.append(buf.raw[:ln.value])
        return out

    def records(self, *, include_stream_records: bool = False) -> List[Dict[str, Any]]:
        """Flush, then return the decrypted payloads held by the memory sink, in order.

        Each DATA record is returned as its JSON payload (a dict; for ``payload_format=
        'text'``, ``{"text": line}``).  With ``include_stream_records`` the OPEN/CLOSE
        records of each stream are included too (their dicts have an ``"event"`` key).
        Every frame is authenticated with the logger's key; a frame that fails raises.
        Requires ``memory_sink=True``.  Thread-safe.
        """
        from .reader import _open_frames

        self.flush()
        self._enter()  # keeps close() from freeing the sink and keyring meanwhile
        try:
            frames = self._memory_frames()
            with self._kr_lock:
                recs = _open_frames(self._keyring, frames)
        finally:
            self._use.leave()
        out = []
        for r in recs:
            if r.type != _lib.RECORD_DATA and not include_stream_records:
                continue
            out.append(r.payload if isinstance(r.payload, dict) else {"text": r.payload})
        return out

    def clear_records(self) -> None:
        """Drop every frame the memory sink holds (e.g. between test cases)."""
        if self._memory is None:
            raise error_for(-21, "logger has no memory sink (memory_sink=True)")
        self.flush()
        check(_lib.lib().phiaudit_sink_memory_clear(self._memory))

    @classmethod
    def for_testing(cls, app_name: str = "test", **kwargs: Any) -> "Logger":
        """A logger with a fresh random in-memory key and a memory sink: nothing on disk."""
        kwargs.setdefault("memory_sink", True)
        return cls(key=os.urandom(_lib.KEY_LEN), key_id=os.urandom(_lib.KEY_ID_LEN),
                   app_name=app_name, **kwargs)


class Scope:
    """One timed access (``phiaudit_scope``). Create with :meth:`Logger.scope`.

    Setters validate and copy immediately (raising on bad values), so errors surface where
    the value is set.  A scope is ended exactly once: by the ``with`` block, by
    :meth:`end`, or — if neither happened — when it is garbage-collected (with the outcome
    set by :meth:`set_outcome`, default success, like C's ``phiaudit_scope_autoend``).
    """

    __slots__ = ("_lg", "_h", "_lock", "_outcome", "__weakref__")

    def __init__(self, logger: Logger, clinician: str, patient: str,
                 action: Union[str, int]) -> None:
        self._h = c_void_p()
        self._lg = logger
        self._lock = threading.Lock()
        self._outcome = 0
        a = action_code(action)
        c = cstr(clinician, "clinician")
        p = cstr(patient, "patient")
        lh = logger._enter()
        try:
            check(_lib.lib().phiaudit_scope_begin(byref(self._h), lh, c, p, a))
        finally:
            logger._use.leave()

    def _set(self, fn_name: str, value: Any, what: str) -> "Scope":
        b = cstr(value, what)
        if not self._lock.acquire(blocking=False):
            raise error_for(-21, "scope is in use by another thread")
        try:
            if not self._h.value:
                raise error_for(-21, "scope already ended")
            check(getattr(_lib.lib(), fn_name)(self._h, b))
        finally:
            self._lock.release()
        return self

    def set_event_type(self, code: str) -> "Scope":
        """Event type code (1..256 bytes, no control characters)."""
        return self._set("phiaudit_scope_set_event_type", code, "event_type")

    def set_subtype(self, code: str) -> "Scope":
        """Event subtype code."""
        return self._set("phiaudit_scope_set_event_subtype", code, "subtype")

    def set_purpose(self, code: str) -> "Scope":
        """Purpose-of-use code."""
        return self._set("phiaudit_scope_set_purpose", code, "purpose")

    def set_detail(self, text: str) -> "Scope":
        """Free text, 0..4096 bytes of UTF-8 (no NUL; control characters are escaped)."""
        return self._set("phiaudit_scope_set_detail", text, "detail")

    def set_break_glass(self, on: bool = True) -> "Scope":
        """Mark an emergency access."""
        with self._owned():
            check(_lib.lib().phiaudit_scope_set_break_glass(self._h, 1 if on else 0))
        return self

    def set_outcome(self, outcome: int) -> "Scope":
        """Outcome used when the block exits normally (0, 4, 8, 12)."""
        self._outcome = outcome_code(outcome)
        return self

    def _owned(self) -> "_Owned":
        return _Owned(self)

    @property
    def ended(self) -> bool:
        return not self._h.value

    def end(self, outcome: Optional[int] = None) -> None:
        """End the scope now: seal and queue its record (``phiaudit_scope_end``).

        ``outcome`` defaults to the one set with :meth:`set_outcome` (0).  The scope is
        consumed whatever happens; errors (e.g. SinkError: fail-closed, not written)
        are raised.
        """
        oc = self._outcome if outcome is None else outcome_code(outcome)
        if not self._lock.acquire(blocking=False):
            raise error_for(-21, "scope is in use by another thread")
        try:
            if not self._h.value:
                raise error_for(-21, "scope already ended")
            lg = self._lg
            entered = lg._use.enter()  # closed logger: the scope is detached; end frees it
            try:
                rc = _lib.lib().phiaudit_scope_end(byref(self._h), oc)
                check(rc, Logger._errmsg(lg._h) if entered and rc in _DETAILED else None)
            finally:
                if entered:
                    lg._use.leave()
        finally:
            self._lock.release()

    def __enter__(self) -> "Scope":
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if self._h.value:
            # A failure to record raises (chained to the block's exception, if any): an
            # audit record that could not be written must never pass silently.
            self.end(8 if exc_type is not None else None)
        return False

    def __del__(self) -> None:
        try:
            if self._h.value:
                self.end()
        except Exception:
            pass


class _Owned:
    __slots__ = ("s",)

    def __init__(self, s: Scope) -> None:
        self.s = s

    def __enter__(self) -> None:
        if not self.s._lock.acquire(blocking=False):
            raise error_for(-21, "scope is in use by another thread")
        if not self.s._h.value:
            self.s._lock.release()
            raise error_for(-21, "scope already ended")

    def __exit__(self, *a: object) -> None:
        self.s._lock.release()


def _uint(v: object, bits: int, what: str) -> int:
    """Range-check a value for a uintN_t field (ctypes would silently wrap it)."""
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{what} must be int")
    if not 0 <= v < (1 << bits):
        raise invalid(f"{what} out of range")
    return v


def _addr(buf: Any) -> int:
    from ctypes import addressof

    return addressof(buf)


def _text(b: Optional[bytes]) -> Optional[str]:
    return b.decode("utf-8", "replace") if b else None
