"""Normalise a fetched or uploaded file: sniff it, check that it decodes, probe it, make display derivatives.

Detectors read the original pixels. :func:`normalize` never modifies or re-encodes the original;
:attr:`NormalizedMedia.detector_path` is the original itself, except in the one case where
detectors' loaders cannot read it as it is. The rule:

- a still image Pillow decodes (JPEG, PNG, GIF, WebP, BMP, TIFF, AVIF; HEIC where a HEIF plugin is
  installed) is read by :func:`load_image_pixels`, from the original;
- a video FFmpeg decodes (MP4, MOV, 3GP, Matroska, WebM, AVI, FLV, MPEG-TS, MPEG-PS, Ogg) is read by
  PyAV, from the original;
- an animated image is a video for the detectors: an animated GIF or APNG, which FFmpeg decodes as it
  is, from the original; an animated WebP or AVIF sequence, which FFmpeg cannot decode frame by
  frame, is converted once, losslessly (Pillow's frames into FFV1/Matroska, 8-bit RGB: no new
  compression traces), and ``detector_path`` names the conversion, ``converted`` says why.

Everything that decodes untrusted bytes runs in a warm child process (:mod:`decode_check`), one
request at a time, under ``settings.media_decode_timeout_s``: PyAV and Pillow cannot be interrupted
inside C code, so only a process can be killed. The per-file overhead over the decoding itself is
one JSON round trip over a pipe (well under a millisecond); the child's start (importing Pillow,
PyAV, OpenCV: about a second) is paid once, and again after each timeout, crash or
:data:`RECYCLE_AFTER` requests.

A decode check that runs past the limit raises :class:`DecodeTimeout`, a :class:`Corrupt`: the check
is bounded work (headers, a structure walk, one image or two video frames, a thumbnail), so running
over a limit set a hundred times above its usual cost is the file's doing, a decoder bomb, and
retrying it would only spend the limit again. The message says that it was the time limit.
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from deepwatch.contracts import MediaInfo
from deepwatch.media.errors import Corrupt, MediaError, TooLarge, Unsupported
from deepwatch.media.images import load_image_pixels
from deepwatch.media.sniff import Kind, Sniffed, sniff
from deepwatch.settings import Settings

__all__ = ["DecodeTimeout", "NormalizedMedia", "load_image_pixels", "make_preview", "normalize"]

RECYCLE_AFTER = 500  # requests served by one child before a fresh one replaces it
STARTUP_TIMEOUT_S = 120.0  # for the child's imports, which no file influences
THUMBNAIL_NAME = "thumbnail.jpg"
CONVERTED_NAME = "frames.mkv"
PREVIEW_NAME = "preview.mp4"
_ERRORS: dict[str, type[MediaError]] = {"Corrupt": Corrupt, "TooLarge": TooLarge, "Unsupported": Unsupported}


class DecodeTimeout(Corrupt):
    """Decoding ran past ``media_decode_timeout_s``; the decoding process was killed (see the module doc)."""


@dataclass(frozen=True)
class NormalizedMedia:
    original: Path  # never modified
    sniffed: Sniffed
    kind: Kind  # what detectors get: an animated image is a "video"
    info: MediaInfo  # width and height as displayed (after EXIF orientation or display rotation)
    detector_path: Path  # the bytes detectors read: ``original`` unless ``converted``
    converted: str | None  # why detector_path is a conversion; None when it is the original
    orientation: int  # EXIF orientation of a still image (1-8; 1 when none), applied by load_image_pixels
    rotation: int  # a video's display rotation, degrees counter-clockwise; frames decode unrotated
    thumbnail: Path  # JPEG, upright, longer side at most settings.thumbnail_max_side
    embedded: tuple[str, ...]  # further media after a JPEG's end: "jpeg" (MPO, gain maps), "mp4" (Motion Photo)
    check_s: float  # seconds the decode check took

    @property
    def detector_format(self) -> str:
        """The sniff format name of ``detector_path``."""
        return "matroska" if self.converted else self.sniffed.format


class _Checker:
    """One warm ``decode_check`` child, serving one request at a time; replaced after a timeout or a crash."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._served = 0
        self._pid = os.getpid()

    def _start(self) -> subprocess.Popen[bytes]:
        root = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        if self._stderr is not None:
            self._stderr.close()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the child it logs
        proc = subprocess.Popen(
            [sys.executable, "-m", "deepwatch.media.decode_check"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
        )
        assert proc.stdout is not None
        ready = _read_line(proc.stdout, time.monotonic() + STARTUP_TIMEOUT_S)
        if ready is None or json.loads(ready).get("ready") is not True:
            self._stop(proc)
            raise RuntimeError(f"the decode-check process did not start: {self._stderr_tail()}")
        self._served = 0
        return proc

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0, 2)
        self._stderr.seek(max(0, self._stderr.tell() - 2000))
        return self._stderr.read().decode("utf-8", "replace").strip()

    def _stop(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()
        if self._proc is proc:
            self._proc = None

    def close(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._stop(self._proc)

    def run(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """The child's answer to ``request``: the "ok" payload, or the typed MediaError it reported."""
        with self._lock:
            if self._pid != os.getpid():  # a forked copy of the parent: the child's pipes belong to the parent
                self._proc, self._stderr, self._pid = None, None, os.getpid()
            if self._proc is None or self._proc.poll() is not None or self._served >= RECYCLE_AFTER:
                if self._proc is not None:
                    self._stop(self._proc)
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            deadline = time.monotonic() + timeout_s
            try:
                proc.stdin.write(json.dumps(request).encode() + b"\n")
                proc.stdin.flush()
            except OSError:
                pass  # the child died; reading says how
            line = _read_line(proc.stdout, deadline)
            self._served += 1
            if line is None:
                crashed = proc.poll() is not None or time.monotonic() < deadline
                self._stop(proc)
                if crashed:
                    raise Corrupt(f"the decoder crashed on this file (exit status {proc.returncode})")
                raise DecodeTimeout(f"decoding did not finish within {timeout_s:g} s; the decoder was killed")
        answer = json.loads(line)
        if "ok" in answer:
            return answer["ok"]
        raise _ERRORS.get(answer.get("error"), Corrupt)(answer.get("message", "decoding failed"))


def _read_line(stream: IO[bytes], deadline: float) -> bytes | None:
    """One line from the child's stdout by ``deadline``; None on timeout or end of file."""
    fd = stream.fileno()
    chunks: list[bytes] = []
    with selectors.DefaultSelector() as selector:  # not select.select: a busy server's fds may pass 1024
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                return b"".join(chunks)


_checker = _Checker()
atexit.register(_checker.close)


def _request(op: str, path: Path, fmt: str, **fields: Any) -> dict[str, Any]:
    return {"op": op, "path": str(path.resolve()), "format": fmt, **fields}


def normalize(path: Path, *, settings: Settings, workdir: Path) -> NormalizedMedia:
    """Sniff, check, probe and derive ``path``; raise only :class:`MediaError` subclasses for bad files.

    Derivatives go into ``workdir`` under fixed names (one workdir per media item). The original file
    is only ever read.
    """
    sniffed = sniff(path)
    workdir.mkdir(parents=True, exist_ok=True)
    request = _request(
        "check",
        path,
        sniffed.format,
        max_pixels=settings.media_max_pixels,
        thumbnail=str(workdir / THUMBNAIL_NAME),
        thumbnail_max_side=settings.thumbnail_max_side,
        converted=str(workdir / CONVERTED_NAME),
    )
    started = time.monotonic()
    result = _checker.run(request, settings.media_decode_timeout_s)
    converted = result.get("converted")
    return NormalizedMedia(
        original=path,
        sniffed=sniffed,
        kind=result["kind"],
        info=MediaInfo.model_validate(result["info"]),
        detector_path=workdir / CONVERTED_NAME if converted else path,
        converted=converted,
        orientation=int(result["orientation"]),
        rotation=int(result["rotation"]),
        thumbnail=workdir / THUMBNAIL_NAME,
        embedded=tuple(result["embedded"]),
        check_s=time.monotonic() - started,
    )


def make_preview(media: NormalizedMedia, *, settings: Settings, workdir: Path) -> Path | None:
    """A small H.264 MP4 of a video's first ``preview_max_s`` seconds, for display; None for still images."""
    if media.kind != "video":
        return None
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / PREVIEW_NAME
    request = _request(
        "preview",
        media.detector_path,
        media.detector_format,
        preview=str(out),
        max_side=settings.preview_max_side,
        max_s=settings.preview_max_s,
    )
    _checker.run(request, settings.media_decode_timeout_s)
    return out
