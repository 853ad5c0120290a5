"""Tell a media file's type from its first bytes, never from its name or a Content-Type header.

:func:`sniff_bytes` is pure over the first :data:`HEAD_BYTES` bytes and the file's size, so it can be
tested without files; :func:`sniff` reads those bytes. An empty file is :class:`Corrupt`; bytes that
match no known signature are :class:`Unsupported`, with a hex dump of the first 16 bytes (never more).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from deepwatch.media.errors import Corrupt, Unsupported

HEAD_BYTES = 1024  # enough for three MPEG-TS packets (188 or 192 bytes) and an ftyp box's brand list

Kind = Literal["image", "video"]


@dataclass(frozen=True)
class Sniffed:
    kind: Kind
    format: str  # our name: "jpeg", "png", ..., "mp4", "matroska", "mpegts"
    ext: str  # canonical extension of the object-store key media/<id[:2]>/<id>.<ext>
    mime: str  # the Content-Type to store and serve the original with


_FORMATS: dict[str, tuple[Kind, str, str]] = {
    "jpeg": ("image", "jpg", "image/jpeg"),
    "png": ("image", "png", "image/png"),
    "gif": ("image", "gif", "image/gif"),
    "webp": ("image", "webp", "image/webp"),
    "bmp": ("image", "bmp", "image/bmp"),
    "tiff": ("image", "tif", "image/tiff"),
    "heic": ("image", "heic", "image/heic"),
    "avif": ("image", "avif", "image/avif"),
    "mp4": ("video", "mp4", "video/mp4"),
    "mov": ("video", "mov", "video/quicktime"),
    "3gp": ("video", "3gp", "video/3gpp"),
    "matroska": ("video", "mkv", "video/x-matroska"),
    "webm": ("video", "webm", "video/webm"),
    "avi": ("video", "avi", "video/x-msvideo"),
    "flv": ("video", "flv", "video/x-flv"),
    "mpegts": ("video", "ts", "video/mp2t"),
    "ogg": ("video", "ogv", "video/ogg"),
    "mpeg": ("video", "mpg", "video/mpeg"),
}

# ISO base media (ftyp) brands, major brand first, then the compatible ones.
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"}
_AVIF_BRANDS = {b"avif", b"avis"}
_GENERIC_HEIF = {b"mif1", b"msf1"}
_MP4_BRANDS = {
    b"isom", b"iso2", b"iso3", b"iso4", b"iso5", b"iso6", b"iso7", b"iso8", b"iso9", b"mp41", b"mp42",
    b"mp71", b"avc1", b"dash", b"M4V ", b"M4VH", b"M4VP", b"f4v ", b"MSNV", b"NDAS", b"XAVC", b"mmp4",
}
_AUDIO_BRANDS = {b"M4A ", b"M4B ", b"M4P ", b"F4A ", b"F4B "}
# QuickTime files without an ftyp box start with one of these atoms.
_QT_ATOMS = {b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"}
_BMP_DIB_SIZES = {12, 16, 40, 52, 56, 64, 108, 124}

# What the first bytes of common non-media files look like, to make Unsupported messages useful.
_NOT_MEDIA = (
    (b"PK\x03\x04", "a ZIP archive"),
    (b"%PDF", "a PDF document"),
    (b"\x1f\x8b", "gzip data"),
    (b"\x7fELF", "an ELF executable"),
    (b"MZ", "a Windows executable"),
    (b"ID3", "MP3 audio"),
    (b"fLaC", "FLAC audio"),
)
_MARKUP = re.compile(rb"^\s*<", re.DOTALL)
_WEBM_DOCTYPE = re.compile(rb"\x42\x82[\x81-\x88]webm")


def _named(fmt: str) -> Sniffed:
    kind, ext, mime = _FORMATS[fmt]
    return Sniffed(kind=kind, format=fmt, ext=ext, mime=mime)


def _iso_bmff(head: bytes) -> str:
    """The format of an ISO base media file from its ftyp brands; Unsupported for other brands."""
    box_size = int.from_bytes(head[0:4], "big")
    major = head[8:12]
    end = min(len(head), box_size) if box_size >= 16 else 16
    brands = [major] + [head[i : i + 4] for i in range(16, end - 3, 4)]
    if any(b in _AVIF_BRANDS for b in brands) and (major in _AVIF_BRANDS or major in _GENERIC_HEIF):
        return "avif"
    if major in _HEIF_BRANDS or major in _GENERIC_HEIF:
        return "heic"
    for brand in brands:
        if brand == b"qt  ":
            return "mov"
        if brand.startswith((b"3gp", b"3g2")):
            return "3gp"
        if brand in _MP4_BRANDS:
            return "mp4"
        if brand in _AUDIO_BRANDS:
            raise Unsupported(f"audio-only MPEG-4 file (brand {brand.decode('latin-1')!r})")
    shown = major.decode("latin-1")
    raise Unsupported(f"ISO media file with an unknown brand {shown!r}")


def _mpegts(head: bytes, size: int, offset: int, packet: int) -> bool:
    """Sync bytes 0x47 at every packet start in the head; at least two packets must be there."""
    starts = [offset + i * packet for i in range(3) if offset + i * packet < min(size, len(head))]
    return len(starts) >= 2 and all(head[s] == 0x47 for s in starts)


def _matroska(head: bytes) -> str:
    """WebM is Matroska whose EBML DocType element (ID 0x4282) says "webm"."""
    return "webm" if _WEBM_DOCTYPE.search(head[:128]) else "matroska"


def sniff_bytes(head: bytes, size: int | None = None) -> Sniffed:
    """The type of a file whose first bytes are ``head`` and whose length is ``size`` (default ``len(head)``)."""
    size = len(head) if size is None else size
    if size == 0:
        raise Corrupt("the file is empty")
    fmt: str | None = None
    if head.startswith(b"\xff\xd8\xff"):
        fmt = "jpeg"
    elif head.startswith(b"\x89PNG\r\n\x1a\n"):
        fmt = "png"
    elif head.startswith((b"GIF87a", b"GIF89a")):
        fmt = "gif"
    elif head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        fmt = "webp"
    elif head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        fmt = "avi"
    elif head.startswith(b"BM") and int.from_bytes(head[14:18], "little") in _BMP_DIB_SIZES:
        fmt = "bmp"
    elif head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        fmt = "tiff"
    elif head[4:8] == b"ftyp" and len(head) >= 12:
        fmt = _iso_bmff(head)
    elif head[4:8] in _QT_ATOMS and int.from_bytes(head[0:4], "big") >= 8:
        fmt = "mov"
    elif head.startswith(b"\x1a\x45\xdf\xa3"):
        fmt = _matroska(head)
    elif head.startswith(b"FLV\x01"):
        fmt = "flv"
    elif head.startswith(b"OggS"):
        fmt = "ogg"
    elif head.startswith(b"\x00\x00\x01\xba"):
        fmt = "mpeg"
    elif _mpegts(head, size, 0, 188) or _mpegts(head, size, 4, 192):
        fmt = "mpegts"
    if fmt is not None:
        return _named(fmt)
    raise Unsupported(f"not a known image or video format: {describe_bytes(head)}")


def describe_bytes(data: bytes) -> str:
    """A short, safe description of some bytes: what they look like, and the hex of the first 16."""
    shown = data[:16].hex(" ")
    for magic, name in _NOT_MEDIA:
        if data.startswith(magic):
            return f"{name} (first bytes {shown})"
    if _MARKUP.match(data[:256]):
        return f"HTML/XML markup (first bytes {shown})"
    return f"first bytes {shown}"


def sniff(path: Path) -> Sniffed:
    """Sniff the file at ``path`` from its first bytes; its name is never consulted."""
    with path.open("rb") as handle:
        head = handle.read(HEAD_BYTES)
        size = handle.seek(0, 2)
    return sniff_bytes(head, size)


def formats() -> dict[str, Sniffed]:
    """Every format :func:`sniff` can name, by name."""
    return {name: _named(name) for name in _FORMATS}
