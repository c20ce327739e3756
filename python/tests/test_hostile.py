"""Hostile strings: rejected before C when C would misread them, otherwise round-tripped."""
from __future__ import annotations

import pytest

from phiaudit import errors


@pytest.mark.parametrize("where", ["clinician", "patient", "detail", "purpose", "event_type"])
def test_nul_rejected_before_c(mem_logger, where):
    args = {"clinician": "dr-1", "patient": "p-1"}
    with pytest.raises(ValueError, match="NUL") as ei:
        if where in ("clinician", "patient"):
            args[where] = "ab\0cd"
            mem_logger.scope(**args)
        else:
            mem_logger.log_event("dr-1", "p-1", **{where: "ab\0cd"})
    assert not isinstance(ei.value, errors.PhiauditError)  # never reached the library
    assert "ab" not in str(ei.value)  # the value (maybe PHI) is not echoed
    assert mem_logger.records() == []


@pytest.mark.parametrize("bad", ["\ud800", "abc\udfff", "\udc80\udc81"])
def test_lone_surrogates_rejected(mem_logger, bad):
    with pytest.raises(ValueError, match="surrogate"):
        mem_logger.scope(bad, "p-1")
    s = mem_logger.scope("dr-1", "p-1")
    with pytest.raises(ValueError, match="surrogate"):
        s.set_detail(bad)
    s.end()
    (r,) = mem_logger.records()
    assert "detail" not in r


def test_one_mebibyte_strings(mem_logger):
    big = "x" * (1 << 20)
    with pytest.raises(errors.TooLongError):
        mem_logger.scope(big, "p-1")
    with pytest.raises(errors.TooLongError):
        mem_logger.log_event("dr-1", "p-1", detail=big)
    with mem_logger.scope("dr-1", "p-1") as s:
        with pytest.raises(errors.TooLongError):
            s.set_detail(big)
        s.set_detail("y" * 4096)  # exactly the limit
    (r,) = mem_logger.records()
    assert r["detail"] == "y" * 4096


def test_limits_are_bytes_not_characters(mem_logger):
    ok = "é" * 128  # 256 bytes
    with mem_logger.scope(ok, "p-1"):
        pass
    with pytest.raises(errors.TooLongError):
        mem_logger.scope("é" * 128 + "a", "p-1")  # 257 bytes, 129 characters
    assert mem_logger.records()[0]["clinician"] == ok


HOSTILE_TEXT = [
    'quote " and backslash \\ and \\" and \'single\'',
    "%n%s%x%p%%n %1$s",
    "line\u2028sep\u2029para",
    "new\nline\r\ttab\x01\x1f\x7f",
    "emoji \U0001F489 combining e\u0301 rtl \u202e bom \ufeff",
    "</script><script>alert(1)</script>",
    '{"json":"injection","outcome":0}',
    "\u0085next-line",
]


@pytest.mark.parametrize("text", HOSTILE_TEXT)
def test_hostile_detail_round_trips(mem_logger, text):
    with mem_logger.scope("dr-1", "p-1") as s:
        s.set_detail(text)
    (r,) = mem_logger.records()
    assert r["detail"] == text
    assert r["outcome"] == 0 and r["clinician"] == "dr-1"


@pytest.mark.parametrize("ident", [
    'dr "quoted"', "back\\slash", "%n%s%x", "\U0001F489", "'; DROP TABLE--",
    "Ünïcödé-名前", " leading and trailing ",
])
def test_hostile_identifiers_round_trip(mem_logger, ident):
    with mem_logger.scope(ident, ident, "R"):
        pass
    (r,) = mem_logger.records()
    assert r["clinician"] == ident and r["patient"] == ident


def test_u2028_is_escaped_in_raw_payload(key_file, log_path):
    """FORMAT.md §6: U+2028/U+2029 are written as \\u2028/\\u2029 (safe in JS contexts)."""
    import phiaudit

    with phiaudit.Logger(key_file=key_file, sinks=["file:" + log_path]) as lg:
        with lg.scope("dr-1", "p-1") as s:
            s.set_detail("a\u2028b\u2029c\"d")
    recs = phiaudit.decrypt(log_path, key_file, include_stream_records=False)
    assert recs[0].payload["detail"] == "a\u2028b\u2029c\"d"  # payload parsed fine
    # and the raw decrypted bytes, straight from the library's reader, show the escapes
    from ctypes import byref, c_char_p, c_void_p, string_at

    from phiaudit import _lib

    L = _lib.lib()
    texts = []
    with phiaudit.Keyring(key_file) as kr:
        rd = c_void_p()
        assert L.phiaudit_reader_open(byref(rd), (c_char_p * 1)(log_path.encode()), 1,
                                      kr._h) == 0
        try:
            rec = _lib.ReaderRecord()
            while L.phiaudit_reader_next(rd, byref(rec)) == 1:
                assert rec.status & _lib.RS_AUTHENTICATED
                if rec.header.type == _lib.RECORD_DATA:
                    texts.append(string_at(rec.payload, rec.payload_len))
        finally:
            L.phiaudit_reader_free(byref(rd))
    (text,) = texts
    assert b"\\u2028" in text and b"\\u2029" in text and b'\\"d' in text
    assert "\u2028".encode() not in text


@pytest.mark.parametrize("ident", ["u\u2028v", "u\u2029v", "c1\u0085"])
def test_line_separators_rejected_in_identifiers(mem_logger, ident):
    """The library treats U+2028/U+2029 (and C1 controls) in identifiers as bad characters:
    identifiers are single-line values (detail text may contain them, escaped)."""
    with pytest.raises(errors.BadCharError):
        mem_logger.scope(ident, "p-1")
    with pytest.raises(errors.BadCharError):
        mem_logger.scope("dr-1", ident)


def test_control_characters_in_codes_rejected(mem_logger):
    s = mem_logger.scope("dr-1", "p-1")
    for bad in ("a\nb", "\x1b[31m", "tab\t"):
        with pytest.raises(errors.BadCharError):
            s.set_purpose(bad)
        with pytest.raises(errors.BadCharError):
            s.set_event_type(bad)
    with pytest.raises(errors.EmptyError):
        s.set_subtype("")
    s.end()
