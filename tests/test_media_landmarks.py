"""Face landmarks (MTCNN's ONet with its real weights, from the facenet-pytorch wheel) and MesoNet's alignment.

The faces are the four MesoNet test faces pasted into a plain scene, upright or turned by a known angle; the
landmarks are checked against where a face's parts are and against the angle, not against stored values.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from deepwatch.media import landmarks
from deepwatch.media.faces import FaceBox, detect_faces
from deepwatch.media.landmarks import (
    Alignment,
    LandmarksUnavailable,
    aligned_crop,
    alignment,
    face_landmarks,
    fits_box,
)
from tests.detector_support import face_image, face_scene

FACES = ["real/real00240.jpg", "real/real00772.jpg", "df/df00204.jpg", "df/df01254.jpg"]
SIZE, AT, SIDE = (640, 480), (200, 110), 220
CENTRE = (AT[0] + SIDE / 2, AT[1] + SIDE / 2)


def turned(scene: np.ndarray, degrees: float) -> np.ndarray:
    """The scene turned about the pasted face's centre (positive: counter-clockwise as shown)."""
    matrix = cv2.getRotationMatrix2D(CENTRE, degrees, 1.0)
    return cv2.warpAffine(scene, matrix, SIZE, borderMode=cv2.BORDER_REFLECT_101)


@pytest.mark.parametrize("name", FACES)
def test_landmarks_fall_on_the_parts_of_the_face(models_dir: Path, name: str) -> None:
    scene = face_scene(face_image(models_dir, name), size=SIZE, at=AT, side=SIDE)
    (box,) = detect_faces(scene, min_confidence=0.5)
    (marks,) = face_landmarks([scene], [box])
    left_eye, right_eye, nose, mouth_left, mouth_right = marks.points
    assert marks.probability > 0.9
    assert left_eye[0] < nose[0] < right_eye[0] and mouth_left[0] < mouth_right[0]
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_left[1], mouth_right[1])
    inside = (marks.points >= (box.x, box.y)) & (marks.points <= (box.x + box.w, box.y + box.h))
    assert inside.all()


@pytest.mark.parametrize("name", FACES)
def test_a_tilted_face_comes_out_upright(models_dir: Path, name: str) -> None:
    scene = face_scene(face_image(models_dir, name), size=SIZE, at=AT, side=SIDE)

    def aligned(picture: np.ndarray) -> tuple[Alignment, np.ndarray]:
        (box,) = detect_faces(picture, min_confidence=0.5)
        (marks,) = face_landmarks([picture], [box])
        where = alignment(marks.points)
        assert where is not None and fits_box(where, box)
        return where, aligned_crop(picture, where, 128).astype(np.float64)

    upright, upright_crop = aligned(scene)
    assert abs(upright.roll_degrees) < 5
    for degrees in (15, -25):
        where, crop = aligned(turned(scene, degrees))
        # turned counter-clockwise as shown, the chin swings towards the picture's right: a positive roll
        assert where.roll_degrees == pytest.approx(degrees, abs=5)
        assert where.side == pytest.approx(upright.side, rel=0.05)
        # the aligned crops of the two agree far better than the tilted face's crop, unturned, does
        unturned = aligned_crop(turned(scene, degrees), Alignment(where.centre, where.side, (0.0, 1.0)), 128)
        assert np.abs(crop - upright_crop).mean() < 0.35 * np.abs(unturned - upright_crop).mean()


def test_alignment_follows_mesonets_recipe() -> None:
    # an upright face: eyes 40 px apart, the mouth 50 px below them, the nose tip 30 px below
    points = np.array([[80.0, 100.0], [120.0, 100.0], [100.0, 130.0], [85.0, 150.0], [115.0, 150.0]])
    where = alignment(points)
    assert where is not None
    assert where.down == pytest.approx((0.0, 1.0)) and where.roll_degrees == pytest.approx(0.0)
    assert where.centre == pytest.approx((100.0, 100.0 + 0.75 * 30))  # three quarters of the way to the nose tip
    assert where.side == pytest.approx(50 * 2.2 * 1.3)  # the longer of eye-to-eye and eyes-to-mouth
    # the same face leaning 30 degrees (about its nose): the same crop, turned
    angle = math.radians(30)
    turn = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    leaning = alignment((points - (100, 130)) @ turn.T + (100, 130))
    assert leaning is not None
    assert leaning.roll_degrees == pytest.approx(-30) and leaning.side == pytest.approx(where.side)
    assert np.array(leaning.centre) == pytest.approx(turn @ (np.array(where.centre) - (100, 130)) + (100, 130))
    assert alignment(np.zeros((5, 2))) is None  # every point in one spot


def test_an_alignment_must_fit_the_detectors_box() -> None:
    box = FaceBox(100, 100, 80, 100, 0.9)
    assert fits_box(Alignment((140.0, 150.0), 110.0, (0.0, 1.0)), box)
    assert not fits_box(Alignment((90.0, 150.0), 110.0, (0.0, 1.0)), box)  # centred outside the box
    assert not fits_box(Alignment((140.0, 150.0), 40.0, (0.0, 1.0)), box)  # a crop of a nose
    assert not fits_box(Alignment((140.0, 150.0), 300.0, (0.0, 1.0)), box)  # a crop of the room


def test_an_upright_crop_is_the_frame_under_it() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    # a 20 px square whose pixels are columns 30..49 and rows 10..29: its middle is at (39.5, 19.5) in pixel
    # centres, which is (40, 20) in the alignment's continuous coordinates (the square's corner at (30, 10))
    crop = aligned_crop(rgb, Alignment((40.0, 20.0), 20.0, (0.0, 1.0)), 20)
    assert np.array_equal(crop, rgb[10:30, 30:50])
    # a quarter turn: the crop's rows are the frame's columns (down points to the frame's left)
    turned_crop = aligned_crop(rgb, Alignment((40.0, 20.0), 20.0, (-1.0, 0.0)), 20)
    assert np.array_equal(turned_crop, np.rot90(rgb[10:30, 30:50], k=1))


def test_without_the_weights_the_error_names_the_ways_to_get_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(LandmarksUnavailable, match=r"pip install --no-deps facenet-pytorch==2\.6\.0") as raised:
        landmarks.weight_file(tmp_path)
    message = str(raised.value)
    assert "deepwatch models pull" in message and str(tmp_path / landmarks.WEIGHTS_PATH) in message
    assert "DEEPWATCH_SCORE_ALIGN_FACES=false" in message


def test_the_weights_are_found_in_the_models_directory_and_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    installed = landmarks.weight_file()  # from the wheel, as make install puts it
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as after a plain pip install
    pulled = tmp_path / landmarks.WEIGHTS_PATH
    pulled.parent.mkdir(parents=True)
    pulled.write_bytes(installed.read_bytes())
    assert landmarks.weight_file(tmp_path) == pulled
    pulled.write_bytes(installed.read_bytes()[:-1] + b"x")  # the same size: the check reads the bytes
    with pytest.raises(LandmarksUnavailable, match=r"not the expected " + landmarks.WEIGHTS_SHA256):
        landmarks.weight_file(tmp_path)


def test_an_alignment_survives_its_record() -> None:
    where = Alignment((120.4567891, 80.0), 210.0, (math.sin(math.radians(-20)), math.cos(math.radians(-20))))
    assert where.recorded() == (120.456789, 80.0, 210.0, -20.0)
    back = Alignment.from_recorded(where.recorded())
    assert back.centre == pytest.approx((120.456789, 80.0)) and back.side == 210.0
    assert back.down == pytest.approx(where.down) and back.roll_degrees == pytest.approx(-20.0)
