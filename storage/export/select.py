"""Which records an export takes, and where their bytes are.

The rule (pure): a record is a flagged fake when its verdict is ``fake`` or a reviewer labelled it
``fake``; a reviewer's ``real`` takes it out again unless the request includes reviewed reals (they
are the hard negatives a detector got wrong). Its label is the review's if any, else the verdict.
"""

from __future__ import annotations

from collections.abc import Iterator

from deepwatch.contracts import MediaRecord
from storage.errors import InvalidKey, NotFound
from storage.index import SearchIndex, iter_search
from storage.keys import FLAGGED_PREFIX, MEDIA_PREFIX, check_extension, validate_key
from storage.objects import ObjectStore
from storage.query import SearchQuery

# Following links to records outside the selection (to join clusters through them) stops here.
MAX_LINK_LOOKUPS = 100_000


def is_flagged(record: MediaRecord) -> bool:
    return record.verdict == "fake" or (record.review is not None and record.review.label == "fake")


def selected(record: MediaRecord, include_reviewed_real: bool = False) -> bool:
    if record.review is not None and record.review.label == "real" and not include_reviewed_real:
        return False
    return is_flagged(record)


def label_of(record: MediaRecord) -> str:
    return record.review.label if record.review is not None else (record.verdict or "unscored")


def routes(query: SearchQuery) -> list[SearchQuery]:
    """The index queries that together find every flagged record the user's filters allow.

    "verdict fake OR reviewed fake" is not one SearchQuery (its filters AND together), so two
    narrowed queries run and their results are merged; a route the user's own filter rules out
    is dropped."""
    base = {"sort": "oldest"}
    found = []
    if not query.verdict or "fake" in query.verdict:
        found.append(query.model_copy(update={**base, "verdict": ["fake"]}))
    if not query.review or "fake" in query.review:
        found.append(query.model_copy(update={**base, "review": ["fake"]}))
    return found


def iter_selected(index: SearchIndex, query: SearchQuery, include_reviewed_real: bool) -> Iterator[MediaRecord]:
    """Each selected record once, paging through the index by cursor."""
    seen: set[str] = set()
    for route in routes(query):
        for record in iter_search(index, route):
            if record.media_id not in seen and selected(record, include_reviewed_real):
                seen.add(record.media_id)
                yield record


def record_links(record: MediaRecord) -> list[tuple[str, str | None]]:
    links: list[tuple[str, str | None]] = [(record.media_id, None)]
    links += [(record.media_id, other) for other in (record.duplicate_of, record.variant_of) if other]
    return links


Link = tuple[str, str | None]


def links_beyond(index: SearchIndex, links: list[Link], known: set[str]) -> list[Link]:
    """The links of records outside the selection that selected ones point to, followed on: a
    clip and its re-upload may each be linked only to an original that is not exported."""
    extra: list[Link] = []
    todo = [b for _, b in links if b is not None and b not in known]
    visited = set(known)
    while todo and len(visited) - len(known) < MAX_LINK_LOOKUPS:
        media_id = todo.pop()
        if media_id in visited:
            continue
        visited.add(media_id)
        record = index.get(media_id)
        if record is None:
            continue
        for a, b in record_links(record):
            extra.append((a, b))
            if b is not None and b not in visited:
                todo.append(b)
    return extra


def locate_media(store: ObjectStore, record: MediaRecord) -> tuple[str, str, int] | None:
    """``(key, extension, size)`` of the stored bytes of ``record``, or None when none are stored.

    The record's own key first; then the layouts that keep the bytes (flagged fakes outlive the
    media/ copy)."""
    media_id = record.media_id
    candidates: list[str] = []
    if record.objects.media:
        candidates.append(record.objects.media)
    for prefix in (f"{FLAGGED_PREFIX}{media_id}.", f"{MEDIA_PREFIX}{media_id[:2]}/{media_id}."):
        candidates.extend(sorted(store.list_keys(prefix)))
    for key in dict.fromkeys(candidates):
        try:
            validate_key(key)
            ext = check_extension(key.rpartition(".")[2]) if "." in key.rpartition("/")[2] else ""
        except InvalidKey:
            continue
        if not ext:
            continue
        try:
            info = store.stat(key)
        except NotFound:
            continue
        return key, ext, info.size
    return None
