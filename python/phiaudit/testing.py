"""Helpers for a service's own unit tests: assert on the records the code under test made.

Typical use::

    import phiaudit
    from phiaudit.testing import assert_single_access

    def test_chart_view_is_audited():
        with phiaudit.Logger.for_testing() as audit:    # random key, memory sink, no files
            my_service.view_chart(audit, clinician="dr-1", patient="p-42")
            assert_single_access(audit.records(), patient="p-42", clinician="dr-1",
                                 action="R", outcome=0)

``Logger.records()`` authenticates and decrypts every frame the memory sink received, so a
passing assertion also proves the record was really sealed and delivered.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping

__all__ = ["find_records", "assert_single_access", "assert_no_access"]

_ALIASES = {"event_type": "type"}


def _matches(rec: Mapping[str, Any], criteria: Mapping[str, Any]) -> bool:
    for k, v in criteria.items():
        key = _ALIASES.get(k, k)
        if k == "break_glass":
            if bool(rec.get("break_glass", False)) != bool(v):
                return False
        elif rec.get(key) != v:
            return False
    return True


def find_records(records: Iterable[Mapping[str, Any]], **criteria: Any) -> List[Dict[str, Any]]:
    """DATA payloads whose fields equal every criterion (``patient=``, ``clinician=``,
    ``action=``, ``outcome=``, ``event_type=``/``type=``, ``purpose=``, ``detail=``,
    ``break_glass=``...). Stream OPEN/CLOSE records never match."""
    return [dict(r) for r in records if "event" not in r and _matches(r, criteria)]


def assert_single_access(records: Iterable[Mapping[str, Any]], *, patient: str,
                         clinician: str, action: str = "R", outcome: int = 0,
                         **more: Any) -> Dict[str, Any]:
    """Assert that exactly one record shows ``clinician`` performing ``action`` on
    ``patient`` with ``outcome`` (and any further field criteria); return it.

    Raises AssertionError describing how many records matched and, if none did, the
    closest candidates (same patient and clinician).
    """
    recs = list(records)
    crit = dict(patient=patient, clinician=clinician, action=action, outcome=outcome, **more)
    hits = find_records(recs, **crit)
    if len(hits) == 1:
        return hits[0]
    near = find_records(recs, patient=patient, clinician=clinician)
    summary = [{k: r.get(k) for k in ("action", "outcome", "type", "purpose", "break_glass")
                if k in r} for r in near]
    raise AssertionError(
        f"expected exactly one audit record matching {crit}, found {len(hits)} "
        f"(of {len(find_records(recs))} data records; same patient+clinician: {summary})")


def assert_no_access(records: Iterable[Mapping[str, Any]], **criteria: Any) -> None:
    """Assert that no DATA record matches the criteria (e.g. ``patient="p-42"``)."""
    hits = find_records(records, **criteria)
    if hits:
        raise AssertionError(f"expected no audit record matching {criteria}, found {len(hits)}")
