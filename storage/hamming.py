"""Hamming-distance search over fixed-size perceptual hashes, by multi-index hashing.

Pure: no I/O, so every index backend shares one algorithm and the tests can check it against brute
force without a database.

Each hash of ``bits`` bits is cut into ``chunks`` equal chunks, and every chunk is indexed as one
integer key ``chunk_no << chunk_bits | chunk_value`` (the chunk number is part of the key because
the same value at another position says nothing). The pigeonhole principle makes lookups exact: if
two hashes differ in at most ``r`` bits spread over ``m`` chunks, at least one chunk differs in at
most ``r // m`` bits. So the candidates for a query are the records holding, for some chunk, a
value within ``r // m`` bits of the query's chunk; the exact distance then filters out the rest.
Nothing within the radius can be missed, for any radius.

The chunk layout is fixed at write time while the radius comes with each query, so a large radius
means many neighbouring chunk values. When their number passes ``max_keys`` the lookup would cost
more than reading every hash, and :func:`query_keys` returns ``None``: the caller scans everything
(still exact, only slower).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations
from math import comb

# Beyond this many keys per query a full scan is cheaper than the lookup (a guess; the benchmark
# of issue 3 will tune it).
DEFAULT_MAX_KEYS = 4096


@dataclass(frozen=True)
class HashSpec:
    """How hashes of one size are cut into chunks."""

    bits: int
    chunks: int

    def __post_init__(self) -> None:
        if self.bits <= 0 or self.chunks <= 0 or self.bits % self.chunks:
            raise ValueError(f"{self.bits} bits do not split into {self.chunks} equal chunks")

    @property
    def chunk_bits(self) -> int:
        return self.bits // self.chunks

    @property
    def hex_length(self) -> int:
        return self.bits // 4


# videohash: 8 chunks of 8 bits, exact lookups up to radius 7 with a single key per chunk.
HASH64 = HashSpec(bits=64, chunks=8)
# PDQ: 16 chunks of 16 bits; PDQ's usual match threshold (about 31) needs one flipped bit per chunk.
HASH256 = HashSpec(bits=256, chunks=16)

_HEX = frozenset("0123456789abcdef")


def parse_hash(hex_value: str, spec: HashSpec) -> int:
    """Lower-case hex of exactly the spec's size; anything else is refused, not padded or cut."""
    if not isinstance(hex_value, str) or len(hex_value) != spec.hex_length or not set(hex_value) <= _HEX:
        raise ValueError(f"not a {spec.bits}-bit hash: {hex_value!r} (want {spec.hex_length} lower-case hex digits)")
    return int(hex_value, 16)


def hamming(a: int, b: int) -> int:
    return (a ^ b).bit_count()


def chunk_values(value: int, spec: HashSpec) -> list[int]:
    """Chunk values, most significant first, so chunk 0 is the first hex digits."""
    mask = (1 << spec.chunk_bits) - 1
    return [(value >> (spec.bits - (i + 1) * spec.chunk_bits)) & mask for i in range(spec.chunks)]


def _key(chunk_no: int, chunk_value: int, spec: HashSpec) -> int:
    return (chunk_no << spec.chunk_bits) | chunk_value


def index_keys(value: int, spec: HashSpec) -> list[int]:
    """The keys under which a stored hash is indexed: one per chunk."""
    return [_key(i, v, spec) for i, v in enumerate(chunk_values(value, spec))]


def neighbours(value: int, bits: int, max_distance: int) -> list[int]:
    """Every ``bits``-bit value within ``max_distance`` bits of ``value``, ``value`` itself first."""
    out = [value]
    for d in range(1, min(max_distance, bits) + 1):
        for positions in combinations(range(bits), d):
            flipped = value
            for p in positions:
                flipped ^= 1 << p
            out.append(flipped)
    return out


def count_query_keys(radius: int, spec: HashSpec) -> int:
    per_chunk = min(radius // spec.chunks, spec.chunk_bits)
    return spec.chunks * sum(comb(spec.chunk_bits, d) for d in range(per_chunk + 1))


def query_keys(value: int, radius: int, spec: HashSpec, max_keys: int = DEFAULT_MAX_KEYS) -> list[int] | None:
    """Keys whose holders are the candidates within ``radius``; ``None`` means scan everything.

    Sound for any radius by the pigeonhole argument in the module docstring.
    """
    if radius < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if count_query_keys(radius, spec) > max_keys:
        return None
    per_chunk = radius // spec.chunks
    keys: list[int] = []
    for i, v in enumerate(chunk_values(value, spec)):
        keys.extend(_key(i, n, spec) for n in neighbours(v, spec.chunk_bits, per_chunk))
    return keys


def rank(query: int, candidates: Iterable[tuple[str, Sequence[int]]], radius: int) -> list[tuple[str, int]]:
    """``(id, distance)`` for each id with a hash within ``radius``, the distance being the minimum
    over that id's hashes; sorted by distance, then id, so results are stable across backends."""
    best: dict[str, int] = {}
    for item_id, hashes in candidates:
        for h in hashes:
            d = hamming(query, h)
            if d <= radius and d < best.get(item_id, radius + 1):
                best[item_id] = d
    return sorted(best.items(), key=lambda item: (item[1], item[0]))


def brute_force(query: int, items: Iterable[tuple[str, Sequence[int]]], radius: int) -> list[tuple[str, int]]:
    """The reference answer: every item checked. Same as :func:`rank`; named for what tests mean."""
    return rank(query, items, radius)
