"""The face crops of an export (``ExportRequest.faces``): each face the detectors scored, as a PNG of the
pixels they read, with a manifest row of its own, for retraining face-level detectors such as MesoNet.

A record keeps where each face was (``FaceScore``: its sampled frame, box and alignment), not its pixels.
Cutting them out again means decoding the media the way scoring did, which is the serving layer's job, so
the caller hands in a :data:`CropFaces` function (the CLI and the API pass ``serve.face_crops.cropper``)
and storage keeps below serve.

Files, in every format: ``faces/<split>/<media_id>-<nnn>.png`` (``nnn``: the face's place in the record's
``face_scores``), ``faces/<split>/metadata.parquet`` with ``file_name`` relative to it (Hugging Face's
``imagefolder``), and ``faces.parquet``, ``faces.csv``, ``faces.jsonl`` at the top with ``file_name``
relative to the export. A face takes its media's split, cluster and label, so the faces of one clip never
straddle splits.

Resuming: the state file keeps, per media, the size and sha256 of each face file and a digest of the faces
they were cut for; while those files are intact and the record's faces unchanged, the media is not decoded
again.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from deepwatch.contracts import FaceScore
from deepwatch.media.errors import MediaError
from storage.errors import StorageError
from storage.export.manifest import DETECTOR_PREFIX
from storage.export.model import ExportError, ExportProgress, FacesSummary, ItemError
from storage.export.sinks import Sink

log = logging.getLogger(__name__)

# (media file, its record's scored faces, a scratch folder) -> each face's RGB pixels, None where it is gone
CropFaces = Callable[[Path, Sequence[FaceScore], Path], list[np.ndarray | None]]
FACES_DIR = "faces"
STATE_KEY = "faces"
SAVE_EVERY = 20  # media between two saves of the state file

# the fixed columns of the faces' manifests; the per-detector ones follow (manifest.schema_for)
FACE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("file_name", pa.string()),
    ("media_id", pa.string()),
    ("split", pa.string()),
    ("cluster", pa.string()),
    ("label", pa.string()),
    ("face", pa.int64()),
    ("t", pa.float64()),
    ("frame", pa.int64()),
    ("box", pa.list_(pa.int64())),
    ("aligned", pa.list_(pa.float64())),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("score", pa.float64()),
]


@dataclass(frozen=True, slots=True)
class FaceSource:
    """One exported item whose record has scored faces."""

    media_id: str
    split: str
    cluster: str
    label: str
    faces: tuple[FaceScore, ...]


@dataclass(slots=True)
class FaceTally:
    written: int = 0
    kept: int = 0
    left_out: int = 0  # faces whose frame or box is no longer in the media
    errors: list[ItemError] = field(default_factory=list)


def face_path(split: str, media_id: str, number: int) -> str:
    return f"{FACES_DIR}/{split}/{media_id}-{number:03d}.png"


def faces_digest(faces: Sequence[FaceScore]) -> str:
    """What a media's face files were cut for: a re-scored record (other faces, other boxes) is cut again."""
    text = json.dumps([f.model_dump(mode="json") for f in faces], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def face_row(source: FaceSource, number: int, width: int, height: int) -> dict[str, Any]:
    """The manifest row of one face; ``file_name`` relative to the export's top folder."""
    face = source.faces[number]
    return {
        "file_name": face_path(source.split, source.media_id, number),
        "media_id": source.media_id,
        "split": source.split,
        "cluster": source.cluster,
        "label": source.label,
        "face": number,
        "t": face.t,
        "frame": face.frame,
        "box": list(face.box),
        "aligned": None if face.aligned is None else list(face.aligned),
        "width": width,
        "height": height,
        "score": face.score,
        **{f"{DETECTOR_PREFIX}{name}": p for name, p in sorted(face.scores.items())},
    }


def png(rgb: np.ndarray) -> bytes:
    """Lossless, so the file holds exactly the pixels that were scored (a JPEG would add its own traces)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(out, "PNG")
    return out.getvalue()


def export_faces(
    sources: Sequence[FaceSource],
    stage: Callable[[str, Path], Path],
    crop_faces: CropFaces,
    sink: Sink,
    state: dict[str, Any],
    progress: Callable[[ExportProgress], None] | None = None,
    save: Callable[[], None] | None = None,
    media_bytes: int = 0,
) -> tuple[list[dict[str, Any]], FacesSummary]:
    """Write each source's face crops; returns their manifest rows and what was done. ``stage(media_id,
    scratch)`` puts the media's checked bytes in a local file; ``save`` writes ``state`` (now and then, so
    that a crashed run's successor decodes again only what was not finished); progress reports count media
    with faces, beside the ``media_bytes`` the export holds. A media that cannot be fetched or decoded is
    reported in the summary's errors and adds no face; the media itself stays in the dataset."""
    done_before: dict[str, Any] = state.setdefault(STATE_KEY, {})
    rows: list[dict[str, Any]] = []
    tally = FaceTally()
    for done, source in enumerate(sorted(sources, key=lambda s: s.media_id), start=1):
        digest = faces_digest(source.faces)
        kept = _kept(source, digest, done_before.get(source.media_id), sink)
        if kept is not None:
            rows += kept
            tally.kept += len(kept)
            tally.left_out += len(source.faces) - len(kept)  # left out last time, for the same reason
        else:
            try:
                rows += _cut(source, digest, stage, crop_faces, sink, done_before, tally)
            except (MediaError, StorageError, ExportError) as exc:
                log.error("export: the faces of %s left out: %s", source.media_id, exc)
                tally.errors.append(ItemError(media_id=source.media_id, error=str(exc)))
        if progress is not None:
            progress(ExportProgress(done, len(sources), media_bytes, source.media_id, "faces"))
        if save is not None and done % SAVE_EVERY == 0:
            save()
    summary = FacesSummary(
        crops=len(rows), written=tally.written, kept=tally.kept, left_out=tally.left_out, errors=tally.errors
    )
    return rows, summary


def _kept(source: FaceSource, digest: str, before: Any, sink: Sink) -> list[dict[str, Any]] | None:
    """The rows of faces written by an earlier run, when all of them are still intact; else None."""
    if not isinstance(before, dict) or before.get("digest") != digest:
        return None
    files = before.get("files")
    if not isinstance(files, list) or len(files) != len(source.faces):
        return None
    rows = []
    for number, entry in enumerate(files):
        if entry is None:  # not cut last time: the media has not changed, so it still cannot be
            continue
        try:
            size, sha256, width, height = entry
        except (TypeError, ValueError):
            return None
        if not sink.intact(face_path(source.split, source.media_id, number), size, sha256):
            return None
        rows.append(face_row(source, number, width, height))
    return rows


def _cut(
    source: FaceSource,
    digest: str,
    stage: Callable[[str, Path], Path],
    crop_faces: CropFaces,
    sink: Sink,
    done_before: dict[str, Any],
    tally: FaceTally,
) -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory(prefix="deepwatch-faces-") as scratch:
        media = stage(source.media_id, Path(scratch))
        crops = crop_faces(media, source.faces, Path(scratch))
    rows: list[dict[str, Any]] = []
    files: list[list[Any] | None] = []
    for number, pixels in enumerate(crops):
        if pixels is None:
            tally.left_out += 1
            files.append(None)
            continue
        data = png(pixels)
        written = sink.write(face_path(source.split, source.media_id, number), [data])
        height, width = pixels.shape[:2]
        files.append([written.size, written.sha256, width, height])
        rows.append(face_row(source, number, width, height))
        tally.written += 1
    done_before[source.media_id] = {"digest": digest, "files": files}
    return rows
