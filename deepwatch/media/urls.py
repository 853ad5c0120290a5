"""Canonical URLs: one spelling per piece of media, so that URL dedup sees reposts of a link as one.

Pure functions, no I/O. The generic rules (case, default ports, fragments, tracking parameters,
sorted query) apply to every URL; each platform then maps its many spellings of one post to a single
id-based form that the platform itself serves (so a moderator can still click it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from deepwatch.media.errors import Unsupported

DEFAULT_PORTS = {"http": 80, "https": 443}

# Parameters that say who shared a link or how it was found, never what it points to.
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid", "ttclid", "igshid", "igsh",
        "si", "feature", "mc_cid", "mc_eid", "_ga", "_gl", "ref_src", "ref_url", "share_id", "share_source",
        "spm", "mibextid", "rdid", "sfnsn", "utm",
    }
)
TRACKING_PREFIXES = ("utm_", "__cft__", "__tn__", "_hs", "pk_", "mtm_")

PLATFORM_HOSTS: dict[str, tuple[str, ...]] = {
    "youtube": ("youtube.com", "youtu.be", "youtube-nocookie.com"),
    "tiktok": ("tiktok.com",),
    "x": ("x.com", "twitter.com", "fxtwitter.com", "vxtwitter.com", "fixupx.com"),
    "instagram": ("instagram.com", "instagr.am"),
    "reddit": ("reddit.com", "redd.it"),
    "facebook": ("facebook.com", "fb.com", "fb.watch"),
    "vimeo": ("vimeo.com",),
}

YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


def _host_matches(host: str, domain: str) -> bool:
    return host == domain or host.endswith("." + domain)


def platform_of(url: str) -> str:
    """The platform a URL belongs to, from its host; ``web`` for everything else."""
    host = (urlsplit(url).hostname or "").rstrip(".").lower()
    for platform, domains in PLATFORM_HOSTS.items():
        if any(_host_matches(host, d) for d in domains):
            return platform
    return "web"


_WHITESPACE = re.compile(r"\s")  # as str.isspace, without a Python loop per character


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


def _generic(url: str) -> tuple[str, str, str, list[tuple[str, str]]]:
    """Scheme, host[:port], path and the kept query pairs of a URL, with the generic rules applied."""
    if not isinstance(url, str) or _WHITESPACE.search(url.strip()):
        raise Unsupported(f"not a URL: {url!r}")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise Unsupported(f"not a URL: {url!r} ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise Unsupported(f"only http and https URLs are fetched, not {scheme or 'no scheme'!r}: {url!r}")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise Unsupported(f"URL without a host: {url!r}")
    try:
        host = host.encode("idna").decode("ascii")  # one spelling for internationalised names
    except UnicodeError as exc:
        raise Unsupported(f"bad host name in {url!r}: {exc}") from None
    if ":" in host:
        host = f"[{host}]"  # IPv6 literal
    netloc = host if port in (None, DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)]
    return scheme, netloc, parts.path or "/", query


def _join(scheme: str, netloc: str, path: str, query: list[tuple[str, str]]) -> str:
    return urlunsplit((scheme, netloc, path, urlencode(sorted(query)), ""))


def _segments(path: str) -> list[str]:
    return [s for s in path.split("/") if s]


# --- platforms: each returns the canonical URL, or None to keep the generic form ----------------


def _youtube(host: str, path: str, query: dict[str, str]) -> str | None:
    segs = _segments(path)
    video_id = None
    if host.endswith("youtu.be") and segs:
        video_id = segs[0]
    elif segs[:1] == ["watch"] or path == "/watch":
        video_id = query.get("v")
    elif len(segs) >= 2 and segs[0] in ("shorts", "embed", "v", "live", "e"):
        video_id = segs[1]
    if video_id and YOUTUBE_ID.match(video_id):
        return f"https://www.youtube.com/watch?v={video_id}"
    return None


def _tiktok(host: str, path: str, query: dict[str, str]) -> str | None:
    segs = _segments(path)
    video_id = None
    if len(segs) >= 3 and segs[0].startswith("@") and segs[1] in ("video", "photo"):
        video_id = segs[2]
    elif len(segs) >= 2 and segs[0] == "v":
        video_id = segs[1].removesuffix(".html")
    elif len(segs) >= 2 and segs[0] == "embed":
        video_id = segs[-1]
    if video_id and video_id.isdigit():
        # TikTok serves any user name (even none) for a video id and redirects to the right one
        return f"https://www.tiktok.com/@/video/{video_id}"
    return None


def _x(host: str, path: str, query: dict[str, str]) -> str | None:
    segs = _segments(path)
    for i, seg in enumerate(segs[:-1]):
        if seg in ("status", "statuses") and segs[i + 1].isdigit():
            return f"https://x.com/i/status/{segs[i + 1]}"
    return None


def _instagram(host: str, path: str, query: dict[str, str]) -> str | None:
    segs = _segments(path)
    for i, seg in enumerate(segs[:-1]):
        if seg in ("p", "reel", "reels", "tv"):
            return f"https://www.instagram.com/p/{segs[i + 1]}/"
    return None


def _reddit(host: str, path: str, query: dict[str, str]) -> str | None:
    segs = _segments(path)
    if host.endswith("redd.it"):
        if host in ("redd.it", "www.redd.it") and len(segs) == 1 and segs[0].isalnum():
            return f"https://www.reddit.com/comments/{segs[0].lower()}/"
        return None  # v.redd.it / i.redd.it: the media file itself
    if "comments" in segs:
        i = segs.index("comments")
        if i + 1 < len(segs) and segs[i + 1].isalnum():
            return f"https://www.reddit.com/comments/{segs[i + 1].lower()}/"
    return None


def _facebook(host: str, path: str, query: dict[str, str]) -> str | None:
    segs = _segments(path)
    video_id = None
    if segs[:1] == ["watch"] or segs[:1] == ["video.php"]:
        video_id = query.get("v")
    elif len(segs) >= 2 and segs[0] in ("reel", "reels"):
        video_id = segs[1]
    elif len(segs) >= 3 and segs[-2] == "videos":
        video_id = segs[-1]
    if video_id and video_id.isdigit():
        return f"https://www.facebook.com/watch/?v={video_id}"
    return None


def _vimeo(host: str, path: str, query: dict[str, str]) -> str | None:
    segs = _segments(path)
    numeric = [i for i, s in enumerate(segs) if s.isdigit()]
    if not numeric:
        return None
    i = numeric[-1] if host.startswith("player.") else numeric[0]
    video_id = segs[i]
    # unlisted videos need their hash, given either as a path segment or as ?h=
    unlisted = query.get("h") or (segs[i + 1] if i + 1 < len(segs) and re.fullmatch(r"[0-9a-f]{6,}", segs[i + 1])
                                  else None)
    return f"https://vimeo.com/{video_id}/{unlisted}" if unlisted else f"https://vimeo.com/{video_id}"


PLATFORM_RULES: dict[str, Callable[[str, str, dict[str, str]], str | None]] = {
    "youtube": _youtube,
    "tiktok": _tiktok,
    "x": _x,
    "instagram": _instagram,
    "reddit": _reddit,
    "facebook": _facebook,
    "vimeo": _vimeo,
}


def canonical_url(url: str) -> str:
    """The one spelling of ``url`` used as the dedup key; raises :class:`Unsupported` for non-URLs."""
    scheme, netloc, path, query = _generic(url)
    rule = PLATFORM_RULES.get(platform_of(f"{scheme}://{netloc}/"))
    if rule is not None:
        mapped = rule(netloc.split(":")[0], path, dict(query))
        if mapped is not None:
            return mapped
    return _join(scheme, netloc, path, query)
