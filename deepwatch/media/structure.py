"""Walk a file's container structure to find truncation and polyglots, before any decoder sees it.

Pure functions over the whole file's bytes (``bytes`` or a read-only ``mmap``). What counts as a
polyglot, i.e. what :func:`check_structure` refuses with :class:`Corrupt`:

- **Data after the end of the media**: after a JPEG's EOI marker, a PNG's IEND chunk, a GIF's
  trailer, the RIFF chunk of a WebP or AVI, a BMP's declared size, the last top-level box of an
  MP4/MOV/3GP/HEIF/AVIF, or a Matroska/WebM segment of known size. Allowed after the end: padding
  (all 0x00 or all 0xFF); after a JPEG, further JPEGs (MPO pictures, Ultra HDR gain maps, depth
  maps) and one ISO media file ending at the end of the file (Android Motion Photos), each walked the
  same way and reported in the result; OpenDML ``RIFF AVIX`` chunks after an AVI.
- **A ZIP archive anywhere**: an end-of-central-directory record in the last 64 KiB whose central
  directory is really there. ZIP readers find an archive from the end of a file, whatever precedes
  it, so this catches JPEG+ZIP/JAR polyglots even when the archive hides in a metadata box.

A file that ends before its structure says it should (a box, chunk, segment or scan running past the
end) is truncated, also :class:`Corrupt`. TIFF, FLV, MPEG-TS, MPEG-PS and Ogg have no end marker or
declared size to check (the streaming formats may be cut anywhere): only the ZIP check applies.
Random or crafted bytes only ever raise :class:`Corrupt`.
"""

from __future__ import annotations

import mmap
import re
import zlib
from collections.abc import Callable

from deepwatch.media.errors import Corrupt
from deepwatch.media.sniff import describe_bytes

Buffer = bytes | mmap.mmap

_PADDING = re.compile(rb"\x00*|\xff*")
_MAX_CHAINED = 16  # images after a JPEG (MPO frames, gain/depth maps); real files have a few

# --- JPEG ---------------------------------------------------------------------------------------
_STANDALONE = frozenset([0x01, *range(0xD0, 0xD8)])  # TEM and RST0-7: no length field
_SEGMENTS = frozenset([*range(0xC0, 0xD0), *range(0xDA, 0xE0), *range(0xE0, 0xFF)])
# In entropy-coded data 0xFF is followed by 0x00 (stuffing) or RST0-7; anything else ends the scan.
_SCAN_END = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")


def jpeg_end(data: Buffer, start: int = 0) -> int:
    """The offset just past the EOI marker of the JPEG at ``start``."""
    size = len(data)
    if data[start : start + 3] != b"\xff\xd8\xff":
        raise Corrupt(f"no JPEG start marker at byte {start}")
    pos = start + 2
    while True:
        if pos + 2 > size:
            raise Corrupt("truncated JPEG: it ends before its end-of-image marker")
        if data[pos] != 0xFF:
            raise Corrupt(f"corrupt JPEG: expected a marker at byte {pos}, found 0x{data[pos]:02x}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return pos + 2
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker not in _SEGMENTS:
            raise Corrupt(f"corrupt JPEG: invalid marker 0xff{marker:02x} at byte {pos}")
        if pos + 4 > size:
            raise Corrupt("truncated JPEG: it ends inside a marker segment")
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            raise Corrupt(f"corrupt JPEG: segment 0xff{marker:02x} at byte {pos} has length {length}")
        pos += 2 + length
        if pos > size:
            raise Corrupt(f"truncated JPEG: segment 0xff{marker:02x} runs past the end of the file")
        if marker == 0xDA:  # start of scan: skip the entropy-coded data
            found = _SCAN_END.search(data, pos)
            if found is None:
                raise Corrupt("truncated JPEG: the image data ends without an end-of-image marker")
            pos = found.end() - 2


# --- PNG ----------------------------------------------------------------------------------------
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHUNK_TYPE = re.compile(rb"[A-Za-z]{4}")


def png_end(data: Buffer) -> int:
    """The offset just past the IEND chunk; every chunk's CRC is checked on the way."""
    size = len(data)
    if data[:8] != _PNG_SIGNATURE:
        raise Corrupt("no PNG signature")
    pos = 8
    while True:
        if pos + 12 > size:
            raise Corrupt("truncated PNG: it ends before its IEND chunk")
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if not _CHUNK_TYPE.fullmatch(kind) or length > 0x7FFFFFFF:
            raise Corrupt(f"corrupt PNG: no valid chunk at byte {pos}")
        end = pos + 12 + length
        if end > size:
            raise Corrupt(f"truncated PNG: chunk {kind.decode()} runs past the end of the file")
        crc = int.from_bytes(data[end - 4 : end], "big")
        if zlib.crc32(data[pos + 4 : end - 4]) != crc:
            raise Corrupt(f"corrupt PNG: chunk {kind.decode()} at byte {pos} fails its CRC")
        pos = end
        if kind == b"IEND":
            return pos


# --- GIF ----------------------------------------------------------------------------------------
def _sub_blocks(data: Buffer, pos: int) -> int:
    size = len(data)
    while True:
        if pos >= size:
            raise Corrupt("truncated GIF: it ends inside a data block")
        length = data[pos]
        pos += 1 + length
        if length == 0:
            return pos


def gif_end(data: Buffer) -> int:
    """The offset just past the GIF trailer (0x3B)."""
    size = len(data)
    if data[:6] not in (b"GIF87a", b"GIF89a") or size < 13:
        raise Corrupt("truncated GIF header")
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while True:
        if pos >= size:
            raise Corrupt("truncated GIF: it ends before its trailer")
        block = data[pos]
        if block == 0x3B:
            return pos + 1
        if block == 0x21:  # extension: label, then data sub-blocks
            pos = _sub_blocks(data, pos + 2)
        elif block == 0x2C:  # image descriptor, local colour table, LZW code size, data sub-blocks
            if pos + 10 > size:
                raise Corrupt("truncated GIF: it ends inside an image descriptor")
            local = data[pos + 9]
            pos += 10 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
            pos = _sub_blocks(data, pos + 1)
        else:
            raise Corrupt(f"corrupt GIF: unexpected block 0x{block:02x} at byte {pos}")


# --- RIFF (WebP, AVI) and BMP --------------------------------------------------------------------
def riff_end(data: Buffer, start: int = 0) -> int:
    size = int.from_bytes(data[start + 4 : start + 8], "little")
    end = start + 8 + size + (size & 1)
    if len(data) < start + 12 or end > len(data) + (size & 1):
        raise Corrupt("truncated RIFF file: its chunk runs past the end of the file")
    return min(end, len(data))


def bmp_end(data: Buffer) -> int:
    declared = int.from_bytes(data[2:6], "little")
    if declared == 0:  # allowed for uncompressed BMPs: nothing to compare
        return len(data)
    if declared > len(data):
        raise Corrupt(f"truncated BMP: it declares {declared} bytes, the file has {len(data)}")
    return declared


# --- ISO base media (MP4, MOV, 3GP, HEIF, AVIF) --------------------------------------------------
_FOURCC = re.compile(rb"[\x20-\x7e\xa9]{4}")
# Boxes seen at the top level; another type is accepted where it fits, but one running past the end
# of the file is taken for data after the last box rather than for a truncated box.
_TOP_LEVEL_BOXES = frozenset(
    {"ftyp", "styp", "moov", "mdat", "free", "skip", "wide", "uuid", "meta", "moof", "mfra", "sidx", "ssix", "prft"}
    | {"emsg", "pdin", "bloc", "pnot", "junk", "udta"}
)


def bmff_end(data: Buffer, start: int = 0) -> int:
    """Walk the top-level boxes from ``start``; the offset where they stop (the file's end if well formed)."""
    size = len(data)
    pos = start
    while pos < size:
        if pos + 8 > size or not _FOURCC.fullmatch(data[pos + 4 : pos + 8]):
            if pos == start:
                raise Corrupt(f"corrupt ISO media file: no box at byte {pos}")
            return pos  # not a box: whatever follows is judged by the caller
        length = int.from_bytes(data[pos : pos + 4], "big")
        header = 8
        if length == 1:
            if pos + 16 > size:
                raise Corrupt("truncated ISO media file: it ends inside a box header")
            length = int.from_bytes(data[pos + 8 : pos + 16], "big")
            header = 16
        elif length == 0:  # the last box, up to the end of the file
            length = size - pos
        kind = data[pos + 4 : pos + 8].decode("latin-1")
        if length < header:
            raise Corrupt(f"corrupt ISO media file: box {kind!r} at byte {pos} has size {length}")
        if pos + length > size:
            if pos > start and kind not in _TOP_LEVEL_BOXES:
                return pos  # not a box of ours running past the end: data after the last box
            raise Corrupt(
                f"truncated ISO media file: box {kind!r} at byte {pos} needs {length} bytes, {size - pos} remain"
            )
        pos += length
    return pos


# --- Matroska / WebM -----------------------------------------------------------------------------
def _vint(data: Buffer, pos: int) -> tuple[int, int, bool]:
    """An EBML variable-length integer at ``pos``: (value, length, all value bits set i.e. unknown size)."""
    if pos >= len(data) or data[pos] == 0:
        raise Corrupt(f"corrupt Matroska file: bad element size at byte {pos}")
    first = data[pos]
    length = 9 - first.bit_length()
    if pos + length > len(data):
        raise Corrupt("truncated Matroska file: it ends inside an element header")
    value = first & (0xFF >> length)
    for byte in data[pos + 1 : pos + length]:
        value = (value << 8) | byte
    return value, length, value == (1 << (7 * length)) - 1


def _element(data: Buffer, pos: int, element_id: bytes, name: str) -> tuple[int, int | None]:
    """(start of data, size or None when unknown) of the element ``element_id`` at ``pos``."""
    if data[pos : pos + len(element_id)] != element_id:
        raise Corrupt(f"corrupt Matroska file: no {name} element at byte {pos}")
    value, length, unknown = _vint(data, pos + len(element_id))
    return pos + len(element_id) + length, None if unknown else value


def matroska_end(data: Buffer) -> int:
    """The offset just past the Segment element, or the file's end for a segment of unknown size (live streams)."""
    body, header_size = _element(data, 0, b"\x1a\x45\xdf\xa3", "EBML header")
    if header_size is None:
        raise Corrupt("corrupt Matroska file: EBML header of unknown size")
    body, segment_size = _element(data, body + header_size, b"\x18\x53\x80\x67", "Segment")
    if segment_size is None:
        return len(data)
    end = body + segment_size
    if end > len(data):
        raise Corrupt(f"truncated Matroska file: the segment needs {end} bytes, the file has {len(data)}")
    return end


# --- after the end, and ZIP archives --------------------------------------------------------------
def _trailer(data: Buffer, end: int, fmt: str) -> tuple[str, ...]:
    """What follows the media's end: () for nothing or padding, the embedded media allowed; Corrupt otherwise."""
    embedded: list[str] = []
    while end < len(data):
        head = data[end : end + 16]
        if _PADDING.fullmatch(data[end:]):
            break
        if fmt == "jpeg" and head.startswith(b"\xff\xd8\xff") and len(embedded) < _MAX_CHAINED:
            end = jpeg_end(data, end)
            embedded.append("jpeg")
        elif fmt == "jpeg" and head[4:8] == b"ftyp" and bmff_end(data, end) == len(data):
            embedded.append("mp4")
            break
        elif fmt == "avi" and head.startswith(b"RIFF") and head[8:12] == b"AVIX":
            end = riff_end(data, end)
        else:
            raise Corrupt(
                f"polyglot: {len(data) - end} bytes after the end of the {fmt.upper()} data, {describe_bytes(head)}"
            )
    return tuple(embedded)


_ENDS: dict[str, Callable[[Buffer], int]] = {
    "jpeg": jpeg_end,
    "png": png_end,
    "gif": gif_end,
    "webp": riff_end,
    "avi": riff_end,
    "bmp": bmp_end,
    "mp4": bmff_end,
    "mov": bmff_end,
    "3gp": bmff_end,
    "heic": bmff_end,
    "avif": bmff_end,
    "matroska": matroska_end,
    "webm": matroska_end,
}
_EOCD = b"PK\x05\x06"
_ZIP_TAIL = 22 + 0xFFFF  # the end record and the longest comment


def embedded_zip(data: Buffer) -> int | None:
    """Where a ZIP archive's end-of-central-directory record is, if the file carries a real one."""
    tail_start = max(0, len(data) - _ZIP_TAIL)
    found = data.rfind(_EOCD, tail_start)
    while found >= 0:
        if found + 22 <= len(data):
            directory_size = int.from_bytes(data[found + 12 : found + 16], "little")
            directory = found - directory_size
            if directory_size and directory >= 0 and data[directory : directory + 4] == b"PK\x01\x02":
                return found
        found = data.rfind(_EOCD, tail_start, found)
    return None


def check_structure(data: Buffer, fmt: str) -> tuple[str, ...]:
    """Refuse truncated files and polyglots of format ``fmt`` (a :mod:`sniff` name); return embedded media kinds."""
    if not data:
        raise Corrupt("the file is empty")
    end_of = _ENDS.get(fmt)
    embedded = _trailer(data, end_of(data), fmt) if end_of is not None else ()
    where = embedded_zip(data)
    if where is not None:
        raise Corrupt(f"polyglot: the {fmt.upper()} file carries a ZIP archive (end record at byte {where})")
    return embedded
