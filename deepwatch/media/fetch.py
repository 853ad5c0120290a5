"""Fetch the media behind a URL with yt-dlp, inside the SSRF guard and the limits from settings.

yt-dlp's extractors cover the social platforms; direct files and pages with ``<video>``/``og:video``
go through its generic extractor. Every request it makes goes through a :class:`GuardProxy`, and
follows at most ``FetchLimits.max_redirects`` redirects (see :mod:`deepwatch.media.redirects`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from deepwatch.digest import sha256_file
from deepwatch.media.errors import (
    Blocked,
    Forbidden,
    MediaError,
    NotFound,
    Timeout,
    TooLarge,
    TooLong,
    Transient,
    Unsupported,
)
from deepwatch.media.guard import AddressPolicy, checked_addresses
from deepwatch.media.probe import probe
from deepwatch.media.proxy import GuardProxy
from deepwatch.media.urls import canonical_url
from deepwatch.settings import Settings, default_field

if TYPE_CHECKING:  # the module imports yt-dlp, which fetch() loads only when it runs
    from deepwatch.media.redirects import RedirectLimit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FetchLimits:
    """The limits of one fetch; the defaults are the settings' own."""

    max_bytes: int = default_field("fetch_max_bytes")
    max_duration_s: float = default_field("fetch_max_duration_s")
    timeout_s: float = default_field("fetch_timeout_s")
    max_redirects: int = default_field("fetch_max_redirects")

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchLimits:
        return cls(
            max_bytes=settings.fetch_max_bytes,
            max_duration_s=settings.fetch_max_duration_s,
            timeout_s=settings.fetch_timeout_s,
            max_redirects=settings.fetch_max_redirects,
        )


@dataclass
class Fetched:
    path: Path
    sha256: str
    size: int
    url: str
    extractor: str
    duration: float | None
    info: dict[str, Any] = field(default_factory=dict, repr=False)


class _Log:
    """yt-dlp's logger: keeps its messages, since some failures are only ever logged."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def debug(self, msg: str) -> None:
        self.messages.append(msg)

    info = debug

    def warning(self, msg: str) -> None:
        self.messages.append(msg)
        log.debug("yt-dlp: %s", msg)

    def error(self, msg: str) -> None:
        self.messages.append(msg)




def _ffmpeg() -> str | None:
    try:
        import imageio_ffmpeg
    except ImportError:
        return shutil.which("ffmpeg")
    return imageio_ffmpeg.get_ffmpeg_exe()


def classify_failure(exc: Exception, proxy: GuardProxy, redirects: RedirectLimit) -> MediaError:
    """Map a yt-dlp failure to a typed error; a guard or redirect-limit refusal explains any failure it caused."""
    if proxy.refusals:
        return Blocked(proxy.refusals[0])
    if redirects.breaches:
        return redirects.error()
    cause = getattr(exc, "exc_info", None)
    inner = cause[1] if cause else exc
    status = getattr(inner, "status", None) or getattr(getattr(inner, "response", None), "status", None)
    text = str(inner)
    if isinstance(status, int):
        if status in (404, 410):
            return NotFound(f"HTTP {status}: {text}")
        if status in (401, 403, 451):
            return Forbidden(f"HTTP {status}: {text}")
        if status == 429 or status >= 500:
            return Transient(f"HTTP {status}: {text}")
    lowered = text.lower()
    if getattr(inner, "redirect_loop", False) or "redirect loop" in lowered:
        return redirects.error(text)  # a loop yt-dlp detected on a path the limited handlers did not see
    if "timed out" in lowered or "timeout" in lowered:
        return Timeout(text)
    if "unsupported url" in lowered or "no video formats" in lowered or "no media" in lowered:
        return Unsupported(text)
    if type(inner).__name__ in ("TransportError", "ConnectionError", "IncompleteRead", "SSLError"):
        return Transient(text)
    return Unsupported(text) if "extractorerror" in type(inner).__name__.lower() else Transient(text)


def fetch(url: str, dest_dir: Path, limits: FetchLimits, policy: AddressPolicy) -> Fetched:
    """Download ``url`` into ``dest_dir``; raise a typed :class:`MediaError` on any failure."""
    from deepwatch.media.redirects import LimitedYoutubeDL, RedirectLimit

    canonical_url(url)  # only http(s) URLs with a host get this far
    parts = urlsplit(url)
    # a clear refusal before yt-dlp starts; the proxy checks every later request again
    checked_addresses(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80), policy)

    work = Path(tempfile.mkdtemp(prefix="fetch-", dir=dest_dir))
    ytlog = _Log()
    result: dict[str, Any] = {}
    redirects = RedirectLimit(limits.max_redirects)
    with GuardProxy(policy, timeout_s=min(limits.timeout_s, 60.0)) as proxy:
        options: dict[str, Any] = {
            "proxy": proxy.url,
            "outtmpl": str(work / "media.%(ext)s"),
            "max_filesize": limits.max_bytes,
            "socket_timeout": min(limits.timeout_s, 60.0),
            "noplaylist": True,
            "playlist_items": "1",
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "logger": ytlog,
            "retries": 1,
            "fragment_retries": 1,
            "overwrites": True,
            "cachedir": False,
            # HLS/DASH natively, so every fragment request goes through the proxy too
            "hls_prefer_native": True,
            "format": "best[vcodec!=none]/best",
            "ffmpeg_location": _ffmpeg(),
        }

        def run() -> None:
            try:
                with LimitedYoutubeDL(options, redirects) as ydl:
                    result["info"] = ydl.extract_info(url, download=True)
            except Exception as exc:  # yt-dlp raises many kinds; all are classified below
                result["error"] = exc

        thread = threading.Thread(target=run, name="yt-dlp", daemon=True)
        thread.start()
        thread.join(limits.timeout_s)
        if thread.is_alive():
            proxy.close()  # cuts its connections, so the download thread fails soon
            thread.join(10)
            shutil.rmtree(work, ignore_errors=True)
            raise Timeout(f"fetching {url} took longer than {limits.timeout_s:.0f} s")
        if "error" in result:
            shutil.rmtree(work, ignore_errors=True)
            raise classify_failure(result["error"], proxy, redirects)
        if redirects.breaches:
            # yt-dlp carried on past a refused chain (a fallback it could take): the fetch still broke the limit
            shutil.rmtree(work, ignore_errors=True)
            raise redirects.error()

    info = result.get("info") or {}
    files = [p for p in work.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
    try:
        if not files:
            # yt-dlp's max_filesize only logs and returns normally: the missing file is the signal
            if any("larger than max-filesize" in m or "max-filesize" in m for m in ytlog.messages):
                raise TooLarge(f"{url} is larger than {limits.max_bytes} bytes")
            raise Unsupported(f"no media file was downloaded from {url}")
        path = max(files, key=lambda p: p.stat().st_size)
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise TooLarge(f"{url} is {size} bytes, over the limit of {limits.max_bytes}")
        if size == 0:
            raise Unsupported(f"{url} gave an empty file")
        duration = info.get("duration")
        if not isinstance(duration, (int, float)):
            # often unknown before the download (direct files, generic pages): measure it now
            duration = probe(path).duration
        if duration is not None and duration > limits.max_duration_s:
            raise TooLong(f"{url} lasts {duration:.0f} s, over the limit of {limits.max_duration_s:.0f} s")
    except MediaError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    keep = {k: info.get(k) for k in ("id", "title", "uploader", "timestamp", "webpage_url", "extractor_key", "ext")}
    return Fetched(
        path=path,
        sha256=sha256_file(path),
        size=size,
        url=str(info.get("webpage_url") or url),
        extractor=str(info.get("extractor_key") or "Generic"),
        duration=float(duration) if isinstance(duration, (int, float)) else None,
        info=keep,
    )
