"""The labelled clip set behind ``deepwatch bench fingerprint``: distinct sources, their re-upload edits, face swaps.

Deterministic for a seed. Each source is generated footage (``bench.clips_scenes``), encoded to H.264 as an
upload would be; some sources have a face composited in (``bench.clips_faces``). The edits start from the
*decoded* source, as a re-uploader's do, and are written with their own encoder settings: a lower bit rate, 50 %
resize, brightness +/-20 %, 10 % crop, letterbox, horizontal flip, a logo, the first or last 30 % trimmed, and the
clip embedded in the middle of unrelated footage twice its length. A face source also gets a ``face_swap``
variant: the same background frames with another person's face. Every file is labelled with its source and edit.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from bench.clips_faces import FacePhoto, composite, face_photos, swap_face
from bench.clips_scenes import footage
from bench.clips_transforms import FRAME_EDITS, embed
from deepwatch.media.encode import write_video

SOURCE = "source"
FACE_SWAP = "face_swap"
BITRATE = "bitrate_low"
EMBEDDED = "embedded"
TRANSFORMS = (BITRATE, *FRAME_EDITS, EMBEDDED)
LOW_BIT_RATE_FACTOR = 1 / 3  # of the source's bit rate: visibly blockier
MIN_BIT_RATE = 24_000
CRF = 23
# Keyframe intervals an upload may come with, in seconds (None: x264's default, keyint 250 with scene cuts).
GOPS_SECONDS = (None, 2.0, 5.0)
SEED_STRIDE = 1_000_003  # keeps the footage seeds of two sets with different seeds apart


@dataclass(frozen=True)
class SetSpec:
    sources: int
    face_sources: int
    width: int = 320
    height: int = 240
    seconds: float = 8.0
    fps: float = 10.0
    seed: int = 7


@dataclass(frozen=True)
class Clip:
    path: Path
    source: int
    transform: str  # SOURCE, one of TRANSFORMS, or FACE_SWAP
    face: str | None = None  # the face photo of a face source (its swap names the donor too)
    gop: int | None = None


def read_frames(path: Path) -> list[np.ndarray]:
    """Every frame of ``path`` as RGB ``uint8``."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def source_seed(spec: SetSpec, source: int) -> int:
    return spec.seed * SEED_STRIDE + source


def filler_seed(spec: SetSpec, source: int, part: int) -> int:
    # Far above any source's seed, so filler footage is unrelated to every source.
    return spec.seed * SEED_STRIDE + 500_000 + 2 * source + part


def gop_for(spec: SetSpec, source: int, transform: str) -> int | None:
    """A keyframe interval drawn per file: re-uploads come with whatever settings the re-uploader had."""
    rng = np.random.default_rng([spec.seed, source, sum(map(ord, transform))])
    seconds = GOPS_SECONDS[int(rng.integers(len(GOPS_SECONDS)))]
    return None if seconds is None else round(seconds * spec.fps)


def face_plan(spec: SetSpec, photos: list[FacePhoto]) -> dict[int, tuple[FacePhoto, FacePhoto]]:
    """Which sources get a face, and the donor of each one's swap: spread over the set, photos in turn."""
    if len(photos) < 2 or spec.face_sources == 0:
        return {}
    step = max(1, spec.sources // spec.face_sources)
    plan = {}
    for k, source in enumerate(range(0, spec.sources, step)):
        if k == spec.face_sources:
            break
        target = photos[k % len(photos)]
        donor = photos[(k + 1 + k // len(photos)) % len(photos)]
        if donor is target:
            donor = photos[(k + 1) % len(photos)]
        plan[source] = (target, donor)
    return plan


def source_clips(spec: SetSpec, source: int, out_dir: Path,
                 face: tuple[FacePhoto, FacePhoto] | None) -> Iterator[Clip]:
    """The files of one source: itself, each edit, and its face swap when it has a face."""
    count = round(spec.seconds * spec.fps)
    frames = list(footage(source_seed(spec, source), spec.width, spec.height, count, spec.fps))
    swapped = None
    if face is not None:
        target, donor = face
        swapped = composite(frames, swap_face(target, donor).rgb, source, spec.fps)
        frames = composite(frames, target.rgb, source, spec.fps)
    name = face[0].name if face else None

    def write(transform: str, clip_frames: list[np.ndarray], **options: int | None) -> Clip:
        path = out_dir / f"s{source:03d}_{transform}.mp4"
        gop = gop_for(spec, source, transform)
        write_video(path, clip_frames, fps=spec.fps, gop=gop, **({"crf": CRF} | options))
        return Clip(path, source, transform, name, gop)

    original = write(SOURCE, frames)
    yield original
    if swapped is not None:
        yield replace(write(FACE_SWAP, swapped), face=f"{face[0].name}<-{face[1].name}")
    decoded = read_frames(original.path)
    source_rate = original.path.stat().st_size * 8 / spec.seconds
    yield write(BITRATE, decoded, crf=None, bit_rate=max(MIN_BIT_RATE, round(source_rate * LOW_BIT_RATE_FACTOR)))
    for transform, edit in FRAME_EDITS.items():
        yield write(transform, edit(decoded))
    half = count // 2
    before = footage(filler_seed(spec, source, 0), spec.width, spec.height, half, spec.fps)
    after = footage(filler_seed(spec, source, 1), spec.width, spec.height, half, spec.fps)
    yield write(EMBEDDED, embed(decoded, list(before), list(after)))


def one_source(spec: SetSpec, source: int, out_dir: Path, face: tuple[FacePhoto, FacePhoto] | None) -> list[Clip]:
    return list(source_clips(spec, source, out_dir, face))


def spawn_pool(workers: int | None = None) -> ProcessPoolExecutor:
    """Worker processes (default: one per core, at most two) that start clean: spawn, not fork, because the
    parent has usually run OpenCV's DNN, whose thread pool does not survive a fork."""
    return ProcessPoolExecutor(workers or min(2, os.cpu_count() or 1), mp_context=multiprocessing.get_context("spawn"))


def generate_set(spec: SetSpec, out_dir: Path, photos: list[FacePhoto] | None = None,
                 pool: Executor | None = None) -> list[Clip]:
    """Write the whole set into ``out_dir``; ``photos`` defaults to every face photo found (none: no face clips).

    Sources are written in ``pool`` (a :func:`spawn_pool` of its own when not given): x264 keeps a core only
    partly busy on frames this small, and the full set is about 1,200 files.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = face_plan(spec, face_photos() if photos is None else photos)
    jobs = [(spec, source, out_dir, plan.get(source)) for source in range(spec.sources)]
    if pool is None:
        with spawn_pool() as own:
            return generate_set(spec, out_dir, photos, own)
    return list(itertools.chain.from_iterable(pool.map(one_source, *zip(*jobs, strict=True))))


def long_footage(seed: int, width: int, height: int, seconds: float, fps: float) -> Iterator[np.ndarray]:
    """Footage of any length as a stream (60 s of 720p does not fit in memory as a list): 3-8 s shots."""
    rng = np.random.default_rng(seed)
    total = round(seconds * fps)
    done = part = 0
    while done < total:
        count = min(total - done, round(rng.uniform(3, 8) * fps))
        yield from footage(seed * SEED_STRIDE + part, width, height, count, fps)
        done += count
        part += 1


def write_long_clip(path: Path, *, seconds: float = 60, width: int = 1280, height: int = 720, fps: float = 30,
                    gop: int | None = None, seed: int = 11) -> int:
    """The clip the CPU-time target speaks of (60 s of 720p H.264 by default); returns its frame count."""
    return write_video(path, long_footage(seed, width, height, seconds, fps), fps=fps, crf=CRF, gop=gop)
