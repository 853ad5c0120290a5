"""Sample the frames of a video (about one per interval) or the one frame of an image, in one decoding pass.

Decoding, not hashing, is what a fingerprint costs: a 60 s 720p H.264 clip takes about 4-5 s of CPU to
decode in full on this machine. So when keyframes are close enough together (``max_keyframe_gap_s``) only
keyframes are decoded (about 0.2-0.3 s for that clip). Otherwise the chain of frames that later frames refer
to has to be decoded; how much of it depends on what the encoder declares:

- ``p-frames``: x264 with one reference frame (``ref=1``: presets veryfast to ultrafast) makes every P frame refer to
  the previous I or P frame only, so all B frames can be skipped, referenced ones included. Measured on a
  60 s 720p veryfast clip: 631 of 1,800 frames decoded, 1.3 s of CPU, and each decoded frame bit-identical
  to the same frame of a full decode. With ``ref=3`` (x264's default preset) P frames also refer to
  B frames, and skipping those left P frames 8 bits of 256 off in PDQ (median; up to 28): so only a
  declared ``ref=1`` earns this mode;
- ``reference-frames``: otherwise frames that no other frame refers to are skipped (1,015 of those 1,800
  frames, 2.1 s).

- ``every-frame``: samples closer together than the frames those two modes decode (x264's declared run of
  B frames, else 3, plus one) would leave grid points without a frame of their own; a short clip scored on
  32 frames is one. Nothing is skipped but the tail described below.

In all three, the frames between the last sample before a keyframe and that keyframe are not decoded at all: a
keyframe starts afresh. The in-loop deblocking filter is skipped in every mode: it costs a third of the
decoding and changes nothing a 64x64 perceptual hash sees (2 bits of 256 in PDQ, median).

A scan of the packets (no decoding) picks the mode first; it reads the file once more, but costs about
0.02-0.04 s for that clip.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deepwatch.media.errors import Corrupt, NotFound, TooLarge, Unsupported

DecodeMode = Literal["image", "keyframes", "p-frames", "reference-frames", "every-frame"]
ASSUMED_B_FRAMES = 3  # in a row, where the encoder does not declare it (x264's default)
# x264 writes its settings into the first frame (an unregistered SEI message), as "key=value" pairs
X264_SETTINGS = re.compile(rb"x264 - core [^\x00]*")


@dataclass(frozen=True)
class SampledFrame:
    """One sampled frame; pixels are rendered on demand so that each caller pays only for the size it needs."""

    t: float  # seconds from the first frame
    width: int  # of the displayed frame, rotation applied
    height: int
    render: Callable[[int], np.ndarray]  # max long side -> RGB uint8 HxWx3, never upscaled

    def rgb(self, max_side: int) -> np.ndarray:
        return self.render(max_side)


@dataclass(frozen=True)
class MediaHeader:
    kind: Literal["image", "video"]
    width: int
    height: int
    duration: float | None
    mode: DecodeMode
    interval_s: float  # the sampling interval actually used (widened for long videos)
    expected_frames: int  # how many samples the sampling plan expects; a guide for spreading costly work
    frame_duration: float = 0.0  # 1 / frame rate; 0 for images


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size that fits ``max_side`` on the long side, keeping the aspect ratio; never larger than the source."""
    scale = min(1.0, max_side / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def sample_times(
    times: Iterator[float] | list[float], interval_s: float, tolerance_s: float, lead_s: float = 0.0
) -> list[int]:
    """Indices of the frames (by presentation time, in order) that a once-per-``interval_s`` sampler keeps.

    The first frame at or after each grid point ``k * interval_s - lead_s`` (less ``tolerance_s``, half a frame,
    so that rounding of timestamps does not skip a grid point) is kept. Pure, for tests; the decoder applies
    the same rule frame by frame through :class:`_Sampler`.
    """
    sampler = _Sampler(interval_s, tolerance_s, lead_s)
    return [i for i, t in enumerate(times) if sampler.take(t)]


class _Sampler:
    """Keeps the first frame at or after each grid point ``k * interval_s - lead_s`` (and the very first frame)."""

    def __init__(self, interval_s: float, tolerance_s: float, lead_s: float = 0.0) -> None:
        self.interval_s = interval_s
        self.tolerance_s = tolerance_s
        self.lead_s = lead_s
        self.next_t = 0.0

    def take(self, t: float) -> bool:
        if t < self.next_t - self.tolerance_s:
            return False
        k = math.floor((t + self.tolerance_s + self.lead_s) / self.interval_s) + 1
        self.next_t = k * self.interval_s - self.lead_s
        return True


def open_frames(
    path: Path,
    *,
    interval_s: float,
    max_keyframe_gap_s: float,
    max_frames: int,
    max_pixels: int,
) -> tuple[MediaHeader, Iterator[SampledFrame]]:
    """Open an image or a video and return its header and an iterator over its sampled frames.

    The limits are the fingerprint settings' (``deepwatch.media.fingerprint.FingerprintOptions``).

    Images are tried with Pillow first, then videos with PyAV. Raise :class:`NotFound` for a missing file,
    :class:`Corrupt` for bytes neither can decode, :class:`Unsupported` for media without a picture and
    :class:`TooLarge` for frames over ``max_pixels``. A video that fails part-way keeps the frames decoded
    before the failure (truncated downloads are common); one that yields no frame at all is ``Corrupt``.
    """
    if not path.is_file():
        raise NotFound(f"{path} does not exist")
    if path.stat().st_size == 0:
        raise Corrupt(f"{path.name} is empty")
    image = _open_image(path, max_pixels)
    if image is not None:
        return image
    return _open_video(path, interval_s, max_keyframe_gap_s, max_frames, max_pixels)


def _open_image(path: Path, max_pixels: int) -> tuple[MediaHeader, Iterator[SampledFrame]] | None:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            if opened.width * opened.height > max_pixels:
                raise TooLarge(f"{path.name} has {opened.width}x{opened.height} pixels, over {max_pixels}")
            # a video container Pillow happens to recognise would be fingerprinted as one still; none known
            picture = ImageOps.exif_transpose(opened).convert("RGB")
    except Image.DecompressionBombError as exc:
        raise TooLarge(f"{path.name}: {exc}") from None
    except UnidentifiedImageError:
        return None  # not an image Pillow knows: try it as a video
    except (OSError, SyntaxError, ValueError) as exc:
        raise Corrupt(f"{path.name} is a damaged image: {exc}") from None

    def render(max_side: int) -> np.ndarray:
        size = scaled_size(picture.width, picture.height, max_side)
        resized = picture if size == picture.size else picture.resize(size, Image.Resampling.BOX)
        return np.asarray(resized, dtype=np.uint8)

    header = MediaHeader("image", picture.width, picture.height, None, "image", 0.0, 1)
    return header, iter([SampledFrame(0.0, picture.width, picture.height, render)])


def _open_video(
    path: Path, interval_s: float, max_keyframe_gap_s: float, max_frames: int, max_pixels: int
) -> tuple[MediaHeader, Iterator[SampledFrame]]:
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = next((s for s in container.streams if s.type == "video"), None)
            if stream is None:
                raise Unsupported(f"{path.name} has no picture (no video stream)")
            width, height = stream.codec_context.width, stream.codec_context.height
            scan = _scan_packets(container, stream)
            duration = _duration(container, stream, scan.last_t)
            rate = stream.average_rate or stream.base_rate
            frame_duration = 1 / float(rate) if rate else 0.04
    except av.error.FFmpegError as exc:
        raise Corrupt(f"{path.name} cannot be read as media: {exc}") from None
    if width * height > max_pixels:
        raise TooLarge(f"{path.name} has {width}x{height} pixels, over {max_pixels}")
    keyframes, last_t = scan.keyframes, scan.last_t
    if not keyframes:
        raise Corrupt(f"{path.name} has a video stream without a decodable keyframe")

    if duration and duration / interval_s > max_frames:
        interval_s = duration / max_frames  # long videos are sampled more sparsely, not truncated
    start = keyframes[0]
    gaps = [b - a for a, b in zip(keyframes, [*keyframes[1:], max(last_t, keyframes[-1])], strict=True)]
    # a frame's worth of slack: a "2 s" keyframe interval measures 2.0000001 s in container time bases
    sparse = max_keyframe_gap_s <= 0 or len(keyframes) < 2 or max(gaps) > max_keyframe_gap_s + frame_duration / 2
    mode: DecodeMode = "keyframes"
    if sparse:
        mode = "p-frames" if p_frames_skip_b_frames(scan.encoder_settings) else "reference-frames"
        if interval_s < (b_frames_in_a_row(scan.encoder_settings) + 1) * frame_duration:
            mode = "every-frame"
    if mode == "keyframes":
        expected = len(_kept(keyframes, start, interval_s))
    else:
        expected = int((duration or 0) / interval_s) + 1
    header = MediaHeader("video", width, height, duration, mode, interval_s, max(1, expected), frame_duration)
    return header, _decode(path, mode, interval_s, keyframes)


def encoder_options(settings: bytes | None) -> dict[str, str]:
    """The ``key=value`` options of x264's settings text (``b"x264 - core 164 ... - options: cabac=1 ref=1 ..."``)."""
    if not settings or b"options:" not in settings:
        return {}
    text = settings.split(b"options:", 1)[1].decode("ascii", "replace")
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def p_frames_skip_b_frames(settings: bytes | None) -> bool:
    """Whether no P frame refers to a B frame, by the encoder's own declaration: no B frames, B frames that are
    never references (no pyramid), or a single reference frame (x264 then takes the nearest earlier I or P
    frame). False when it is not known: other encoders do not say."""
    options = encoder_options(settings)
    try:
        return options.get("bframes") == "0" or options.get("b_pyramid") == "0" or int(options["ref"]) == 1
    except (KeyError, ValueError):
        return False


def b_frames_in_a_row(settings: bytes | None) -> int:
    """The most B frames between two I or P frames, as x264 declares it (``bframes``); else a common value."""
    try:
        return max(0, int(encoder_options(settings)["bframes"]))
    except (KeyError, ValueError):
        return ASSUMED_B_FRAMES


def _kept(times: list[float], start: float, interval_s: float) -> list[int]:
    return sample_times([t - start for t in times], interval_s, 1e-3)


@dataclass(frozen=True)
class _Scan:
    keyframes: list[float]  # presentation times, sorted
    last_t: float  # of the last packet
    encoder_settings: bytes | None  # x264's settings text, when the first packet carries it


def _scan_packets(container: Any, stream: Any) -> _Scan:
    """Keyframes, the last packet's time and the encoder's declared settings, from the packets alone (no decoding)."""
    keyframes: list[float] = []
    last_t = 0.0
    settings: bytes | None = None
    base = float(stream.time_base)  # a Fraction per packet costs more than the rest of the scan
    for index, packet in enumerate(container.demux(stream)):
        if index == 0 and packet.size:
            found = X264_SETTINGS.search(bytes(packet))
            settings = found.group(0) if found else None
        if packet.pts is None:
            continue
        t = packet.pts * base
        last_t = max(last_t, t)
        if packet.is_keyframe:
            keyframes.append(t)
    keyframes.sort()
    return _Scan(keyframes, last_t, settings)


def _duration(container: Any, stream: Any, last_t: float) -> float | None:
    import av

    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return last_t or None


SKIP_FRAME: dict[DecodeMode, str] = {
    "keyframes": "NONKEY", "p-frames": "BIDIR", "reference-frames": "NONREF", "every-frame": "DEFAULT"
}


def _decode(path: Path, mode: DecodeMode, interval_s: float, keyframes: list[float]) -> Iterator[SampledFrame]:
    import av

    produced = 0
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = container.streams.video[0]
            context = stream.codec_context
            # one thread: the target is CPU time, and threads only add to it; the worker runs items in parallel
            stream.thread_type = "NONE"
            context.options = {"skip_loop_filter": "all"}
            context.skip_frame = SKIP_FRAME[mode]
            rate = stream.average_rate or stream.base_rate
            tolerance = 0.5 / float(rate) if rate else 0.02
            frame_s = 1 / float(rate) if rate else 0.04
            # the grid runs a frame and 0.1 s early, about where ffmpeg's "-r 1" picks its frames, so that our
            # videohash sees the frames videohash2 sees; the grid's phase means nothing to the PDQ matcher
            sampler = _Sampler(interval_s, tolerance, lead_s=0.1 + frame_s if interval_s == 1.0 else 0.0)
            renderers = _Renderers()
            start: float | None = None  # times count from the first frame shown, whatever the container's origin
            skipping = False  # dropping packets up to the next keyframe: no sample is due before it
            key_fed = -math.inf  # time of the last keyframe fed to the decoder, which returns frames a few late
            for packet in container.demux(stream):
                if packet.is_keyframe and packet.pts is not None:
                    key_fed = packet.pts * float(stream.time_base)
                elif skipping and packet.size:
                    continue
                skipping = False
                for frame in packet.decode():
                    if frame.pts is None or frame.time is None:
                        continue
                    if start is None:
                        start = float(frame.time)
                    t = max(0.0, float(frame.time) - start)
                    if sampler.take(t):
                        produced += 1
                        yield _video_sample(t, frame, renderers)
                    # unless the next keyframe is in the decoder already: its group must then be fed whole
                    if mode != "keyframes" and key_fed <= start + t + tolerance:
                        skipping = next_sample_after_next_keyframe(
                            keyframes, start + t, start + sampler.next_t - tolerance, tolerance
                        )
    except av.error.FFmpegError as exc:
        if produced == 0:
            raise Corrupt(f"{path.name} cannot be decoded: {exc}") from None
        return  # a truncated or damaged tail: keep what was decoded
    if produced == 0:
        raise Corrupt(f"{path.name} has no decodable frame")


def next_sample_after_next_keyframe(keyframes: list[float], shown: float, due: float, margin: float) -> bool:
    """Whether the next sample (due at ``due``) falls at or after the first keyframe later than the frame just
    decoded (at ``shown``): then no frame before that keyframe is needed, and none need be decoded.

    ``margin`` (half a frame) keeps a keyframe that was itself just decoded from counting as the next one when
    its time in the packet and in the frame differ by float rounding: that would skip its whole group.
    """
    following = bisect.bisect_right(keyframes, shown + margin)
    return following < len(keyframes) and due >= keyframes[following]


class _Renderers(dict[int, Any]):
    """One swscale context per output size for a whole decoding pass: ``frame.reformat`` makes a new one for
    every frame, and setting it up cost more than the scaling (about 1.3 of 2.1 ms a 720p frame)."""

    def __missing__(self, max_side: int) -> Any:
        from av.video.reformatter import VideoReformatter

        self[max_side] = VideoReformatter()
        return self[max_side]


def _video_sample(t: float, frame: Any, renderers: _Renderers) -> SampledFrame:
    turns = _quarter_turns(frame)
    width, height = (frame.height, frame.width) if turns % 2 else (frame.width, frame.height)
    rendered: dict[int, np.ndarray] = {}

    def render(max_side: int) -> np.ndarray:
        if max_side not in rendered:
            w, h = scaled_size(frame.width, frame.height, max_side)
            scaled = renderers[max_side].reformat(frame, width=w, height=h, format="rgb24", interpolation="AREA")
            array = scaled.to_ndarray()
            rendered[max_side] = np.ascontiguousarray(np.rot90(array, turns)) if turns else array
        return rendered[max_side]

    return SampledFrame(t, width, height, render)


def _quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns that show the frame upright (phone videos carry a display matrix)."""
    rotation = getattr(frame, "rotation", 0) or 0
    return round(rotation / 90) % 4
