"""The manifest rows and the files made from them: pure functions from records to bytes.

One row per exported item, the same columns in every file. ``metadata.jsonl`` and
``metadata.parquet`` keep lists as lists; ``metadata.csv`` has no lists, so there they are JSON
text. Per-detector scores are one column each (``p_fake_<detector>``), the union over the items.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from deepwatch.contracts import MediaRecord

DETECTOR_PREFIX = "p_fake_"

# (name, arrow type); the detector columns go after "score".
BASE_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("file_name", pa.string()),
    ("media_id", pa.string()),
    ("sha256", pa.string()),
    ("split", pa.string()),
    ("cluster", pa.string()),
    ("label", pa.string()),
    ("verdict", pa.string()),
    ("score", pa.float64()),
]
TAIL_COLUMNS: list[tuple[str, pa.DataType]] = [
    ("ensemble", pa.string()),  # JSON text: the ensemble settings behind verdict and score (MediaRecord.ensemble)
    ("kind", pa.string()),
    ("ext", pa.string()),
    ("bytes", pa.int64()),
    ("platform", pa.string()),
    ("platforms", pa.list_(pa.string())),
    ("source_urls", pa.list_(pa.string())),
    ("sightings", pa.int64()),
    ("first_seen", pa.string()),
    ("last_seen", pa.string()),
    ("dedup", pa.string()),
    ("duplicate_of", pa.string()),
    ("variant_of", pa.string()),
    ("review_label", pa.string()),
    ("review_reviewer", pa.string()),
    ("review_at", pa.string()),
    ("review_note", pa.string()),
    ("duration", pa.float64()),
    ("width", pa.int64()),
    ("height", pa.int64()),
    ("shard", pa.string()),  # webdataset / parquet formats: the shard that holds the item
]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def manifest_row(
    record: MediaRecord, *, label: str, split: str, cluster: str, ext: str, size: int, file_name: str = ""
) -> dict[str, Any]:
    """The row of one item; ``file_name`` is filled in per file (it is relative to the file's folder)."""
    sightings = sorted(record.sightings, key=lambda s: (s.first_seen, s.canonical_url))
    review = record.review
    row: dict[str, Any] = {
        "file_name": file_name,
        "media_id": record.media_id,
        "sha256": record.fingerprints.sha256,
        "split": split,
        "cluster": cluster,
        "label": label,
        "verdict": record.verdict,
        "score": record.score,
        **{f"{DETECTOR_PREFIX}{name}": s.p_fake for name, s in sorted(record.detectors.items())},
        "ensemble": None if record.ensemble is None else record.ensemble.model_dump_json(),
        "kind": record.kind,
        "ext": ext,
        "bytes": size,
        "platform": sightings[0].platform if sightings else None,
        "platforms": sorted({s.platform for s in sightings}),
        "source_urls": [s.url for s in sightings],
        "sightings": sum(s.count for s in sightings),
        "first_seen": _iso(record.first_seen),
        "last_seen": _iso(record.last_seen),
        "dedup": record.dedup,
        "duplicate_of": record.duplicate_of,
        "variant_of": record.variant_of,
        "review_label": review.label if review else None,
        "review_reviewer": review.reviewer if review else None,
        "review_at": _iso(review.at) if review else None,
        "review_note": review.note if review else None,
        "duration": record.media.duration,
        "width": record.media.width,
        "height": record.media.height,
        "shard": None,
    }
    return row


def schema_for(
    rows: Iterable[dict[str, Any]],
    head: Sequence[tuple[str, pa.DataType]] = BASE_COLUMNS,
    tail: Sequence[tuple[str, pa.DataType]] = TAIL_COLUMNS,
) -> pa.Schema:
    """Every file's columns: the fixed ones (``head``, then the detectors', then ``tail``), with a score column
    per detector any row has."""
    detectors = sorted({k for row in rows for k in row if k.startswith(DETECTOR_PREFIX)})
    fields = [*head, *((d, pa.float64()) for d in detectors), *tail]
    return pa.schema([pa.field(name, kind) for name, kind in fields])


def _complete(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> list[dict[str, Any]]:
    return [{name: row.get(name) for name in schema.names} for row in rows]


def to_jsonl(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> bytes:
    return b"".join(
        json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for row in _complete(rows, schema)
    )


def to_csv(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=schema.names, lineterminator="\n")
    writer.writeheader()
    for row in _complete(rows, schema):
        writer.writerow({k: json.dumps(v, ensure_ascii=False) if isinstance(v, list) else v for k, v in row.items()})
    return buffer.getvalue().encode()


def to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    return pa.Table.from_pylist(_complete(rows, schema), schema=schema)


def to_parquet(rows: Sequence[dict[str, Any]], schema: pa.Schema) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(to_table(rows, schema), sink)
    return sink.getvalue().to_pybytes()


# --- the dataset card -------------------------------------------------------------------------


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid YAML scalar


def card_configs(data_files: dict[str, dict[str, str]]) -> list[str]:
    """The README's YAML ``configs`` block: ``{config: {split: glob}}``, the first one the default."""
    if not data_files:
        return []
    lines = ["configs:"]
    for number, (config, splits) in enumerate(data_files.items()):
        lines.append(f"- config_name: {config}")
        if number == 0:
            lines.append("  default: true")
        lines.append("  data_files:")
        for split, pattern in splits.items():
            lines += [f"  - split: {split}", f"    path: {_yaml_str(pattern)}"]
    return lines


def dataset_card(
    *,
    rows: Sequence[dict[str, Any]],
    data_files: dict[str, dict[str, str]],
    export_format: str,
    filters: dict[str, Any],
    include_reviewed_real: bool,
    ratios: Sequence[float],
    seed: str,
    detector_versions: dict[str, list[str]],
    missing: int,
    errors: int,
    created: datetime,
    layout: str,
    faces: int | None = None,
) -> str:
    splits = Counter(r["split"] for r in rows)
    labels = Counter(r["label"] for r in rows)
    kinds = Counter(r["kind"] for r in rows)
    clusters = len({r["cluster"] for r in rows})
    header = [
        "---",
        "pretty_name: deepwatch flagged deepfakes",
        "tags:",
        "- deepfake-detection",
        "- deepwatch",
        *card_configs(data_files),
        "---",
    ]

    def counts(counter: Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"

    face_line = "" if faces is None else f"\n- face crops: {faces} (see Files)"
    versions = "\n".join(f"- `{name}`: {', '.join(v)}" for name, v in sorted(detector_versions.items())) or "- none"
    body = f"""
# deepwatch flagged deepfakes

Media that deepwatch's detectors flagged as fake (verdict `fake`) or that a moderator labelled fake,
exported on {created.strftime("%Y-%m-%d %H:%M:%S UTC")} in the `{export_format}` format.

## Counts

- items: {len(rows)} ({sum(r["bytes"] for r in rows)} bytes of media) in {clusters} near-duplicate clusters
- splits: {counts(splits)}
- labels: {counts(labels)}
- kinds: {counts(kinds)}
- selected but left out: {missing} whose media is no longer stored, {errors} that failed their checksum{face_line}

## Selection

- filters: `{json.dumps(filters, sort_keys=True)}`
- items a reviewer labelled real: {"included (label `real`)" if include_reviewed_real else "excluded"}
- `label` is the reviewer's label when there is one, else the detectors' verdict.

## Splits

train / validation / test are assigned per near-duplicate cluster (an item with its duplicates and
variants, linked through `duplicate_of` / `variant_of`), from a hash of the cluster's smallest
media id (seed `{seed}`) with shares {" / ".join(f"{r:.2f}" for r in ratios)}, so one clip never
lands in two splits. The `cluster` column names each item's cluster.

## Detectors

{versions}

## Files

{layout}

`metadata.parquet`, `metadata.csv` and `metadata.jsonl` at the top list every item, with
`file_name` relative to the top folder. Columns: `media_id` (= `sha256` of the bytes), `split`,
`cluster`, `label`, `verdict`, `score` (the ensemble's P(fake)), `p_fake_<detector>` per detector,
`ensemble` (the Platt parameters, weights and thresholds that gave verdict and score, as JSON text; empty
for media scored before they were recorded), `kind`, `ext`, `bytes`, `platform` (of the first sighting),
`platforms`, `source_urls`, `sightings`, `first_seen`, `last_seen`, `dedup`, `duplicate_of`, `variant_of`,
`review_*`, `duration`, `width`, `height`. In the CSV, lists are JSON text.
"""
    return "\n".join(header) + "\n" + body
