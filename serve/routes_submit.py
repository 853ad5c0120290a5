"""``POST /v1/submit``: URLs into the stream, as ``deepwatch submit`` puts them there.

Each URL becomes a validated ``UrlDiscovered`` event (:mod:`deepwatch.url_events`, the crawler's own
builder) and the valid ones are published to ``deepwatch.urls`` keyed by canonical URL, every
acknowledgement awaited. A refused URL is reported with its position and reason and costs the others
nothing; when no URL is valid the request is a 422, and when Kafka is unset or unreachable a 503 (so a
client retries; nothing was published).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import Field

from deepwatch.contracts import ContractError, Part, Slug
from deepwatch.media.errors import MediaError
from serve.auth import require_scope
from serve.context import ApiContext, context

router = APIRouter(prefix="/v1")

# A hard cap on what is even parsed; the configured bound (api_max_submit_urls) is checked below it.
MAX_URLS = 10_000


class SubmitRequest(Part):
    urls: Annotated[list[Annotated[str, Field(max_length=8192)]], Field(min_length=1, max_length=MAX_URLS)]
    source: Slug = Field("api", description="recorded on each event as its source")


class Published(Part):
    url: str
    canonical_url: str
    platform: str
    trace_id: str
    partition: int
    offset: int


class Refused(Part):
    index: int = Field(description="position in the request's urls")
    url: str
    error: str


class SubmitResult(Part):
    published: list[Published]
    refused: list[Refused]


@router.post("/submit", status_code=202, response_model=SubmitResult,
             dependencies=[Depends(require_scope("submit"))])
def submit(body: SubmitRequest, ctx: Annotated[ApiContext, Depends(context)]) -> SubmitResult:
    """Queue media or page URLs for fetching and scoring. 202 with what was published and what was refused."""
    from deepwatch.publisher import PublishError
    from deepwatch.url_events import discovered

    most = ctx.settings.api_max_submit_urls
    if len(body.urls) > most:
        raise RequestValidationError(
            [{"loc": ("body", "urls"), "msg": f"at most {most} URLs per request, got {len(body.urls)}",
              "type": "too_long", "input": None}]
        )
    events, refused = [], []
    for index, url in enumerate(body.urls):
        try:
            events.append(discovered(url, body.source))
        except (MediaError, ContractError, ValueError) as exc:
            refused.append(Refused(index=index, url=url, error=str(exc)))
    if not events:
        raise RequestValidationError(
            [{"loc": ("body", "urls", r.index), "msg": r.error, "type": "value_error", "input": r.url}
             for r in refused]
        )
    try:
        placed = ctx.publisher().publish(events)
    except PublishError as exc:
        raise HTTPException(503, f"could not publish to Kafka: {exc}") from exc
    published = [
        Published(url=e.url, canonical_url=e.canonical_url, platform=e.platform, trace_id=e.trace_id,
                  partition=partition, offset=offset)
        for e, (partition, offset) in zip(events, placed, strict=True)
    ]
    return SubmitResult(published=published, refused=refused)
