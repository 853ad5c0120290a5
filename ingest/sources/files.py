"""URL lists from a file or stdin: the batch path for researchers.

One URL per line, or JSON lines ``{"url": ..., "hints": {...}}``; blank lines and ``#`` comments are
skipped. A file source remembers the byte offset after the last complete line as its cursor, so an
appended file yields only its new lines and a half-written last line waits for the next poll. A file
that shrank (rotated, replaced) is read again from the start. Stdin (``path: "-"``) is read to its end
once; it has no offset to remember.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from pydantic import Field, ValidationError

from deepwatch.contracts import Hints, Part, parse
from ingest.fetcher import Fetcher
from ingest.sources.base import Parsed, Poll, SourceContext, SourceError, new_only
from ingest.state import SourceState

if TYPE_CHECKING:
    from ingest.crawler import SourceConfig


def parse_lines(data: bytes) -> tuple[Parsed, int]:
    """The URLs in the complete lines of ``data``, and how many bytes those lines take."""
    parsed = Parsed()
    end = data.rfind(b"\n") + 1  # an unterminated last line may still be being written
    for number, raw in enumerate(data[:end].splitlines(), start=1):
        line = raw.decode("utf-8", errors="replace").strip()
        if not line or line.startswith("#"):
            continue
        if not line.startswith("{"):
            parsed.add(line)
            continue
        try:
            record = json.loads(line)
            url = record.get("url") if isinstance(record, dict) else None
            hints = Hints.model_validate(record["hints"]) if isinstance(record, dict) and record.get("hints") else None
        except (json.JSONDecodeError, ValidationError) as exc:
            parsed.dropped.append(f"line {number}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
            continue
        if not isinstance(url, str):
            parsed.dropped.append(f"line {number}: no \"url\" string")
            continue
        parsed.add(url, hints=hints)
    return parsed, end


class FileOptions(Part):
    path: str = Field(min_length=1, description='a file of URLs, or "-" for stdin')
    max_bytes: int = Field(16 * 1024 * 1024, ge=1, description="read per poll at most")


class FileSource:
    def __init__(self, name: str, options: FileOptions, stdin: BinaryIO | None = None) -> None:
        self.name = name
        self.options = options
        self.stdin = stdin

    @classmethod
    def from_config(cls, config: SourceConfig, context: SourceContext | None = None) -> FileSource:
        return cls(config.name, parse(FileOptions, config.options))

    def poll(self, state: SourceState, fetch: Fetcher) -> Poll:
        if self.options.path == "-":
            stream = self.stdin or sys.stdin.buffer
            data = stream.read(self.options.max_bytes)
            parsed, _ = parse_lines(data if data.endswith(b"\n") or not data else data + b"\n")
            return new_only(parsed, state)
        path = Path(self.options.path)
        offset = int(state.cursor) if state.cursor and state.cursor.isdigit() else 0
        try:
            size = path.stat().st_size
            if size < offset:
                offset = 0  # truncated or replaced: start over (the seen set keeps repeats out)
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read(self.options.max_bytes)
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc}") from None
        parsed, used = parse_lines(data)
        if used == 0 and len(data) >= self.options.max_bytes:
            # a line longer than a whole read would stall the source forever: skip it
            parsed.dropped.append(f"line at byte {offset} is longer than {self.options.max_bytes} bytes")
            used = len(data)
        return new_only(parsed, state, cursor=str(offset + used))
