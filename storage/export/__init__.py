"""Dataset export of flagged fakes (``deepwatch export``; later ``POST /v1/exports``).

:func:`run_export` takes the one :class:`~deepwatch.settings.Settings` and an
:class:`ExportRequest` and returns an :class:`ExportSummary`; everything else here is its parts:
``select`` (which records), ``storage.splits`` (clusters and splits), ``manifest`` (rows, files,
card), ``shards`` (tar and parquet), ``sinks`` (a directory or an object-store prefix).
"""

from storage.export.model import (
    FORMATS,
    ChecksumMismatch,
    ExportError,
    ExportProgress,
    ExportRequest,
    ExportSummary,
)
from storage.export.run import run_export

__all__ = [
    "FORMATS",
    "ChecksumMismatch",
    "ExportError",
    "ExportProgress",
    "ExportRequest",
    "ExportSummary",
    "run_export",
]
