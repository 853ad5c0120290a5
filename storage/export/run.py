"""``run_export``: select, cluster, split, copy (checked, resumable), and write manifests and card.

Callable from the CLI now and from an API background task later::

    summary = run_export(settings, ExportRequest(out="/data/fakes"), progress=callback)

Resuming is by content: a media file already at its place with the right size and sha256 (its id)
is kept, anything else is written again; a shard is kept when the state file says it was made
from the same plan and it is still intact. So a re-run after a crash, or after files were
deleted or damaged, copies only what is missing or wrong.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from storage.errors import StorageError
from storage.export.faces import FACE_COLUMNS, FACES_DIR, CropFaces, FaceSource, export_faces
from storage.export.manifest import dataset_card, manifest_row, schema_for, to_csv, to_jsonl, to_parquet
from storage.export.model import (
    MAX_IDS_REPORTED,
    ChecksumMismatch,
    ExportError,
    ExportProgress,
    ExportRequest,
    ExportSummary,
    FacesSummary,
    ItemError,
    MissingMedia,
)
from storage.export.select import iter_selected, label_of, links_beyond, locate_media, record_links
from storage.export.shards import ShardItem, plan_digest, plan_shards, write_parquet, write_tar
from storage.export.sinks import CHUNK, Sink, open_sink
from storage.index import SearchIndex, SearchIndexError, open_index
from storage.objects import ObjectStore, open_object_store
from storage.splits import SPLIT_NAMES, assign_splits

if TYPE_CHECKING:
    from deepwatch.contracts import FaceScore
    from deepwatch.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "export-state.json"
STATE_VERSION = 1
Progress = Callable[[ExportProgress], None]


@dataclass(slots=True)
class _Item:
    media_id: str
    kind: str
    key: str
    ext: str
    size: int
    row: dict[str, Any]
    split: str = ""
    faces: tuple[FaceScore, ...] = ()  # with faces requested: the record's scored faces


@dataclass(slots=True)
class _Tally:
    total: int
    done: int = 0
    bytes: int = 0
    copied: int = 0
    copied_bytes: int = 0
    kept: int = 0
    replaced: int = 0
    errors: list[ItemError] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    progress: Progress | None = None

    def step(self, item: _Item | None, action: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(ExportProgress(self.done, self.total, self.bytes, item.media_id if item else None, action))

    def fail(self, item: _Item, error: Exception) -> None:
        log.error("export: %s left out: %s", item.media_id, error)
        self.errors.append(ItemError(media_id=item.media_id, error=str(error)))
        self.failed.add(item.media_id)
        self.step(item, "error")


def run_export(
    settings: Settings,
    request: ExportRequest,
    progress: Progress | None = None,
    *,
    index: SearchIndex | None = None,
    store: ObjectStore | None = None,
    crop_faces: CropFaces | None = None,
) -> ExportSummary:
    """Run one export to the end; raises ExportError when it cannot run at all. Items that cannot be
    exported (media gone, checksum wrong) are reported in the summary, not raised. ``crop_faces`` cuts the
    scored faces out of a media file (:mod:`storage.export.faces`); ``request.faces`` needs it."""
    started, clock = datetime.now(UTC), time.monotonic()
    if request.faces and crop_faces is None:
        raise ExportError("face crops were asked for, but this caller cannot decode media to cut them out")
    own_index = index is None
    try:
        if index is None:
            index = open_index(settings)
        if store is None:
            store = open_object_store(settings)
        sink = open_sink(request.out, settings, store)
        return _export(index, store, sink, request, progress, started, clock, crop_faces)
    except (SearchIndexError, StorageError) as exc:
        raise ExportError(str(exc)) from exc
    finally:
        if own_index and index is not None:
            index.close()


def _export(
    index: SearchIndex,
    store: ObjectStore,
    sink: Sink,
    request: ExportRequest,
    progress: Progress | None,
    started: datetime,
    clock: float,
    crop_faces: CropFaces | None,
) -> ExportSummary:
    items, missing, links, versions = _collect(index, store, request)
    known = {i.media_id for i in items} | set(missing)
    links += links_beyond(index, links, known)
    splits, cluster_of = assign_splits(known, links, request.ratios, request.seed)
    for item in items:
        item.split = item.row["split"] = splits[item.media_id]
        item.row["cluster"] = cluster_of[item.media_id]

    tally = _Tally(total=len(items), progress=progress)
    state = _load_state(sink)
    # One schema for every file of the export: loaders compare the columns of shards and splits.
    schema = schema_for([i.row for i in items])
    if request.format == "hf":
        _write_folders(items, store, sink, tally)
    else:
        _write_shards(items, store, sink, request, schema, state, tally)

    exported = sorted((i for i in items if i.media_id not in tally.failed), key=lambda i: i.row["file_name"])
    rows = [i.row for i in exported]
    files = []
    if request.format == "hf":
        for (kind, split), group in _folders(exported).items():
            local = [{**i.row, "file_name": i.row["file_name"].rpartition("/")[2]} for i in group]
            files.append(_put_small(sink, f"{kind}s/{split}/metadata.parquet", to_parquet(local, schema)))
    files.append(_put_small(sink, "metadata.parquet", to_parquet(rows, schema)))
    files.append(_put_small(sink, "metadata.csv", to_csv(rows, schema)))
    files.append(_put_small(sink, "metadata.jsonl", to_jsonl(rows, schema)))
    faces: FacesSummary | None = None
    if request.faces and crop_faces is not None:
        faces = _write_faces(exported, store, sink, crop_faces, state, progress, files, tally.bytes)
    card = dataset_card(
        rows=rows,
        data_files=_data_files(request.format, exported),
        export_format=request.format,
        filters=request.query.model_dump(mode="json", exclude={"limit", "cursor", "sort"}, exclude_defaults=True),
        include_reviewed_real=request.include_reviewed_real,
        ratios=request.ratios,
        seed=request.seed,
        detector_versions={name: sorted(v) for name, v in versions.items()},
        missing=len(missing),
        errors=len(tally.errors),
        created=started,
        layout=_LAYOUTS[request.format] + (_FACES_LAYOUT if faces is not None else ""),
        faces=None if faces is None else faces.crops,
    )
    files.append(_put_small(sink, "README.md", card.encode()))
    state["finished_at"] = datetime.now(UTC).isoformat()
    _save_state(sink, state)
    files.append(STATE_FILE)
    counts = Counter(i.split for i in exported)
    return ExportSummary(
        items=len(exported),
        bytes=sum(i.size for i in exported),
        out=sink.location,
        format=request.format,
        splits={name: counts.get(name, 0) for name in SPLIT_NAMES},
        labels=dict(sorted(Counter(r["label"] for r in rows).items())),
        copied=tally.copied,
        copied_bytes=tally.copied_bytes,
        kept=tally.kept,
        replaced=tally.replaced,
        missing=MissingMedia(count=len(missing), ids=sorted(missing)[:MAX_IDS_REPORTED]),
        errors=tally.errors,
        files=files,
        faces=faces,
        started_at=started,
        seconds=round(time.monotonic() - clock, 3),
    )


def _collect(
    index: SearchIndex, store: ObjectStore, request: ExportRequest
) -> tuple[list[_Item], list[str], list[tuple[str, str | None]], dict[str, set[str]]]:
    """The selected items with their stored media, the ids whose media is gone, every link, and
    each detector's model versions. Only what the export needs is kept of each record."""
    items: list[_Item] = []
    missing: list[str] = []
    links: list[tuple[str, str | None]] = []
    versions: dict[str, set[str]] = defaultdict(set)
    for record in iter_selected(index, request.query, request.include_reviewed_real):
        links += record_links(record)
        located = locate_media(store, record)
        if located is None:
            log.warning("export: no stored media for %s", record.media_id)
            missing.append(record.media_id)
            continue
        for name, score in record.detectors.items():
            versions[name].add(score.model_version)
        key, ext, size = located
        row = manifest_row(record, label=label_of(record), split="", cluster="", ext=ext, size=size)
        faces = tuple(record.face_scores) if request.faces else ()
        items.append(_Item(record.media_id, record.kind, key, ext, size, row, faces=faces))
    return items, missing, links, versions


def _chunks(store: ObjectStore, key: str) -> Iterator[bytes]:
    with store.get(key) as stream:
        yield from stream.iter_chunks(CHUNK)


# --- the hf format: one file per item -------------------------------------------------------------


def _folders(items: list[_Item]) -> dict[tuple[str, str], list[_Item]]:
    groups: dict[tuple[str, str], list[_Item]] = defaultdict(list)
    for item in items:
        groups[(item.kind, item.split)].append(item)
    return dict(sorted(groups.items()))


def _write_folders(items: list[_Item], store: ObjectStore, sink: Sink, tally: _Tally) -> None:
    for item in sorted(items, key=lambda i: i.media_id):
        path = f"{item.kind}s/{item.split}/{item.media_id}.{item.ext}"
        item.row["file_name"] = path
        if sink.intact(path, item.size, item.media_id):
            tally.kept += 1
            tally.bytes += item.size
            tally.step(item, "kept")
            continue
        damaged = sink.exists(path)
        try:
            written = sink.write(path, _chunks(store, item.key), expect_sha256=item.media_id, media_id=item.media_id)
        except ChecksumMismatch as exc:  # name the stored copy, which is what is wrong
            tally.fail(item, ChecksumMismatch(item.media_id, f"{store.location}/{item.key}", exc.actual))
            continue
        except StorageError as exc:
            tally.fail(item, exc)
            continue
        tally.copied += 1
        tally.copied_bytes += written.size
        tally.bytes += written.size
        if damaged:
            log.warning("export: %s was damaged at %s; written again", item.media_id, path)
            tally.replaced += 1
        tally.step(item, "replaced" if damaged else "copied")


# --- the webdataset and parquet formats: shards ---------------------------------------------------


def _write_shards(
    items: list[_Item],
    store: ObjectStore,
    sink: Sink,
    request: ExportRequest,
    schema: pa.Schema,
    state: dict[str, Any],
    tally: _Tally,
) -> None:
    # webdataset: a shard per kind, since a sample's fields are named by extension and readers
    # (Hugging Face's among them) want the same fields in every sample of a shard.
    by_split: dict[tuple[str, str], list[_Item]] = defaultdict(list)
    for item in items:
        by_split[(item.kind if request.format == "webdataset" else "", item.split)].append(item)
    for (kind, split), members in sorted(by_split.items(), key=lambda g: (g[0][0], SPLIT_NAMES.index(g[0][1]))):
        group = {i.media_id: i for i in members}
        shards = plan_shards(
            [ShardItem(i.media_id, i.ext, i.size, i.row) for i in group.values()],
            request.shard_max_items,
            request.shard_max_bytes,
        )
        for number, shard in enumerate(shards):
            if request.format == "webdataset":
                path = f"{kind}s/{split}/{split}-{number:06d}.tar"
            else:
                path = f"data/{split}-{number:05d}-of-{len(shards):05d}.parquet"
            for s in shard:
                s.row["file_name"] = f"{s.media_id}.{s.ext}"
                s.row["shard"] = path
            _write_shard(path, [group[s.media_id] for s in shard], shard, store, sink, request, schema, state, tally)


def _write_shard(
    path: str,
    items: list[_Item],
    shard: list[ShardItem],
    store: ObjectStore,
    sink: Sink,
    request: ExportRequest,
    schema: pa.Schema,
    state: dict[str, Any],
    tally: _Tally,
) -> None:
    plan = plan_digest(f"{request.format} {schema}", shard)
    before = state["files"].get(path)
    if before and before.get("plan") == plan and sink.intact(path, before["size"], before["sha256"]):
        left_out = set(before.get("left_out") or [])
        if not left_out or _still_bad([i for i in items if i.media_id in left_out], store, tally):
            for item in items:
                if item.media_id not in left_out:
                    tally.kept += 1
                    tally.bytes += item.size
                    tally.step(item, "kept")
            return
    with tempfile.TemporaryDirectory(prefix="deepwatch-shard-") as scratch:
        staged: dict[str, Path] = {}
        for item in items:
            try:
                staged[item.media_id] = _stage(store, item, Path(scratch))
            except (ChecksumMismatch, StorageError) as exc:
                tally.fail(item, exc)
        kept = [s for s in shard if s.media_id in staged]
        if not kept:
            return
        with tempfile.TemporaryFile(dir=scratch) as out:
            if request.format == "webdataset":
                write_tar(out, kept, lambda s: staged[s.media_id])
            else:
                write_parquet(out, kept, lambda s: staged[s.media_id], schema)
            out.seek(0)
            damaged = sink.exists(path)
            written = sink.write(path, iter(lambda: out.read(CHUNK), b""))
    # Items that failed their checksum are noted: a re-run checks only them again, and remakes
    # the shard only once they are fixed.
    left_out = sorted(i.media_id for i in items if i.media_id not in staged)
    state["files"][path] = {"plan": plan, "size": written.size, "sha256": written.sha256, "left_out": left_out}
    _save_state(sink, state)
    tally.copied += 1
    tally.copied_bytes += written.size
    if damaged:
        tally.replaced += 1
    for item in items:
        if item.media_id in staged:
            tally.bytes += item.size
            tally.step(item, "replaced" if damaged else "copied")


def _still_bad(items: list[_Item], store: ObjectStore, tally: _Tally) -> bool:
    """True when every one of ``items`` still fails its checksum (each is reported again)."""
    errors: list[tuple[_Item, Exception]] = []
    with tempfile.TemporaryDirectory(prefix="deepwatch-check-") as scratch:
        for item in items:
            try:
                _stage(store, item, Path(scratch))
            except (ChecksumMismatch, StorageError) as exc:
                errors.append((item, exc))
            else:
                return False
    for item, exc in errors:
        tally.fail(item, exc)
    return True


def _stage(store: ObjectStore, item: _Item, scratch: Path) -> Path:
    """The item's bytes in a local file, checked against its id before any shard holds them."""
    target = scratch / f"{item.media_id}.{item.ext}"
    digest = hashlib.sha256()
    with open(target, "wb") as out:
        for chunk in _chunks(store, item.key):
            out.write(chunk)
            digest.update(chunk)
    if digest.hexdigest() != item.media_id:
        target.unlink()
        raise ChecksumMismatch(item.media_id, f"{store.location}/{item.key}", digest.hexdigest())
    return target


# --- face crops -----------------------------------------------------------------------------------


def _write_faces(
    exported: list[_Item],
    store: ObjectStore,
    sink: Sink,
    crop_faces: CropFaces,
    state: dict[str, Any],
    progress: Progress | None,
    files: list[str],
    media_bytes: int,
) -> FacesSummary:
    """The exported items' face crops and their manifests (appended to ``files``)."""
    by_id = {i.media_id: i for i in exported}
    sources = [FaceSource(i.media_id, i.split, i.row["cluster"], i.row["label"], i.faces) for i in exported if i.faces]
    rows, summary = export_faces(
        sources,
        lambda media_id, scratch: _stage(store, by_id[media_id], scratch),
        crop_faces,
        sink,
        state,
        progress,
        save=lambda: _save_state(sink, state),
        media_bytes=media_bytes,
    )
    files += _face_manifests(sink, rows)
    return summary


def _face_manifests(sink: Sink, rows: list[dict[str, Any]]) -> list[str]:
    """``faces.*`` at the top (``file_name`` from there) and a ``metadata.parquet`` in each split's folder
    (``file_name`` from that folder, as Hugging Face's imagefolder reads it)."""
    schema = schema_for(rows, FACE_COLUMNS, ())
    files = []
    by_split: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_split[row["split"]].append({**row, "file_name": row["file_name"].rpartition("/")[2]})
    for split, local in sorted(by_split.items()):
        files.append(_put_small(sink, f"{FACES_DIR}/{split}/metadata.parquet", to_parquet(local, schema)))
    files.append(_put_small(sink, f"{FACES_DIR}.parquet", to_parquet(rows, schema)))
    files.append(_put_small(sink, f"{FACES_DIR}.csv", to_csv(rows, schema)))
    files.append(_put_small(sink, f"{FACES_DIR}.jsonl", to_jsonl(rows, schema)))
    return files


# --- small files, state ---------------------------------------------------------------------------


def _put_small(sink: Sink, path: str, data: bytes) -> str:
    """Write a manifest unless the same bytes are already there (re-runs leave unchanged files be)."""
    if not sink.intact(path, len(data), hashlib.sha256(data).hexdigest()):
        sink.write(path, [data])
    return path


def _load_state(sink: Sink) -> dict[str, Any]:
    fresh: dict[str, Any] = {"version": STATE_VERSION, "files": {}}
    raw = sink.read(STATE_FILE)
    if raw is None:
        return fresh
    try:
        state = json.loads(raw)
        ok = state.get("version") == STATE_VERSION and isinstance(state.get("files"), dict)
    except (ValueError, AttributeError):
        ok = False
    if not ok:
        log.warning("export: %s is not ours or unreadable; every shard is checked afresh", STATE_FILE)
        return fresh
    state["files"] = {k: v for k, v in state["files"].items() if _state_entry(v)}
    return state


def _state_entry(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("size"), int)
        and isinstance(value.get("sha256"), str)
        and (value.get("plan") is None or isinstance(value.get("plan"), str))
        and isinstance(value.get("left_out", []), list)
    )


def _save_state(sink: Sink, state: dict[str, Any]) -> None:
    try:
        _put_small(sink, STATE_FILE, json.dumps(state, sort_keys=True, indent=1).encode())
    except (ExportError, StorageError) as exc:
        raise ExportError(f"cannot save {STATE_FILE}: {exc}") from exc


def _data_files(export_format: str, items: list[_Item]) -> dict[str, dict[str, str]]:
    present = sorted({(i.split, i.kind) for i in items}, key=lambda p: (SPLIT_NAMES.index(p[0]), p[1]))
    splits = [s for s in SPLIT_NAMES if any(p[0] == s for p in present)]
    if export_format in ("hf", "webdataset"):
        # `datasets` infers one builder for all of a card's configs (from the first one), so the
        # card names one kind; each <kind>s/ folder also loads on its own (split folders inside).
        for kind in ("video", "image"):
            mine = {split: f"{kind}s/{split}/*" for split, k in present if k == kind}
            if mine:
                return {f"{kind}s": mine}
        return {}
    return {"default": {s: f"data/{s}-*.parquet" for s in splits}}


_LAYOUTS = {
    "hf": (
        "Hugging Face `videofolder` / `imagefolder` layout, one folder per kind:\n"
        "`videos/<split>/<media_id>.<ext>` and `images/<split>/<media_id>.<ext>`, each split folder with a\n"
        "`metadata.parquet` whose `file_name` is relative to it. `datasets.load_dataset(\"<this folder>/videos\")`\n"
        "and `load_dataset(\"<this folder>/images\")` load each kind with its metadata and splits; the YAML\n"
        "header above points `load_dataset(\"<this folder>\")` at the first kind."
    ),
    "webdataset": (
        "WebDataset tar shards per kind, `videos/<split>/<split>-NNNNNN.tar` and\n"
        "`images/<split>/<split>-NNNNNN.tar`: per item `<media_id>.<ext>` and `<media_id>.json` (its\n"
        "manifest row), adjacent. The `shard` column says which shard holds an item."
    ),
    "parquet": (
        "Parquet shards `data/<split>-NNNNN-of-NNNNN.parquet`: the manifest columns and `media`\n"
        "(`bytes`, `path`), the way Hugging Face stores images and videos in Parquet."
    ),
}

_FACES_LAYOUT = (
    "\n\nFace crops (`faces/`, in every format): each face the detectors scored, as the PNG of the pixels they\n"
    "read (the face's square, turned upright when it was aligned by its landmarks, before each detector's\n"
    "resize), at `faces/<split>/<media_id>-<nnn>.png`; `nnn` is the face's place in the record's\n"
    "`face_scores`. `faces.parquet`, `faces.csv` and `faces.jsonl` list them with `file_name` from the top\n"
    "folder; `faces/<split>/metadata.parquet` from its own folder, so `load_dataset(\"<this folder>/faces\")`\n"
    "loads them as an `imagefolder`. Columns: `media_id`, `split`, `cluster`, `label` (all the media's),\n"
    "`face`, `t` and `frame` (when, and which sampled frame), `box` (x, y, w, h in that frame's pixels),\n"
    "`aligned` (centre x, y, side and roll in degrees of the square, for an aligned face), `width`, `height`,\n"
    "`score` (the face's ensemble P(fake)) and `p_fake_<detector>` for the face. A fake clip's label is every\n"
    "one of its faces' label, although a swap may have touched only some of them: the per-face scores tell."
)
