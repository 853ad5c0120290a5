"""Per-source crawl state, persisted so that a restarted crawler does not replay everything.

Each source owns one small JSON file under ``<data_dir>/crawler/``: its cursor (whatever the source
needs to resume: a byte offset, a listing id), the ids it has recently seen (bounded, newest last,
so that the file cannot grow without end) and its last error. Files are replaced atomically: a crash
mid-write leaves the old state, never a torn file.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from pydantic import Field, ValidationError

from deepwatch.contracts import Part, Slug

log = logging.getLogger(__name__)

DEFAULT_MAX_SEEN = 5000


class SourceState(Part):
    """What one source remembers between polls. Sources return a changed copy, never mutate their input."""

    cursor: str | None = None
    seen: list[str] = Field(default_factory=list)
    last_error: str | None = None
    last_poll_at: float | None = None
    max_seen: int = Field(DEFAULT_MAX_SEEN, ge=1)
    # what `deepwatch crawl --status` shows when no crawler runs (times are Unix seconds); the totals
    # also carry the Prometheus counters across a restart
    last_success_at: float | None = None
    next_poll_at: float | None = None
    backoff_s: float = Field(0.0, ge=0)
    consecutive_failures: int = Field(0, ge=0)
    polls: int = Field(0, ge=0)
    failures: int = Field(0, ge=0)
    discovered: int = Field(0, ge=0)
    published: int = Field(0, ge=0)
    disallowed: int = Field(0, ge=0)

    def is_seen(self, item_id: str) -> bool:
        return item_id in self.seen

    def with_seen(self, ids: Iterable[str]) -> SourceState:
        """A copy that also remembers ``ids``; the oldest are forgotten past ``max_seen``."""
        known = dict.fromkeys(self.seen)
        for item_id in ids:
            known.pop(item_id, None)  # re-seen ids move to the newest end
            known[item_id] = None
        return self.model_copy(update={"seen": list(known)[-self.max_seen:]})


class StateStore:
    """Loads and saves :class:`SourceState` as ``<directory>/<source name>.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> StateStore:
        return cls(data_dir / "crawler")

    def path(self, name: Slug) -> Path:
        # source names are slugs (no "/", never starting with "."), so this stays inside the directory
        return self.directory / f"{name}.json"

    def names(self) -> list[str]:
        """The sources that have saved state here, sorted (temporary files are dot files, skipped)."""
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if not p.name.startswith("."))

    def load(self, name: Slug) -> SourceState:
        """The saved state, or a fresh one when there is none or it cannot be read (logged, not raised)."""
        path = self.path(name)
        try:
            return SourceState.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return SourceState()
        except (OSError, ValidationError) as exc:
            # a fresh state replays the source once; refusing to start would stop the crawler instead
            log.warning("ignoring unreadable crawl state %s: %s", path, exc)
            return SourceState()

    def save(self, name: Slug, state: SourceState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        data = json.dumps(state.model_dump(mode="json"), ensure_ascii=False).encode()
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path(name))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
