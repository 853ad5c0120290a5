"""``deepwatch bench index``: the embedded (SQLite) search index against the targets of issue 3.

Three figures, each with a peer measured in the same run on the same data:

- near-duplicate lookup p99 at radius 10 over N 64-bit fingerprints (N = 100k, 1M, 3M), against a
  brute-force numpy scan of the same hashes (XOR and popcount over one array);
- bulk upsert rate of realistic records, against the floor of writing the same documents into a
  plain SQLite key-value table (one executemany per batch, no merge, no side tables);
- moderation search p99 (two filters and a text term, first page of 50, total counted) over the
  full record set, as the API runs it (the in-memory mirror of ``storage.search_memory``, warm;
  the plain SQL plan's p99 and the mirror's load time are in ``params``), against the same
  question answered by a full SQLite scan of the stored JSON (``json_extract`` and ``LIKE``) —
  what the index saves over having none.

Records are synthetic but shaped like the stream's: a few sightings with titles drawn from a
Zipf-like vocabulary, two detector scores, timings, a videohash and frame hashes; one in ten is a
near-duplicate (a few bits flipped) of an earlier one, so lookups find something.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import latencies_ms, p99, report, result
from deepwatch.contracts import DetectorScore, Fingerprints, Hints, MediaRecord, Sighting
from storage.index_sqlite import SqliteIndex
from storage.query import to_query

T0 = datetime(2026, 1, 1, tzinfo=UTC)
PLATFORMS = ["youtube", "tiktok", "x", "instagram", "reddit", "facebook", "vimeo", "web"]
VERDICTS = ["real", "real", "real", "uncertain", "fake", "no_face"]
BATCH = 2000
RADIUS = 10


def log(message: str) -> None:
    print(f"bench index: {message}", file=sys.stderr, flush=True)


def vocabulary(size: int = 5000) -> tuple[list[str], list[float]]:
    words = [f"w{i}" for i in range(size)]
    weights = [1 / (rank + 1) for rank in range(size)]  # Zipf: a few words everywhere, most rare
    return words, weights


def videohashes(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` 64-bit hashes; every tenth is an earlier one with 1-8 bits flipped."""
    hashes = rng.integers(0, 2**64, size=n, dtype=np.uint64)
    variants = np.arange(10, n, 10)
    originals = rng.integers(0, variants)  # each variant copies some earlier hash
    flips = np.zeros(len(variants), dtype=np.uint64)
    for _ in range(8):
        bit = rng.integers(0, 64, size=len(variants)).astype(np.uint64)
        flips ^= (np.uint64(1) << bit) * (rng.random(len(variants)) < 0.7)
    hashes[variants] = hashes[originals] ^ flips
    return hashes


def records(start: int, stop: int, hashes: np.ndarray, *, light: bool = False) -> Iterator[MediaRecord]:
    """Records ``start .. stop``; ``light`` ones carry one bare sighting and their hashes only (the
    3M near-duplicate run needs fingerprints, not 3M full documents)."""
    rng = random.Random(start)
    words, weights = vocabulary()
    cumulative = list(itertools.accumulate(weights))  # choices() would re-add 5000 weights per call
    for i in range(start, stop):
        mid = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        first = T0 + timedelta(seconds=i * 3)
        sightings = []
        if light:
            url = f"https://web.example/{i}"
            yield MediaRecord(
                media_id=mid,
                kind="video",
                fingerprints=Fingerprints(sha256=mid, videohash=f"{int(hashes[i]):016x}"),
                sightings=[Sighting(url=url, canonical_url=url, source="bulk", platform="web",
                                    first_seen=first, last_seen=first)],
                first_seen=first,
                last_seen=first,
            )
            continue
        for j in range(rng.choice((1, 1, 1, 2, 3))):
            platform = rng.choice(PLATFORMS)
            # Random ids like a platform's video ids: real canonical URLs arrive in no useful order,
            # so the URL lookup index gets random inserts (a counter here would flatter it).
            url = f"https://{platform}.example/v/{rng.getrandbits(64):016x}"
            title = " ".join(rng.choices(words, cum_weights=cumulative, k=6))
            sightings.append(
                Sighting(
                    url=url,
                    canonical_url=url,
                    source=f"crawl-{rng.randrange(20)}",
                    platform=platform,
                    first_seen=first,
                    last_seen=first + timedelta(minutes=j),
                    hints=Hints(title=title, uploader=f"user{rng.randrange(50_000)}"),
                )
            )
        verdict = rng.choice(VERDICTS)
        score = {"real": 0.1, "uncertain": 0.5, "fake": 0.9, "no_face": None}[verdict]
        score = None if score is None else min(1.0, max(0.0, score + rng.uniform(-0.1, 0.1)))
        yield MediaRecord(
            media_id=mid,
            kind="video",
            fingerprints=Fingerprints(
                sha256=mid,
                videohash=f"{int(hashes[i]):016x}",
                pdq=[f"{rng.getrandbits(256):064x}" for _ in range(3)],
            ),
            sightings=sightings,
            first_seen=first,
            last_seen=max(s.last_seen for s in sightings),
            detectors={
                "mesonet": DetectorScore(p_fake=rng.random(), model_version="meso4-df"),
                "xception": DetectorScore(p_fake=rng.random(), model_version="xc-1"),
            }
            if score is not None
            else {},
            score=score,
            verdict=verdict,
            timings={"fetch": rng.uniform(0.2, 5), "score": rng.uniform(0.05, 1)},
        )


def batched(items: Iterator[MediaRecord], size: int) -> Iterator[list[MediaRecord]]:
    batch: list[MediaRecord] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- the three measurements -----------------------------------------------------------------
def fill(index: SqliteIndex, start: int, stop: int, hashes: np.ndarray, light: bool) -> tuple[float, list]:
    """Upsert records ``start .. stop``, a batch at a time; returns the seconds spent in
    ``upsert_many`` alone (not generating) and the first few batches, for the peer."""
    seconds = 0.0
    kept: list[list[MediaRecord]] = []
    for b in batched(records(start, stop, hashes, light=light), BATCH):
        begin = time.perf_counter()
        index.upsert_many(b)
        seconds += time.perf_counter() - begin
        if len(kept) < 5:
            kept.append(b)
    return seconds, kept


def kv_floor(batches: list[list[MediaRecord]], path: Path) -> float:
    """Records per second of the plainest possible write of the same documents."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("CREATE TABLE kv (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")
    begin = time.perf_counter()
    n = 0
    for b in batches:
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT OR REPLACE INTO kv VALUES (?, ?)", [(r.media_id, r.model_dump_json()) for r in b])
        conn.execute("COMMIT")
        n += len(b)
    seconds = time.perf_counter() - begin
    conn.close()
    return n / seconds


def near_duplicate_queries(hashes: np.ndarray, count: int, rng: np.random.Generator) -> list[int]:
    """Half are stored hashes with up to 10 bits flipped, half random."""
    picks = hashes[rng.integers(0, len(hashes), size=count // 2)]
    out = []
    for h in picks.tolist():
        for bit in rng.choice(64, size=int(rng.integers(0, RADIUS + 1)), replace=False).tolist():
            h ^= 1 << bit
        out.append(h)
    out += rng.integers(0, 2**64, size=count - len(out), dtype=np.uint64).tolist()
    return out


def numpy_scan(hashes: np.ndarray, query: int, radius: int) -> np.ndarray:
    return np.flatnonzero(np.bitwise_count(hashes ^ np.uint64(query)) <= radius)


def measure_near_duplicates(index: SqliteIndex, hashes: np.ndarray, queries: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    qs = near_duplicate_queries(hashes, queries, rng)
    index.near_duplicates(f"{qs[0]:016x}", RADIUS, kind="videohash")  # loads the memory index
    # Correctness on the way: our answer and the scan's agree on every query (as sets of hashes).
    for q in qs[:50]:
        ours = index.near_duplicates(f"{q:016x}", RADIUS, kind="videohash")
        if len(ours) != len(numpy_scan(hashes, q, RADIUS)):
            raise AssertionError(f"index and scan disagree for {q:016x}")
    ours_ms = latencies_ms(lambda q: index.near_duplicates(f"{q:016x}", RADIUS, kind="videohash"), qs)
    peer_ms = latencies_ms(lambda q: numpy_scan(hashes, q, RADIUS), qs)
    return {"ours": p99(ours_ms), "peer": p99(peer_ms), "queries": len(qs)}


SEARCH = {"verdict": ["fake", "uncertain"], "platform": ["youtube"], "text": "w3", "sort": "score_desc", "limit": 50}


def measure_search(db: Path, repeats: int, peer_repeats: int) -> dict[str, Any]:
    """p99 of the API's searches (the in-memory mirror, warm), with the SQL plan's p99 and the
    mirror's load time beside it, and the p50 per text term so that frequent words show."""
    words, _ = vocabulary()
    # The same shape of question with different words: frequent ones (w3) and rarer ones.
    terms = [words[i] for i in (3, 7, 20, 50, 150, 400)]
    queries = [to_query(**(SEARCH | {"text": t})) for t in terms]
    plans: dict[str, dict[str, Any]] = {}
    for plan, memory in (("memory", True), ("sql", False)):
        index = SqliteIndex(db, search_memory=memory)
        begin = time.perf_counter()
        for q in queries:
            index.search(q)  # loads the mirror (memory), warms the page cache (both)
        load_s = time.perf_counter() - begin
        per_term = {t: latencies_ms(index.search, [q] * max(1, repeats // (5 * len(terms))))
                    for t, q in zip(terms, queries, strict=True)}
        all_ms = latencies_ms(index.search, [queries[i % len(queries)] for i in range(repeats)])
        plans[plan] = {"p99": p99(all_ms), "first_queries_s": round(load_s, 2),
                       "p50_by_term": {t: round(float(np.median(v)), 2) for t, v in per_term.items()}}
        hits = index.search(queries[0]).total
        index.close()

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    peer_sql = """SELECT doc FROM docs WHERE
        json_extract(doc, '$.verdict') IN ('fake', 'uncertain')
        AND EXISTS (SELECT 1 FROM json_each(doc, '$.sightings') s WHERE json_extract(s.value, '$.platform') = 'youtube')
        AND (' ' || lower(doc) || ' ') LIKE ?
        ORDER BY json_extract(doc, '$.score') DESC LIMIT 50"""

    def peer(term: str) -> None:
        conn.execute(peer_sql, (f"% {term} %",)).fetchall()

    peer_ms = latencies_ms(peer, [terms[i % len(terms)] for i in range(peer_repeats)])
    conn.close()
    return {"ours": plans["memory"]["p99"], "plans": plans, "peer": p99(peer_ms), "repeats": repeats,
            "peer_repeats": peer_repeats, "hits": hits}


def run(quick: bool = False) -> dict[str, Any]:
    sizes = [10_000, 50_000] if quick else [100_000, 1_000_000, 3_000_000]
    search_at = sizes[-2]  # the targets speak of 1M records; quick mode uses its smaller size
    queries = 200 if quick else 2000
    results = []
    rng = np.random.default_rng(42)
    hashes = videohashes(sizes[-1], rng)
    with tempfile.TemporaryDirectory(prefix="deepwatch-bench-index-") as tmp:
        db = Path(tmp) / "index.sqlite3"
        index = SqliteIndex(db)
        written = full = 0
        write_seconds = 0.0
        first_batches: list[list[MediaRecord]] = []
        for n in sizes:
            light = n > search_at
            log(f"writing {'light' if light else 'full'} records {written:,} .. {n:,}")
            seconds, head = fill(index, written, n, hashes, light)
            if not light:
                first_batches = first_batches or head
                write_seconds += seconds
                full = n
            written = n
            log(f"{n:,} records; measuring near-duplicate lookups")
            nd = measure_near_duplicates(index, hashes[:n], queries, seed=n)
            results.append(
                result(
                    f"near-duplicate lookup p99, radius {RADIUS}, {n:,} fingerprints",
                    nd["ours"],
                    "ms",
                    "lower",
                    "brute-force numpy scan",
                    nd["peer"],
                    {"n": n, "radius": RADIUS, "queries": nd["queries"], "kind": "videohash (64-bit)"},
                    target=20 if n == 1_000_000 else None,
                )
            )
            if n == search_at:
                log("measuring moderation search")
                s = measure_search(db, repeats=300 if quick else 1000, peer_repeats=5 if quick else 12)
                results.append(
                    result(
                        f"moderation search p99, two filters and a text term, {n:,} records",
                        s["ours"],
                        "ms",
                        "lower",
                        "unindexed SQLite scan of the stored JSON",
                        s["peer"],
                        {"n": n, "query": SEARCH, "repeats": s["repeats"], "peer_repeats": s["peer_repeats"],
                         "hits_for_w3": s["hits"], "text_terms": "w3, w7, w20, w50, w150, w400 (Zipf ranks)",
                         "ours": "the API's plan: SqliteIndex(search_memory=True), warm",
                         "plans": s["plans"]},
                        target=50 if n == 1_000_000 else None,
                    )
                )
        index.close()
        log("measuring the key-value floor for bulk writes")
        floor = kv_floor(first_batches, Path(tmp) / "kv.sqlite3")
    results.insert(
        0,
        result(
            "bulk upsert rate",
            full / write_seconds,
            "records/s",
            "higher",
            "plain SQLite key-value insert of the same JSON",
            floor,
            {"records": full, "batch": BATCH, "per_record": "1-3 sightings, 2 detectors, 2 timings, 4 hashes",
             "urls": "random 64-bit ids (arrive in no order, like platform video ids)"},
            target=5000,
        ),
    )
    return report("index", results)
