"""Argument conversion shared by the binding's modules (internal)."""
from __future__ import annotations

import os
from typing import Optional, Union

from . import _lib
from .errors import PhiauditError, error_for

StrPath = Union[str, "os.PathLike[str]"]


def cstr(value: object, what: str, optional: bool = False) -> Optional[bytes]:
    """Encode a Python ``str`` as NUL-terminated UTF-8 for C.

    Raises TypeError for a non-str, ValueError for an embedded NUL (C would silently
    truncate there) or for text UTF-8 cannot encode (lone surrogates).  Messages name the
    argument, never its value: the value may be PHI.
    """
    if value is None:
        if optional:
            return None
        raise TypeError(f"{what} is required")
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{what} contains a NUL character")
    try:
        return value.encode("utf-8", "strict")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} is not encodable as UTF-8 (lone surrogate at index "
                         f"{e.start})") from None


def cpath(value: object, what: str) -> bytes:
    """Encode a filesystem path (str, bytes or os.PathLike) for C."""
    try:
        p = os.fsencode(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{what} must be a path, not {type(value).__name__}") from None
    if b"\0" in p:
        raise ValueError(f"{what} contains a NUL byte")
    return p


def check(rc: int, detail: Optional[str] = None) -> None:
    """Raise the PhiauditError for a negative return code."""
    if rc < 0:
        raise error_for(rc, detail)


def invalid(detail: str) -> PhiauditError:
    """A PHIAUDIT_E_INVALID error raised by the binding itself (detail: no PHI)."""
    return error_for(-1, detail)


ACTIONS = {"C": "C", "R": "R", "U": "U", "D": "D", "E": "E",
           "CREATE": "C", "READ": "R", "UPDATE": "U", "DELETE": "D", "EXECUTE": "E"}
OUTCOMES = (0, 4, 8, 12)


_ACTION_FAST = {k: ord(v) for k, v in ACTIONS.items()}
_ACTION_FAST.update({k.lower(): ord(v) for k, v in ACTIONS.items()})


def action_code(action: object) -> int:
    """'R' / 'read' / ord('R') -> ord('R'); anything else -> InvalidArgumentError."""
    if type(action) is str:
        code = _ACTION_FAST.get(action)
        if code is not None:
            return code
    if isinstance(action, int) and not isinstance(action, bool):
        if action in (ord("C"), ord("R"), ord("U"), ord("D"), ord("E")):
            return action
    elif isinstance(action, str):
        a = ACTIONS.get(action.upper())
        if a:
            return ord(a)
    raise invalid("action must be one of 'C', 'R', 'U', 'D', 'E'")


def outcome_code(outcome: object) -> int:
    if isinstance(outcome, int) and not isinstance(outcome, bool) and outcome in OUTCOMES:
        return int(outcome)
    raise invalid("outcome must be 0, 4, 8 or 12")


def lib():  # re-export for brevity in sibling modules
    return _lib.lib()
