"""The embedded search index: one SQLite file, safe for several processes at once.

Every write is one ``BEGIN IMMEDIATE`` transaction that reads the stored record, merges and
writes it back. IMMEDIATE takes SQLite's write lock before the read, so two processes merging into
the same record run one after the other instead of both reading the old version and one
overwriting the other's sighting. WAL mode lets readers run during a write; ``busy_timeout``
makes a writer wait for the lock instead of failing with ``database is locked``.

The record itself is stored as its JSON; the columns beside it exist only to filter and sort on.
``urls`` maps canonical URLs to records, ``hashes`` holds every perceptual hash and
``hash_chunks`` indexes them for the multi-index lookup of ``storage.hamming``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from deepwatch.contracts import MediaRecord, Sighting
from storage import hamming, merge
from storage.index import HASH_KINDS, HashKind, SearchIndexError, UnknownMedia, record_hashes

SCHEMA_VERSION = 1
# Long enough to ride out a burst of writers; each write holds the lock for milliseconds.
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS media (
        media_id TEXT PRIMARY KEY,
        doc TEXT NOT NULL,
        kind TEXT NOT NULL,
        verdict TEXT,
        score REAL,
        dedup TEXT NOT NULL,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS media_kind ON media (kind)",
    "CREATE INDEX IF NOT EXISTS media_verdict ON media (verdict)",
    "CREATE INDEX IF NOT EXISTS media_score ON media (score)",
    "CREATE INDEX IF NOT EXISTS media_dedup ON media (dedup)",
    "CREATE INDEX IF NOT EXISTS media_first_seen ON media (first_seen)",
    "CREATE INDEX IF NOT EXISTS media_last_seen ON media (last_seen)",
    "CREATE TABLE IF NOT EXISTS urls (canonical_url TEXT PRIMARY KEY, media_id TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS urls_media ON urls (media_id)",
    """CREATE TABLE IF NOT EXISTS hashes (
        media_id TEXT NOT NULL, kind TEXT NOT NULL, hash TEXT NOT NULL,
        PRIMARY KEY (media_id, kind, hash)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS hashes_kind ON hashes (kind, media_id)",
    """CREATE TABLE IF NOT EXISTS hash_chunks (
        kind TEXT NOT NULL, key INTEGER NOT NULL, media_id TEXT NOT NULL,
        PRIMARY KEY (kind, key, media_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX IF NOT EXISTS hash_chunks_media ON hash_chunks (media_id)",
]


class SqliteIndex:
    """:class:`storage.index.SearchIndex` on SQLite. Thread-safe: one connection behind a lock."""

    def __init__(self, path: Path | str, *, max_keys: int = hamming.DEFAULT_MAX_KEYS):
        self.path = str(path)
        self._max_keys = max_keys
        self._lock = threading.Lock()
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            # timeout= sets SQLite's busy_timeout. isolation_level=None: the module must not open
            # transactions behind our back; every write below says BEGIN IMMEDIATE itself.
            self._conn = sqlite3.connect(
                self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise SearchIndexError(f"cannot open index {self.path}: {exc}") from exc
        with self._write() as conn:
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise SearchIndexError(f"index {self.path} has schema {row[0]}, this code reads {SCHEMA_VERSION}")

    # --- transactions -----------------------------------------------------------------------
    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise SearchIndexError(f"index {self.path}: cannot start a write: {exc}") from exc
            try:
                yield self._conn
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise SearchIndexError(f"index {self.path}: write failed: {exc}") from exc
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._conn.execute("ROLLBACK")
                raise SearchIndexError(f"index {self.path}: commit failed: {exc}") from exc

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # A deferred transaction: several SELECTs see one snapshot (WAL), and writers go on.
        with self._lock:
            try:
                self._conn.execute("BEGIN")
            except sqlite3.Error as exc:
                raise SearchIndexError(f"index {self.path}: cannot read: {exc}") from exc
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    # --- rows -------------------------------------------------------------------------------
    @staticmethod
    def _load(conn: sqlite3.Connection, media_id: str) -> MediaRecord | None:
        row = conn.execute("SELECT doc FROM media WHERE media_id = ?", (media_id,)).fetchone()
        return None if row is None else MediaRecord.model_validate_json(row[0])

    @staticmethod
    def _store(conn: sqlite3.Connection, record: MediaRecord, *, hashes_changed: bool) -> None:
        conn.execute(
            """INSERT INTO media (media_id, doc, kind, verdict, score, dedup, first_seen, last_seen)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?)
               ON CONFLICT (media_id) DO UPDATE SET
                 doc = excluded.doc, kind = excluded.kind, verdict = excluded.verdict,
                 score = excluded.score, dedup = excluded.dedup,
                 first_seen = excluded.first_seen, last_seen = excluded.last_seen""",
            (
                record.media_id,
                record.model_dump_json(),
                record.kind,
                record.verdict,
                record.score,
                record.dedup,
                record.first_seen.timestamp(),
                record.last_seen.timestamp(),
            ),
        )
        # A URL serving new bytes (an edited post) points at the newest record written for it.
        conn.executemany(
            """INSERT INTO urls (canonical_url, media_id) VALUES (?, ?)
               ON CONFLICT (canonical_url) DO UPDATE SET media_id = excluded.media_id""",
            [(s.canonical_url, record.media_id) for s in record.sightings],
        )
        if not hashes_changed:
            return
        conn.execute("DELETE FROM hashes WHERE media_id = ?", (record.media_id,))
        conn.execute("DELETE FROM hash_chunks WHERE media_id = ?", (record.media_id,))
        for kind, spec in HASH_KINDS.items():
            values = record_hashes(record, kind)
            conn.executemany(
                "INSERT OR IGNORE INTO hashes (media_id, kind, hash) VALUES (?, ?, ?)",
                [(record.media_id, kind, h) for h in values],
            )
            keys = {k for h in values for k in hamming.index_keys(hamming.parse_hash(h, spec), spec)}
            conn.executemany(
                "INSERT OR IGNORE INTO hash_chunks (kind, key, media_id) VALUES (?, ?, ?)",
                [(kind, k, record.media_id) for k in sorted(keys)],
            )

    # --- SearchIndex ------------------------------------------------------------------------
    def upsert(self, record: MediaRecord) -> MediaRecord:
        with self._write() as conn:
            old = self._load(conn, record.media_id)
            merged = record if old is None else merge.merge_records(old, record)
            changed = old is None or old.fingerprints != merged.fingerprints
            self._store(conn, merged, hashes_changed=changed)
            return merged

    def add_sighting(self, media_id: str, sighting: Sighting) -> MediaRecord:
        with self._write() as conn:
            old = self._load(conn, media_id)
            if old is None:
                raise UnknownMedia(media_id)
            merged = merge.add_sighting(old, sighting)
            self._store(conn, merged, hashes_changed=False)
            return merged

    def get(self, media_id: str) -> MediaRecord | None:
        with self._read() as conn:
            return self._load(conn, media_id)

    def find_by_canonical_url(self, url: str) -> MediaRecord | None:
        with self._read() as conn:
            row = conn.execute(
                "SELECT m.doc FROM urls u JOIN media m ON m.media_id = u.media_id WHERE u.canonical_url = ?", (url,)
            ).fetchone()
            return None if row is None else MediaRecord.model_validate_json(row[0])

    def find_by_sha256(self, sha256: str) -> MediaRecord | None:
        # The media id is the sha256 of the bytes (the contract enforces it), so this is a get.
        return self.get(sha256)

    def near_duplicates(self, hash_hex: str, radius: int, kind: HashKind = "pdq") -> list[tuple[str, int]]:
        spec = HASH_KINDS.get(kind)
        if spec is None:
            raise ValueError(f"unknown hash kind {kind!r}: one of {', '.join(HASH_KINDS)}")
        query = hamming.parse_hash(hash_hex, spec)
        keys = hamming.query_keys(query, radius, spec, self._max_keys)
        with self._read() as conn:
            if keys is None:
                rows = conn.execute("SELECT media_id, hash FROM hashes WHERE kind = ?", (kind,)).fetchall()
            else:
                # The keys travel as one JSON parameter: no placeholder list, no variable limit.
                rows = conn.execute(
                    """SELECT media_id, hash FROM hashes WHERE kind = ? AND media_id IN (
                           SELECT media_id FROM hash_chunks
                           WHERE kind = ? AND key IN (SELECT value FROM json_each(?)))""",
                    (kind, kind, json.dumps(keys)),
                ).fetchall()
        grouped: dict[str, list[int]] = {}
        for media_id, h in rows:
            grouped.setdefault(media_id, []).append(int(h, 16))
        return hamming.rank(query, grouped.items(), radius)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
