"""Moderation search as people type it (CLI flags, API query parameters) → a :class:`SearchQuery`.

Both the ``deepwatch search`` command and ``GET /v1/search`` take the same flat arguments
(``min_score``, ``detector=NAME=MIN:MAX``, ``since=7d``, lists as repeats or comma-separated …);
this pure function is the one place that turns them into the typed query. Every error is a
:class:`ContractError` naming the query's field (``seen_since``, ``score.min``); :func:`argument_of` turns
that back into the argument a person typed (``since``, ``min_score``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from deepwatch.contracts import ContractError
from storage.query import SearchQuery, parse_moment, to_query

# SearchQuery field → the argument it comes from, so that errors name what was typed.
ARGUMENT_OF = {"text": "q", "seen_since": "since", "seen_until": "until", "detectors": "detector"}
LIST_ARGUMENTS = ("verdict", "platform", "source", "kind", "dedup", "review")


def split_list(values: Sequence[str] | None) -> list[str] | None:
    """``["fake,real", "uncertain"]`` → ``["fake", "real", "uncertain"]``; None stays None."""
    if values is None:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def detector_range(spec: str) -> tuple[str, dict[str, float]]:
    """``NAME=MIN:MAX`` (either bound may be empty: 0 and 1) → ``(NAME, {"min", "max"})``."""
    name, sep, bounds = spec.partition("=")
    low, sep2, high = bounds.partition(":")
    try:
        if not sep or not sep2:
            raise ValueError
        return name, {"min": float(low or 0), "max": float(high or 1)}
    except ValueError:
        raise ContractError("SearchQuery", [("detectors", f"{spec!r} is not NAME=MIN:MAX")]) from None


def build_query(
    *,
    q: str | None = None,
    verdict: Sequence[str] | None = None,
    min_score: float | None = None,
    max_score: float | None = None,
    detector: Sequence[str] | None = None,
    platform: Sequence[str] | None = None,
    source: Sequence[str] | None = None,
    kind: Sequence[str] | None = None,
    dedup: Sequence[str] | None = None,
    review: Sequence[str] | None = None,
    since: str | None = None,
    until: str | None = None,
    sort: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    now: datetime | None = None,
) -> SearchQuery:
    """The validated query; :class:`ContractError` naming the field(s) at fault otherwise."""
    fields: dict[str, Any] = {"text": q, "sort": sort, "limit": limit, "cursor": cursor}
    lists = {"verdict": verdict, "platform": platform, "source": source, "kind": kind, "dedup": dedup,
             "review": review}
    fields.update({name: split_list(values) for name, values in lists.items()})
    if min_score is not None or max_score is not None:
        fields["score"] = {"min": 0.0 if min_score is None else min_score,
                           "max": 1.0 if max_score is None else max_score}
    problems: list[tuple[str, str]] = []
    detectors: dict[str, dict[str, float]] = {}
    for spec in detector or []:
        try:
            name, bounds = detector_range(spec)
        except ContractError as exc:
            problems.extend(exc.problems)
            continue
        detectors[name] = bounds
    fields["detectors"] = detectors or None
    for field, value in (("seen_since", since), ("seen_until", until)):
        if value is not None:
            try:
                fields[field] = parse_moment(value, now)
            except ValueError as exc:
                problems.append((field, str(exc)))
    if problems:
        raise ContractError("SearchQuery", problems)
    return to_query(**fields)


def argument_of(field: str) -> str:
    """The argument a SearchQuery error location comes from: ``seen_since`` → ``since``,
    ``score.min`` → ``min_score``, ``detectors.x.max`` → ``detector``, ``verdict.0`` → ``verdict``."""
    head, _, rest = field.partition(".")
    if head == "<root>":  # the one check across fields: seen_since after seen_until
        return "since"
    if head == "score":
        return {"min": "min_score", "max": "max_score"}.get(rest, "min_score")
    return ARGUMENT_OF.get(head, head)
