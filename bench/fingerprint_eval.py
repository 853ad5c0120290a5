"""Which pairs of the fingerprint bench's clip set are asked about, and how the answers are scored. Pure.

Three kinds of pair, each ``(a, b)`` with ``a`` a source clip:

- recall: a source and each of its own edits; the right answer is ``duplicate``;
- distinct: a source and another source, and a source and another source's edits and face swap; the right
  answer is ``different``, anything else is a false match;
- face: a face source and its face-swapped variant; the right answer is ``variant``.

The same pairs are put to ours and to the peer through one ``relation(a, b)`` function each, so both are scored
on identical questions. A relation of ``error`` (a clip that could not be fingerprinted) is a miss for recall and
for faces, and is counted apart for distinct pairs, neither a false match nor a correct answer.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.clips import FACE_SWAP, SOURCE, Clip

Relation = Callable[[Clip, Clip], str]
ERROR = "error"


@dataclass(frozen=True)
class Pairs:
    recall: list[tuple[Clip, Clip]]
    among_sources: list[tuple[Clip, Clip]]
    cross: list[tuple[Clip, Clip]]  # a source and another source's edit or face swap
    face: list[tuple[Clip, Clip]]
    cross_total: int  # before sampling

    @property
    def distinct(self) -> list[tuple[Clip, Clip]]:
        return self.among_sources + self.cross


def plan_pairs(clips: Sequence[Clip], max_cross: int | None = None, seed: int = 0) -> Pairs:
    """Every pair of the three kinds; the cross pairs (sources x others' edits, ~N^2 x 12) are a seeded sample
    of ``max_cross`` when there are more."""
    sources = {c.source: c for c in clips if c.transform == SOURCE}
    derived = [c for c in clips if c.transform != SOURCE]
    recall = [(sources[c.source], c) for c in derived if c.transform != FACE_SWAP]
    face = [(sources[c.source], c) for c in derived if c.transform == FACE_SWAP]
    ordered = [sources[k] for k in sorted(sources)]
    among = [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1:]]
    cross = [(sources[k], c) for k in sorted(sources) for c in derived if c.source != k]
    total = len(cross)
    if max_cross is not None and total > max_cross:
        cross = random.Random(seed).sample(cross, max_cross)
    return Pairs(recall, among, cross, face, total)


def same_face_photo(a: Clip, b: Clip) -> bool:
    """Two different sources that show the same face photo (over different footage): few photos, more sources."""
    if a.face is None or b.face is None:
        return False
    return a.face.split("<-")[0] == b.face.split("<-")[0]


def score(pairs: Pairs, relation: Relation) -> dict[str, Any]:
    """Recall (overall and per edit), false matches (with where they came from) and face-variant answers."""
    hits: Counter[str] = Counter()
    totals: Counter[str] = Counter()
    misses = []
    for a, b in pairs.recall:
        totals[b.transform] += 1
        answer = relation(a, b)
        if answer == "duplicate":
            hits[b.transform] += 1
        else:
            misses.append(f"s{b.source:03d}/{b.transform}: {answer}")
    among = [(a, b, relation(a, b)) for a, b in pairs.among_sources]
    cross = [(a, b, relation(a, b)) for a, b in pairs.cross]
    false_among = [(a, b, r) for a, b, r in among if r not in ("different", ERROR)]
    false_cross = [(a, b, r) for a, b, r in cross if r not in ("different", ERROR)]
    false = false_among + false_cross
    faces = Counter(relation(a, b) for a, b in pairs.face)
    return {
        "recall": sum(hits.values()) / max(1, len(pairs.recall)),
        "recall_by_edit": {t: round(hits[t] / totals[t], 4) for t in sorted(totals)},
        "misses": misses,
        "false_matches": len(false),
        "false_among_sources": len(false_among),
        "false_cross": len(false_cross),
        "false_by_relation": dict(Counter(r for _, _, r in false)),
        "false_with_same_face_photo": sum(same_face_photo(a, b) for a, b, _ in false),
        "false_examples": [f"s{a.source:03d} ~ s{b.source:03d}/{b.transform}: {r}" for a, b, r in false[:10]],
        "distinct_unanswered": sum(r == ERROR for _, _, r in among + cross),
        "face_variant": faces["variant"] / len(pairs.face) if pairs.face else None,
        "face_relations": dict(faces),
    }
