"""Routes over the index: one record with links to its media, moderation search, dashboard counts,
near-duplicates, human review with its audit trail, and the registered detectors.

Routes are plain ``def``: the index, the object store and the matcher block, so FastAPI runs them on
its thread pool. Search parameters are the CLI's (:mod:`storage.query_args` turns both into one typed
query); an error names the query parameter a client sent, as FastAPI's own validation does.
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from deepwatch.contracts import MAX_FACE_SCORES, ContractError, MediaRecord, Part, Review, UrlFailure, parse
from deepwatch.media.errors import MediaError
from deepwatch.media.urls import canonical_url
from serve.auth import require_scope
from serve.context import ApiContext, ApiKey, context
from serve.face_crops import face_crops
from serve.sources import object_to_file
from storage.errors import NotFound, NotSupported, StorageError
from storage.index import DEFAULT_RADIUS, SearchIndexError, UnknownMedia
from storage.keys import failure_key
from storage.query import MAX_LIMIT, Aggregations, ReviewEvent, SearchPage, SearchQuery
from storage.query_args import argument_of, build_query

router = APIRouter(prefix="/v1")

Ctx = Annotated[ApiContext, Depends(context)]
MediaId = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="the sha256 of the media's bytes, lower-case hex")]
ListParam = Annotated[list[str] | None, Query(description="repeat it or separate values by commas; any matches")]
read = [Depends(require_scope("read"))]
LINK_ROUTES = {"media": "media_content", "thumbnail": "media_thumbnail"}


# --- response models --------------------------------------------------------------------------
class MediaLinks(Part):
    """Where a browser gets the stored bytes: a presigned URL (S3) or this API's route (local store);
    None when the object is not kept."""

    media: str | None = None
    thumbnail: str | None = None


class MediaView(Part):
    record: MediaRecord
    links: MediaLinks


class SimilarItem(Part):
    media_id: str
    kind: str = Field(description="the hash kind it was found by: videohash, pdq or pdq_faces")
    distance: int = Field(description="bits between the closest hashes of that kind")
    via: str = Field(description="which of this record's hashes came that close: video, frame, mirror, crop")
    relation: Literal["duplicate", "variant", "different"]
    matched_fraction: float
    match_distance: float = Field(description="the matcher's median PDQ distance over matched frames")
    record: MediaRecord


class SimilarPage(Part):
    media_id: str
    radius: dict[str, int]
    items: list[SimilarItem]


class UrlStatus(Part):
    """What the system knows of one URL: its record, or why it has none."""

    url: str
    canonical_url: str
    status: Literal["recorded", "failed"]
    record: MediaRecord | None = None
    failure: UrlFailure | None = None


class ReviewRequest(Part):
    label: Literal["fake", "real", "unsure"]
    note: Annotated[str, Field(max_length=10_000)] | None = None


# --- helpers ----------------------------------------------------------------------------------
def invalid_query(exc: ContractError) -> RequestValidationError:
    """A query-string ContractError as FastAPI's own 422, located at the parameter the client sent."""
    return RequestValidationError(
        [{"loc": ("query", argument_of(field)), "msg": message, "type": "value_error", "input": None}
         for field, message in exc.problems]
    )


def index_call(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except UnknownMedia as exc:
        raise HTTPException(404, f"no media record {exc.media_id}") from None
    except SearchIndexError as exc:
        raise HTTPException(503, f"the search index failed: {exc}") from exc


def get_record(ctx: ApiContext, media_id: str) -> MediaRecord:
    record = index_call(lambda: ctx.index().get(media_id))
    if record is None:
        raise HTTPException(404, f"no media record {media_id}")
    return record


def filters(
    q: Annotated[str | None, Query(description="words that must all occur in a title, uploader, text or URL")] = None,
    verdict: Annotated[list[str] | None, Query(description="fake, uncertain, real, no_face, error, unscored")] = None,
    min_score: Annotated[float | None, Query(description="lowest ensemble score")] = None,
    max_score: Annotated[float | None, Query(description="highest ensemble score")] = None,
    detector: Annotated[list[str] | None, Query(description="per-detector range NAME=MIN:MAX")] = None,
    platform: ListParam = None,
    source: ListParam = None,
    kind: Annotated[list[str] | None, Query(description="image, video")] = None,
    dedup: Annotated[list[str] | None, Query(description="none, url, exact, near")] = None,
    review: Annotated[list[str] | None, Query(description="none (not reviewed), fake, real, unsure")] = None,
    since: Annotated[str | None, Query(description="seen since: 24h, 7d, 2026-11-01, an ISO time")] = None,
    until: Annotated[str | None, Query(description="seen until (same forms as since)")] = None,
) -> dict[str, Any]:
    return {"q": q, "verdict": verdict, "min_score": min_score, "max_score": max_score, "detector": detector,
            "platform": platform, "source": source, "kind": kind, "dedup": dedup, "review": review,
            "since": since, "until": until}


Filters = Annotated[dict[str, Any], Depends(filters)]


def search_query(
    given: Filters,
    sort: Annotated[Literal["score_desc", "score_asc", "newest", "oldest"], Query()] = "score_desc",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 50,
    cursor: Annotated[str | None, Query(max_length=2000, description="the `next` of the previous page")] = None,
) -> SearchQuery:
    try:
        return build_query(**given, sort=sort, limit=limit, cursor=cursor)
    except ContractError as exc:
        raise invalid_query(exc) from None


def links(request: Request, ctx: ApiContext, record: MediaRecord) -> MediaLinks:
    keys = {"media": record.objects.media, "thumbnail": record.objects.thumbnail}
    found: dict[str, str | None] = {}
    for name, key in keys.items():
        if key is None:
            found[name] = None
            continue
        try:
            found[name] = ctx.store().presigned_get_url(key)
        except NotSupported:
            found[name] = str(request.url_for(LINK_ROUTES[name], media_id=record.media_id))
        except StorageError as exc:
            raise HTTPException(503, f"the object store failed: {exc}") from exc
    return MediaLinks(**found)


def stream_object(ctx: ApiContext, media_id: str, key: str | None, what: str) -> StreamingResponse:
    if key is None:
        raise HTTPException(404, f"no {what} is kept for media {media_id}")
    try:
        store = ctx.store()
        info = store.stat(key)
        body = store.get(key)
    except NotFound:
        raise HTTPException(404, f"the {what} of media {media_id} is no longer stored") from None
    except StorageError as exc:
        raise HTTPException(503, f"the object store failed: {exc}") from exc

    def chunks() -> Iterator[bytes]:
        with body:
            yield from body.iter_chunks()

    headers = {"content-length": str(info.size), "etag": f'"{info.etag}"'}
    return StreamingResponse(chunks(), media_type=info.content_type, headers=headers)


# --- routes -----------------------------------------------------------------------------------
@router.get("/media/{media_id}", dependencies=read, response_model=MediaView)
def get_media(media_id: MediaId, request: Request, ctx: Ctx) -> MediaView:
    """The record of one media item, with links to its stored media and thumbnail."""
    record = get_record(ctx, media_id)
    return MediaView(record=record, links=links(request, ctx, record))


@router.get("/urls", dependencies=read, response_model=UrlStatus)
def url_status(url: Annotated[str, Query(min_length=8, max_length=4096, description="any form of the URL")],
               ctx: Ctx) -> UrlStatus:
    """The record a URL led to, or, when the stream could not fetch or score it, the stage and reason."""
    try:
        canonical = canonical_url(url)
    except (MediaError, ValueError) as exc:
        raise RequestValidationError(
            [{"loc": ("query", "url"), "msg": str(exc), "type": "value_error", "input": url}]) from None
    record = index_call(lambda: ctx.index().find_by_canonical_url(canonical))
    if record is not None:
        return UrlStatus(url=url, canonical_url=canonical, status="recorded", record=record)
    try:
        with ctx.store().get(failure_key(canonical)) as body:
            failure = parse(UrlFailure, body.read())
    except NotFound:
        raise HTTPException(404, f"{canonical} has not been seen, or is still being processed") from None
    except StorageError as exc:
        raise HTTPException(503, f"the object store failed: {exc}") from exc
    return UrlStatus(url=url, canonical_url=canonical, status="failed", failure=failure)


@router.get("/media/{media_id}/content", dependencies=read, name="media_content")
def media_content(media_id: MediaId, ctx: Ctx) -> StreamingResponse:
    """The stored media bytes (what the media link points at when the store hands out no URLs)."""
    return stream_object(ctx, media_id, get_record(ctx, media_id).objects.media, "media")


@router.get("/media/{media_id}/thumbnail", dependencies=read, name="media_thumbnail")
def media_thumbnail(media_id: MediaId, ctx: Ctx) -> StreamingResponse:
    """The stored JPEG thumbnail."""
    return stream_object(ctx, media_id, get_record(ctx, media_id).objects.thumbnail, "thumbnail")


@router.get("/media/{media_id}/faces/{n}", dependencies=read, name="media_face",
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
def media_face(media_id: MediaId, n: Annotated[int, Path(ge=0, le=MAX_FACE_SCORES - 1)], ctx: Ctx) -> Response:
    """Face ``n`` of the record's `face_scores`, cut out of the frame it was scored in (a JPEG). Needs the
    media stored: flagged fakes always are, other media only with `store_keep_media`."""
    record = get_record(ctx, media_id)
    if n >= len(record.face_scores):
        raise HTTPException(404, f"media {media_id} has {len(record.face_scores)} scored faces; there is no face {n}")
    key = record.objects.media
    if key is None:
        raise HTTPException(404, f"the media of {media_id} is not kept (only flagged fakes are, unless "
                                 "store_keep_media), so its faces cannot be cut out")
    faces = record.face_scores
    settings = ctx.settings

    def compute() -> list[bytes | None]:
        with tempfile.TemporaryDirectory(prefix="dw-crops-") as workdir:
            path = object_to_file(key, settings, pathlib.Path(workdir), ctx.store())
            return face_crops(path, faces, settings, pathlib.Path(workdir) / "decoded")

    try:
        crops = ctx.face_crops((media_id, tuple((f.frame, tuple(f.box)) for f in faces)), compute)
    except MediaError as exc:
        if exc.retryable:
            raise HTTPException(503, f"cannot read the media of {media_id} now: {exc}",
                                headers={"Retry-After": "5"}) from exc
        raise HTTPException(404, f"the media of {media_id} cannot be decoded again: {exc}") from exc
    crop_jpeg = crops[n]
    if crop_jpeg is None:
        raise HTTPException(404, f"face {n} of {media_id} is not where it was scored: its frame is not sampled again "
                                 "(the frames-per-video setting changed since) or its box lies outside it")
    return Response(crop_jpeg, media_type="image/jpeg", headers={"cache-control": "private, max-age=3600"})


@router.get("/search", dependencies=read, response_model=SearchPage)
def search(query: Annotated[SearchQuery, Depends(search_query)], ctx: Ctx) -> SearchPage:
    """Moderation search: every filter optional; pass `next` back as `cursor` for the following page."""
    try:
        return index_call(lambda: ctx.index().search(query))
    except ContractError as exc:  # a cursor of another search
        raise invalid_query(exc) from None


@router.get("/aggregations", dependencies=read, response_model=Aggregations)
def aggregations(given: Filters, ctx: Ctx) -> Aggregations:
    """Dashboard counts (by verdict, platform and day; score histogram; stage time percentiles) over the
    records the filters select."""
    try:
        query = build_query(**given)
    except ContractError as exc:
        raise invalid_query(exc) from None
    return index_call(lambda: ctx.index().aggregate(query))


@router.get("/similar/{media_id}", dependencies=read, response_model=SimilarPage)
def similar(
    media_id: MediaId,
    ctx: Ctx,
    videohash: Annotated[int, Query(ge=0, le=16, description="radius in bits of 64")] = DEFAULT_RADIUS["videohash"],
    pdq: Annotated[int, Query(ge=0, le=64, description="radius in bits of 256")] = DEFAULT_RADIUS["pdq"],
    pdq_faces: Annotated[int, Query(ge=0, le=64, description="radius in bits of 256")] = DEFAULT_RADIUS["pdq_faces"],
) -> SimilarPage:
    """Near-duplicates and variants of a recorded media item, each confirmed by the fingerprint matcher.
    Radii are capped: past them multi-index hashing degrades into a scan of every hash."""
    from deepwatch.media.similar import find_similar, stored_fingerprint

    record = get_record(ctx, media_id)
    radius = {"videohash": videohash, "pdq": pdq, "pdq_faces": pdq_faces}
    found = index_call(lambda: find_similar(ctx.index(), record.fingerprints, radius,
                                            mine=stored_fingerprint(record)))
    items = [
        SimilarItem(media_id=f.candidate.media_id, kind=f.candidate.kind, distance=f.candidate.distance,
                    via=f.candidate.via, relation=f.match.relation, matched_fraction=f.match.matched_fraction,
                    match_distance=f.match.distance, record=f.record)
        for f in found
    ]
    return SimilarPage(media_id=media_id, radius=radius, items=items)


@router.post("/media/{media_id}/review", response_model=MediaRecord)
def review_media(
    media_id: MediaId,
    body: ReviewRequest,
    key: Annotated[ApiKey, Depends(require_scope("review"))],
    ctx: Ctx,
) -> MediaRecord:
    """Record a moderator's label; the reviewer is the API key's name. Returns the updated record."""
    review = Review(label=body.label, note=body.note, reviewer=key.name)
    return index_call(lambda: ctx.index().record_review(media_id, review))


@router.get("/media/{media_id}/reviews", dependencies=read, response_model=list[ReviewEvent])
def media_reviews(media_id: MediaId, ctx: Ctx) -> list[ReviewEvent]:
    """The audit trail of one record's reviews, oldest first."""
    get_record(ctx, media_id)
    return index_call(lambda: ctx.index().review_history(media_id))


@router.get("/detectors/agreement", dependencies=read)
def detectors_agreement(
    given: Filters,
    ctx: Ctx,
    min_per_class: Annotated[int, Query(ge=2, le=100_000, description="reviewed fakes and reals each to fit")] = 10,
    max_records: Annotated[int, Query(ge=1, le=100_000, description="the newest reviewed records read")] = 2000,
) -> dict[str, Any]:
    """How each detector's recorded scores agree with moderators' fake/real reviews (ROC AUC, accuracy at 0.5,
    mean P(fake) per label), and the Platt parameters fitted on them (what `deepwatch detectors calibrate`
    prints), beside those in force (``in_force``: this deployment's settings; empty, the identity); the filters
    narrow the records, whose review is always fake or real. The newest ``max_records`` are read (each is a
    whole record): ``truncated`` says whether there were more."""
    from serve.calibration import calibrate, reviewed_evidence
    from storage.index import iter_search

    try:
        query = build_query(**{**given, "review": ["fake", "real"]}, sort="newest")
    except ContractError as exc:
        raise invalid_query(exc) from None
    evidence, truncated = index_call(lambda: reviewed_evidence(iter_search(ctx.index(), query), max_records))
    settings = ctx.settings
    return calibrate(evidence, settings.ensemble_weights, min_per_class, truncated, settings.ensemble_platt).to_json()


@router.get("/detectors", dependencies=read)
def detectors(ctx: Ctx) -> dict[str, Any]:
    """The registered detectors: name, version, licence, source, modality, input size, weights."""
    from serve.detectors.registry import RegistryError, available

    settings = ctx.settings
    try:
        registered = available(settings)
    except RegistryError as exc:
        raise HTTPException(503, f"the detector registry failed: {exc}") from exc
    selected = set(settings.detectors or registered)
    return {"detectors": [
        {**r.cls.describe(settings.models_path), "origin": r.origin, "enabled": name in selected}
        for name, r in registered.items()
    ]}
