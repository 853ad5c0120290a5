"""The in-memory multi-index (storage.hamming_memory) returns exactly what a brute-force scan does,
through appends, tail merges and the scan fallback."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from storage import hamming
from storage import hamming_memory as hm
from storage.hamming_memory import HashMemoryIndex, words_of


def _hex(value: int, bits: int) -> str:
    return f"{value:0{bits // 4}x}"


@st.composite
def clustered(draw: st.DrawFn, bits: int, max_flips: int) -> tuple[int, list[list[int]]]:
    """A query and batches of hashes, most of them a few bits away from it."""
    query = draw(st.integers(0, (1 << bits) - 1))
    near = st.sets(st.integers(0, bits - 1), max_size=max_flips).map(lambda ps: query ^ sum(1 << p for p in ps))
    any_hash = st.integers(0, (1 << bits) - 1)
    batches = draw(st.lists(st.lists(st.one_of(near, near, any_hash), min_size=1, max_size=30), min_size=1, max_size=4))
    return query, batches


@pytest.mark.parametrize(("bits", "max_radius"), [(64, 24), (256, 48)])
def test_equals_brute_force(bits: int, max_radius: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # A tiny tail threshold, so that the examples go through sorted lookups, tails and merges.
    monkeypatch.setattr(hm, "MIN_TAIL", 8)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(case=clustered(bits, max_radius + 4), radius=st.integers(0, max_radius), max_keys=st.sampled_from([0, 8192]))
    def check(case: tuple[int, list[list[int]]], radius: int, max_keys: int) -> None:
        query, batches = case
        index = HashMemoryIndex(bits, max_keys=max_keys)
        items: list[tuple[str, list[int]]] = []
        owner = 0
        for batch in batches:
            index.add(words_of([_hex(h, bits) for h in batch], bits), np.arange(owner, owner + len(batch)))
            items += [(f"{owner + i:06d}", [h]) for i, h in enumerate(batch)]
            owner += len(batch)
            owners, distances = index.search(words_of([_hex(query, bits)], bits)[0], radius)
            got = sorted((f"{o:06d}", int(d)) for o, d in zip(owners.tolist(), distances.tolist(), strict=True))
            assert got == sorted(hamming.brute_force(query, items, radius))

    check()


def test_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        HashMemoryIndex(100)
    index = HashMemoryIndex(64)
    with pytest.raises(ValueError):
        index.add(np.zeros((2, 1), dtype=np.uint64), np.zeros(3, dtype=np.int64))
    with pytest.raises(ValueError):
        index.search(np.zeros(1, dtype=np.uint64), -1)
    assert len(index) == 0
