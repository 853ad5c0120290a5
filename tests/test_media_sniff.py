"""Sniffing: the type comes from the bytes, never from the name; structure walks find truncation and polyglots."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepwatch.media.errors import Corrupt, Unsupported
from deepwatch.media.sniff import HEAD_BYTES, formats, sniff, sniff_bytes
from deepwatch.media.structure import check_structure, embedded_zip
from tests.media_support import (
    animation_bytes,
    gif_js_polyglot,
    image_bytes,
    insert_middle,
    jpeg_with_comment,
    video_file,
    zip_bytes,
)

TS_PACKET = b"\x47" + bytes(187)
HEADS = {
    # hand-made first bytes, one per format sniff names
    "heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    "avif": b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf",
    "mp4": b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41",
    "mov": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ",
    "3gp": b"\x00\x00\x00\x14ftyp3gp5\x00\x00\x00\x00isom",
    "matroska": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x88matroska",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm",
    "avi": b"RIFF\x00\x10\x00\x00AVI LIST",
    "flv": b"FLV\x01\x05\x00\x00\x00\x09",
    "mpegts": TS_PACKET * 3,
    "ogg": b"OggS\x00\x02" + bytes(20),
    "mpeg": b"\x00\x00\x01\xba\x44\x00\x04\x00",
    "bmp": b"BM\x36\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00\x28\x00\x00\x00",
    "tiff": b"II*\x00\x08\x00\x00\x00",
}


@pytest.mark.parametrize("fmt", sorted(HEADS))
def test_sniff_heads(fmt: str) -> None:
    sniffed = sniff_bytes(HEADS[fmt], 10_000)
    assert sniffed == formats()[fmt]
    assert sniffed.ext.isalnum() and sniffed.mime.startswith(sniffed.kind)


@pytest.mark.parametrize(
    ("pillow", "fmt", "ext"),
    [("JPEG", "jpeg", "jpg"), ("PNG", "png", "png"), ("GIF", "gif", "gif"), ("WEBP", "webp", "webp"),
     ("BMP", "bmp", "bmp"), ("TIFF", "tiff", "tif"), ("AVIF", "avif", "avif")],
)
def test_sniff_images_pillow_wrote(pillow: str, fmt: str, ext: str) -> None:
    sniffed = sniff_bytes(image_bytes(pillow))
    assert (sniffed.kind, sniffed.format, sniffed.ext) == ("image", fmt, ext)


@pytest.mark.parametrize(
    ("name", "options", "fmt"),
    [("v.mp4", {}, "mp4"), ("v.mov", {}, "mov"), ("v.mkv", {}, "matroska"), ("v.avi", {}, "avi"),
     ("v.ts", {}, "mpegts"), ("v.webm", {"codec": "libvpx-vp9", "crf": None}, "webm"),
     ("v.flv", {"codec": "flv", "crf": None}, "flv"), ("v.mpg", {"codec": "mpeg2video", "crf": None}, "mpeg")],
)
def test_sniff_videos_write_video_wrote(tmp_path: Path, name: str, options: dict, fmt: str) -> None:
    path = video_file(tmp_path / name, frames=10, **options)
    assert sniff(path) == formats()[fmt]


def test_name_and_extension_are_ignored(tmp_path: Path) -> None:
    disguised = tmp_path / "clip.mp4"
    disguised.write_bytes(image_bytes("JPEG"))
    assert sniff(disguised).format == "jpeg"
    video = video_file(tmp_path / "v.mp4", frames=5)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(video.read_bytes())
    assert sniff(photo).format == "mp4"


def test_empty_is_corrupt_and_unknown_is_unsupported_with_a_short_hex_dump(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.touch()
    with pytest.raises(Corrupt, match="empty"):
        sniff(empty)
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x01\x02\x03\x04" * 250_000)
    with pytest.raises(Unsupported, match="first bytes 01 02 03 04 01") as caught:
        sniff(big)
    assert len(str(caught.value)) < 200
    for head, what in [(b"<!DOCTYPE html><html>", "HTML"), (zip_bytes(), "ZIP"), (b"%PDF-1.7\n", "PDF")]:
        with pytest.raises(Unsupported, match=what):
            sniff_bytes(head)


def test_iso_brands_that_are_not_video_are_unsupported() -> None:
    with pytest.raises(Unsupported, match="audio-only"):
        sniff_bytes(b"\x00\x00\x00\x14ftypM4A \x00\x00\x00\x00M4A ")
    with pytest.raises(Unsupported, match="crx"):
        sniff_bytes(b"\x00\x00\x00\x14ftypcrx \x00\x00\x00\x00crx ")


def test_mpegts_needs_two_sync_bytes() -> None:
    assert sniff_bytes(b"\x00" * 4 + (b"\x47" + bytes(191)) * 3).format == "mpegts"  # M2TS, 192-byte packets
    with pytest.raises(Unsupported):
        sniff_bytes(b"\x47" + bytes(100))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=HEAD_BYTES), st.integers(min_value=0, max_value=1 << 40))
def test_sniff_bytes_only_raises_media_errors(head: bytes, size: int) -> None:
    try:
        sniffed = sniff_bytes(head, max(size, len(head)) if head else 0)
    except (Corrupt, Unsupported):
        return
    assert sniffed in formats().values()


# --- structure walks --------------------------------------------------------------------------
@pytest.mark.parametrize("pillow", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_well_formed_images_pass(pillow: str) -> None:
    data = image_bytes(pillow)
    assert check_structure(data, sniff_bytes(data).format) == ()


def test_animations_pass() -> None:
    for pillow in ("GIF", "PNG", "WEBP"):
        data = animation_bytes(pillow)
        assert check_structure(data, sniff_bytes(data).format) == ()


@pytest.mark.parametrize("pillow", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_truncated_images_are_corrupt(pillow: str) -> None:
    data = image_bytes(pillow)
    with pytest.raises(Corrupt, match=r"truncated|corrupt"):
        check_structure(data[: len(data) // 2], sniff_bytes(data).format)


def test_trailers_after_a_jpeg() -> None:
    jpeg = image_bytes("JPEG")
    assert check_structure(jpeg + bytes(300), "jpeg") == ()  # padding
    assert check_structure(jpeg + b"\xff" * 10, "jpeg") == ()
    assert check_structure(jpeg + jpeg + jpeg, "jpeg") == ("jpeg", "jpeg")  # MPO pictures, gain maps
    with pytest.raises(Corrupt, match=r"polyglot: \d+ bytes after the end of the JPEG data, a ZIP archive"):
        check_structure(jpeg + zip_bytes(), "jpeg")
    with pytest.raises(Corrupt, match=r"polyglot.*HTML"):
        check_structure(jpeg + b"<html><script>alert(1)</script></html>", "jpeg")


def test_zip_hidden_inside_a_jpeg_comment_is_found() -> None:
    data = jpeg_with_comment(image_bytes("JPEG"), zip_bytes())
    assert embedded_zip(data) is not None
    with pytest.raises(Corrupt, match="ZIP archive"):
        check_structure(data, "jpeg")
    assert embedded_zip(image_bytes("JPEG") + b"PK\x05\x06" + bytes(18)) is None  # a signature alone is not an archive


def test_gif_js_polyglot_is_corrupt() -> None:
    with pytest.raises(Corrupt, match=r"polyglot.*GIF"):
        check_structure(gif_js_polyglot(), "gif")


def test_png_chunk_crc_is_checked() -> None:
    data = bytearray(image_bytes("PNG"))
    data[60] ^= 0xFF
    with pytest.raises(Corrupt, match=r"CRC|chunk"):
        check_structure(bytes(data), "png")


def test_jpeg_invalid_marker_from_garbage_is_corrupt() -> None:
    jpeg = image_bytes("JPEG")
    broken = jpeg[:2] + b"\xff\x10garbage" + jpeg[2:]
    with pytest.raises(Corrupt, match="invalid marker"):
        check_structure(broken, "jpeg")


def test_mp4_box_walk(tmp_path: Path) -> None:
    mp4 = video_file(tmp_path / "v.mp4", frames=10).read_bytes()
    assert check_structure(mp4, "mp4") == ()
    with pytest.raises(Corrupt, match="truncated ISO media file"):
        check_structure(mp4[: len(mp4) // 2], "mp4")
    with pytest.raises(Corrupt, match="polyglot"):
        check_structure(mp4 + zip_bytes(), "mp4")
    with pytest.raises(Corrupt, match="polyglot"):
        check_structure(mp4 + b"<script>alert(1)</script>", "mp4")


def test_matroska_and_riff_sizes(tmp_path: Path) -> None:
    mkv = video_file(tmp_path / "v.mkv", frames=10).read_bytes()
    avi = video_file(tmp_path / "v.avi", frames=10).read_bytes()
    assert check_structure(mkv, "matroska") == () and check_structure(avi, "avi") == ()
    for data, fmt in ((mkv, "matroska"), (avi, "avi")):
        with pytest.raises(Corrupt, match="truncated"):
            check_structure(data[: len(data) // 2], fmt)
        with pytest.raises(Corrupt, match="polyglot"):
            check_structure(data + b"<html></html>", fmt)


def test_garbage_inserted_into_a_jpeg_marks_it_corrupt_when_it_holds_a_marker() -> None:
    jpeg = image_bytes("JPEG")
    with pytest.raises(Corrupt):
        check_structure(insert_middle(jpeg, b"\x12\xff\x34\x56" * 8), "jpeg")


MAGICS = [b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a", b"RIFF\x00\x01\x00\x00WEBP", b"BM",
          b"\x00\x00\x00\x18ftypisom", b"\x1a\x45\xdf\xa3", b"RIFF\x00\x01\x00\x00AVI "]
FMTS = ["jpeg", "png", "gif", "webp", "bmp", "mp4", "matroska", "avi"]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(MAGICS) - 1), st.binary(max_size=2048))
def test_structure_walks_only_raise_corrupt(which: int, tail: bytes) -> None:
    try:
        check_structure(MAGICS[which] + tail, FMTS[which])
    except Corrupt:
        pass
