"""What an export is asked to do (:class:`ExportRequest`) and what it did (:class:`ExportSummary`).

Both are contracts: the CLI builds a request from flags today, and the API can build the very same
one from a JSON body later (``POST /v1/exports``), with errors that name the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AwareDatetime, Field, field_validator

from deepwatch.contracts import Part, Sha256Hex
from storage.query import SearchQuery
from storage.splits import DEFAULT_RATIOS, check_ratios

ExportFormat = Literal["hf", "webdataset", "parquet"]
FORMATS: tuple[str, ...] = ("hf", "webdataset", "parquet")

# Same rule as the s3_bucket setting: what S3 accepts as a bucket name, less the odd corners.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
MAX_IDS_REPORTED = 1000


class ExportError(Exception):
    """The export could not run (bad destination, index or store failure)."""


class ChecksumMismatch(ExportError):
    """Bytes whose sha256 is not the id they were stored under: never written as that item."""

    def __init__(self, media_id: str, where: str, actual: str):
        self.media_id = media_id
        self.actual = actual
        super().__init__(f"media {media_id}: the bytes at {where} hash to {actual}, not to the media id")


def split_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → ``("bucket", "some/prefix/")`` (prefix "" for the bucket root)."""
    rest = url[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.fullmatch(bucket):
        raise ValueError(f"{bucket!r} is not an S3 bucket name (3-63 of a-z, 0-9, '.', '-')")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class ExportRequest(Part):
    """One dataset export. ``query`` narrows the selection; the limit, cursor and sort are ignored."""

    out: Annotated[str, Field(min_length=1, max_length=4096)] = Field(
        description="a directory, s3://bucket/prefix (the settings' S3 endpoint), or store:NAME (exports/NAME/ "
        "in the object store)"
    )
    query: SearchQuery = Field(default_factory=SearchQuery)
    include_reviewed_real: bool = Field(False, description="also export flagged items a reviewer labelled real")
    format: ExportFormat = "hf"
    ratios: tuple[float, float, float] = Field(DEFAULT_RATIOS, description="train, validation, test shares")
    seed: Annotated[str, Field(max_length=200)] = Field("", description="another seed draws other (fixed) splits")
    shard_max_items: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    shard_max_bytes: Annotated[int, Field(ge=1)] = 1 << 30
    faces: bool = Field(
        False,
        description="also write each scored face as the detectors read it (PNG under faces/, with faces.parquet, "
        ".csv and .jsonl), decoding the media again",
    )

    @field_validator("out")
    @classmethod
    def _out(cls, value: str) -> str:
        if any(ord(ch) < 32 for ch in value):
            raise ValueError("must not contain control characters")
        if value.startswith("s3://"):
            _, prefix = split_s3_url(value)
            if prefix:
                from storage.keys import validate_prefix

                validate_prefix(prefix)
        elif value.startswith("store:"):
            from storage.keys import check_export_name

            check_export_name(value[len("store:") :])
        elif "://" in value:
            raise ValueError("a directory, s3://bucket/prefix or store:NAME")
        return value

    @field_validator("ratios")
    @classmethod
    def _ratios(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        return check_ratios(value)  # type: ignore[return-value]


class ItemError(Part):
    media_id: Sha256Hex
    error: str


class MissingMedia(Part):
    count: Annotated[int, Field(ge=0)] = 0
    ids: list[Sha256Hex] = Field(default_factory=list, description=f"the first {MAX_IDS_REPORTED}")


class FacesSummary(Part):
    crops: Annotated[int, Field(ge=0)] = Field(description="face files in the dataset")
    written: Annotated[int, Field(ge=0)] = Field(description="face files written by this run")
    kept: Annotated[int, Field(ge=0)] = Field(description="already there and intact from an earlier run")
    left_out: Annotated[int, Field(ge=0)] = Field(description="scored faces whose frame or box is no longer there")
    errors: list[ItemError] = Field(default_factory=list, description="media whose faces could not be cut, with why")


class ExportSummary(Part):
    items: Annotated[int, Field(ge=0)] = Field(description="items in the dataset")
    bytes: Annotated[int, Field(ge=0)] = Field(description="media bytes in the dataset")
    out: str
    format: ExportFormat
    splits: dict[str, int]
    labels: dict[str, int]
    copied: Annotated[int, Field(ge=0)] = Field(description="media files (or shards) written by this run")
    copied_bytes: Annotated[int, Field(ge=0)]
    kept: Annotated[int, Field(ge=0)] = Field(description="already there and intact from an earlier run")
    replaced: Annotated[int, Field(ge=0)] = Field(description="already there but damaged: written again")
    missing: MissingMedia = Field(description="selected items whose media is no longer stored")
    errors: list[ItemError] = Field(default_factory=list, description="items left out, with why")
    files: list[str] = Field(description="manifests and card written, relative to out")
    faces: FacesSummary | None = Field(None, description="with ``faces`` requested: the face crops")
    started_at: AwareDatetime
    seconds: float


@dataclass(frozen=True, slots=True)
class ExportProgress:
    """One step of an export, for a progress bar or a status endpoint."""

    done: int
    total: int
    bytes: int
    media_id: str | None = None
    action: str = ""  # "copied", "kept", "replaced", "missing", "error"
