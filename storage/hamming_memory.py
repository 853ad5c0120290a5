"""An in-memory multi-index over fixed-size hashes, vectorised with numpy; pure (no I/O).

The same pigeonhole argument as ``storage.hamming`` (read its docstring first), tuned for memory:
every hash is cut into 16-bit chunks, and for each chunk position the chunk values are kept sorted
with the permutation back to rows. A query looks up, per position, every 16-bit value within
``radius // chunks`` bits of its own chunk with ``searchsorted``; the rows found are the only
candidates, and an exact popcount keeps those within the radius. When the neighbour keys would
outnumber ``max_keys`` a vectorised full scan is cheaper, and just as exact.

Rows arrive over time (other processes keep writing), so new rows land in a small unsorted *tail*
that every query scans in full; once the tail grows past a fraction of the sorted part the two are
merged and re-sorted, which keeps appends cheap and lookups fast.

Rows are never removed: a row whose hash was replaced stays a candidate until the caller drops
it (the SQLite backend checks every candidate against its tables), so this is a candidate
generator that never misses and may over-report.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

CHUNK_BITS = 16
WORD_BITS = 64
# Past this many neighbour keys per query a full vectorised scan is cheaper than the lookups.
DEFAULT_MAX_KEYS = 8192
# The tail is merged once it holds more than this share of the sorted rows (and MIN_TAIL rows).
TAIL_SHARE = 1 / 16
MIN_TAIL = 4096


def _masks(max_flips: int) -> np.ndarray:
    """Every 16-bit mask with at most ``max_flips`` bits set (0 first)."""
    out = [0]
    for d in range(1, min(max_flips, CHUNK_BITS) + 1):
        for positions in combinations(range(CHUNK_BITS), d):
            out.append(sum(1 << p for p in positions))
    return np.array(out, dtype=np.uint16)


def words_of(hex_values: list[str], bits: int) -> np.ndarray:
    """``(n, bits/64)`` big-endian uint64 words from lower-case hex (callers validated them)."""
    n_words = bits // WORD_BITS
    if not hex_values:
        return np.zeros((0, n_words), dtype=np.uint64)
    raw = bytes.fromhex("".join(hex_values))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(len(hex_values), n_words)


class HashMemoryIndex:
    """Rows of ``bits``-bit hashes, each tagged with an int64 ``owner`` (e.g. a record's sequence)."""

    def __init__(self, bits: int, *, max_keys: int = DEFAULT_MAX_KEYS):
        if bits % WORD_BITS:
            raise ValueError(f"{bits} bits is not a whole number of 64-bit words")
        self.bits = bits
        self.words = bits // WORD_BITS
        self.chunks = bits // CHUNK_BITS
        self.max_keys = max_keys
        self._hashes = np.zeros((0, self.words), dtype=np.uint64)
        self._owners = np.zeros(0, dtype=np.int64)
        self._sorted_rows = 0  # rows [0, _sorted_rows) are in the sorted chunk tables
        self._chunk_values: list[np.ndarray] = []  # per position: sorted chunk values
        self._chunk_rows: list[np.ndarray] = []  # per position: row of each sorted value
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self._owners) + sum(len(o) for _, o in self._pending)

    # --- writes -----------------------------------------------------------------------------
    def add(self, hashes: np.ndarray, owners: np.ndarray) -> None:
        """Append rows: ``hashes`` is ``(n, words)`` uint64, ``owners`` ``(n,)`` int64."""
        hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1, self.words)
        owners = np.asarray(owners, dtype=np.int64)
        if len(hashes) != len(owners):
            raise ValueError("one owner per hash")
        if len(owners):
            # Collected, and concatenated once per query: many small appends stay linear.
            self._pending.append((hashes, owners))

    def _chunk(self, hashes: np.ndarray, position: int) -> np.ndarray:
        word, within = divmod(position * CHUNK_BITS, WORD_BITS)
        shift = np.uint64(WORD_BITS - CHUNK_BITS - within)
        return ((hashes[:, word] >> shift) & np.uint64(0xFFFF)).astype(np.uint16)

    def _settle(self) -> None:
        if self._pending:
            self._hashes = np.concatenate([self._hashes, *(h for h, _ in self._pending)])
            self._owners = np.concatenate([self._owners, *(o for _, o in self._pending)])
            self._pending.clear()
        tail = len(self._owners) - self._sorted_rows
        if tail > max(MIN_TAIL, self._sorted_rows * TAIL_SHARE):
            self._chunk_values, self._chunk_rows = [], []
            for position in range(self.chunks):
                values = self._chunk(self._hashes, position)
                order = np.argsort(values, kind="stable")
                self._chunk_values.append(values[order])
                self._chunk_rows.append(order.astype(np.int64))
            self._sorted_rows = len(self._owners)

    # --- reads ------------------------------------------------------------------------------
    def _distances(self, rows: np.ndarray | slice, query: np.ndarray) -> np.ndarray:
        return np.bitwise_count(self._hashes[rows] ^ query).sum(axis=1, dtype=np.int64)

    def search(self, query_words: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
        """``(owners, distances)`` of every row within ``radius`` (an owner may appear once per row)."""
        if radius < 0:
            raise ValueError(f"radius must be >= 0, got {radius}")
        self._settle()
        query = np.asarray(query_words, dtype=np.uint64).reshape(1, self.words)
        per_chunk = radius // self.chunks
        masks = _masks(per_chunk) if per_chunk < CHUNK_BITS else None
        if masks is None or len(masks) * self.chunks > self.max_keys or self._sorted_rows == 0:
            rows: np.ndarray | slice = slice(None)
        else:
            found = [np.arange(self._sorted_rows, len(self._owners), dtype=np.int64)]  # the tail, in full
            for position in range(self.chunks):
                keys = np.unique(self._chunk(query, position)[0] ^ masks)
                values = self._chunk_values[position]
                lo = np.searchsorted(values, keys, side="left")
                hi = np.searchsorted(values, keys, side="right")
                found.extend(self._chunk_rows[position][a:b] for a, b in zip(lo, hi, strict=True) if b > a)
            rows = np.unique(np.concatenate(found))
        distances = self._distances(rows, query)
        keep = distances <= radius
        owners = self._owners[rows][keep]
        return owners, distances[keep]
