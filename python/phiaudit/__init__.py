"""phiaudit: encrypted, tamper-evident audit logging of clinician access to patient records.

A pure-Python (ctypes) binding of the phiaudit C library (``libphiaudit.so.0``)::

    import phiaudit

    with phiaudit.Logger(key_file="/etc/app/audit.key", sinks=["file:/var/log/app.pha"],
                         app_name="ehr-web", durability="group") as audit:
        with audit.scope(clinician="dr-1", patient="p-42", action="R") as s:
            s.set_purpose("TREAT")
            chart = load_chart("p-42")          # an exception here -> outcome 8, re-raised

    for rec in phiaudit.decrypt("/var/log/app.pha", key_file="/etc/app/audit.key"):
        print(rec.seq, rec.payload)

The library is found through ``PHIAUDIT_LIBRARY`` (a path), the directory recorded at
``meson install`` time, or the dynamic loader.  Strings are passed as UTF-8; a ``str``
containing NUL or a lone surrogate raises ValueError before reaching C.  See
:mod:`phiaudit.logger` for threads and ``fork()``, :mod:`phiaudit.reader` for
decrypt/verify/query and :mod:`phiaudit.testing` for unit-test assertions.
"""
from __future__ import annotations

from . import _lib
from . import errors
from .errors import *  # noqa: F401,F403  (every exception class, listed in errors.__all__)
from .errors import PhiauditError
from .logger import Logger, Scope, Stats
from .reader import (Keyring, Problem, Record, StreamReport, VerifyReport, decrypt, query,
                     verify)

ACTION_CREATE = "C"
ACTION_READ = "R"
ACTION_UPDATE = "U"
ACTION_DELETE = "D"
ACTION_EXECUTE = "E"

OUTCOME_SUCCESS = 0
OUTCOME_MINOR_FAILURE = 4
OUTCOME_SERIOUS_FAILURE = 8
OUTCOME_MAJOR_FAILURE = 12


def library_version() -> str:
    """Version string of the loaded C library (``phiaudit_version``)."""
    return _lib.lib().phiaudit_version().decode()


def generate_key_file(path: "str | bytes | object") -> bytes:
    """Create a new key file (mode 0600, never overwriting); return its 16-byte key ID."""
    from ctypes import create_string_buffer

    from ._util import check, cpath

    kid = create_string_buffer(_lib.KEY_ID_LEN)
    check(_lib.lib().phiaudit_key_generate_file(cpath(path, "path"), kid))
    return kid.raw


__version__ = "0.1.0"
__all__ = errors.__all__ + ["Logger", "Scope", "Stats", "Keyring", "Record", "Problem", "StreamReport",
           "VerifyReport", "decrypt", "verify", "query", "library_version",
           "generate_key_file", "ACTION_CREATE", "ACTION_READ", "ACTION_UPDATE",
           "ACTION_DELETE", "ACTION_EXECUTE", "OUTCOME_SUCCESS", "OUTCOME_MINOR_FAILURE",
           "OUTCOME_SERIOUS_FAILURE", "OUTCOME_MAJOR_FAILURE"]
