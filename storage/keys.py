"""Object keys: the content-addressed layout, and the grammar every key must fit.

Keys are built from ids, never from user input, so writes are idempotent (the same bytes always
land on the same key) and nothing a crawler or a moderator types can steer a write. Every builder
validates its parts and raises :class:`InvalidKey` naming the bad part.

Layout::

    media/<id[:2]>/<id>.<ext>   the fetched bytes (two-hex fan-out keeps local directories small)
    thumbs/<id>.jpg             thumbnails
    results/<id>.json           the scored record
    flagged/<id>.<ext>          flagged fakes, kept after the media is dropped
    exports/<name>/<path>       exported datasets
    failures/<sha256 of URL>.json   why a URL has no record (the stream could not fetch or score it)

The generic grammar (:func:`validate_key`) is what both backends enforce on *any* key: segments
of ``[A-Za-z0-9._-]`` separated by single ``/``, none empty and none starting with ``.``. That one
rule shuts out ``..``, ``.``, absolute paths, backslashes and NUL, and it also reserves every
dot-name for the local backend's sidecars and temp files, which therefore can never collide with
a key or show up in a listing.
"""

from __future__ import annotations

import hashlib
import re

from storage.errors import InvalidKey

MEDIA_PREFIX = "media/"
THUMBS_PREFIX = "thumbs/"
RESULTS_PREFIX = "results/"
FLAGGED_PREFIX = "flagged/"
EXPORTS_PREFIX = "exports/"
FAILURES_PREFIX = "failures/"

# Containers and image formats the fetcher may keep. An allowlist rather than a pattern: the
# extension ends up in a file name on disk and in a Content-Type guess, so only known ones.
MEDIA_EXTENSIONS = frozenset(
    {
        "mp4", "m4v", "mov", "webm", "mkv", "avi", "flv", "ts", "3gp", "mpg", "mpeg", "ogv",
        "gif", "jpg", "jpeg", "png", "webp", "bmp", "heic", "avif", "tif", "tiff",
    }
)  # fmt: skip

MAX_KEY_LENGTH = 1024  # S3's limit, in bytes (keys here are ASCII)
# File names are limited to 255 bytes; the local backend's hidden sidecar and temp names add
# about 50 characters around a segment.
MAX_SEGMENT_LENGTH = 200

_SHA256 = re.compile(r"[0-9a-f]{64}")
_EXTENSION = re.compile(r"[a-z0-9]{1,8}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # same as deepwatch.contracts.Slug
_SEGMENT = re.compile(rf"[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_SEGMENT_LENGTH - 1}}}")
_PARTIAL_SEGMENT = re.compile(rf"(?:[A-Za-z0-9_-][A-Za-z0-9._-]{{0,{MAX_SEGMENT_LENGTH - 1}}})?")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_media_id(media_id: str) -> str:
    """A media id is the lower-case hex sha256 of the bytes; anything else is refused."""
    if not isinstance(media_id, str) or not _SHA256.fullmatch(media_id):
        raise InvalidKey(f"invalid media id {_show(media_id)}: must be 64 lower-case hex digits (sha256)")
    return media_id


def check_extension(ext: str) -> str:
    """Normalise ``".MP4"`` to ``"mp4"`` (one spelling per format keeps keys idempotent), then allowlist."""
    if not isinstance(ext, str):
        raise InvalidKey(f"invalid extension {_show(ext)}: must be a string")
    normal = ext.removeprefix(".").lower()
    if not _EXTENSION.fullmatch(normal) or normal not in MEDIA_EXTENSIONS:
        raise InvalidKey(f"invalid extension {_show(ext)}: must be one of {', '.join(sorted(MEDIA_EXTENSIONS))}")
    return normal


def check_export_name(name: str) -> str:
    if not isinstance(name, str) or not _SLUG.fullmatch(name):
        raise InvalidKey(
            f"invalid export name {_show(name)}: must be a slug (a-z, 0-9, then also _ . -; at most 64)"
        )
    return name


def media_key(media_id: str, ext: str) -> str:
    media_id = check_media_id(media_id)
    return f"{MEDIA_PREFIX}{media_id[:2]}/{media_id}.{check_extension(ext)}"


def thumb_key(media_id: str) -> str:
    return f"{THUMBS_PREFIX}{check_media_id(media_id)}.jpg"


def result_key(media_id: str) -> str:
    return f"{RESULTS_PREFIX}{check_media_id(media_id)}.json"


def flagged_key(media_id: str, ext: str) -> str:
    return f"{FLAGGED_PREFIX}{check_media_id(media_id)}.{check_extension(ext)}"


def failure_key(canonical_url: str) -> str:
    """A URL that never downloaded has no media id; its failure is keyed by the canonical URL's hash."""
    return f"{FAILURES_PREFIX}{hashlib.sha256(canonical_url.encode()).hexdigest()}.json"


def export_prefix(name: str) -> str:
    """The prefix that holds one export; list or delete under it to see or drop the whole export."""
    return f"{EXPORTS_PREFIX}{check_export_name(name)}/"


def export_key(name: str, path: str) -> str:
    """A file inside an export, e.g. ``export_key("fakes-2026-11", "media/<id>.mp4")``.

    ``path`` is chosen by the exporter (ids and fixed names), and must fit the key grammar.
    """
    prefix = export_prefix(name)
    try:
        validate_key(path)
    except InvalidKey as exc:
        raise InvalidKey(f"invalid path inside export {name!r}: {exc}") from None
    return validate_key(prefix + path)


def validate_key(key: str) -> str:
    """Return ``key`` if it fits the key grammar (see the module docstring), else raise InvalidKey."""
    if not isinstance(key, str):
        raise InvalidKey(f"invalid object key {_show(key)}: must be a string")
    if not key:
        raise InvalidKey("invalid object key '': must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"invalid object key {_show(key)}: longer than {MAX_KEY_LENGTH} characters")
    for segment in key.split("/"):
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(f"invalid object key {_show(key)}: {_segment_problem(segment)}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: ``""`` (everything), whole segments ending in ``/``, or a partial last segment.

    Prefixes are plain string prefixes, as in S3: ``media/a`` matches ``media/ab/...``.
    """
    if not isinstance(prefix, str):
        raise InvalidKey(f"invalid prefix {_show(prefix)}: must be a string")
    if len(prefix) > MAX_KEY_LENGTH:
        raise InvalidKey(f"invalid prefix {_show(prefix)}: longer than {MAX_KEY_LENGTH} characters")
    *whole, partial = prefix.split("/")
    for segment in whole:
        if not _SEGMENT.fullmatch(segment):
            raise InvalidKey(f"invalid prefix {_show(prefix)}: {_segment_problem(segment)}")
    if not _PARTIAL_SEGMENT.fullmatch(partial):
        raise InvalidKey(f"invalid prefix {_show(prefix)}: {_segment_problem(partial)}")
    return prefix


def _segment_problem(segment: str) -> str:
    if not segment:
        return "empty path segment (leading, trailing or doubled '/')"
    if segment.startswith("."):
        return f"segment {_show(segment)} starts with '.' (no '.', '..' or hidden names)"
    if len(segment) > MAX_SEGMENT_LENGTH:
        return f"segment longer than {MAX_SEGMENT_LENGTH} characters"
    return f"segment {_show(segment)} has characters outside A-Z a-z 0-9 . _ -"
