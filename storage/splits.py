"""Train/validation/test splits by near-duplicate cluster: pure functions, no I/O.

A re-upload, a re-encode or a face-swapped variant of one clip in train and another in test would
leak the test set into training, so splits are assigned per *cluster*: the connected components
of the ``duplicate_of`` / ``variant_of`` links. A cluster's split comes from a hash of its smallest
media id, so the same data always splits the same way, on any machine, in any order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

SPLIT_NAMES = ("train", "validation", "test")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
_BUCKETS = 1_000_000


def clusters(links: Iterable[tuple[str, str | None]]) -> dict[str, str]:
    """Each id's cluster, named by its smallest member id.

    ``links``: ``(media_id, linked_id)`` pairs (``linked_id`` None for an item without a link);
    every id mentioned is a node, so two items linked to the same third one share a cluster
    even when that third one is not exported."""
    parent: dict[str, str] = {}

    def find(node: str) -> str:
        root = parent.setdefault(node, node)
        while root != parent[root]:
            root = parent[root]
        while node != root:  # path compression keeps long chains cheap
            parent[node], node = root, parent[node]
        return root

    for a, b in links:
        root_a = find(a)
        if b is None:
            continue
        root_b = find(b)
        if root_a != root_b:
            # The smaller id becomes the root, so a root is always its cluster's smallest id.
            low, high = sorted((root_a, root_b))
            parent[high] = low
    return {node: find(node) for node in parent}


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """Shares of train, validation, test: non-negative, summing to 1 (a percentage list is scaled)."""
    values = tuple(float(r) for r in ratios)
    if len(values) != len(SPLIT_NAMES):
        raise ValueError(f"want {len(SPLIT_NAMES)} ratios ({', '.join(SPLIT_NAMES)}), got {len(values)}")
    if any(v < 0 or v != v for v in values):
        raise ValueError("ratios must be non-negative numbers")
    total = sum(values)
    if total <= 0:
        raise ValueError("ratios must not all be zero")
    return tuple(v / total for v in values)


def split_of(cluster_id: str, ratios: Sequence[float] = DEFAULT_RATIOS, seed: str = "") -> str:
    """The split of a cluster: a hash of ``seed`` and its id picks a bucket, the ratios cut the buckets.

    Hashing (rather than reading the id's hex directly) lets a ``seed`` draw another, equally
    deterministic, assignment."""
    shares = check_ratios(ratios)
    digest = hashlib.sha256(f"{seed}\0{cluster_id}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % _BUCKETS
    edge = 0.0
    for name, share in zip(SPLIT_NAMES, shares, strict=True):
        edge += share * _BUCKETS
        if bucket < round(edge):
            return name
    return next(name for name, share in zip(reversed(SPLIT_NAMES), reversed(shares), strict=True) if share > 0)


def assign_splits(
    items: Iterable[str],
    links: Iterable[tuple[str, str | None]],
    ratios: Sequence[float] = DEFAULT_RATIOS,
    seed: str = "",
) -> tuple[dict[str, str], dict[str, str]]:
    """``(split by item, cluster by item)`` for ``items``, clustered over ``links``."""
    items = list(items)
    cluster_of = clusters([*links, *((i, None) for i in items)])
    splits = {i: split_of(cluster_of[i], ratios, seed) for i in items}
    return splits, {i: cluster_of[i] for i in items}


def split_counts(splits: Mapping[str, str]) -> dict[str, int]:
    counts = dict.fromkeys(SPLIT_NAMES, 0)
    for name in splits.values():
        counts[name] += 1
    return counts
