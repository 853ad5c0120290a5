"""Shards for the ``webdataset`` (tar) and ``parquet`` formats: which items go together (pure),
and how one shard's bytes are made from the already checked media files.

Shards are deterministic: the same items give byte-identical shards (sorted members, fixed
times and owners), so a re-run can tell an up-to-date shard from its plan alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage.export.manifest import to_table

PARQUET_ROW_GROUP_BYTES = 64 << 20


@dataclass(frozen=True, slots=True)
class ShardItem:
    media_id: str
    ext: str
    size: int
    row: dict[str, Any]  # the manifest row (file_name is the member name inside the shard)


def plan_shards(items: Sequence[ShardItem], max_items: int, max_bytes: int) -> list[list[ShardItem]]:
    """Items (in id order) cut into shards of at most ``max_items`` and about ``max_bytes`` (an item
    larger than that gets a shard of its own)."""
    shards: list[list[ShardItem]] = []
    current: list[ShardItem] = []
    size = 0
    for item in sorted(items, key=lambda i: i.media_id):
        if current and (len(current) >= max_items or size + item.size > max_bytes):
            shards.append(current)
            current, size = [], 0
        current.append(item)
        size += item.size
    if current:
        shards.append(current)
    return shards


def plan_digest(kind: str, shard: Sequence[ShardItem]) -> str:
    """Names what a shard holds: same digest, same bytes (the members are content-addressed)."""
    data = [kind, [[i.media_id, i.ext, i.row] for i in shard]]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def write_tar(out: IO[bytes], shard: Sequence[ShardItem], media: Callable[[ShardItem], Path]) -> None:
    """A webdataset shard: per item ``<media_id>.<ext>`` and ``<media_id>.json`` (its manifest row),
    adjacent, so webdataset groups them into one sample by the key before the first dot."""
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for item in shard:
            path = media(item)
            with open(path, "rb") as handle:
                tar.addfile(_member(f"{item.media_id}.{item.ext}", item.size), handle)
            meta = json.dumps(item.row, ensure_ascii=False, sort_keys=True).encode()
            tar.addfile(_member(f"{item.media_id}.json", len(meta)), io.BytesIO(meta))


def parquet_schema(manifest: pa.Schema) -> pa.Schema:
    """The manifest's columns and ``media``: {bytes, path}, how Hugging Face stores an Image or Video."""
    return manifest.append(pa.field("media", pa.struct([("bytes", pa.binary()), ("path", pa.string())])))


def write_parquet(
    out: IO[bytes], shard: Sequence[ShardItem], media: Callable[[ShardItem], Path], manifest: pa.Schema
) -> None:
    schema = parquet_schema(manifest)
    with pq.ParquetWriter(out, schema) as writer:
        batch: list[dict[str, Any]] = []
        held = 0
        for item in shard:
            row = dict(item.row)
            row["media"] = {"bytes": media(item).read_bytes(), "path": f"{item.media_id}.{item.ext}"}
            batch.append(row)
            held += item.size
            if held >= PARQUET_ROW_GROUP_BYTES:  # bounds memory: one row group at a time
                writer.write_table(to_table(batch, schema))
                batch, held = [], 0
        if batch:
            writer.write_table(to_table(batch, schema))
