"""Independent cross-check of the record format.

Files are written by the C library (through the Python binding's *write* side only); every
byte is then parsed, decrypted and verified here using nothing but docs/FORMAT.md and the
`cryptography` package (AESGCM, HKDF, HMAC, SHA-256). The library's reader, frame parser
and keyring are deliberately not used: if this file and the library agree, the spec is
sufficient to write an independent verifier, and the library follows the spec.

Each check names the FORMAT.md section it comes from.
"""
from __future__ import annotations

import datetime as dt
import glob
import hashlib
import hmac
import json
import os
import re
import struct

import pytest

AESGCM = pytest.importorskip("cryptography.hazmat.primitives.ciphers.aead").AESGCM
from cryptography.exceptions import InvalidTag  # noqa: E402
from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.kdf.hkdf import HKDF  # noqa: E402

import phiaudit  # write side only (Logger, generate_key_file)  # noqa: E402

HEADER_LEN = 112
TAG_LEN = 16


# ---- the independent implementation ---------------------------------------------------

def load_key_file(path):
    """§1: first line starting with 'PHIAUDIT-KEY-1 ': key ID hex, key hex."""
    st = os.stat(path)
    assert st.st_mode & 0o077 == 0, "§1: key file must have no group/other permission bits"
    with open(path, "rb") as f:
        for line in f.read().split(b"\n"):
            line = line.rstrip(b"\r")
            if line.startswith(b"PHIAUDIT-KEY-1 "):
                _, kid_hex, key_hex = line.decode("ascii").split(" ")
                assert re.fullmatch(r"[0-9a-f]{32}", kid_hex), "§1: 32 lowercase hex"
                assert re.fullmatch(r"[0-9a-f]{64}", key_hex), "§1: 64 lowercase hex"
                return bytes.fromhex(kid_hex), bytes.fromhex(key_hex)
    raise AssertionError("§1: no PHIAUDIT-KEY-1 line")


def stream_key(key, key_id, stream_id):
    """§2: HKDF-SHA256(IKM=key, salt=stream ID, info='phiaudit/v1/stream-key' ‖ key ID)."""
    info = b"phiaudit/v1/stream-key" + key_id
    assert len(b"phiaudit/v1/stream-key") == 22
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=stream_id, info=info).derive(key)


def index_key(key, key_id):
    """§7: HKDF-SHA256(IKM=key, no salt, info='phiaudit/v1/blind-index' ‖ key ID)."""
    assert len(b"phiaudit/v1/blind-index") == 23
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"phiaudit/v1/blind-index" + key_id).derive(key)


def blind_tag(ikey, which, ident):
    return hmac.new(ikey, which + ident.encode("utf-8"), hashlib.sha256).digest()[:8]


def nonce(seq):
    """§3: 00 00 00 00 ‖ seq (8 bytes, big-endian)."""
    return b"\0\0\0\0" + struct.pack(">Q", seq)


def parse_frames(data):
    """§4 / §8: frames back to back. Returns (frames, torn_tail_bytes)."""
    frames, off = [], 0
    while off < len(data):
        if len(data) - off < 12:
            return frames, len(data) - off
        assert data[off:off + 4] == b"PHA1", f"§4: magic at offset {off}"
        (flen,) = struct.unpack(">I", data[off + 8:off + 12])
        assert 128 <= flen <= 65536, "§4: 128 <= frame length <= 65536"
        if off + flen > len(data):
            return frames, len(data) - off  # §8: torn tail, only ever at the end
        fr = data[off:off + flen]
        h = fr[:HEADER_LEN]
        rec = {
            "offset": off,
            "frame": fr,
            "header": h,
            "version": h[4],
            "suite": h[5],
            "type": h[6],
            "flags": h[7],
            "frame_len": flen,
            "key_id": h[12:28],
            "stream_id": h[28:44],
            "seq": struct.unpack(">Q", h[44:52])[0],
            "time_us": struct.unpack(">q", h[52:60])[0],
            "epoch": struct.unpack(">I", h[60:64])[0],
            "prev_link": h[64:96],
            "bi_p": h[96:104],
            "bi_c": h[104:112],
            "ct": fr[HEADER_LEN:flen - TAG_LEN],
            "tag": fr[flen - TAG_LEN:],
        }
        assert rec["version"] == 1, "§4: format version 1"
        assert rec["suite"] == 1, "§4: suite 1"
        assert rec["type"] in (1, 2, 3), "§4: record type"
        assert rec["flags"] & ~0x01 == 0, "§4: unknown flag bits must be 0"
        assert rec["epoch"] == 0, "§4: epoch 0 in this version"
        frames.append(rec)
        off += flen
    return frames, 0


def link(rec):
    """§5: SHA-256(header ‖ tag)."""
    return hashlib.sha256(rec["header"] + rec["tag"]).digest()


def open_record(keys, rec, cache):
    """§4 Opening: AES-256-GCM with the stream key, nonce(seq), AAD = the 112-byte header."""
    key = keys[rec["key_id"]]
    sk = cache.get(rec["stream_id"])
    if sk is None:
        sk = cache[rec["stream_id"]] = stream_key(key, rec["key_id"], rec["stream_id"])
    return AESGCM(sk).decrypt(nonce(rec["seq"]), rec["ct"] + rec["tag"], rec["header"])


TIME_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
DATA_KEYS = ["v", "id", "recorded", "start", "end", "duration_us", "action", "outcome",
             "clinician", "patient", "type", "subtype", "purpose", "break_glass", "abandoned",
             "detail", "app", "host", "pid"]
REQUIRED = {"v", "id", "recorded", "start", "end", "duration_us", "action", "outcome",
            "clinician", "patient", "app", "host", "pid"}


def parse_time(s):
    return dt.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def check_data_payload(p, raw, rec):
    """§6: DATA payload keys, order, types and formats."""
    keys = list(p)
    assert REQUIRED <= set(keys), f"§6: missing keys {REQUIRED - set(keys)}"
    assert set(keys) <= set(DATA_KEYS), f"§6: unknown keys {set(keys) - set(DATA_KEYS)}"
    assert keys == [k for k in DATA_KEYS if k in p], "§6: keys in the documented order"
    assert p["v"] == 1
    assert p["id"] == f"{rec['stream_id'].hex()}-{rec['seq']:020d}", "§6: id format"
    for k in ("recorded", "start", "end"):
        assert TIME_RE.fullmatch(p[k]), f"§6: {k} format"
    start, end = parse_time(p["start"]), parse_time(p["end"])
    assert end - start == dt.timedelta(microseconds=p["duration_us"]), \
        "§6: end = start + duration"
    assert p["action"] in ("C", "R", "U", "D", "E")
    assert p["outcome"] in (0, 4, 8, 12)
    for k in ("break_glass", "abandoned"):
        assert p.get(k, True) is True, f"§6: {k} is true or absent"
    if p.get("abandoned"):
        assert p["outcome"] == 8, "§6: abandoned scopes have outcome 8"
    assert isinstance(p["pid"], int)
    # §6 escaping: control characters, U+2028/U+2029 never appear raw in the payload
    text = raw.decode("utf-8")
    assert not re.search("[\x00-\x1f\x7f\u2028\u2029]", text), "§6: unescaped character"
    assert not raw.endswith(b"\n"), "§6: no trailing newline"


def verify_files(paths, key_file, *, text_format=False):
    """Full §9 check of a set of files, returning {stream_id: [(rec, payload), ...]}."""
    kid, key = load_key_file(key_file)
    keys = {kid: key}
    ikey = index_key(key, kid)
    cache = {}
    loaded = []
    for p in paths:
        frames, torn = parse_frames(open(p, "rb").read())
        loaded.append((frames[0]["time_us"] if frames else 0, p, frames, torn))
    loaded.sort(key=lambda t: (t[0], t[1]))  # §9: files ordered by their first record
    streams = {}
    for _, path, frames, torn in loaded:
        for rec in frames:
            sid = rec["stream_id"]
            st = streams.setdefault(sid, {"records": [], "last_link": None, "closed": False})
            prev = st["records"][-1][0] if st["records"] else None
            if prev is None:
                assert rec["seq"] == 0 and rec["type"] == 1, "§9.4: stream starts with OPEN"
                assert rec["prev_link"] == b"\0" * 32, "§5: OPEN carries zero link"
            else:
                assert rec["seq"] == prev["seq"] + 1, "§9.2: seq increases by exactly 1"
                assert rec["prev_link"] == st["last_link"], "§9.3: chain link"
                assert rec["type"] != 1, "§9.4: OPEN at seq 0 only"
                assert not st["closed"], "§9.4: CLOSE is last"
            pt = open_record(keys, rec, cache)  # raises InvalidTag on any mismatch
            payload = pt.decode("utf-8") if (text_format and rec["type"] == 2) else json.loads(pt)
            if rec["type"] == 2:
                if text_format:
                    assert re.fullmatch(r"Clinician .+ processed action [CRUDE] on Patient .+ "
                                        r"in \d+\.\d{4}s", payload), "§6: TEXT payload"
                else:
                    check_data_payload(payload, pt, rec)
                if rec["flags"] & 1:
                    assert not text_format
                    assert rec["bi_p"] == blind_tag(ikey, b"P", payload["patient"]), "§7: P"
                    assert rec["bi_c"] == blind_tag(ikey, b"C", payload["clinician"]), "§7: C"
                else:
                    assert rec["bi_p"] == rec["bi_c"] == b"\0" * 8, "§4: zero blind index"
            else:
                assert rec["flags"] & 1 == 0 or rec["bi_p"] == b"\0" * 8
            if rec["type"] == 1:
                assert payload["event"] == "stream-open" and payload["v"] == 1
                assert payload["reason"] in ("start", "fork")
                assert list(payload)[:3] == ["v", "event", "reason"]
                for k in ("app", "host", "pid", "lib", "durability"):
                    assert k in payload, f"§6: OPEN lacks {k}"
            if rec["type"] == 3:
                st["closed"] = True
                n_data = sum(1 for r, _ in st["records"] if r["type"] == 2)
                assert payload == {"v": 1, "event": "stream-close", "records": n_data,
                                   "abandoned": payload["abandoned"]}, "§6: CLOSE payload"
            st["last_link"] = link(rec)
            st["records"].append((rec, payload))
    return {sid: st["records"] for sid, st in streams.items()}, loaded


# ---- tests ----------------------------------------------------------------------------

@pytest.fixture
def key_file(tmp_path):
    p = str(tmp_path / "k.key")
    phiaudit.generate_key_file(p)
    return p


def test_key_file_format(key_file):
    kid = load_key_file(key_file)[0]
    with open(key_file) as f:
        assert any(line.startswith("PHIAUDIT-KEY-1 " + kid.hex()) for line in f)


@pytest.mark.parametrize("blind_index", [False, True])
def test_crosscheck_file(key_file, tmp_path, blind_index):
    path = str(tmp_path / "audit.pha")
    hostile = "quote\" back\\ nl\n tab\t nul-free \u2028\u2029 \x7f %n \U0001F489"
    with phiaudit.Logger(key_file=key_file, sinks=["file:" + path], blind_index=blind_index,
                         app_name="crosscheck", durability="group") as lg:
        for i in range(200):
            with lg.scope(f"dr-{i % 7}", f"p-{i % 13}", "CRUDE"[i % 5]) as s:
                if i % 10 == 0:
                    s.set_event_type("rest").set_subtype("read").set_purpose("TREAT")
                    s.set_break_glass().set_detail(hostile)
        lg.log_event("dr-x", "p-x", "E", 12, start_us=1_000_000, duration_us=5)
        abandoned = lg.scope("dr-a", "p-a", "R")
    streams, _ = verify_files([path], key_file)
    assert len(streams) == 1
    (recs,) = streams.values()
    assert [r["type"] for r, _ in recs] == [1] + [2] * 202 + [3]
    payloads = [p for r, p in recs if r["type"] == 2]
    assert payloads[0]["detail"] == hostile and payloads[0]["break_glass"] is True
    assert payloads[200]["start"] == "1970-01-01T00:00:01.000000Z"
    assert payloads[201]["abandoned"] is True and payloads[201]["outcome"] == 8
    assert recs[-1][1]["abandoned"] == 1
    assert recs[0][1]["app"] == "crosscheck" and recs[0][1]["durability"] == 1
    del abandoned


def test_crosscheck_text_format(key_file, tmp_path):
    path = str(tmp_path / "text.pha")
    with phiaudit.Logger(key_file=key_file, sinks=["file:" + path],
                         payload_format="text") as lg:
        with lg.scope("dr-1", "p-1", "R"):
            pass
    streams, _ = verify_files([path], key_file, text_format=True)
    (recs,) = streams.values()
    assert recs[1][1].startswith("Clinician dr-1 processed action R on Patient p-1 in ")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_crosscheck_fork_interleaved_streams(key_file, tmp_path):
    path = str(tmp_path / "fork.pha")
    lg = phiaudit.Logger(key_file=key_file, sinks=["file:" + path])
    for i in range(10):
        with lg.scope("dr-p", f"p-{i}"):
            pass
    pid = os.fork()
    if pid == 0:
        try:
            for i in range(10):
                with lg.scope("dr-c", f"p-{i}"):
                    pass
            lg.close()
        finally:
            os._exit(0)
    for i in range(10, 20):
        with lg.scope("dr-p", f"p-{i}"):
            pass
    os.waitpid(pid, 0)
    lg.close()
    streams, _ = verify_files([path], key_file)
    assert len(streams) == 2  # §2: the child started a new stream
    by_reason = {recs[0][1]["reason"]: (sid, recs) for sid, recs in streams.items()}
    psid, precs = by_reason["start"]
    csid, crecs = by_reason["fork"]
    assert crecs[0][1]["parent_stream"] == psid.hex()  # §6: OPEN of a forked child
    assert crecs[0][1]["parent_next_seq"] == 11
    assert sum(r["type"] == 2 for r, _ in precs) == 20
    assert sum(r["type"] == 2 for r, _ in crecs) == 10


def test_crosscheck_rotation_and_torn_tail(key_file, tmp_path):
    path = str(tmp_path / "rot.pha")
    with phiaudit.Logger(key_file=key_file, sinks=[f"file:{path}?max_bytes=2048"]) as lg:
        for i in range(40):
            with lg.scope("dr-1", f"p-{i}") as s:
                s.set_detail("y" * 200)
            lg.flush()
    rotated = sorted(glob.glob(path + ".*"))
    assert rotated, "§8: rotation renames PATH"
    for r in rotated:
        assert re.fullmatch(re.escape(path) + r"\.\d{8}T\d{6}\.\d{6}Z(-\d+)?", r), \
            "§8: rotated name PATH.YYYYMMDDTHHMMSS.ffffffZ"
    streams, _ = verify_files(rotated + [path], key_file)  # one stream across files
    (recs,) = streams.values()
    assert sum(r["type"] == 2 for r, _ in recs) == 40 and recs[-1][0]["type"] == 3

    # §8: a torn tail; the next logger sets the file aside and reports the torn bytes.
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(size - 7)
    with phiaudit.Logger(key_file=key_file, sinks=["file:" + path]) as lg:
        with lg.scope("dr-2", "p-2"):
            pass
    frames, torn = parse_frames(open(path, "rb").read())
    assert torn == 0 and frames[0]["type"] == 1
    streams2, _ = verify_files([path], key_file)
    (recs2,) = streams2.values()
    assert recs2[0][1]["recovered_torn_bytes"] > 0
    torn_files = [p for p in glob.glob(path + ".*") if parse_frames(open(p, "rb").read())[1]]
    assert len(torn_files) == 1, "§8: the torn file is kept intact, torn tail included"


def test_tampering_detected_by_independent_verifier(key_file, tmp_path):
    path = str(tmp_path / "t.pha")
    with phiaudit.Logger(key_file=key_file, sinks=["file:" + path]) as lg:
        for i in range(5):
            with lg.scope("dr-1", f"p-{i}"):
                pass
    data = bytearray(open(path, "rb").read())
    frames, _ = parse_frames(bytes(data))
    data[frames[2]["offset"] + HEADER_LEN] ^= 1  # ciphertext byte
    open(path, "wb").write(bytes(data))
    with pytest.raises(InvalidTag):
        verify_files([path], key_file)
