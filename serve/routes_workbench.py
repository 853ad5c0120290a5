"""The web workbench at ``/`` and ``/ui/...``: static files only, every JSON call goes to ``/v1`` with the
user's API key, so these routes need no key themselves (the files hold no data).

Every response carries a strict Content-Security-Policy: scripts only from this origin (no inline
script, no eval), no inline styles, no plugins, no framing. Record data (titles, URLs, uploaders) is
attacker-controlled; the scripts build DOM nodes with textContent, and the policy is the second wall
should one ever slip into markup. Media comes from this origin as blobs (fetched with the key) or,
with an S3 store, from the store's public endpoint by presigned URL, so that origin is allowed for
images and video.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

from deepwatch.settings import Settings
from serve.context import configured
from serve.workbench import STATIC_DIR

router = APIRouter(include_in_schema=False)
_static = StaticFiles(directory=STATIC_DIR)


def store_origin(settings: Settings | None) -> str | None:
    """The origin presigned media URLs point at, or None when media is served by this API."""
    if settings is None or settings.store_backend != "s3":
        return None
    endpoint = settings.s3_public_url or settings.s3_endpoint
    if not endpoint:
        return None
    if "://" not in endpoint:
        endpoint = ("https://" if settings.s3_secure else "http://") + endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(media_origin: str | None) -> str:
    media = "'self' blob:" + (f" {media_origin}" if media_origin else "")
    return "; ".join([
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        f"img-src {media} data:",
        f"media-src {media}",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


def secured(response: Response) -> Response:
    ctx = configured()
    response.headers["content-security-policy"] = content_security_policy(
        store_origin(ctx.settings if ctx is not None else None)
    )
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "no-referrer"
    response.headers["x-frame-options"] = "DENY"
    return response


def index_page() -> Response:
    # never cached: a new release must not run the old page against the new API
    return secured(FileResponse(STATIC_DIR / "index.html", headers={"cache-control": "no-cache"}))


@router.get("/")
def root() -> Response:
    return index_page()


@router.get("/ui")
def ui_root() -> Response:
    return index_page()


@router.get("/ui/{path:path}")
async def ui_file(path: str, request: Request) -> Response:
    if path in ("", "index.html"):
        return index_page()
    # StaticFiles resolves the path inside STATIC_DIR (no ../ escape), answers 404 and conditional GETs
    return secured(await _static.get_response(path, request.scope))
