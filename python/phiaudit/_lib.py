"""Loading libphiaudit and declaring its C API for ctypes (internal module).

Every structure here mirrors a struct of ``phiaudit.h`` / ``phiaudit_record.h`` field for
field, in the same order and with the same fixed-width types; the C headers guarantee
that public structs contain only fixed-width integers, pointers and function pointers, so
ctypes' native layout rules reproduce the C layout.  ``python/tests/test_layout.py``
compares every offset and size with a C program compiled from the real headers, so a
drift between the two is caught by ``meson test``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from ctypes import (
    CFUNCTYPE,
    POINTER,
    Structure,
    c_char_p,
    c_int,
    c_int32,
    c_int64,
    c_size_t,
    c_uint8,
    c_uint32,
    c_uint64,
    c_void_p,
)
from typing import List, Optional

SONAME = "libphiaudit.so.0"

# ---- Constants (values from phiaudit.h; the function twins are checked in the tests) ----

OK = 0
KEY_LEN = 32
KEY_ID_LEN = 16
STREAM_ID_LEN = 16
HEADER_LEN = 112
TAG_LEN = 16
LINK_LEN = 32
BLIND_INDEX_LEN = 8
MIN_FRAME_LEN = HEADER_LEN + TAG_LEN
MAX_FRAME_LEN = 65536

CONFIG_VERSION = 1
EVENT_VERSION = 1
STATS_VERSION = 1

DURABILITY_NONE = 0
DURABILITY_GROUP = 1
DURABILITY_SYNC = 2
FORMAT_JSON = 0
FORMAT_TEXT = 1
FLAG_BLIND_INDEX = 0x1

RECORD_OPEN = 1
RECORD_DATA = 2
RECORD_CLOSE = 3


# ---- Structures ------------------------------------------------------------------------

key_fn = CFUNCTYPE(c_int, c_void_p, POINTER(c_uint8), POINTER(c_uint8))
diag_fn = CFUNCTYPE(None, c_void_p, c_int, c_char_p)


class Config(Structure):
    """Mirror of ``phiaudit_config`` (PHIAUDIT_CONFIG_VERSION 1)."""

    _fields_ = [
        ("version", c_uint32),
        ("durability", c_uint32),
        ("flush_interval_ms", c_uint32),
        ("flags", c_uint32),
        ("payload_format", c_uint32),
        ("reserved0", c_uint32),
        ("max_queue_bytes", c_uint64),
        ("max_block_ms", c_uint32),
        ("reserved1", c_uint32),
        ("app_name", c_char_p),
        ("host_name", c_char_p),
        ("key_file", c_char_p),
        ("key", c_void_p),
        ("key_id", c_void_p),
        ("key_callback", key_fn),
        ("key_callback_ctx", c_void_p),
        ("sink_uris", POINTER(c_char_p)),
        ("sink_uri_count", c_size_t),
        ("sinks", POINTER(c_void_p)),
        ("sink_count", c_size_t),
        ("diag", diag_fn),
        ("diag_ctx", c_void_p),
    ]


class Event(Structure):
    """Mirror of ``phiaudit_event`` (PHIAUDIT_EVENT_VERSION 1)."""

    _fields_ = [
        ("version", c_uint32),
        ("action", c_int32),
        ("outcome", c_int32),
        ("break_glass", c_int32),
        ("start_us", c_int64),
        ("duration_us", c_int64),
        ("clinician_id", c_char_p),
        ("patient_id", c_char_p),
        ("event_type", c_char_p),
        ("event_subtype", c_char_p),
        ("purpose", c_char_p),
        ("detail", c_char_p),
    ]


class Stats(Structure):
    """Mirror of ``phiaudit_stats`` (PHIAUDIT_STATS_VERSION 1)."""

    _fields_ = [
        ("version", c_uint32),
        ("sink_failing", c_uint32),
        ("records_sealed", c_uint64),
        ("records_written", c_uint64),
        ("queued_bytes", c_uint64),
        ("sink_errors", c_uint64),
        ("streams", c_uint64),
    ]


class Header(Structure):
    """Mirror of ``phiaudit_header`` (parsed plaintext frame header)."""

    _fields_ = [
        ("version", c_uint8),
        ("suite", c_uint8),
        ("type", c_uint8),
        ("flags", c_uint8),
        ("frame_len", c_uint32),
        ("key_id", c_uint8 * 16),
        ("stream_id", c_uint8 * 16),
        ("seq", c_uint64),
        ("time_us", c_int64),
        ("epoch", c_uint32),
        ("prev_link", c_uint8 * LINK_LEN),
        ("bi_patient", c_uint8 * BLIND_INDEX_LEN),
        ("bi_clinician", c_uint8 * BLIND_INDEX_LEN),
    ]


class ReaderRecord(Structure):
    """Mirror of ``phiaudit_reader_record`` (phiaudit_reader.h)."""

    _fields_ = [
        ("header", Header),
        ("status", c_uint32),
        ("reserved", c_uint32),
        ("frame", c_void_p),
        ("frame_len", c_size_t),
        ("payload", c_void_p),
        ("payload_len", c_size_t),
        ("source_index", c_size_t),
        ("offset", c_uint64),
    ]


class Range(Structure):
    _fields_ = [("first", c_uint64), ("last", c_uint64)]


class StreamReportC(Structure):
    """Mirror of ``phiaudit_stream_report``."""

    _fields_ = [
        ("stream_id", c_uint8 * 16),
        ("key_id", c_uint8 * 16),
        ("verdict", c_uint32),
        ("flags", c_uint32),
        ("records", c_uint64),
        ("authenticated", c_uint64),
        ("first_seq", c_uint64),
        ("last_seq", c_uint64),
        ("first_time_us", c_int64),
        ("last_time_us", c_int64),
        ("modified", c_uint64),
        ("unknown_key", c_uint64),
        ("duplicates", c_uint64),
        ("conflicts", c_uint64),
        ("reordered", c_uint64),
        ("chain_breaks", c_uint64),
        ("misplaced", c_uint64),
        ("missing_records", c_uint64),
        ("missing_range_count", c_uint64),
        ("missing_ranges", POINTER(Range)),
        ("missing_ranges_len", c_size_t),
    ]


class SourceReportC(Structure):
    """Mirror of ``phiaudit_source_report``."""

    _fields_ = [
        ("path", c_char_p),
        ("error", c_int),
        ("verdict", c_uint32),
        ("bytes", c_uint64),
        ("frames", c_uint64),
        ("torn_tail_offset", c_uint64),
        ("torn_tail_bytes", c_uint64),
        ("damaged_bytes", c_uint64),
        ("damaged_range_count", c_uint64),
        ("damaged_ranges", POINTER(Range)),
        ("damaged_ranges_len", c_size_t),
    ]


class Query(Structure):
    """Mirror of ``phiaudit_query`` (PHIAUDIT_QUERY_VERSION 1)."""

    _fields_ = [
        ("version", c_uint32),
        ("action", c_int32),
        ("patient_id", c_char_p),
        ("clinician_id", c_char_p),
        ("since_us", c_int64),
        ("until_us", c_int64),
    ]


STRUCTS = {"phiaudit_config": Config, "phiaudit_event": Event, "phiaudit_stats": Stats,
           "phiaudit_header": Header, "phiaudit_reader_record": ReaderRecord,
           "phiaudit_range": Range, "phiaudit_stream_report": StreamReportC,
           "phiaudit_source_report": SourceReportC, "phiaudit_query": Query}

# phiaudit_reader.h status bits / flags / verdicts
RS_AUTHENTICATED = 0x0001
RS_AUTH_FAILED = 0x0002
RS_UNKNOWN_KEY = 0x0004
RS_DUPLICATE = 0x0008
RS_CONFLICT = 0x0010
RS_REORDERED = 0x0020
RS_CHAIN_BREAK = 0x0040
RS_GAP_BEFORE = 0x0080
RS_MISPLACED = 0x0100
RS_NEW_STREAM = 0x0200
RS_MATCH = 0x1000
SR_HAS_OPEN = 0x01
SR_HAS_CLOSE = 0x02
SR_MISSING_PREDECESSOR = 0x04
SR_MISSING_CLOSE = 0x08
SR_ALL_AUTH_FAILED = 0x10
VERDICTS = {0: "intact", 1: "tampered", 2: "incomplete", 3: "error"}


# ---- Prototypes ------------------------------------------------------------------------

_P = c_void_p  # opaque handles (logger, scope, sink, keyring)
_PP = POINTER(c_void_p)
_u8p = c_void_p  # byte buffers are passed as ctypes arrays / bytes

_PROTOTYPES = {
    "phiaudit_version": (c_char_p, []),
    "phiaudit_strerror": (c_char_p, [c_int]),
    "phiaudit_max_id_len": (c_size_t, []),
    "phiaudit_max_code_len": (c_size_t, []),
    "phiaudit_max_detail_len": (c_size_t, []),
    "phiaudit_key_len": (c_size_t, []),
    "phiaudit_key_id_len": (c_size_t, []),
    "phiaudit_header_len": (c_size_t, []),
    "phiaudit_max_frame_len": (c_size_t, []),
    "phiaudit_key_generate_file": (c_int, [c_char_p, _u8p]),
    "phiaudit_key_load_file": (c_int, [c_char_p, _u8p, _u8p]),
    "phiaudit_wipe": (None, [c_void_p, c_size_t]),
    "phiaudit_config_init": (None, [POINTER(Config)]),
    "phiaudit_logger_open": (c_int, [_PP, POINTER(Config)]),
    "phiaudit_logger_close": (c_int, [_PP]),
    "phiaudit_logger_flush": (c_int, [_P]),
    "phiaudit_logger_errmsg": (c_char_p, [_P]),
    "phiaudit_logger_stats": (c_int, [_P, POINTER(Stats)]),
    "phiaudit_scope_begin": (c_int, [_PP, _P, c_char_p, c_char_p, c_int]),
    "phiaudit_scope_set_event_type": (c_int, [_P, c_char_p]),
    "phiaudit_scope_set_event_subtype": (c_int, [_P, c_char_p]),
    "phiaudit_scope_set_purpose": (c_int, [_P, c_char_p]),
    "phiaudit_scope_set_detail": (c_int, [_P, c_char_p]),
    "phiaudit_scope_set_break_glass": (c_int, [_P, c_int]),
    "phiaudit_scope_set_outcome": (c_int, [_P, c_int]),
    "phiaudit_scope_end": (c_int, [_PP, c_int]),
    "phiaudit_scope_autoend": (None, [_PP]),
    "phiaudit_event_init": (None, [POINTER(Event)]),
    "phiaudit_log_event": (c_int, [_P, POINTER(Event)]),
    "phiaudit_sink_open_uri": (c_int, [_PP, c_char_p]),
    "phiaudit_sink_close": (c_int, [_PP]),
    "phiaudit_sink_memory_open": (c_int, [_PP]),
    "phiaudit_sink_memory_count": (c_size_t, [_P]),
    "phiaudit_sink_memory_get": (c_int, [_P, c_size_t, _u8p, POINTER(c_size_t)]),
    "phiaudit_sink_memory_clear": (c_int, [_P]),
    "phiaudit_keyring_new": (c_int, [_PP]),
    "phiaudit_keyring_add": (c_int, [_P, _u8p, _u8p]),
    "phiaudit_keyring_add_file": (c_int, [_P, c_char_p]),
    "phiaudit_keyring_count": (c_size_t, [_P]),
    "phiaudit_keyring_has": (c_int, [_P, _u8p]),
    "phiaudit_keyring_free": (None, [_PP]),
    # the reader API (phiaudit_reader.h)
    "phiaudit_verdict_name": (c_char_p, [c_int]),
    "phiaudit_reader_open": (c_int, [_PP, POINTER(c_char_p), c_size_t, _P]),
    "phiaudit_reader_open_buffer": (c_int, [_PP, _u8p, c_size_t, c_char_p, _P]),
    "phiaudit_reader_free": (None, [_PP]),
    "phiaudit_reader_next": (c_int, [_P, POINTER(ReaderRecord)]),
    "phiaudit_reader_run": (c_int, [_P]),
    "phiaudit_reader_verdict": (c_int, [_P]),
    "phiaudit_reader_stream_count": (c_size_t, [_P]),
    "phiaudit_reader_stream": (c_int, [_P, c_size_t, POINTER(StreamReportC)]),
    "phiaudit_reader_source_count": (c_size_t, [_P]),
    "phiaudit_reader_source": (c_int, [_P, c_size_t, POINTER(SourceReportC)]),
    "phiaudit_reader_errmsg": (c_char_p, [_P]),
    "phiaudit_query_init": (None, [POINTER(Query)]),
    "phiaudit_reader_set_query": (c_int, [_P, POINTER(Query)]),
    "phiaudit_time_parse": (c_int, [c_char_p, POINTER(c_int64)]),
    "phiaudit_keyring_add_dir": (c_int, [_P, c_char_p, POINTER(c_size_t)]),
}

_lib: Optional[ctypes.CDLL] = None
_lib_path: Optional[str] = None
_load_lock = threading.Lock()


def _candidates() -> List[str]:
    """Where to look for the shared library, in order."""
    out = []
    env = os.environ.get("PHIAUDIT_LIBRARY")
    if env:
        # An explicit choice is final: never silently fall back to another copy.
        return [env]
    try:  # written by `meson install` next to this file
        from . import _build_config  # type: ignore[attr-defined]

        libdir = getattr(_build_config, "LIBDIR", "")
        if libdir:
            out.append(os.path.join(libdir, SONAME))
    except ImportError:
        pass
    out.append(SONAME)  # the dynamic loader's own search (LD_LIBRARY_PATH, ld.so.cache)
    found = ctypes.util.find_library("phiaudit")
    if found:
        out.append(found)
    return out


def lib() -> ctypes.CDLL:
    """Return the loaded library, loading it (and declaring prototypes) on first use.

    Search order: the ``PHIAUDIT_LIBRARY`` environment variable (a path; if set, nothing
    else is tried), the library directory recorded at ``meson install`` time,
    ``libphiaudit.so.0`` through the dynamic loader, then ``ctypes.util.find_library``.
    Raises ``OSError`` if none loads.
    """
    global _lib, _lib_path
    if _lib is not None:
        return _lib
    with _load_lock:
        if _lib is not None:
            return _lib
        errors = []
        for cand in _candidates():
            try:
                handle = ctypes.CDLL(cand)
            except OSError as e:
                errors.append(f"{cand}: {e}")
                continue
            for name, (restype, argtypes) in _PROTOTYPES.items():
                fn = getattr(handle, name)
                fn.restype = restype
                fn.argtypes = argtypes
            _lib_path = cand
            _lib = handle
            return handle
        raise OSError("cannot load libphiaudit (set PHIAUDIT_LIBRARY to its path): "
                      + "; ".join(errors))


def lib_path() -> Optional[str]:
    """The path (or name) the library was loaded from, or None if not loaded yet."""
    return _lib_path
