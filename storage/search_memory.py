"""Moderation search over an in-memory column mirror of the index; pure (numpy, no I/O).

SQLite's FTS5 answers a text search with filters by intersecting posting lists, and at a million
records the lists of a frequent word and of a common filter value (``verdict: fake``) hold hundreds
of thousands of entries each: tens of milliseconds to walk, and as much again to read every match's
sort key. A long-lived process (the API) keeps instead:

- :class:`SearchColumns`: one numpy array per filter or sort field, indexed by the record's
  ``seq`` (``media.seq`` is dense: each new record takes the next number), with list values such as
  platforms as bit masks;
- :class:`TermCache`: the sorted ``seq`` list of each frequent word, read from FTS5 once.

A query is then a few vectorised comparisons over the candidates (all records, or the records
holding every word), a count, and a partial sort for one page. The caller (the SQLite backend)
keeps both caught up with the table before every query, so answers are the ones SQL would give:
the conformance tests compare the two.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from storage.query import SearchQuery, descending

# Closed vocabularies (contract literals) get fixed codes; open ones (platform, source) get bits.
VERDICTS = ("unscored", "fake", "uncertain", "real", "no_face", "error")
KINDS = ("image", "video")
DEDUPS = ("none", "url", "exact", "near")
REVIEWS = ("none", "fake", "real", "unsure")
MASK_BITS = 64
# Row layout the loader hands over (the SQLite backend selects exactly these columns).
ROW_FIELDS = ("seq", "media_id", "verdict", "kind", "dedup", "review", "score", "score_sort",
              "first_seen", "last_seen", "platforms", "sources")


class _Bits:
    """Bit positions for the values of an open vocabulary; ``full`` once 64 are taken."""

    def __init__(self) -> None:
        self.positions: dict[str, int] = {}
        self._masks: dict[tuple[str, ...], np.uint64] = {}  # few distinct lists recur over many rows

    @property
    def full(self) -> bool:
        return len(self.positions) >= MASK_BITS

    def mask(self, values: tuple[str, ...]) -> np.uint64 | None:
        """The bit mask of ``values``, assigning new bits; None when a value no longer fits."""
        known = self._masks.get(values)
        if known is not None:
            return known
        out = 0
        for value in values:
            position = self.positions.get(value)
            if position is None:
                if self.full:
                    return None
                position = self.positions[value] = len(self.positions)
            out |= 1 << position
        self._masks[values] = np.uint64(out)
        return self._masks[values]

    def query_mask(self, values: Iterable[str]) -> np.uint64:
        """Bits of the values searched for; values never seen have no bit (nothing holds them)."""
        return np.uint64(sum(1 << self.positions[v] for v in set(values) if v in self.positions))  # a set: repeats


class SearchColumns:
    """Filter and sort fields of every record by ``seq`` (row 0 unused)."""

    def __init__(self) -> None:
        self.upto = 0  # highest seq loaded
        self._size = 0
        self._grow(1024)
        self._bits = {"platform": _Bits(), "source": _Bits()}
        self.overflow: set[str] = set()  # open vocabularies past MASK_BITS values: SQL answers those

    def _grow(self, capacity: int) -> None:
        def grown(name: str, dtype: Any, fill: Any = 0) -> np.ndarray:
            array = np.full(capacity, fill, dtype=dtype)
            if self._size:
                array[: self._size] = getattr(self, name)[: self._size]
            return array

        self.present = grown("present", np.bool_, False)
        self.media_id = grown("media_id", "S32", b"")
        for name in ("verdict", "kind", "dedup", "review"):
            setattr(self, name, grown(name, np.uint8))
        for name in ("score", "score_sort", "first_seen", "last_seen"):
            setattr(self, name, grown(name, np.float64, np.nan))
        self.platform = grown("platform", np.uint64)
        self.source = grown("source", np.uint64)
        self._size = capacity

    def set_rows(self, rows: Sequence[Sequence[Any]]) -> None:
        """Load or replace rows laid out as :data:`ROW_FIELDS` (platforms and sources as lists)."""
        if not rows:
            return
        top = max(row[0] for row in rows)
        if top >= self._size:
            self._grow(max(top + 1, self._size * 2))
        seqs = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        self.present[seqs] = True
        self.media_id[seqs] = [bytes.fromhex(row[1]) for row in rows]
        for column, names, index in (("verdict", VERDICTS, 2), ("kind", KINDS, 3), ("dedup", DEDUPS, 4),
                                     ("review", REVIEWS, 5)):
            codes = {name: code for code, name in enumerate(names)}
            getattr(self, column)[seqs] = [codes[row[index]] for row in rows]
        for column, index in (("score", 6), ("score_sort", 7), ("first_seen", 8), ("last_seen", 9)):
            getattr(self, column)[seqs] = [np.nan if row[index] is None else row[index] for row in rows]
        for field, index in (("platform", 10), ("source", 11)):
            masks = [self._bits[field].mask(row[index]) for row in rows]
            if any(m is None for m in masks):
                self.overflow.add(field)
                masks = [np.uint64(0) if m is None else m for m in masks]
            getattr(self, field)[seqs] = masks
        self.upto = max(self.upto, top)

    def supports(self, query: SearchQuery) -> bool:
        """Whether :meth:`select` answers ``query`` (per-detector ranges are left to SQL)."""
        return not query.detectors and not any(getattr(query, f) for f in self.overflow)

    def select(
        self, query: SearchQuery, candidates: np.ndarray | None, snapshot: int, after: list[Any] | None
    ) -> tuple[int, list[int]]:
        """``(total, seqs of the page plus one)`` for ``query`` over records up to ``snapshot``.

        ``candidates``: sorted seqs holding every word of the text, or None without text."""
        everything = candidates is None
        rows = np.flatnonzero(self.present[: snapshot + 1]) if everything else candidates[candidates <= snapshot]
        keep = np.ones(len(rows), dtype=np.bool_)
        for column, names in (("verdict", VERDICTS), ("kind", KINDS), ("dedup", DEDUPS), ("review", REVIEWS)):
            wanted = getattr(query, column)
            if wanted:
                keep &= np.isin(getattr(self, column)[rows], [names.index(v) for v in wanted])
        for field in ("platform", "source"):
            wanted = getattr(query, field)
            if wanted:
                keep &= (getattr(self, field)[rows] & self._bits[field].query_mask(wanted)) != 0
        if query.score is not None:
            score = self.score[rows]
            keep &= (score >= query.score.min) & (score <= query.score.max)  # NaN (unscored) fails both
        if query.seen_since is not None:
            keep &= self.last_seen[rows] >= query.seen_since.timestamp()
        if query.seen_until is not None:
            keep &= self.first_seen[rows] <= query.seen_until.timestamp()
        rows = rows[keep]
        total = len(rows)
        primary = (self.score_sort if query.sort.startswith("score") else self.first_seen)[rows]
        ids = self.media_id[rows]
        desc = descending(query.sort)
        if after is not None:
            value, mark = after[0], bytes.fromhex(after[1])
            beyond = (primary < value) | ((primary == value) & (ids < mark)) if desc else (
                (primary > value) | ((primary == value) & (ids > mark))
            )
            rows, primary, ids = rows[beyond], primary[beyond], ids[beyond]
        return total, _first(rows, primary, ids, query.limit + 1, desc)


def _first(rows: np.ndarray, primary: np.ndarray, ids: np.ndarray, k: int, desc: bool) -> list[int]:
    """The ``k`` first rows ordered by ``(primary, id)``, both descending when ``desc``.

    A partition finds the k-th primary value; only rows at or beyond it (ties included) are sorted."""
    if len(rows) > k:
        kth = np.partition(-primary if desc else primary, k - 1)[k - 1]
        near = primary >= -kth if desc else primary <= kth
        rows, primary, ids = rows[near], primary[near], ids[near]
    order = np.lexsort((ids, primary))
    if desc:
        order = order[::-1]
    return rows[order[:k]].tolist()


class TermCache:
    """Sorted seqs of the records holding a word, for words with many of them (LRU-bounded).

    Each entry remembers how far it is caught up (``upto`` seq, ``change`` id of the changes log),
    so the caller can add what was written since without re-reading the whole list."""

    def __init__(self, max_terms: int = 256, min_size: int = 2048) -> None:
        self.max_terms = max_terms
        self.min_size = min_size  # rarer words are cheaper to read from FTS5 each time
        self._entries: OrderedDict[str, tuple[np.ndarray, int, int]] = OrderedDict()

    def get(self, term: str) -> tuple[np.ndarray, int, int] | None:
        entry = self._entries.get(term)
        if entry is not None:
            self._entries.move_to_end(term)
        return entry

    def put(self, term: str, seqs: np.ndarray, upto: int, change: int) -> None:
        if len(seqs) < self.min_size:
            self._entries.pop(term, None)
            return
        self._entries[term] = (seqs, upto, change)
        self._entries.move_to_end(term)
        while len(self._entries) > self.max_terms:
            self._entries.popitem(last=False)


def caught_up(seqs: np.ndarray, changed: np.ndarray, still_holding: np.ndarray, new: np.ndarray) -> np.ndarray:
    """A word's seqs after rewrites and arrivals: ``changed`` records leave the list unless they are
    in ``still_holding``; ``new`` records (all beyond the old list) are appended."""
    if len(changed):
        seqs = np.union1d(np.setdiff1d(seqs, changed, assume_unique=True), still_holding)
    if len(new):
        seqs = np.concatenate([seqs, new])
    return seqs


def intersect(lists: list[np.ndarray]) -> np.ndarray:
    """Seqs present in every sorted list, smallest list first (the others only filter it)."""
    lists = sorted(lists, key=len)
    out = lists[0]
    for other in lists[1:]:
        out = out[np.isin(out, other, assume_unique=True)]
    return out
