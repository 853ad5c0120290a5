"""What a moderator may ask the index, as typed objects; and the pure helpers every backend shares.

Search input comes from users (CLI flags, API query strings), so it is validated into
:class:`SearchQuery` before any backend sees it: a backend builds SQL parameters or an
Elasticsearch DSL dict from these typed fields only, never from a raw string. A bad value fails
here with :class:`deepwatch.contracts.ContractError` naming the field.

Pagination is by cursor (keyset / ``search_after``), never by offset: the cursor carries the sort
key of the last item served and a *snapshot* bound, so records that arrive while a moderator pages
through results neither shift nor duplicate items, and ``total`` stays what page one said.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, Field, field_validator, model_validator

from deepwatch.contracts import (
    ContractError,
    DedupClass,
    MediaRecord,
    Part,
    Probability,
    Review,
    Sha256Hex,
    Slug,
)

SortOrder = Literal["score_desc", "score_asc", "newest", "oldest"]
ReviewState = Literal["none", "fake", "real", "unsure"]
# A record's verdict, or "unscored" for one that has none yet.
VerdictFilter = Literal["fake", "uncertain", "real", "no_face", "error", "unscored"]
MediaKind = Literal["image", "video"]

MAX_LIMIT = 500
MAX_TEXT = 500
# Unscored records sort as this score: last when the highest scores come first.
UNSCORED = -1.0
HISTOGRAM_BINS = 10
PERCENTILES = (50, 90, 99)

DetectorName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class ScoreRange(Part):
    """Inclusive bounds on a probability."""

    min: Probability = 0.0
    max: Probability = 1.0

    @model_validator(mode="after")
    def _ordered(self) -> ScoreRange:
        if self.min > self.max:
            raise ValueError("min is above max")
        return self


class SearchQuery(Part):
    """A moderation search. Every filter is optional; list filters match any of their values."""

    text: Annotated[str, Field(max_length=MAX_TEXT)] | None = Field(
        None, description="words that must all occur in a title, uploader, post text or URL"
    )
    verdict: list[VerdictFilter] = Field(
        default_factory=list, description="'unscored' means no verdict yet"
    )
    score: ScoreRange | None = None
    detectors: dict[DetectorName, ScoreRange] = Field(default_factory=dict, max_length=16)
    platform: list[Slug] = Field(default_factory=list, max_length=64)
    source: list[Slug] = Field(default_factory=list, max_length=64)
    kind: list[MediaKind] = Field(default_factory=list)
    dedup: list[DedupClass] = Field(default_factory=list)
    review: list[ReviewState] = Field(default_factory=list, description="'none' means not reviewed yet")
    seen_since: AwareDatetime | None = Field(None, description="seen at or after (last_seen >= since)")
    seen_until: AwareDatetime | None = Field(None, description="seen at or before (first_seen <= until)")
    sort: SortOrder = "score_desc"
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] = 50
    cursor: Annotated[str, Field(max_length=2000)] | None = None

    @field_validator("text")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if any(ord(ch) < 32 and ch not in "\t\n" for ch in value):
            raise ValueError("must not contain control characters")
        if not text_terms(value):
            raise ValueError("has no words to search for (letters or digits)")
        return value

    @model_validator(mode="after")
    def _range(self) -> SearchQuery:
        if self.seen_since and self.seen_until and self.seen_since > self.seen_until:
            raise ValueError("seen_since is after seen_until")
        return self

    def filters_digest(self) -> str:
        """Identifies the result set (filters and sort, not the page): a cursor is only valid for it."""
        data = self.model_dump(mode="json", exclude={"limit", "cursor"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class SearchPage(Part):
    """One page of results; ``next`` is the cursor of the following page, None on the last."""

    total: Annotated[int, Field(ge=0)]
    items: list[MediaRecord]
    next: str | None = None


class StageTimes(Part):
    count: Annotated[int, Field(ge=0)]
    p50: float
    p90: float
    p99: float


class Aggregations(Part):
    """Dashboard figures over the records a query selects (its sort, limit and cursor are ignored)."""

    total: Annotated[int, Field(ge=0)]
    by_verdict: dict[str, int] = Field(description="'unscored' for records without a verdict")
    by_platform: dict[str, int] = Field(description="a record seen on two platforms counts on both")
    by_day: dict[str, int] = Field(description="UTC day (YYYY-MM-DD) of first_seen")
    score_histogram: list[int] = Field(description=f"{HISTOGRAM_BINS} equal bins over [0, 1]; 1.0 in the last")
    stage_seconds: dict[str, StageTimes]
    by_dedup: dict[str, int] = Field(
        default_factory=dict, description="records per dedup class (how the record was last matched)"
    )
    sightings: Annotated[int, Field(ge=0)] = Field(0, description="sum of every sighting's count")
    distinct_urls: Annotated[int, Field(ge=0)] = Field(0, description="sighting entries (distinct canonical URLs)")


class ReviewEvent(Part):
    """One line of the audit trail: who changed a record's review, from what, to what."""

    media_id: Sha256Hex
    review: Review
    previous: ReviewState


def to_query(**fields: Any) -> SearchQuery:
    """Validate user input into a :class:`SearchQuery`, raising ContractError that names the field."""
    from deepwatch.contracts import parse

    return parse(SearchQuery, {k: v for k, v in fields.items() if v is not None})


_RELATIVE = re.compile(r"^(\d{1,6})([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_moment(text: str, now: datetime | None = None) -> datetime:
    """A time as people type it: ``24h`` / ``7d`` (that long ago), an ISO date (midnight UTC) or an
    ISO date-time (UTC unless it names its zone). ValueError otherwise."""
    value = text.strip()
    relative = _RELATIVE.match(value)
    if relative:
        amount, unit = int(relative.group(1)), _UNITS[relative.group(2)]
        return (now or datetime.now(UTC)) - timedelta(**{unit: amount})
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use e.g. 24h, 7d, 2026-11-01 or 2026-11-01T12:00Z)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- free text ------------------------------------------------------------------------------
# Letters and digits; underscores and punctuation separate words, as in SQLite's unicode61.
WORD_PATTERN = re.compile(r"[^\W_]+", re.UNICODE)


def text_terms(text: str) -> list[str]:
    """The words of a free-text query, lower-cased; punctuation separates words and is dropped.

    Stored text is cut into words the same way (SQLite's unicode61 tokenizer splits alike; the
    Elasticsearch backend cuts with this very pattern before indexing), so a query word matches a
    stored word, and no operator syntax survives."""
    return [w.lower() for w in WORD_PATTERN.findall(text)][:32]


def searchable_text(record: MediaRecord) -> str:
    """Everything free text may match: every sighting's URL, title, uploader and post text."""
    parts: list[str] = []
    for s in record.sightings:
        parts.append(s.url)
        if s.canonical_url != s.url:
            parts.append(s.canonical_url)
        if s.hints is not None:
            parts.extend(v for v in (s.hints.title, s.hints.uploader, s.hints.text) if v)
    return "\n".join(parts)


# --- sorting and cursors --------------------------------------------------------------------
def sort_value(record: MediaRecord, sort: SortOrder) -> float:
    """The primary sort key a backend stores for a record; ties break on media_id."""
    if sort in ("score_desc", "score_asc"):
        return UNSCORED if record.score is None else record.score
    return record.first_seen.timestamp()


def descending(sort: SortOrder) -> bool:
    return sort in ("score_desc", "newest")


def encode_cursor(query: SearchQuery, after: Sequence[Any], snapshot: Any) -> str:
    """``after``: the sort values of the last item served; ``snapshot``: the backend's bound on
    which records page one could see (a sequence number, a timestamp)."""
    data = {"q": query.filters_digest(), "a": list(after), "s": snapshot}
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def decode_cursor(query: SearchQuery) -> tuple[list[Any], int] | None:
    """``(after, snapshot)`` from the query's cursor, None without one. ``after`` is
    ``[sort value, media_id]`` and ``snapshot`` an integer bound, in every backend. A cursor that is
    not ours, or that belongs to another query, is a ContractError on the ``cursor`` field, before
    any of its values reaches a backend."""
    if query.cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(query.cursor + "=" * (-len(query.cursor) % 4))
        data = json.loads(raw)
        after, snapshot, digest = data["a"], data["s"], data["q"]
        well_formed = (
            isinstance(after, list)
            and len(after) == 2
            and _is_number(after[0])
            and isinstance(after[1], str)
            and isinstance(snapshot, int)
            and not isinstance(snapshot, bool)
            and isinstance(digest, str)
        )
        if not well_formed:
            raise TypeError("malformed")
    except (ValueError, TypeError, KeyError) as exc:
        raise ContractError("SearchQuery", [("cursor", f"not a cursor from this index ({exc})")]) from None
    if digest != query.filters_digest():
        raise ContractError("SearchQuery", [("cursor", "belongs to a search with other filters or sort")])
    return after, snapshot


# --- aggregation math -----------------------------------------------------------------------
def histogram_bin(score: float) -> int:
    return min(int(score * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on already-sorted values."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * p / 100
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def stage_times(sorted_values: Sequence[float]) -> StageTimes:
    return StageTimes(
        count=len(sorted_values),
        p50=percentile(sorted_values, 50),
        p90=percentile(sorted_values, 90),
        p99=percentile(sorted_values, 99),
    )


def day_of(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d")
