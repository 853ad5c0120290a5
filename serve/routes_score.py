"""``POST /v1/score``: score one media item, synchronously, as the scoring contract describes.

Request forms: JSON with exactly one of ``object_key`` (under ``media/`` in the object store), ``url``
(fetched through the SSRF guard) or ``image_base64``, plus optional ``detectors`` and ``aligned``; or
``multipart/form-data`` with a ``file`` part and optional ``detectors`` (comma-separated) and ``aligned``
fields. The body is read up to ``api_max_upload_bytes`` (413 past it) before anything is parsed.

Answers: 200 with :meth:`serve.scoring.ScoreResult.to_json`; 422 for a permanent media problem
(``{"detail", "error_type", "permanent": true}``) or an invalid request (FastAPI's form, naming the field);
503 with ``Retry-After`` for a transient one (``"permanent": false``). Every scored item counts in
``deepwatch_media_scored_total{kind, verdict}`` (prometheus-client's default registry, served at ``/metrics``).

The scorer is the Serve deployments when the ingress replica installed them (:func:`use_backend`), else this
process (:class:`serve.backends.LocalBackend`), so the API stays usable and testable without Ray.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from deepwatch.contracts import Slug
from deepwatch.media.errors import MediaError
from deepwatch.settings import Settings
from serve.auth import require_scope
from serve.backends import LocalBackend, ScoringBackend, UnknownDetectors, chosen, root_cause
from serve.context import ApiContext, context
from serve.sources import MediaSource, check_media_key

log = logging.getLogger(__name__)

MEDIA_SCORED = Counter("deepwatch_media_scored", "Media items scored by POST /v1/score", ["kind", "verdict"])
RETRY_AFTER_S = 5
MAX_FORM_FIELDS = 8

router = APIRouter()


class ScoreRequest(BaseModel):
    """The JSON form of a scoring request."""

    model_config = ConfigDict(extra="forbid")

    object_key: str | None = Field(None, description="media/… key of bytes already in the object store")
    url: str | None = Field(None, max_length=4096, description="http(s) URL, fetched through the SSRF guard")
    image_base64: str | None = Field(None, description="the media's bytes in base64 (a data: URL prefix is allowed)")
    detectors: list[Slug] | None = Field(None, max_length=64, description="detector names; default every enabled one")
    aligned: bool = Field(False, description="the input is already an aligned face crop: skip face detection")

    @field_validator("object_key")
    @classmethod
    def _media_key(cls, key: str | None) -> str | None:
        return None if key is None else check_media_key(key)

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url is not None and not url.lower().startswith(("http://", "https://")):
            raise ValueError("url must be an http(s) URL")
        return url

    @model_validator(mode="after")
    def _one_source(self) -> ScoreRequest:
        given = [n for n in ("object_key", "url", "image_base64") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of object_key, url, image_base64 (got {', '.join(given) or 'none'})")
        return self


# --- the scorer of this process ----------------------------------------------------------------------------

_backend: ScoringBackend | None = None
_local: tuple[Settings, LocalBackend] | None = None


def use_backend(backend: ScoringBackend | None) -> None:
    """Install the scorer of this process (the Serve ingress replica installs its deployment handles)."""
    global _backend
    _backend = backend


def scorer(ctx: Annotated[ApiContext, Depends(context)]) -> ScoringBackend:
    global _local
    if _backend is not None:
        return _backend
    if _local is None or _local[0] is not ctx.settings:
        _local = (ctx.settings, LocalBackend(ctx.settings))
    return _local[1]


# --- the route ---------------------------------------------------------------------------------------------

_OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": ScoreRequest.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "detectors": {"type": "string", "description": "comma-separated detector names"},
                        "aligned": {"type": "boolean"},
                    },
                }
            },
        },
    }
}


@router.post(
    "/v1/score",
    dependencies=[Depends(require_scope("score"))],
    openapi_extra=_OPENAPI_BODY,
    summary="Score one media item with the detector ensemble",
)
async def score(
    request: Request,
    ctx: Annotated[ApiContext, Depends(context)],
    backend: Annotated[ScoringBackend, Depends(scorer)],
) -> JSONResponse:
    limit = ctx.settings.api_max_upload_bytes
    body = await _read_body(request, limit)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        source, names, aligned = _from_json(body, limit)
    elif content_type == "multipart/form-data":
        source, names, aligned = await _from_form(request, body)
    else:
        raise HTTPException(415, "send application/json or multipart/form-data")
    try:
        detectors = chosen(backend, names)
    except UnknownDetectors as exc:
        raise _invalid(("body", "detectors"), str(exc), names) from None
    try:
        result = await backend.score(source, detectors, aligned)
    except Exception as exc:
        return _failure(exc)
    MEDIA_SCORED.labels(result.kind, result.verdict).inc()
    return JSONResponse(result.to_json())


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"request body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"request body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(loc: tuple[str, ...], message: str, value: Any = None) -> RequestValidationError:
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


def _from_json(body: bytes, limit: int) -> tuple[MediaSource, list[str] | None, bool]:
    try:
        req = ScoreRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        for e in errors:
            e.pop("ctx", None)  # may hold the exception object, which is not JSON
        raise RequestValidationError(errors) from None
    if req.image_base64 is not None:
        text = req.image_base64
        if text.startswith("data:") and "," in text:
            text = text.split(",", 1)[1]
        try:
            data = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise _invalid(("body", "image_base64"), "not valid base64") from None
        if not data:
            raise _invalid(("body", "image_base64"), "decodes to no bytes")
        if len(data) > limit:
            raise HTTPException(413, f"image_base64 decodes to more than {limit} bytes")
        source = MediaSource(data=data)
    else:
        source = MediaSource(object_key=req.object_key, url=req.url)
    return source, req.detectors, req.aligned


async def _from_form(request: Request, body: bytes) -> tuple[MediaSource, list[str] | None, bool]:
    from starlette.datastructures import UploadFile
    from starlette.formparsers import MultiPartException, MultiPartParser

    async def replay() -> Any:
        yield body

    try:
        form = await MultiPartParser(request.headers, replay(), max_files=1, max_fields=MAX_FORM_FIELDS).parse()
    except MultiPartException as exc:
        raise _invalid(("body",), f"malformed multipart body: {exc.message}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _invalid(("body", "file"), "a file part named 'file' is required")
        data = await upload.read()
        if not data:
            raise _invalid(("body", "file"), "the file is empty")
        raw_names = form.get("detectors")
        names = None
        if isinstance(raw_names, str) and raw_names.strip():
            names = [n.strip() for n in raw_names.split(",") if n.strip()]
        aligned = _form_bool(form.get("aligned"))
    finally:
        await form.close()
    return MediaSource(data=data), names, aligned


def _form_bool(value: Any) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        return value.strip().lower() in ("1", "true", "yes", "on")
    raise _invalid(("body", "aligned"), "aligned must be true or false", str(value)[:100])


def _failure(exc: Exception) -> JSONResponse:
    """A scoring failure as the contract's 422 (permanent) or 503 (transient) answer."""
    from serve.detectors.base import DetectorError

    cause = root_cause(exc)
    name = type(cause).__name__
    if isinstance(cause, MediaError):
        if not cause.retryable:
            return JSONResponse({"detail": str(cause), "error_type": name, "permanent": True}, status_code=422)
        detail = str(cause)
    elif isinstance(cause, DetectorError) or name in _UNAVAILABLE:
        detail = f"scoring is unavailable: {cause}"
    else:
        raise exc  # a bug, not a media or capacity problem: the server's 500, with the traceback logged
    log.warning("scoring failed transiently: %s: %s", name, detail)
    return JSONResponse(
        {"detail": detail, "error_type": name, "permanent": False},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# Ray's and Serve's own "try again later": a replica died or restarts, the queue is full, the app redeploys;
# and weights missing from a replica (detectors, the face detector, the landmark network), until an operator
# installs them: the message names how, and nothing is wrong with the media.
_UNAVAILABLE = frozenset(
    {
        "DetectorUnavailable",
        "FaceDetectorUnavailable",
        "LandmarksUnavailable",
        "BackPressureError",
        "DeploymentUnavailableError",
        "RayActorError",
        "ActorDiedError",
        "ActorUnavailableError",
        "RequestCancelledError",
        "GetTimeoutError",
        "ObjectLostError",
        "OwnerDiedError",
        "ObjectFetchTimedOutError",
        "WorkerCrashedError",
    }
)
