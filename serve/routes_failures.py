"""``GET /v1/failures``: the URLs the stream gave up on, newest first, with counts by stage and error type.

The stream worker keeps each permanent failure as a :class:`~deepwatch.contracts.UrlFailure` document under
``failures/`` in the object store (and dead-letters the event with the same reason on Kafka); these
documents are what moderators can see, so the dashboard's "dead letters by reason" reads them here.

Bounded: an object-store listing has no order, so at most ``scan`` keys (≤ :data:`MAX_SCAN`) are listed and
read, then sorted by time; ``truncated`` says that more exist, and the counts are over those read.
"""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import Field

from deepwatch.contracts import ContractError, Part, UrlFailure, parse
from serve.auth import require_scope
from serve.context import ApiContext, context
from storage.errors import NotFound, StorageError
from storage.keys import FAILURES_PREFIX
from storage.objects import ObjectStore

log = logging.getLogger(__name__)

router = APIRouter(prefix="/v1")
MAX_SCAN = 5000
MAX_LIMIT = 500
READERS = 8  # parallel GETs: on S3 each read is a round trip
MAX_DOCUMENT_BYTES = 64 * 1024  # a UrlFailure is a few KiB; anything far larger is not one

Ctx = Annotated[ApiContext, Depends(context)]


class FailurePage(Part):
    items: list[UrlFailure] = Field(description="newest first, at most limit")
    scanned: Annotated[int, Field(ge=0)] = Field(description="failure documents listed and read")
    truncated: bool = Field(description="more documents exist than were scanned")
    unreadable: Annotated[int, Field(ge=0)] = Field(description="documents that are not a valid UrlFailure")
    by_stage: dict[str, int] = Field(description="over the documents scanned")
    by_error_type: dict[str, int] = Field(description="over the documents scanned")


def _read(store: ObjectStore, key: str) -> UrlFailure | None:
    try:
        with store.get(key) as body:
            raw = body.read(MAX_DOCUMENT_BYTES + 1)
        if len(raw) > MAX_DOCUMENT_BYTES:
            raise ContractError("UrlFailure", [("<root>", f"larger than {MAX_DOCUMENT_BYTES} bytes")])
        return parse(UrlFailure, raw)
    except NotFound:
        return None  # deleted between the listing and the read: not a failure any more
    except ContractError as exc:
        log.warning("failures: %s is not a UrlFailure: %s", key, exc)
        raise


def read_failures(store: ObjectStore, scan: int) -> tuple[list[UrlFailure], int, int, bool]:
    """``(failures, scanned, unreadable, truncated)`` over at most ``scan`` documents."""
    listed = list(islice(store.list_keys(FAILURES_PREFIX), scan + 1))
    truncated = len(listed) > scan
    keys = [k for k in listed[:scan] if k.endswith(".json")]
    failures: list[UrlFailure] = []
    unreadable = 0

    def one(key: str) -> UrlFailure | ContractError | None:
        try:
            return _read(store, key)
        except ContractError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=READERS) as pool:
        for result in pool.map(one, keys):
            if isinstance(result, ContractError):
                unreadable += 1
            elif result is not None:
                failures.append(result)
    failures.sort(key=lambda f: (f.at, str(f.canonical_url)), reverse=True)
    return failures, len(keys), unreadable, truncated


@router.get("/failures", response_model=FailurePage, dependencies=[Depends(require_scope("read"))])
def list_failures(
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="failures returned")] = 50,
    scan: Annotated[int, Query(ge=1, le=MAX_SCAN, description="documents listed and read at most")] = 1000,
) -> FailurePage:
    try:
        failures, scanned, unreadable, truncated = read_failures(ctx.store(), scan)
    except StorageError as exc:
        raise HTTPException(503, f"the object store cannot list failures: {exc}") from exc
    return FailurePage(
        items=failures[:limit],
        scanned=scanned,
        truncated=truncated,
        unreadable=unreadable,
        by_stage=dict(Counter(f.stage for f in failures).most_common()),
        by_error_type=dict(Counter(f.error_type for f in failures).most_common()),
    )
