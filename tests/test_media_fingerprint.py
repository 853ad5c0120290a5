"""Fingerprints: one decoding pass; PDQ and pHash as pdqhash and ImageHash compute them; videohash as
videohash2 computes it; faces where they were pasted; typed errors for bad input."""

from __future__ import annotations

import hashlib
import io
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pdqhash
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, ImageOps

from deepwatch.contracts import Fingerprints
from deepwatch.media.errors import Corrupt, NotFound, TooLarge, Unsupported
from deepwatch.media.fingerprint import FingerprintOptions, MediaFingerprint, face_frame_indices, fingerprint_file
from deepwatch.media.frames import next_sample_after_next_keyframe, open_frames, p_frames_skip_b_frames, sample_times
from deepwatch.media.hashes import bits_to_hex, content_box, grey, hamming, pdq_pair, phash_pair
from deepwatch.media.videohash_compat import (
    ffmpeg_slot_times,
    make_collage,
    tile_thumbnails,
    videohash_of_frames,
    whash_bits,
)
from deepwatch.settings import load_settings
from tests.fingerprint_support import FPS, Clips, clips, face_images, letterboxed, scene, texture, with_face  # noqa: F401
from tests.media_support import jpeg_with_orientation, pattern, rotated_video


def smooth(seed: int, width: int = 200, height: int = 150) -> np.ndarray:
    return np.ascontiguousarray(texture(seed, height, width)[:height, :width])


# --- hashes of one picture ------------------------------------------------------------------


def test_hex_puts_bit_k_of_the_hash_at_bit_k_of_the_number() -> None:
    bits = np.zeros(256, dtype=np.uint8)
    bits[0] = 1
    assert bits_to_hex(bits) == "0" * 63 + "1"
    bits[:] = 0
    bits[255] = 1
    assert bits_to_hex(bits) == "8" + "0" * 63


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pdq_is_pdqhash_of_the_picture_and_of_its_mirror(seed: int) -> None:
    picture = smooth(seed)
    pair = pdq_pair(picture)
    assert pair.pdq == bits_to_hex(pdqhash.compute(picture)[0])
    assert pair.mirrored == bits_to_hex(pdqhash.compute(np.ascontiguousarray(picture[:, ::-1]))[0])
    assert pair.quality == pdqhash.compute(picture)[1]


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_phash_is_close_to_imagehash_phash(seed: int) -> None:
    import imagehash

    picture = smooth(seed)
    plain, mirrored = phash_pair(picture)
    # ours area-averages to 32x32 where ImageHash uses Lanczos: a bit or two
    assert hamming(plain, str(imagehash.phash(Image.fromarray(picture)))) <= 3
    assert phash_pair(grey(picture)) == (plain, mirrored)  # a frame's grey, converted once for its hashes
    # and mirrors the 32x32 grey image instead of resizing the mirrored picture
    assert hamming(mirrored, str(imagehash.phash(ImageOps.mirror(Image.fromarray(picture))))) <= 4


def test_phash_bits_are_those_of_imagehashs_dct() -> None:
    """Our DCT (two small matrix products) picks the bits scipy's, inside ImageHash, picks from a 32x32 image."""
    import scipy.fftpack

    from deepwatch.media.hashes import _phash_hex

    rng = np.random.default_rng(11)
    for _ in range(50):
        pixels = rng.integers(0, 256, (32, 32)).astype(np.float64)
        low = scipy.fftpack.dct(scipy.fftpack.dct(pixels, axis=0), axis=1)[:8, :8]
        assert _phash_hex(pixels) == np.packbits(low > np.median(low)).tobytes().hex()


def test_grey_is_pillows_luma_for_every_colour() -> None:
    levels = np.arange(256, dtype=np.uint8)
    every = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(4096, 4096, 3)
    assert np.array_equal(grey(every), np.asarray(Image.fromarray(every).convert("L")))


def test_content_box_trims_black_bars_only() -> None:
    picture = smooth(7, 160, 120)
    boxed = cv2.copyMakeBorder(picture, 20, 20, 10, 10, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    assert content_box(boxed) == content_box(grey(boxed)) == (10, 20, 160, 120)
    assert content_box(picture) == (0, 0, 160, 120)
    dark = np.full((120, 160, 3), 8, dtype=np.uint8)
    dark[50:60, 70:80] = 200  # a small light in the night: not a picture inside borders
    assert content_box(dark) == (0, 0, 160, 120)


# --- sampling -------------------------------------------------------------------------------


def test_sampling_keeps_the_first_frame_at_each_grid_point() -> None:
    times = [i / 25 for i in range(100)]
    kept = sample_times(times, 1.0, 0.02)
    assert [times[i] for i in kept] == [0.0, 1.0, 2.0, 3.0]
    sparse = [0.0, 1.6, 3.2, 4.8]  # keyframes further apart than the interval: every one is kept
    assert sample_times(sparse, 1.0, 0.02) == [0, 1, 2, 3]


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=200), st.floats(0.2, 5))
def test_sampling_keeps_exactly_the_first_frame_after_each_grid_point(raw: list[float], interval: float) -> None:
    times = sorted(raw)
    grid = [k * interval for k in range(int(times[-1] / interval) + 1)]
    expected = sorted({next(i for i, t in enumerate(times) if t >= g) for g in grid if g <= times[-1]})
    assert sample_times(times, interval, 0.0) == expected


def test_face_frames_are_spread_over_the_video() -> None:
    assert face_frame_indices(4, 6) == {0, 1, 2, 3}
    assert face_frame_indices(60, 6) == {5, 15, 25, 35, 45, 55}
    assert face_frame_indices(60, 0) == set()


# --- videohash, against videohash2 itself ---------------------------------------------------


@pytest.fixture
def ffmpeg_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """videohash2 runs "ffmpeg" from PATH; imageio-ffmpeg's binary has another name."""
    import imageio_ffmpeg

    directory = tmp_path / "bin"
    directory.mkdir()
    (directory / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")
    return directory / "ffmpeg"


def test_slot_times_are_the_frames_ffmpeg_writes_at_one_per_second(tmp_path: Path, ffmpeg_on_path: Path) -> None:
    from deepwatch.media.encode import write_video

    count, fps = 130, 25  # frame i has grey level 255 * i / count, lossless, so its index can be read back
    clip = tmp_path / "grey.mp4"
    write_video(clip, (np.full((64, 64, 3), round(255 * i / count), np.uint8) for i in range(count)), fps=fps, crf=0)
    (tmp_path / "out").mkdir()
    subprocess.run([str(ffmpeg_on_path), "-loglevel", "error", "-i", str(clip), "-r", "1",
                    str(tmp_path / "out" / "%04d.png")], check=True, timeout=60)
    written = sorted((tmp_path / "out").glob("*.png"))
    levels = [float(np.asarray(Image.open(p).convert("L")).mean()) for p in written]
    indices = [min(range(count), key=lambda i: abs(255 * i / count - level)) for level in levels]
    expected = [next(i for i in range(count) if i / fps >= t - 1e-9) for t in ffmpeg_slot_times(count / fps, 1 / fps)]
    # as many frames, each within one frame of ffmpeg's pick (its float rounding of times is not modelled)
    assert len(indices) == len(expected)
    assert all(abs(i - j) <= 1 for i, j in zip(indices, expected, strict=True))


def videohash2_frames(path: Path) -> tuple[str, list[np.ndarray]]:
    from videohash2 import VideoHash

    hashed = VideoHash(path=str(path.resolve()))
    try:
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(Path(hashed.frames_dir).iterdir())]
        return f"{int(hashed.hash_hex, 16):016x}", frames
    finally:
        hashed.delete_storage_path()


@pytest.mark.parametrize("name", ["plain", "letterbox"])
def test_videohash_equals_videohash2_on_its_frames_and_is_close_on_ours(
    clips: Clips, ffmpeg_on_path: Path, name: str  # noqa: F811
) -> None:
    make = (lambda: scene(21)) if name == "plain" else (lambda: letterboxed(scene(22)))
    path = clips.get(f"videohash-{name}", make)
    theirs, their_frames = videohash2_frames(path)
    # the algorithm, on the very frames videohash2 extracted: identical
    assert videohash_of_frames(their_frames) == theirs
    # from our own decoding pass (other scaler, no JPEG round trip of frames): measured 0-7 bits of 64,
    # within videohash2's own is_similar threshold of 10
    ours = clips.fingerprint(path).videohash
    assert ours is not None
    assert hamming(ours, theirs) <= 10


def test_whash_is_imagehash_whash_of_the_saved_collage_even_where_blocks_tie() -> None:
    import imagehash

    frames = [Image.fromarray(smooth(s, 144, 144)) for s in range(5)]
    for picked in (frames, [frames[0]] * 3 + frames[1:] * 4, frames[:2] * 9):  # duplicates make blocks tie
        collage = make_collage(picked)
        buffer = io.BytesIO()
        collage.save(buffer, format="JPEG")
        expected = [int(b) for b in imagehash.whash(Image.open(io.BytesIO(buffer.getvalue()))).hash.flatten()]
        assert whash_bits(collage) == expected


@pytest.mark.parametrize("frames", [1, 5, 61, 100])
def test_tile_thumbnails_are_each_tile_resized_alone(frames: int) -> None:
    """The batched resize gives Pillow's pixels for every tile resized on its own, as videohash2 does it."""
    rng = np.random.default_rng(frames)
    squares = [smooth(s, 144, 144) if s % 2 else rng.integers(0, 256, (144, 144, 3), np.uint8) for s in range(frames)]
    strip = np.concatenate(squares, axis=1)
    tile_h, tile_w = 144 // 8, strip.shape[1] // 8
    alone = [
        np.asarray(Image.fromarray(strip[y : y + tile_h, x : x + tile_w]).resize((16, 16), Image.Resampling.LANCZOS))
        for y in range(0, 144 - 8, tile_h)
        for x in range(0, strip.shape[1] - 8, tile_w)
    ]
    batched = tile_thumbnails([Image.fromarray(s) for s in squares])
    assert batched.shape == (64, 16, 16, 3)
    assert all(np.array_equal(a, b) for a, b in zip(alone, batched, strict=True))


# --- whole files ----------------------------------------------------------------------------


def test_video_fingerprint(clips: Clips) -> None:  # noqa: F811
    path = clips.get("plain", lambda: scene(1))
    fp = clips.fingerprint(path)
    assert (fp.kind, fp.width, fp.height) == ("video", 320, 240)
    assert fp.duration == pytest.approx(5.0, abs=0.1)
    # x264's default keyframe interval is longer than the clip, and write_video's preset declares one reference
    assert fp.decode_mode == "p-frames"
    assert fp.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    times = [f.t for f in fp.frames]
    assert times[0] == 0.0 and all(0.5 < b - a < 1.5 for a, b in itertools.pairwise(times))
    assert 5 <= len(fp.frames) <= 6
    assert all(f.quality >= 50 and f.pdq_flip and f.pdq_crop and f.phash for f in fp.frames)
    assert fp.videohash is not None and len(fp.videohash) == 16
    assert fp.faces == ()  # no face in a panning texture

    contract = fp.to_contract()
    assert Fingerprints.model_validate_json(contract.model_dump_json()) == contract
    back = MediaFingerprint.from_contract(contract)
    assert [(f.t, f.pdq, f.pdq_flip, f.phash) for f in back.frames] == [
        (round(f.t, 3), f.pdq, f.pdq_flip, f.phash) for f in fp.frames
    ]


def test_frame_pdq_is_pdqhash_of_that_frame_decoded_in_full(clips: Clips) -> None:  # noqa: F811
    """An independent decode (every frame, deblocking on) of the same instant gives nearly the same PDQ:
    skipping frames and the loop filter changes a few bits at most."""
    import av

    path = clips.get("plain", lambda: scene(1))
    fp = clips.fingerprint(path)
    with av.open(str(path)) as container:
        decoded = [(float(f.time), f) for f in container.decode(video=0)]
    for frame in fp.frames:
        _, full = min(decoded, key=lambda d: abs(d[0] - frame.t))
        rgb = full.reformat(width=160, height=120, format="rgb24", interpolation="AREA").to_ndarray()
        assert hamming(frame.pdq, bits_to_hex(pdqhash.compute(rgb)[0])) <= 16


def test_dense_keyframes_are_decoded_alone(clips: Clips) -> None:  # noqa: F811
    import av

    path = clips.get("gop10", lambda: scene(1), gop=10)
    fp = clips.fingerprint(path)
    assert fp.decode_mode == "keyframes"
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        keys = sorted(float(p.pts * stream.time_base) for p in container.demux(stream) if p.is_keyframe and p.pts is not None)
    assert all(min(abs(f.t - (k - keys[0])) for k in keys) < 1e-6 for f in fp.frames)
    never = fingerprint_file(path, settings=load_settings(fingerprint_max_keyframe_gap_s=0, fingerprint_face_frames=0))
    assert never.decode_mode == "p-frames"


X264_OPTIONS = b"x264 - core 165 - H.264/MPEG-4 AVC codec - Copyleft 2003-2024 - options: cabac=1 ref=%s deblock=1:0:0 bframes=%s b_pyramid=%s"


@pytest.mark.parametrize(
    ("ref", "bframes", "pyramid", "skip"),
    [(b"1", b"3", b"2", True), (b"3", b"3", b"2", False), (b"3", b"0", b"0", True), (b"3", b"3", b"0", True),
     (b"x", b"3", b"2", False)],
)
def test_b_frames_are_skipped_only_where_the_encoder_declares_no_p_frame_needs_them(
    ref: bytes, bframes: bytes, pyramid: bytes, skip: bool
) -> None:
    assert p_frames_skip_b_frames(X264_OPTIONS % (ref, bframes, pyramid)) is skip
    assert p_frames_skip_b_frames(None) is False  # another encoder, or none that says
    assert p_frames_skip_b_frames(b"x264 - core 165 - no options") is False


def test_decoding_stops_before_a_keyframe_only_when_no_sample_is_due_before_it() -> None:
    keys = [0.0, 4.0, 8.0]
    assert next_sample_after_next_keyframe(keys, 3.0, 4.0, 0.02)
    assert not next_sample_after_next_keyframe(keys, 3.0, 3.9, 0.02)
    # the keyframe just decoded (its frame time a hair below its packet time) is not the next one
    assert not next_sample_after_next_keyframe(keys, 4.0 - 1e-12, 5.0, 0.02)
    assert not next_sample_after_next_keyframe(keys, 9.0, 20.0, 0.02)  # no keyframe left: decode to the end


def independent_samples(path: Path, skip_frame: str) -> list[tuple[float, np.ndarray]]:
    """Every frame a plain decode with ``skip_frame`` (and no loop filter) gives, then the 1 s sampler's picks."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.options = {"skip_loop_filter": "all"}
        stream.codec_context.skip_frame = skip_frame
        rate = float(stream.average_rate)
        decoded = [(float(f.time), f) for f in container.decode(stream)]
    start = decoded[0][0]
    kept = sample_times([t - start for t, _ in decoded], 1.0, 0.5 / rate, lead_s=0.1 + 1 / rate)
    return [(decoded[i][0] - start, {side: decoded[i][1].reformat(width=side, height=side * 3 // 4, format="rgb24",
                                                                 interpolation="AREA").to_ndarray()
                                     for side in (64, 32)}) for i in kept]


@pytest.mark.parametrize(
    ("name", "encoding", "mode", "skip_frame"),
    [("plain", {}, "p-frames", "BIDIR"), ("gop10", {"gop": 10}, "p-frames", "BIDIR"),
     ("medium-preset", {"preset": "medium"}, "reference-frames", "NONREF"),
     ("medium-preset-gop10", {"preset": "medium", "gop": 10}, "reference-frames", "NONREF")],
)
def test_sparse_decoding_gives_exactly_the_frames_of_a_plain_pass(
    clips: Clips, name: str, encoding: dict, mode: str, skip_frame: str  # noqa: F811
) -> None:
    """Skipping B frames and the packets between the last sample and the next keyframe changes no sampled
    frame: the same instants, the same pixels. (Keyframes every 0.4 s, sampled at 1 s, skip the most.)"""
    path = clips.get(name, lambda: scene(1), **encoding)
    header, frames = open_frames(path, interval_s=1.0, max_keyframe_gap_s=0, max_frames=900, max_pixels=2**27)
    assert header.mode == mode
    # every other frame also at a second size, as face frames are: each size keeps its own scaler
    ours = [(f.t, {64: f.rgb(64)} | ({32: f.rgb(32)} if i % 2 else {})) for i, f in enumerate(frames)]
    theirs = independent_samples(path, skip_frame)
    assert [round(t, 6) for t, _ in ours] == [round(t, 6) for t, _ in theirs]
    assert all(
        np.array_equal(a[side], b[side]) for (_, a), (_, b) in zip(ours, theirs, strict=True) for side in a
    )


def test_samples_closer_than_the_frames_a_sparse_mode_decodes_come_from_every_frame(clips: Clips) -> None:  # noqa: F811
    """x264's 3 B frames in a row leave an I or P frame every 4th: samples every 2nd frame need them all."""
    path = clips.get("plain", lambda: scene(1))
    header, frames = open_frames(path, interval_s=2 / FPS, max_keyframe_gap_s=2 / FPS, max_frames=900, max_pixels=2**27)
    assert header.mode == "every-frame"
    times = [f.t for f in frames]
    assert len(times) == header.expected_frames and np.allclose(np.diff(times), 2 / FPS)
    wider, _ = open_frames(path, interval_s=4 / FPS, max_keyframe_gap_s=0, max_frames=900, max_pixels=2**27)
    assert wider.mode == "p-frames"


def test_image_fingerprint_follows_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    upright = pattern(160, 120)
    path.write_bytes(jpeg_with_orientation(6, upright))  # 6: shown turned 90 degrees clockwise
    fp = fingerprint_file(path)
    assert (fp.kind, fp.width, fp.height, fp.duration, fp.videohash) == ("image", 120, 160, None, None)
    assert len(fp.frames) == 1
    shown = np.ascontiguousarray(np.rot90(upright, k=-1))
    assert hamming(fp.frames[0].pdq, bits_to_hex(pdqhash.compute(shown)[0])) <= 16
    assert hamming(fp.frames[0].pdq, bits_to_hex(pdqhash.compute(upright)[0])) > 64


def test_rotated_video_is_fingerprinted_as_shown(tmp_path: Path) -> None:
    path = rotated_video(tmp_path / "rotated.mp4", 90)  # display matrix: 90 degrees counter-clockwise
    fp = fingerprint_file(path)
    assert (fp.width, fp.height) == (120, 160)
    shown = np.ascontiguousarray(np.rot90(pattern(), k=1))
    assert hamming(fp.frames[0].pdq, bits_to_hex(pdqhash.compute(shown)[0])) <= 16


def test_faces_are_found_where_they_were_pasted(clips: Clips) -> None:  # noqa: F811
    face = face_images()[0]
    path = clips.get("face-0", lambda: with_face(scene(31), face))
    fp = clips.fingerprint(path)
    assert fp.faces, "the face detector found no face"
    for found in fp.faces:
        i = round(found.t * FPS)
        x, y = int(100 + 20 * np.sin(i / 25)), int(60 + 10 * np.cos(i / 30))  # where with_face pasted it
        fx, fy, fw, fh = found.box
        overlap_w = max(0, min(fx + fw, x + 110) - max(fx, x))
        overlap_h = max(0, min(fy + fh, y + 110) - max(fy, y))
        assert overlap_w * overlap_h >= 0.8 * fw * fh  # the box lies inside the pasted square
        assert found.confidence >= 0.8 and found.pdq_flip and found.phash and found.thumb
        assert found.place is not None
        px, py, pw, ph = found.place  # shares of the 320x240 picture (no borders here)
        assert (px, py, pw, ph) == pytest.approx((fx / 320, fy / 240, fw / 320, fh / 240), abs=0.01)
    assert {f.t for f in fp.faces} == {f.t for f in fp.frames if f.scene_grid}
    contract = fp.to_contract()
    assert len(contract.pdq_faces) == len(fp.faces) == len(contract.face_boxes)

    none = fingerprint_file(path, settings=load_settings(fingerprint_face_frames=0))
    assert none.faces == () and not any(f.scene_grid for f in none.frames)


def test_large_face_frames_rendered_at_once_give_the_same_fingerprint(
    clips: Clips, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """Face frames wait for the detector's one pass at the end, kept decoded or, over a size, as their render
    for the crops: the two give the same hashes."""
    import deepwatch.media.fingerprint as fingerprint_module

    path = clips.get("face-0", lambda: with_face(scene(31), face_images()[0]))
    kept = fingerprint_file(path)
    monkeypatch.setattr(fingerprint_module, "KEEP_DECODED_PIXELS", 0)
    rendered = fingerprint_file(path)
    assert kept.faces and rendered.faces == kept.faces and rendered.frames == kept.frames


def test_a_face_cut_by_the_edge_is_left_out(tmp_path: Path) -> None:
    from deepwatch.media.faces import detect_faces

    face = cv2.resize(face_images()[0], (110, 110), interpolation=cv2.INTER_AREA)
    frame = smooth(5, 320, 240).copy()
    frame[60:170, 0:60] = face[:, 50:]  # half of it left of the picture
    boxes = detect_faces(frame, min_confidence=0.5)
    assert boxes and all(b.cut for b in boxes)  # found, and known to be cut
    inside = smooth(5, 320, 240).copy()
    inside[60:170, 100:210] = face
    assert [b.cut for b in detect_faces(inside)] == [False]
    Image.fromarray(frame).save(tmp_path / "cut.png")
    Image.fromarray(inside).save(tmp_path / "inside.png")
    assert fingerprint_file(tmp_path / "cut.png").faces == ()
    assert len(fingerprint_file(tmp_path / "inside.png").faces) == 1


def test_settings_reach_the_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    options = FingerprintOptions.from_settings(load_settings(fingerprint_face_frames=2, fingerprint_interval_s=0.5))
    assert (options.face_frames, options.interval_s) == (2, 0.5)
    for name in list(os.environ):
        if name.startswith("DEEPWATCH_"):
            monkeypatch.delenv(name)
    assert FingerprintOptions() == FingerprintOptions.from_settings(load_settings())  # the defaults are the settings'


# --- bad input ------------------------------------------------------------------------------


def truncated(clips: Clips, tmp_path: Path) -> Path:  # noqa: F811
    path = tmp_path / "truncated.mp4"
    path.write_bytes(clips.get("plain", lambda: scene(1)).read_bytes()[:3000])
    return path


@pytest.mark.parametrize(
    "make",
    [
        lambda _, tmp: tmp / "empty.mp4",
        lambda _, tmp: tmp / "noise.mp4",
        lambda _, tmp: tmp / "text.jpg",
        truncated,
    ],
    ids=["empty", "noise", "text", "truncated"],
)
def test_undecodable_files_are_corrupt(clips: Clips, tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    (tmp_path / "empty.mp4").write_bytes(b"")
    (tmp_path / "noise.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "text.jpg").write_text("not a picture\n" * 50)
    with pytest.raises(Corrupt):
        fingerprint_file(make(clips, tmp_path))


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        fingerprint_file(tmp_path / "nothing.mp4")


def test_media_without_a_picture_is_unsupported(tmp_path: Path) -> None:
    import av

    path = tmp_path / "sound.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        for _ in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate = 44100
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with pytest.raises(Unsupported):
        fingerprint_file(path)


def test_pixel_limit(clips: Clips, tmp_path: Path) -> None:  # noqa: F811
    limited = load_settings(media_max_pixels=10_000)
    with pytest.raises(TooLarge):
        fingerprint_file(clips.get("plain", lambda: scene(1)), settings=limited)
    image = tmp_path / "big.png"
    Image.fromarray(pattern(200, 100)).save(image)
    with pytest.raises(TooLarge):
        fingerprint_file(image, settings=limited)


def test_relative_paths_work(clips: Clips, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    shutil.copy(clips.get("plain", lambda: scene(1)), tmp_path / "copy.mp4")
    monkeypatch.chdir(tmp_path)
    assert fingerprint_file(Path("copy.mp4")).sha256 == clips.fingerprint(clips.get("plain", lambda: scene(1))).sha256
