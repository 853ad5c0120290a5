"""normalize(): check, probe, orient and derive real files made in the test; bad files only ever give MediaError."""

from __future__ import annotations

import tempfile
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from PIL import Image

from deepwatch.media import normalize as normalize_module
from deepwatch.media.decode_check import handle
from deepwatch.media.errors import Corrupt, MediaError, TooLarge, Unsupported
from deepwatch.media.normalize import DecodeTimeout, load_image_pixels, make_preview, normalize
from deepwatch.media.sniff import sniff
from deepwatch.settings import Settings
from tests.media_support import (
    animation_bytes,
    faststart,
    ffmpeg,
    garbage,
    gif_js_polyglot,
    image_bytes,
    insert_middle,
    jpeg_with_comment,
    jpeg_with_orientation,
    pattern,
    png_bomb,
    rotated_video,
    sha256,
    video_file,
    zip_bytes,
)

SETTINGS = Settings()
# numpy's equivalent of each EXIF orientation, applied to the pixels as stored
REFERENCE = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.transpose(a, (1, 0, 2)),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(np.transpose(a, (1, 0, 2)), 2),
    8: lambda a: np.rot90(a, 1),
}


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def stored_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


# --- images -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pillow", "fmt", "options"),
    [("JPEG", "jpeg", {"quality": 90}), ("PNG", "png", {}), ("GIF", "gif", {}), ("WEBP", "webp", {}),
     ("BMP", "bmp", {}), ("TIFF", "tiff", {}), ("AVIF", "avif", {})],
)
def test_still_images(tmp_path: Path, pillow: str, fmt: str, options: dict) -> None:
    path = write(tmp_path / "upload.bin", image_bytes(pillow, pattern(640, 480), **options))
    before = sha256(path)
    media = normalize(path, settings=SETTINGS, workdir=tmp_path / "work")
    assert (media.kind, media.sniffed.format, media.orientation, media.converted) == ("image", fmt, 1, None)
    assert media.detector_path == path and media.embedded == ()
    assert media.info.model_dump() == {"duration": None, "width": 640, "height": 480, "fps": None,
                                       "bytes": path.stat().st_size, "codec": fmt}
    with Image.open(media.thumbnail) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (320, 240)
    pixels = load_image_pixels(path, SETTINGS)
    assert pixels.shape == (480, 640, 3) and pixels.dtype == np.uint8
    assert sha256(path) == before


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_turns_the_pixels(tmp_path: Path, orientation: int) -> None:
    path = write(tmp_path / "photo.jpg", jpeg_with_orientation(orientation, pattern(640, 320)))
    media = normalize(path, settings=SETTINGS, workdir=tmp_path / "work")
    assert media.orientation == orientation
    upright = REFERENCE[orientation](stored_pixels(path))
    assert (media.info.width, media.info.height) == (upright.shape[1], upright.shape[0])
    assert np.array_equal(load_image_pixels(path, SETTINGS), upright)
    with Image.open(media.thumbnail) as thumb:  # the thumbnail is upright too: the bright block stays top-left
        shown = np.asarray(thumb.convert("RGB"), dtype=float)
    assert thumb.size == ((320, 160) if upright.shape[1] > upright.shape[0] else (160, 320))
    small = np.asarray(Image.fromarray(upright).resize(thumb.size), dtype=float)
    assert np.abs(shown - small).mean() < 8


def test_small_images_are_never_upscaled(tmp_path: Path) -> None:
    path = write(tmp_path / "tiny.png", image_bytes("PNG", pattern(40, 30)))
    media = normalize(path, settings=SETTINGS.model_copy(update={"thumbnail_max_side": 100}), workdir=tmp_path / "w")
    with Image.open(media.thumbnail) as thumb:
        assert thumb.size == (40, 30)


def test_pixel_limit_refuses_a_decompression_bomb_before_decoding(tmp_path: Path) -> None:
    bomb = write(tmp_path / "bomb.png", png_bomb())
    assert bomb.stat().st_size < 200
    with pytest.raises(TooLarge, match="10000000000 pixels"):
        normalize(bomb, settings=SETTINGS, workdir=tmp_path / "w")
    with pytest.raises(TooLarge):
        load_image_pixels(bomb, SETTINGS)
    # with our limit lifted, Pillow's own DecompressionBombError still becomes TooLarge
    with pytest.raises(TooLarge, match="decompression bomb"):
        load_image_pixels(bomb, SETTINGS.model_copy(update={"media_max_pixels": 10**12}))
    small_limit = SETTINGS.model_copy(update={"media_max_pixels": 640 * 480 - 1})
    photo = write(tmp_path / "photo.jpg", image_bytes("JPEG", pattern(640, 480)))
    with pytest.raises(TooLarge):
        normalize(photo, settings=small_limit, workdir=tmp_path / "w")
    with pytest.raises(TooLarge):
        load_image_pixels(photo, small_limit)


def test_load_image_pixels_refuses_videos_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(Unsupported, match="video"):
        load_image_pixels(video_file(tmp_path / "v.mp4", frames=5), SETTINGS)
    jpeg = image_bytes("JPEG")
    with pytest.raises(Corrupt):
        load_image_pixels(write(tmp_path / "half.jpg", jpeg[: len(jpeg) // 2]), SETTINGS)


# --- animations ---------------------------------------------------------------------------------
def test_animated_gif_is_a_video_read_as_it_is(tmp_path: Path) -> None:
    path = write(tmp_path / "anim.gif", animation_bytes("GIF"))
    media = normalize(path, settings=SETTINGS, workdir=tmp_path / "w")
    assert (media.kind, media.detector_path, media.converted, media.detector_format) == ("video", path, None, "gif")
    assert media.info.duration == pytest.approx(0.6) and media.info.fps == pytest.approx(10)
    assert (media.info.width, media.info.height, media.info.codec) == (160, 120, "gif")


def test_animated_webp_is_converted_losslessly(tmp_path: Path) -> None:
    path = write(tmp_path / "anim.webp", animation_bytes("WEBP", lossless=True))
    media = normalize(path, settings=SETTINGS, workdir=tmp_path / "w")
    assert media.kind == "video" and media.converted and "FFV1" in media.converted
    assert media.detector_path != path and sniff(media.detector_path).format == "matroska"
    assert media.info.duration == pytest.approx(0.6) and media.info.fps == pytest.approx(10)
    with Image.open(path) as image:
        expected = []
        for index in range(image.n_frames):
            image.seek(index)
            expected.append(np.asarray(image.convert("RGB")))
    with av.open(str(media.detector_path)) as container:
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == len(expected) == 6
    assert all(np.array_equal(a, b) for a, b in zip(decoded, expected, strict=True))
    assert make_preview(media, settings=SETTINGS, workdir=tmp_path / "w") is not None


# --- videos -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "options", "fmt", "codec"),
    [("v.mp4", {}, "mp4", "h264"), ("v.mkv", {}, "matroska", "h264"), ("v.avi", {"codec": "mpeg4", "crf": None}, "avi", "mpeg4"),
     ("v.ts", {}, "mpegts", "h264"), ("v.webm", {"codec": "libvpx-vp9", "crf": None}, "webm", "vp9"),
     ("v.mpg", {"codec": "mpeg2video", "crf": None}, "mpeg", "mpeg2video"), ("v.flv", {"codec": "flv", "crf": None}, "flv", "flv")],
)
def test_videos_probe_and_thumbnail(tmp_path: Path, name: str, options: dict, fmt: str, codec: str) -> None:
    path = video_file(tmp_path / name, frames=50, fps=25, size=(320, 240), **options)
    before = sha256(path)
    media = normalize(path, settings=SETTINGS, workdir=tmp_path / "work")
    assert (media.kind, media.sniffed.format, media.detector_path, media.converted) == ("video", fmt, path, None)
    info = media.info
    assert (info.width, info.height, info.codec, info.bytes) == (320, 240, codec, path.stat().st_size)
    assert info.fps == pytest.approx(25) and info.duration == pytest.approx(2.0, abs=0.1)
    with Image.open(media.thumbnail) as thumb:
        assert thumb.format == "JPEG" and thumb.size == (320, 240)
    assert sha256(path) == before


def test_video_thumbnail_comes_from_the_middle(tmp_path: Path) -> None:
    # frame i is a flat grey of level 4*i; keyframes every 10 frames
    frames = [np.full((120, 160, 3), 4 * i, dtype=np.uint8) for i in range(50)]
    path = tmp_path / "grey.mp4"
    from deepwatch.media.encode import write_video

    write_video(path, frames, fps=25, gop=10, crf=10)
    media = normalize(path, settings=SETTINGS, workdir=tmp_path / "w")
    level = np.asarray(Image.open(media.thumbnail).convert("L"), dtype=float).mean()
    assert 4 * 15 <= level <= 4 * 35  # the keyframe before 1.0 s (frame 20), not the first frame


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_video_display_rotation(tmp_path: Path, degrees: int) -> None:
    path = rotated_video(tmp_path / "rot.mp4", degrees)
    media = normalize(path, settings=SETTINGS, workdir=tmp_path / "w")
    assert media.rotation % 360 == degrees % 360
    turned = degrees % 180 != 0
    assert (media.info.width, media.info.height) == ((120, 160) if turned else (160, 120))
    # the thumbnail is turned as FFmpeg's own player turns the frame
    ffmpeg("-i", str(path), "-frames:v", "1", str(tmp_path / "reference.png"))
    reference = np.asarray(Image.open(tmp_path / "reference.png").convert("L"), dtype=float)
    thumb = np.asarray(Image.open(media.thumbnail).convert("L"), dtype=float)
    assert thumb.shape == reference.shape
    assert np.abs(thumb - reference).mean() < 10


def test_preview_is_a_small_short_mp4(tmp_path: Path) -> None:
    path = video_file(tmp_path / "v.mkv", frames=75, fps=25, size=(640, 480))
    media = normalize(path, settings=SETTINGS, workdir=tmp_path / "w")
    options = SETTINGS.model_copy(update={"preview_max_side": 200, "preview_max_s": 1.0})
    preview = make_preview(media, settings=options, workdir=tmp_path / "w")
    assert preview is not None and sniff(preview).format == "mp4"
    with av.open(str(preview)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (200, 150)
        count = sum(1 for _ in container.decode(stream))
    assert 13 <= count <= 16  # 1 s at 15 fps
    assert make_preview(normalize(write(tmp_path / "p.png", image_bytes("PNG")), settings=SETTINGS, workdir=tmp_path / "i"),
                        settings=SETTINGS, workdir=tmp_path / "i") is None


def test_video_pixel_limit(tmp_path: Path) -> None:
    path = video_file(tmp_path / "v.mp4", frames=5)
    with pytest.raises(TooLarge):
        normalize(path, settings=SETTINGS.model_copy(update={"media_max_pixels": 160 * 120 - 1}), workdir=tmp_path / "w")


# --- never a hang, never a crash ----------------------------------------------------------------
def test_timeout_kills_the_decoder_and_is_corrupt(tmp_path: Path) -> None:
    path = video_file(tmp_path / "v.mp4", frames=25)
    with pytest.raises(DecodeTimeout, match=r"did not finish within 0\.001 s") as caught:
        normalize(path, settings=SETTINGS.model_copy(update={"media_decode_timeout_s": 0.001}), workdir=tmp_path / "w")
    assert isinstance(caught.value, Corrupt) and not caught.value.retryable
    assert normalize(path, settings=SETTINGS, workdir=tmp_path / "w").kind == "video"  # a fresh decoder takes over


def test_a_decoder_that_dies_is_replaced(tmp_path: Path) -> None:
    path = write(tmp_path / "p.png", image_bytes("PNG"))
    normalize(path, settings=SETTINGS, workdir=tmp_path / "w")
    proc = normalize_module._checker._proc
    assert proc is not None
    proc.kill()
    proc.wait()
    assert normalize(path, settings=SETTINGS, workdir=tmp_path / "w").kind == "image"


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def bad_files(tmp: Path) -> dict[str, bytes]:
    jpeg = image_bytes("JPEG", pattern(320, 240), quality=90)
    png = image_bytes("PNG", pattern(320, 240))
    mp4 = video_file(tmp / "v.mp4", frames=25).read_bytes()
    fast = faststart(tmp / "v.mp4", tmp / "fast.mp4").read_bytes()
    mkv = video_file(tmp / "v.mkv", frames=25).read_bytes()
    return {
        "zero-byte": b"",
        "truncated JPEG": truncated(jpeg),
        "truncated PNG": truncated(png),
        "truncated MP4 (index at the end)": truncated(mp4),
        "truncated MP4 (index first)": truncated(fast),
        "truncated MKV": truncated(mkv),
        "JPEG magic, random bytes": b"\xff\xd8\xff\xe0" + garbage(4096, 1),
        "PNG magic, random bytes": b"\x89PNG\r\n\x1a\n" + garbage(4096, 2),
        "GIF magic, random bytes": b"GIF89a" + garbage(4096, 3),
        "MP4 magic, random bytes": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + garbage(4096, 4),
        "MKV magic, random bytes": b"\x1a\x45\xdf\xa3" + garbage(4096, 5),
        "AVI magic, random bytes": b"RIFF\x00\x10\x00\x00AVI " + garbage(4096, 6),
        "FLV magic, random bytes": b"FLV\x01\x05\x00\x00\x00\x09" + garbage(4096, 7),
        "Ogg magic, random bytes": b"OggS\x00\x02" + garbage(4096, 8),
        "JPEG with random garbage in the middle": insert_middle(jpeg, garbage(512, 9)),
        "JPEG with garbage free of 0xFF in the middle": insert_middle(jpeg, garbage(64, 10, no_ff=True)),
        "PNG with garbage in the middle": insert_middle(png, garbage(512, 11)),
        "JPEG + ZIP": jpeg + zip_bytes(),
        "JPEG + HTML/script": jpeg + b"<html><body><script>alert(document.cookie)</script></body></html>",
        "JPEG with a ZIP in a comment": jpeg_with_comment(jpeg, zip_bytes()),
        "PNG + ZIP": png + zip_bytes(),
        "GIF/JS polyglot": gif_js_polyglot(),
        "MP4 + ZIP": mp4 + zip_bytes(),
        "MP4 header on a JPEG": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + jpeg,
        "PNG signature on a JPEG": b"\x89PNG\r\n\x1a\n" + jpeg,
    }


BAD_CASES = [
    "zero-byte", "truncated JPEG", "truncated PNG", "truncated MP4 (index at the end)", "truncated MP4 (index first)",
    "truncated MKV", "JPEG magic, random bytes", "PNG magic, random bytes", "GIF magic, random bytes",
    "MP4 magic, random bytes", "MKV magic, random bytes", "AVI magic, random bytes", "FLV magic, random bytes",
    "Ogg magic, random bytes", "JPEG with random garbage in the middle", "JPEG with garbage free of 0xFF in the middle",
    "PNG with garbage in the middle", "JPEG + ZIP", "JPEG + HTML/script", "JPEG with a ZIP in a comment", "PNG + ZIP",
    "GIF/JS polyglot", "MP4 + ZIP", "MP4 header on a JPEG", "PNG signature on a JPEG",
]


@pytest.fixture(scope="module")
def corrupt_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    files = bad_files(tmp_path_factory.mktemp("bad"))
    assert sorted(files) == sorted(BAD_CASES)
    return files


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_files_are_corrupt(tmp_path: Path, corrupt_inputs: dict[str, bytes], case: str) -> None:
    path = write(tmp_path / "upload.bin", corrupt_inputs[case])
    with pytest.raises(Corrupt) as caught:
        normalize(path, settings=SETTINGS, workdir=tmp_path / "w")
    assert type(caught.value) is Corrupt, caught.value  # not a time-out: each fails fast
    assert path.read_bytes() == corrupt_inputs[case]


def test_jpeg_trailers_that_phones_write_are_accepted(tmp_path: Path) -> None:
    jpeg = image_bytes("JPEG", pattern(320, 240))
    gain_map = write(tmp_path / "ultrahdr.jpg", jpeg + image_bytes("JPEG", pattern(80, 60)))
    assert normalize(gain_map, settings=SETTINGS, workdir=tmp_path / "a").embedded == ("jpeg",)
    motion = write(tmp_path / "motion.jpg", jpeg + video_file(tmp_path / "m.mp4", frames=5).read_bytes())
    media = normalize(motion, settings=SETTINGS, workdir=tmp_path / "b")
    assert (media.kind, media.embedded) == ("image", ("mp4",))
    padded = write(tmp_path / "padded.jpg", jpeg + bytes(100))
    assert normalize(padded, settings=SETTINGS, workdir=tmp_path / "c").embedded == ()


def test_heic_needs_a_heif_decoder(tmp_path: Path) -> None:
    Image.init()
    if "HEIF" in Image.OPEN:
        pytest.skip("a HEIF plugin is installed here")

    def box(kind: bytes, body: bytes) -> bytes:
        return (8 + len(body)).to_bytes(4, "big") + kind + body

    heic = box(b"ftyp", b"heic\x00\x00\x00\x00mif1heic") + box(b"meta", bytes(24)) + box(b"mdat", bytes(100))
    path = write(tmp_path / "photo.heic", heic)
    assert sniff(path).format == "heic"
    with pytest.raises(Unsupported, match="HEIC"):
        normalize(path, settings=SETTINGS, workdir=tmp_path / "w")


def test_audio_only_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "audio.mkv"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "pcm_s16le", str(path))
    with pytest.raises(Unsupported, match="audio-only"):
        normalize(path, settings=SETTINGS, workdir=tmp_path / "w")


@pytest.fixture(scope="module")
def good_files(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    tmp = tmp_path_factory.mktemp("good")
    return [
        image_bytes("JPEG", pattern(96, 64)), image_bytes("PNG", pattern(96, 64)), animation_bytes("GIF", frames=3),
        image_bytes("WEBP", pattern(96, 64)), video_file(tmp / "v.mp4", frames=10, size=(96, 64)).read_bytes(),
        video_file(tmp / "v.mkv", frames=10, size=(96, 64)).read_bytes(),
    ]


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_bytes_and_truncations_only_raise_media_errors(
    tmp_path: Path, good_files: list[bytes], data: st.DataObject
) -> None:
    source = data.draw(st.sampled_from(good_files))
    kind = data.draw(st.sampled_from(["truncate", "flip", "random"]))
    if kind == "truncate":
        payload = source[: data.draw(st.integers(0, len(source) - 1))]
    elif kind == "flip":
        at = data.draw(st.integers(0, len(source) - 1))
        payload = source[:at] + data.draw(st.binary(min_size=1, max_size=64)) + source[at + 1 :]
    else:
        payload = source[: data.draw(st.integers(0, 32))] + data.draw(st.binary(max_size=4096))
    path = write(tmp_path / "fuzz.bin", payload)
    try:
        normalize(path, settings=SETTINGS, workdir=tmp_path / "w")
    except MediaError:
        pass


@hsettings(max_examples=200, deadline=None)
@given(st.binary(max_size=2048), st.sampled_from(["jpeg", "png", "gif", "webp", "mp4", "matroska", "avi", "flv"]))
def test_decode_check_answers_every_input(payload: bytes, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp) / "x", payload)
        answer = handle({"op": "check", "path": str(path), "format": fmt, "max_pixels": 10**7,
                         "thumbnail": f"{tmp}/t.jpg", "thumbnail_max_side": 64, "converted": f"{tmp}/c.mkv"})
    assert "ok" in answer or answer["error"] in ("Corrupt", "TooLarge", "Unsupported")
