"""The read side: decrypt, verify and query phiaudit logs.

Every function here wraps the library's reader (``phiaudit_reader.h``): parsing, chain
and sequence checks, authentication, decryption, query matching and the tamper-evidence
verdict are all done in C (docs/FORMAT.md §9); this module only converts its records and
reports into Python objects.

Sources are log files or directories of rotated files (paths, one or a list), or one
in-memory source: the raw bytes of a log, or a :class:`~phiaudit.Logger` with a memory
sink.  An in-memory source is read alone (the library reads one buffer per reader), so it
cannot be combined with other sources in a list.

Keys: ``key_file`` (a path or a list of paths) or a :class:`Keyring`.
"""
from __future__ import annotations

import json
import os
from ctypes import byref, c_char, c_char_p, c_void_p, create_string_buffer, string_at
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from . import _lib
from . import errors as errors_mod
from ._util import StrPath, action_code, check, cpath, cstr, invalid
from .errors import error_for

__all__ = ["Keyring", "Record", "Problem", "StreamReport", "VerifyReport", "decrypt",
           "verify", "query"]

TYPE_NAMES = {_lib.RECORD_OPEN: "open", _lib.RECORD_DATA: "data", _lib.RECORD_CLOSE: "close"}


class Keyring:
    """A set of long-term keys for reading (``phiaudit_keyring``). Not thread-safe.

    Args:
        key_files: paths of key files (mode 0600).
        keys: ``(key_id, key)`` byte pairs.
    """

    def __init__(self, key_files: Union[StrPath, Sequence[StrPath], None] = None,
                 keys: Iterable[Tuple[bytes, bytes]] = ()) -> None:
        L = _lib.lib()
        self._h = c_void_p()
        check(L.phiaudit_keyring_new(byref(self._h)))
        try:
            if key_files is not None:
                if isinstance(key_files, (str, bytes, os.PathLike)):
                    key_files = [key_files]
                for kf in key_files:
                    check(L.phiaudit_keyring_add_file(self._h, cpath(kf, "key_file")))
            for kid, key in keys:
                if len(kid) != _lib.KEY_ID_LEN or len(key) != _lib.KEY_LEN:
                    raise invalid("keys must be (16-byte key ID, 32-byte key) pairs")
                kb = create_string_buffer(bytes(key), _lib.KEY_LEN)
                try:
                    check(L.phiaudit_keyring_add(self._h, bytes(kid), kb))
                finally:
                    L.phiaudit_wipe(kb, _lib.KEY_LEN)
        except BaseException:
            self.close()
            raise

    def __len__(self) -> int:
        return int(_lib.lib().phiaudit_keyring_count(self._h)) if self._h.value else 0

    def has(self, key_id: bytes) -> bool:
        return bool(self._h.value) and bool(_lib.lib().phiaudit_keyring_has(self._h, key_id))

    def close(self) -> None:
        """Wipe the keys and free the keyring. Idempotent."""
        if self._h.value:
            _lib.lib().phiaudit_keyring_free(byref(self._h))

    def __enter__(self) -> "Keyring":
        return self

    def __exit__(self, *a: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


@dataclass
class Record:
    """One record read from a log.

    ``payload`` is the decrypted payload (dict for JSON, str for text-format DATA records),
    or None when the record was not decrypted (no key given, or ``error`` is set).
    """

    type: int
    seq: int
    stream_id: str
    key_id: str
    time_us: int
    flags: int
    frame_len: int
    source: str
    offset: int
    payload: Union[Dict[str, Any], str, None] = None
    error: Optional[str] = None

    @property
    def kind(self) -> str:
        """'open', 'data' or 'close'."""
        return TYPE_NAMES.get(self.type, str(self.type))


@dataclass
class Problem:
    """A finding of :func:`verify`. ``severity`` is 'error' (tampering/damage) or 'warning'
    (incomplete: torn tail, stream without CLOSE, missing predecessor file)."""

    kind: str
    severity: str
    message: str
    source: str = ""
    offset: int = -1
    stream_id: str = ""
    seq: int = -1


@dataclass
class StreamReport:
    stream_id: str
    records: int = 0
    data_records: int = 0
    first_seq: int = -1
    last_seq: int = -1
    closed: bool = False
    authenticated: int = 0


@dataclass
class VerifyReport:
    """Result of :func:`verify`. ``ok`` is True when there is no error-severity problem."""

    records: int = 0
    streams: Dict[str, StreamReport] = field(default_factory=dict)
    problems: List[Problem] = field(default_factory=list)
    keyed: bool = False
    #: 'intact', 'tampered', 'incomplete' or 'error' (phiaudit_reader.h verdicts; what
    #: `phiaudit verify` reports and exits with)
    verdict: str = "intact"

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    @property
    def errors(self) -> List[Problem]:
        return [p for p in self.problems if p.severity == "error"]



# ---- over the C reader (phiaudit_reader.h) -------------------------------------------

Source = Union[StrPath, bytes, bytearray, Any]


class _CReader:
    """One phiaudit_reader over file paths, or over one in-memory source.

    ``krh`` is a keyring handle (borrowed: it must outlive the reader), or None."""

    def __init__(self, sources: Union[Source, Sequence[Source]], krh: Optional[c_void_p],
                 memory_name: Optional[str] = None) -> None:
        from .logger import Logger

        L = _lib.lib()
        self._h = c_void_p()
        self._names: Dict[int, str] = {}
        if isinstance(sources, (str, bytes, bytearray, os.PathLike, Logger)):
            sources = [sources]
        sources = list(sources)
        in_memory = [s for s in sources if isinstance(s, (bytes, bytearray, Logger))]
        if in_memory and len(sources) > 1:
            raise invalid("an in-memory source (bytes or a Logger) must be passed alone, "
                          "not in a list with other sources")
        if in_memory:
            src = sources[0]
            if isinstance(src, Logger):
                src.flush()
                data, name = b"".join(src._memory_frames()), "<memory:0>"
            else:
                data, name = bytes(src), "<bytes:0>"
            if memory_name is not None:
                name = memory_name
            self._buf = (c_char * max(1, len(data))).from_buffer_copy(data or b"\0")
            rc = L.phiaudit_reader_open_buffer(byref(self._h), self._buf, len(data),
                                               name.encode(), krh)
        else:
            paths = [cpath(p, "source") for p in sources]
            for p in paths:  # a missing file is a Python error, as for open()
                if not os.path.exists(p):
                    raise FileNotFoundError(2, "No such file or directory", os.fsdecode(p))
            arr = (c_char_p * len(paths))(*paths)
            rc = L.phiaudit_reader_open(byref(self._h), arr, len(paths), krh)
        check(rc)

    def close(self) -> None:
        if self._h.value:
            _lib.lib().phiaudit_reader_free(byref(self._h))

    def source_name(self, i: int) -> str:
        if i not in self._names:
            sr = _lib.SourceReportC()
            check(_lib.lib().phiaudit_reader_source(self._h, i, byref(sr)))
            self._names[i] = os.fsdecode(sr.path) if sr.path else f"<source:{i}>"
        return self._names[i]

    def set_query(self, q: _lib.Query) -> None:
        check(_lib.lib().phiaudit_reader_set_query(self._h, byref(q)))

    def records(self) -> Iterator[Tuple[Record, int]]:
        L = _lib.lib()
        cr = _lib.ReaderRecord()
        while True:
            rc = L.phiaudit_reader_next(self._h, byref(cr))
            if rc == 0:
                return
            if rc < 0:
                raise error_for(rc, _txt(L.phiaudit_reader_errmsg(self._h)))
            h = cr.header
            rec = Record(type=h.type, seq=int(h.seq), stream_id=bytes(h.stream_id).hex(),
                         key_id=bytes(h.key_id).hex(), time_us=int(h.time_us), flags=h.flags,
                         frame_len=int(h.frame_len), source=self.source_name(cr.source_index),
                         offset=int(cr.offset))
            st = cr.status
            if st & _lib.RS_AUTHENTICATED and cr.payload:
                text = string_at(cr.payload, cr.payload_len).decode("utf-8", "replace")
                rec.payload = text
                if text.startswith("{"):
                    try:
                        rec.payload = json.loads(text)
                    except ValueError:
                        pass
            elif st & _lib.RS_AUTH_FAILED:
                rec.error = "PHIAUDIT_E_AUTH"
            elif st & _lib.RS_UNKNOWN_KEY:
                rec.error = "PHIAUDIT_E_UNKNOWN_KEY"
            yield rec, st

    def sources(self) -> List[_lib.SourceReportC]:
        L = _lib.lib()
        out = []
        for i in range(L.phiaudit_reader_source_count(self._h)):
            sr = _lib.SourceReportC()
            check(L.phiaudit_reader_source(self._h, i, byref(sr)))
            out.append(sr)
        return out

    def streams(self) -> List[_lib.StreamReportC]:
        L = _lib.lib()
        out = []
        for i in range(L.phiaudit_reader_stream_count(self._h)):
            sr = _lib.StreamReportC()
            check(L.phiaudit_reader_stream(self._h, i, byref(sr)))
            out.append(sr)
        return out


def _txt(b: Optional[bytes]) -> str:
    return b.decode("utf-8", "replace") if b else ""


def _code_of(name: str) -> int:
    for k, v in errors_mod._NAMES.items():
        if v == name:
            return k
    return -14


def _keyring(key_file: Any, keyring: Optional[Keyring]) -> Tuple[Optional[Keyring], bool]:
    if keyring is not None:
        return keyring, False
    if key_file is None:
        return None, False
    return Keyring(key_file), True


def _open_frames(kr: c_void_p, frames: Sequence[bytes]) -> List[Record]:
    """Authenticate and decrypt a memory sink's frames (for ``Logger.records()``), in
    order; raises on the first record that fails and on bytes that are not frames."""
    rd = _CReader(b"".join(frames), kr, memory_name="<memory>")
    recs = []
    try:
        for rec, _ in rd.records():
            if rec.error:
                raise error_for(_code_of(rec.error), "memory-sink record failed to open")
            recs.append(rec)
        for so in rd.sources():
            if so.error:
                raise error_for(so.error, "memory sink")
            if so.damaged_bytes or so.torn_tail_bytes:
                raise error_for(-14, "memory sink holds bytes that are not a frame")
    finally:
        rd.close()
    return recs


_STATUS_PROBLEMS = [
    (_lib.RS_AUTH_FAILED, "auth", "error", "record does not authenticate (modified or wrong key)"),
    (_lib.RS_UNKNOWN_KEY, "unknown-key", "error", "no key for this record's key ID (not checked)"),
    (_lib.RS_CONFLICT, "conflict", "error", "two different records with the same seq"),
    (_lib.RS_REORDERED, "reorder", "error", "seq lower than one already seen"),
    (_lib.RS_CHAIN_BREAK, "chain", "error", "prev link does not match the previous record"),
    (_lib.RS_GAP_BEFORE, "gap", "error", "records missing before this one (deleted?)"),
    (_lib.RS_MISPLACED, "framing", "error", "record does not fit its stream"),
    (_lib.RS_DUPLICATE, "duplicate", "warning", "identical copy of a record already seen"),
]


def _c_verify(sources: Any, kr: Optional[Keyring]) -> VerifyReport:
    rep = VerifyReport(keyed=kr is not None)
    rd = _CReader(sources, kr._h if kr is not None else None)
    try:
        for rec, st in rd.records():
            rep.records += 1
            sr = rep.streams.get(rec.stream_id)
            if sr is None:
                sr = rep.streams[rec.stream_id] = StreamReport(rec.stream_id)
            if rec.type == _lib.RECORD_DATA and not st & _lib.RS_DUPLICATE:
                sr.data_records += 1
            for bit, kind, sev, msg in _STATUS_PROBLEMS:
                if st & bit:
                    rep.problems.append(Problem(kind, sev, msg, rec.source, rec.offset,
                                                rec.stream_id, rec.seq))
        for s in rd.streams():
            sid = bytes(s.stream_id).hex()
            sr = rep.streams.setdefault(sid, StreamReport(sid))
            sr.records = int(s.records)
            sr.first_seq, sr.last_seq = int(s.first_seq), int(s.last_seq)
            sr.closed = bool(s.flags & _lib.SR_HAS_CLOSE)
            sr.authenticated = int(s.authenticated)
            if s.flags & _lib.SR_MISSING_PREDECESSOR:
                rep.problems.append(Problem(
                    "missing-predecessor", "warning",
                    f"stream starts at seq {s.first_seq}: earlier records not supplied",
                    stream_id=sid, seq=int(s.first_seq)))
            if s.flags & _lib.SR_MISSING_CLOSE:
                rep.problems.append(Problem(
                    "incomplete", "warning",
                    "stream has no CLOSE record (crash, or still being written)", stream_id=sid))
        for i, so in enumerate(rd.sources()):
            name = rd.source_name(i)
            if so.error:
                rep.problems.append(Problem("source-error", "error",
                                            error_for(so.error).message, name))
            if so.torn_tail_bytes:
                rep.problems.append(Problem(
                    "torn-tail", "warning",
                    f"incomplete record at end of file ({so.torn_tail_bytes} bytes; possibly "
                    "lost records)", name, int(so.torn_tail_offset)))
            for j in range(so.damaged_ranges_len):
                r = so.damaged_ranges[j]
                rep.problems.append(Problem("damage", "error",
                                            f"{r.last - r.first + 1} bytes do not form a frame",
                                            name, int(r.first)))
        rep.verdict = _lib.VERDICTS.get(_lib.lib().phiaudit_reader_verdict(rd._h), "error")
        if rep.records == 0 and rep.verdict == "error" and not rep.problems:
            rep.problems.append(Problem("empty", "error", "no records in the input"))
    finally:
        rd.close()
    return rep


def _c_decrypt(sources: Any, kr: Keyring, strict: bool,
               include_stream_records: bool) -> List[Record]:
    out: List[Record] = []
    rd = _CReader(sources, kr._h)
    try:
        for rec, st in rd.records():
            if st & _lib.RS_DUPLICATE:
                continue  # a benign copy of a record already returned
            if rec.error and strict:
                raise error_for(_code_of(rec.error),
                                f"record seq {rec.seq} of stream {rec.stream_id}")
            if rec.type != _lib.RECORD_DATA and not include_stream_records:
                continue
            out.append(rec)
        if strict:
            for i, so in enumerate(rd.sources()):
                if so.error:
                    raise error_for(so.error, rd.source_name(i))
                if so.damaged_bytes:
                    raise error_for(-14, f"damaged bytes in {rd.source_name(i)}")
    finally:
        rd.close()
    return out


def _c_query(sources: Any, kr: Keyring, patient: Optional[str], clinician: Optional[str],
             action: Optional[str], outcome: Optional[int], event_type: Optional[str],
             since_us: Optional[int], until_us: Optional[int]) -> List[Record]:
    q = _lib.Query()
    _lib.lib().phiaudit_query_init(byref(q))
    q.patient_id = cstr(patient, "patient", optional=True)
    q.clinician_id = cstr(clinician, "clinician", optional=True)
    if action is not None:
        q.action = action_code(action)
    if since_us is not None:
        q.since_us = since_us
    if until_us is not None:
        q.until_us = until_us
    res: List[Record] = []
    rd = _CReader(sources, kr._h)
    try:
        try:
            rd.set_query(q)
        except (errors_mod.EmptyError, errors_mod.TooLongError, errors_mod.Utf8Error,
                errors_mod.BadCharError):
            return []  # an ID that breaks the identifier rules can never match
        for rec, st in rd.records():
            if rec.error and not st & _lib.RS_DUPLICATE:
                raise error_for(_code_of(rec.error),
                                f"record seq {rec.seq} of stream {rec.stream_id}")
            if not st & _lib.RS_MATCH or st & _lib.RS_DUPLICATE:
                continue
            p = rec.payload
            if outcome is not None and (not isinstance(p, dict) or p.get("outcome") != outcome):
                continue
            if event_type is not None and (not isinstance(p, dict) or p.get("type") != event_type):
                continue
            res.append(rec)
    finally:
        rd.close()
    return res


# ---- public reader functions ---------------------------------------------------------

def decrypt(sources: Union[Source, Sequence[Source]], key_file: Any = None, *,
            keyring: Optional[Keyring] = None, strict: bool = True,
            include_stream_records: bool = True) -> List[Record]:
    """Decrypt every record of the sources, in reading order.

    With ``strict`` (default) the first record that fails to authenticate or has an
    unknown key raises (AuthenticationError, UnknownKeyError), as does damage in the middle
    of a file (FormatError); a torn tail at the very end of a file is skipped.  With
    ``strict=False`` such records are returned with ``payload=None`` and ``error`` set.
    Files are read in the order of their first record's time (rotated files in order).
    """
    kr, own = _keyring(key_file, keyring)
    if kr is None:
        raise invalid("decrypt needs key_file or keyring")
    try:
        return _c_decrypt(sources, kr, strict, include_stream_records)
    finally:
        if own:
            kr.close()


def verify(sources: Union[Source, Sequence[Source]], key_file: Any = None, *,
           keyring: Optional[Keyring] = None) -> VerifyReport:
    """Check framing, sequence, chain links and stream framing (docs/FORMAT.md §9) and,
    with a key, every tag.  Files are taken in the order of their first record's time.
    Never raises for problems in the log: they are listed in the report, whose
    ``verdict`` is the library's ('intact', 'tampered', 'incomplete', 'error')."""
    kr, own = _keyring(key_file, keyring)
    try:
        return _c_verify(sources, kr)
    finally:
        if own and kr is not None:
            kr.close()


def query(sources: Union[Source, Sequence[Source]], key_file: Any = None, *,
          keyring: Optional[Keyring] = None, patient: Optional[str] = None,
          clinician: Optional[str] = None, action: Optional[str] = None,
          outcome: Optional[int] = None, event_type: Optional[str] = None,
          since_us: Optional[int] = None, until_us: Optional[int] = None) -> List[Record]:
    """Authenticated DATA records matching every given criterion (AND).

    ``since_us``/``until_us`` bound the action's start time (µs since the epoch,
    inclusive/exclusive).  Blind-index tags, when present, let the reader skip records that
    cannot match; every record is still authenticated.  A record that fails to
    authenticate raises (as ``decrypt(strict=True)``).
    """
    kr, own = _keyring(key_file, keyring)
    if kr is None:
        raise invalid("query needs key_file or keyring")
    try:
        return _c_query(sources, kr, patient, clinician, action, outcome, event_type,
                        since_us, until_us)
    finally:
        if own:
            kr.close()
