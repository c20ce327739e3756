"""Exceptions raised by the phiaudit binding.

Every negative ``PHIAUDIT_E_*`` code of the C library becomes an instance of a
:class:`PhiauditError` subclass carrying the code, the library's static text for it
(``phiaudit_strerror``) and, where the library has one, the per-logger detail message
(``phiaudit_logger_errmsg``).  None of these texts ever contains PHI or key bytes; the
binding keeps it that way by never putting argument values into its own messages.

Validation failures (``PHIAUDIT_E_INVALID``, ``_TOO_LONG``, ``_UTF8``, ``_EMPTY``,
``_BAD_CHAR``) also derive from :class:`ValueError`, so ``except ValueError`` catches
every "bad argument" whether Python or C rejected it.
"""
from __future__ import annotations

from typing import Dict, Optional, Type

__all__ = [
    "PhiauditError", "ArgumentError", "InvalidArgumentError", "OutOfMemoryError",
    "TooLongError", "Utf8Error", "EmptyError", "BadCharError", "CryptoError", "IOFailedError",
    "SinkError", "KeyMaterialError", "KeyPermissionError", "ClosedError", "UriError",
    "FormatError", "AuthenticationError", "VersionError", "TruncatedError",
    "UnsupportedError", "QueueFullError", "UnknownKeyError", "StateError", "NotFoundError",
    "SinkDownError", "error_for",
]


class PhiauditError(Exception):
    """A phiaudit C library call failed.

    Attributes:
        code: the negative ``PHIAUDIT_E_*`` value.
        name: its macro name, e.g. ``"PHIAUDIT_E_AUTH"``.
        message: ``phiaudit_strerror(code)``.
        detail: per-logger detail (``phiaudit_logger_errmsg``) or None.
    """

    code: int = 0
    name: str = "PHIAUDIT_E_?"

    def __init__(self, code: int, message: str, detail: Optional[str] = None) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.detail = detail
        self.name = _NAMES.get(code, f"PHIAUDIT_E_({code})")

    def __str__(self) -> str:
        s = f"{self.message} [{self.name}]"
        if self.detail and self.detail != self.message:
            s += f": {self.detail}"
        return s


class ArgumentError(PhiauditError, ValueError):
    """Base of the argument-validation errors (also a ValueError)."""


class InvalidArgumentError(ArgumentError):
    """PHIAUDIT_E_INVALID: bad argument."""


class OutOfMemoryError(PhiauditError, MemoryError):
    """PHIAUDIT_E_NOMEM."""


class TooLongError(ArgumentError):
    """PHIAUDIT_E_TOO_LONG: a field exceeds its documented limit."""


class Utf8Error(ArgumentError):
    """PHIAUDIT_E_UTF8."""


class EmptyError(ArgumentError):
    """PHIAUDIT_E_EMPTY: a required identifier is empty."""


class BadCharError(ArgumentError):
    """PHIAUDIT_E_BAD_CHAR: a control character where none is allowed."""


class CryptoError(PhiauditError):
    """PHIAUDIT_E_CRYPTO."""


class IOFailedError(PhiauditError):
    """PHIAUDIT_E_IO."""


class SinkError(PhiauditError):
    """PHIAUDIT_E_SINK: records are queued but a sink failed to take them; they are retried
    (do not log them again). Compare SinkDownError."""


class KeyMaterialError(PhiauditError):
    """PHIAUDIT_E_KEY: key missing, malformed or unusable."""


class KeyPermissionError(KeyMaterialError):
    """PHIAUDIT_E_KEY_PERMS: key file readable or writable by group/others."""


class ClosedError(PhiauditError):
    """PHIAUDIT_E_CLOSED: the logger was closed."""


class UriError(PhiauditError, ValueError):
    """PHIAUDIT_E_URI: malformed sink URI or unknown scheme."""


class FormatError(PhiauditError):
    """PHIAUDIT_E_FORMAT: malformed frame or file."""


class AuthenticationError(PhiauditError):
    """PHIAUDIT_E_AUTH: a record was modified or the key is wrong."""


class VersionError(PhiauditError):
    """PHIAUDIT_E_VERSION."""


class TruncatedError(PhiauditError):
    """PHIAUDIT_E_TRUNCATED: input ends inside a record."""


class UnsupportedError(PhiauditError):
    """PHIAUDIT_E_UNSUPPORTED: feature not compiled in."""


class QueueFullError(PhiauditError):
    """PHIAUDIT_E_QUEUE_FULL."""


class UnknownKeyError(PhiauditError):
    """PHIAUDIT_E_UNKNOWN_KEY: no key with this key ID in the keyring."""


class StateError(PhiauditError):
    """PHIAUDIT_E_STATE: call not valid in the object's current state."""


class NotFoundError(PhiauditError):
    """PHIAUDIT_E_NOT_FOUND."""


class SinkDownError(SinkError):
    """PHIAUDIT_E_SINK_DOWN: a sink is failing; this record was NOT sealed or queued
    (fail-closed). Log it again later, or deny the access."""


_CLASSES: Dict[int, Type[PhiauditError]] = {
    -1: InvalidArgumentError, -2: OutOfMemoryError, -3: TooLongError, -4: Utf8Error,
    -5: EmptyError, -6: BadCharError, -7: CryptoError, -8: IOFailedError, -9: SinkError,
    -10: KeyMaterialError, -11: KeyPermissionError, -12: ClosedError, -13: UriError,
    -14: FormatError, -15: AuthenticationError, -16: VersionError, -17: TruncatedError,
    -18: UnsupportedError, -19: QueueFullError, -20: UnknownKeyError, -21: StateError,
    -22: NotFoundError, -23: SinkDownError,
}

_NAMES: Dict[int, str] = {
    -1: "PHIAUDIT_E_INVALID", -2: "PHIAUDIT_E_NOMEM", -3: "PHIAUDIT_E_TOO_LONG",
    -4: "PHIAUDIT_E_UTF8", -5: "PHIAUDIT_E_EMPTY", -6: "PHIAUDIT_E_BAD_CHAR",
    -7: "PHIAUDIT_E_CRYPTO", -8: "PHIAUDIT_E_IO", -9: "PHIAUDIT_E_SINK",
    -10: "PHIAUDIT_E_KEY", -11: "PHIAUDIT_E_KEY_PERMS", -12: "PHIAUDIT_E_CLOSED",
    -13: "PHIAUDIT_E_URI", -14: "PHIAUDIT_E_FORMAT", -15: "PHIAUDIT_E_AUTH",
    -16: "PHIAUDIT_E_VERSION", -17: "PHIAUDIT_E_TRUNCATED", -18: "PHIAUDIT_E_UNSUPPORTED",
    -19: "PHIAUDIT_E_QUEUE_FULL", -20: "PHIAUDIT_E_UNKNOWN_KEY", -21: "PHIAUDIT_E_STATE",
    -22: "PHIAUDIT_E_NOT_FOUND", -23: "PHIAUDIT_E_SINK_DOWN",
}


def error_for(code: int, detail: Optional[str] = None) -> PhiauditError:
    """Build the exception for a negative return code (does not raise it)."""
    from ._lib import lib

    message = lib().phiaudit_strerror(code).decode("utf-8", "replace")
    cls = _CLASSES.get(code, PhiauditError)
    return cls(code, message, detail)
