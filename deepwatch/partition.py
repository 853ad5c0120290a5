"""Which partition a key goes to: Kafka's default partitioner, computed here once per event.

Same formula as the Java client and kafka-python's ``DefaultPartitioner`` (murmur2 of the key bytes,
sign bit cleared, modulo the partition count), so an event we place ourselves lands where any other
producer of the same canonical URL (the crawler, ``deepwatch submit``, the API) puts it. Reading the key four
bytes at a time with ``struct`` makes this about twice as fast as kafka-python's byte-indexing
version, and passing the partition to ``send`` skips that partitioner's per-record sorting of the
partition list: together a measurable share of the publish path.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Sequence

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
SAME_LENGTH_BATCH = 64  # keys at least, for numpy's fixed cost to pay off (murmur2_same_length)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (unsigned 32-bit result), as ``kafka.partitioner.default.murmur2``."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    words = length // 4
    for k in struct.unpack_from(f"<{words}I", data):
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length & 3
    if tail:
        rest = data[length - tail :]
        if tail >= 3:
            h ^= rest[2] << 16
        if tail >= 2:
            h ^= rest[1] << 8
        h ^= rest[0]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h


def murmur2_same_length(keys: Sequence[bytes]) -> list[int]:
    """:func:`murmur2` of each of ``keys``, which all have the same length, computed across the keys with numpy: a
    batch of results keyed by distinct media ids (64 bytes) takes 16 vector steps rather than 16 steps a key."""
    import numpy as np

    length = len(keys[0])
    data = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(len(keys), length)
    m = np.uint32(_M)
    h = np.full(len(keys), (_SEED ^ length) & _MASK, dtype=np.uint32)  # uint32 arithmetic wraps as & _MASK does
    words = length // 4
    packed = np.ascontiguousarray(data[:, : words * 4]).view("<u4")
    for j in range(words):
        k = packed[:, j] * m
        k ^= k >> 24
        k *= m
        h = (h * m) ^ k
    tail = length & 3
    if tail:
        rest = data[:, words * 4 :].astype(np.uint32)
        if tail >= 3:
            h ^= rest[:, 2] << 16
        if tail >= 2:
            h ^= rest[:, 1] << 8
        h ^= rest[:, 0]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return h.tolist()  # type: ignore[no-any-return]


def partition_for(key: bytes, partitions: int) -> int:
    """The partition (0 .. partitions-1) the default partitioner picks for ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@functools.lru_cache(maxsize=65_536)
def _cached_index(key: bytes, partitions: int) -> int:
    return partition_for(key, partitions)


class DefaultPartitioner:
    """Kafka's default partitioner for aiokafka (Faust's ``producer_partitioner``), remembering the
    partition of recent keys: the stream worker publishes a result per event keyed by media id, and the
    reposts of a busy crawl keep naming the same few media items (aiokafka's own pure-Python murmur2 of a
    64-byte key was a visible share of publishing). Same answers as ``aiokafka.partitioner.DefaultPartitioner``."""

    def __call__(self, key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]) -> int:
        if key is None:  # no key: any partition that has a leader now, as aiokafka does
            return random.choice(available or all_partitions)
        return all_partitions[_cached_index(key, len(all_partitions))]

    def place(self, keys: Sequence[bytes], all_partitions: Sequence[int]) -> list[int]:
        """The partition of each of ``keys``, as calling this partitioner for each gives. A batch of keys of one
        length is hashed together (:func:`murmur2_same_length`): the results of a batch of reposts of distinct
        media items each missed the memory, and the hash was a fourteenth of the worker's time (bench stream)."""
        if len(keys) < SAME_LENGTH_BATCH or any(len(key) != len(keys[0]) for key in keys):
            return [self(key, all_partitions, all_partitions) for key in keys]
        n = len(all_partitions)
        return [all_partitions[(h & 0x7FFFFFFF) % n] for h in murmur2_same_length(keys)]
