"""The ctypes mirrors of the public structs must match the C layout exactly.

A C helper compiled from the real headers (python/tests/layout_helper.c, path given by meson
in PHIAUDIT_LAYOUT_HELPER) prints every struct's size and field offsets; a reordered, added,
removed or retyped field in a header that the binding does not follow fails here.
"""
from __future__ import annotations

import ctypes
import json
import os
import subprocess

import pytest

import phiaudit
from phiaudit import _lib, errors


@pytest.fixture(scope="module")
def c_layout():
    helper = os.environ.get("PHIAUDIT_LAYOUT_HELPER")
    if not helper:
        pytest.skip("PHIAUDIT_LAYOUT_HELPER not set (run through meson test)")
    return json.loads(subprocess.run([helper], check=True, capture_output=True).stdout)


@pytest.mark.parametrize("cname", sorted(_lib.STRUCTS))
def test_struct_layout_matches_c(c_layout, cname):
    py = _lib.STRUCTS[cname]
    c = c_layout[cname]
    assert ctypes.sizeof(py) == c["__size__"][1], f"sizeof({cname})"
    c_fields = [k for k in c if k != "__size__"]
    py_fields = [f[0] for f in py._fields_]
    assert py_fields == c_fields, f"field order of {cname}"
    for name in c_fields:
        off, size = c[name]
        desc = getattr(py, name)
        assert (desc.offset, desc.size) == (off, size), f"{cname}.{name}"


def test_constants_match_c(c_layout):
    lim = c_layout["limits"]
    assert lim["PHIAUDIT_KEY_LEN"] == _lib.KEY_LEN
    assert lim["PHIAUDIT_KEY_ID_LEN"] == _lib.KEY_ID_LEN
    assert lim["PHIAUDIT_HEADER_LEN"] == _lib.HEADER_LEN
    assert lim["PHIAUDIT_MAX_FRAME_LEN"] == _lib.MAX_FRAME_LEN
    assert lim["PHIAUDIT_CONFIG_VERSION"] == _lib.CONFIG_VERSION
    assert lim["PHIAUDIT_EVENT_VERSION"] == _lib.EVENT_VERSION
    assert lim["PHIAUDIT_STATS_VERSION"] == _lib.STATS_VERSION

def test_every_library_error_code_has_a_class():
    """Walk the codes downwards until phiaudit_strerror() no longer knows one: a code added
    to the library without a Python exception class fails here."""
    unknown = _lib.lib().phiaudit_strerror(-10000)
    code = -1
    while _lib.lib().phiaudit_strerror(code) != unknown:
        e = errors.error_for(code)
        assert type(e) is not errors.PhiauditError, code
        assert e.name.startswith("PHIAUDIT_E_") and "(" not in e.name, code
        code -= 1
    assert code <= -23


def test_function_twins_agree():
    L = _lib.lib()
    assert L.phiaudit_key_len() == _lib.KEY_LEN
    assert L.phiaudit_key_id_len() == _lib.KEY_ID_LEN
    assert L.phiaudit_header_len() == _lib.HEADER_LEN
    assert L.phiaudit_max_frame_len() == _lib.MAX_FRAME_LEN
    assert L.phiaudit_max_id_len() == 256
    assert L.phiaudit_max_code_len() == 256
    assert L.phiaudit_max_detail_len() == 4096


def test_config_init_roundtrip():
    """Behavioural check independent of the helper: the defaults phiaudit_config_init writes
    land in the fields the header documents."""
    cfg = _lib.Config()
    ctypes.memset(ctypes.byref(cfg), 0xA5, ctypes.sizeof(cfg))
    _lib.lib().phiaudit_config_init(ctypes.byref(cfg))
    assert cfg.version == 1
    assert cfg.durability == 0
    assert cfg.flush_interval_ms == 10
    assert cfg.flags == 0
    assert cfg.payload_format == 0
    assert cfg.max_queue_bytes == 64 << 20
    assert cfg.max_block_ms == 1000
    assert cfg.app_name is None and cfg.key_file is None and cfg.sink_count == 0
    assert cfg.diag_ctx is None  # the last field was zeroed: the struct is not longer in C
    ev = _lib.Event()
    ctypes.memset(ctypes.byref(ev), 0x5A, ctypes.sizeof(ev))
    _lib.lib().phiaudit_event_init(ctypes.byref(ev))
    assert (ev.version, ev.action, ev.outcome, ev.detail) == (1, ord("R"), 0, None)


def test_library_version():
    import re

    assert re.fullmatch(r"\d+\.\d+\.\d+", phiaudit.library_version())
