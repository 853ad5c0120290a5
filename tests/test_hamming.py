"""The pure multi-index hashing of storage.hamming, checked against its pigeonhole promise."""

from __future__ import annotations

from math import comb

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import hamming
from storage.hamming import HASH64, HASH256, HashSpec


@st.composite
def query_and_neighbour(draw: st.DrawFn, spec: HashSpec, max_radius: int) -> tuple[int, int, int]:
    """A query, a radius and a hash within that radius of it (the worst case spreads the flips)."""
    query = draw(st.integers(0, (1 << spec.bits) - 1))
    radius = draw(st.integers(0, max_radius))
    flips = draw(st.sets(st.integers(0, spec.bits - 1), max_size=radius))
    other = query
    for p in flips:
        other ^= 1 << p
    return query, radius, other


@pytest.mark.parametrize(("spec", "max_radius"), [(HASH64, 24), (HASH256, 48)])
def test_every_hash_within_radius_shares_a_query_key(spec: HashSpec, max_radius: int) -> None:
    @settings(max_examples=300, deadline=None)
    @given(case=query_and_neighbour(spec, max_radius))
    def check(case: tuple[int, int, int]) -> None:
        query, radius, other = case
        keys = hamming.query_keys(query, radius, spec, max_keys=1 << 30)
        assert keys is not None
        assert set(keys) & set(hamming.index_keys(other, spec))

    check()


def test_query_keys_fall_back_to_a_scan_past_max_keys() -> None:
    assert hamming.count_query_keys(7, HASH64) == 8
    assert hamming.count_query_keys(16, HASH64) == 8 * (1 + 8 + comb(8, 2))
    assert hamming.query_keys(0, 16, HASH64, max_keys=8) is None
    assert hamming.query_keys(0, 7, HASH64, max_keys=8) == hamming.index_keys(0, HASH64)
    # A radius past every chunk's width enumerates whole chunks, never more.
    assert hamming.count_query_keys(1000, HASH64) == 8 * 256
    with pytest.raises(ValueError):
        hamming.query_keys(0, -1, HASH64)


def test_keys_name_their_chunk() -> None:
    # The same value in two positions must not collide.
    value = int("ab" * 8, 16)
    assert len(set(hamming.index_keys(value, HASH64))) == 8
    assert hamming.chunk_values(int("0123456789abcdef", 16), HASH64) == [0x01, 0x23, 0x45, 0x67, 0x89, 0xAB, 0xCD, 0xEF]


def test_neighbours() -> None:
    assert hamming.neighbours(0b1010, 4, 0) == [0b1010]
    got = hamming.neighbours(0b1010, 4, 2)
    assert len(got) == len(set(got)) == 1 + 4 + 6
    assert all(hamming.hamming(0b1010, n) <= 2 for n in got)


@pytest.mark.parametrize("bad", ["", "0" * 15, "0" * 17, "G" * 16, "ABCDEF0123456789", " " + "0" * 15, None])
def test_parse_hash_refuses_anything_but_exact_lower_hex(bad: object) -> None:
    with pytest.raises(ValueError):
        hamming.parse_hash(bad, HASH64)  # type: ignore[arg-type]


def test_rank_takes_the_minimum_per_id_and_sorts() -> None:
    items = [("b", [0b1111, 0b0001]), ("a", [0b0001]), ("c", [0b1111])]
    assert hamming.rank(0, items, 1) == [("a", 1), ("b", 1)]
    assert hamming.rank(0, items, 4) == [("a", 1), ("b", 1), ("c", 4)]


def test_spec_must_split_evenly() -> None:
    with pytest.raises(ValueError):
        HashSpec(bits=64, chunks=7)
