"""Matching: the pure decision on synthetic fingerprints, then real clips and their edits (duplicate), other
clips (different) and face swaps (variant), the stored contract, and the ``match``/``fingerprint`` commands."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.contracts import Fingerprints
from deepwatch.media.fingerprint import FrameHash, MediaFingerprint
from deepwatch.media.hashes import hamming, thumb_similarity
from deepwatch.media.matching import FaceComparison, MatchPolicy, distance_matrix, hex_words, match, vote_offset
from tests.fingerprint_support import (  # noqa: F401
    Clips,
    clips,
    cropped,
    face_images,
    half,
    letterboxed,
    mirrored,
    scene,
    with_face,
    with_swapped_face,
)

hex64 = st.integers(0, 2**256 - 1).map(lambda v: f"{v:064x}")
hex16 = st.integers(0, 2**64 - 1).map(lambda v: f"{v:016x}")


def flip_bits(value: str, count: int, rng: random.Random) -> str:
    bits = len(value) * 4
    number = int(value, 16)
    for k in rng.sample(range(bits), count):
        number ^= 1 << k
    return f"{number:0{len(value)}x}"


def synthetic(hashes: list[str], sha: str = "a" * 64, times: list[float] | None = None) -> MediaFingerprint:
    frames = tuple(
        FrameHash(t=(times[i] if times else float(i)), pdq=h, quality=100) for i, h in enumerate(hashes)
    )
    return MediaFingerprint(sha, "video", float(len(hashes)), 64, 64, None, frames, ())


# --- the pure parts -------------------------------------------------------------------------


@given(st.lists(hex64, min_size=1, max_size=6), st.lists(hex64, min_size=1, max_size=6))
def test_distance_matrix_is_hamming(a: list[str], b: list[str]) -> None:
    matrix = distance_matrix(hex_words(a, 256), hex_words(b, 256))
    assert matrix.tolist() == [[hamming(x, y) for y in b] for x in a]


def test_vote_offset_finds_the_shift_most_frames_agree_on() -> None:
    t_short = np.arange(6.0)
    t_long = np.arange(20.0)
    # frame i matches long frame i + 7, and frame 2 also matches something far away
    pairs_i, pairs_j = np.array([0, 1, 2, 2, 3, 4, 5]), np.array([7, 8, 9, 19, 10, 11, 12])
    offset, support = vote_offset(pairs_i, pairs_j, t_short, t_long, tolerance=0.5, step=0.25)
    assert offset == pytest.approx(7.0, abs=0.5) and support == 6
    assert vote_offset(np.array([], dtype=int), np.array([], dtype=int), t_short, t_long, 0.5, 0.25) == (None, 0)


def test_thumb_similarity_forgives_a_pixel_of_shift_but_not_another_picture() -> None:
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    assert thumb_similarity(face, face) == pytest.approx(1.0)
    shifted = np.zeros((16, 16), np.uint8)
    shifted[:, 1:] = face[:, :-1]  # the box landed a pixel to the left in this copy
    assert thumb_similarity(face, shifted) == pytest.approx(1.0)
    assert thumb_similarity(face, shifted, shift=0) < 0.5
    assert thumb_similarity(face, 255 - face) < 0.3  # the negative: no likeness, whatever the shift
    assert thumb_similarity(face, rng.integers(0, 256, (16, 16)).astype(np.uint8)) < 0.5


def test_scenes_match_around_faces_that_differ() -> None:
    from deepwatch.media.hashes import bits_to_hex, grid_mask
    from deepwatch.media.matching import scene_match

    rng = np.random.default_rng(1)
    grid = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    swapped = grid.copy()
    swapped[4:10, 5:11] = 255 - swapped[4:10, 5:11]  # another face where the mask is
    mask = bits_to_hex(grid_mask([(50, 40, 60, 60)], 160, 160).flatten())  # covers cells 4-10 x 5-10

    def frames(pixels: np.ndarray, face_mask: str) -> tuple[FrameHash, ...]:
        return (FrameHash(0.0, "0" * 64, 100, scene_grid=pixels.tobytes().hex(), scene_mask=face_mask),)

    fraction, pairs = scene_match(frames(grid, mask), frames(swapped, mask), MatchPolicy())
    assert fraction == 1.0 and pairs == [(0.0, 0.0, "none")]
    unmasked = bits_to_hex(np.zeros(256, dtype=bool))
    assert scene_match(frames(grid, unmasked), frames(swapped, unmasked), MatchPolicy())[0] == 0.0
    other = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    assert scene_match(frames(grid, mask), frames(other, mask), MatchPolicy())[0] == 0.0


def test_faces_are_compared_only_at_the_same_place() -> None:
    from deepwatch.media.fingerprint import FaceHash
    from deepwatch.media.matching import same_place

    def at(x: float, y: float, w: float = 0.2, h: float = 0.3) -> FaceHash:
        return FaceHash(0.0, (0, 0, 1, 1), "0" * 64, 1.0, place=(x, y, w, h))

    policy = MatchPolicy()
    assert same_place(at(0.4, 0.3), at(0.42, 0.31), "none", policy)
    assert not same_place(at(0.1, 0.3), at(0.6, 0.3), "none", policy)
    assert same_place(at(0.1, 0.3), at(0.7, 0.3), "mirror", policy)  # 1 - 0.7 - 0.2 = 0.1
    assert not same_place(at(0.4, 0.3), at(0.4, 0.3, 0.05, 0.07), "none", policy)  # a quarter of the size
    # a centred 90 % crop moves a face near the edge outwards: (0.05 - 0.05) / 0.9 = 0
    assert same_place(at(0.0, 0.1), at(0.05, 0.14, 0.18, 0.27), "crop", policy)
    assert same_place(at(0.0, 0.1), FaceHash(0.0, (0, 0, 1, 1), "0" * 64, 1.0), "none", policy)  # no place


def test_inner_faces_decide_where_both_have_them() -> None:
    policy = MatchPolicy()
    assert FaceComparison(pdq=200, phash=40, similarity=0.95).differs(policy) is False
    assert FaceComparison(pdq=0, phash=0, similarity=0.5).differs(policy) is True
    assert FaceComparison(pdq=120, phash=None, similarity=None).differs(policy) is True
    assert FaceComparison(pdq=20, phash=3, similarity=None).differs(policy) is False


@settings(max_examples=40, deadline=None)
@given(st.lists(hex64, min_size=1, max_size=12), st.integers(0, 10**6))
def test_a_copy_is_a_duplicate_of_itself(hashes: list[str], seed: int) -> None:
    rng = random.Random(seed)
    original = synthetic(hashes)
    copy = synthetic([flip_bits(h, rng.randrange(0, 12), rng) for h in hashes], sha="b" * 64)
    result = match(original, copy)
    assert result.relation == "duplicate" and result.matched_fraction == 1.0
    same = match(original, synthetic(hashes, sha="c" * 64))
    assert (same.relation, same.matched_fraction, same.distance) == ("duplicate", 1.0, 0.0)


@settings(max_examples=40, deadline=None)
@given(st.lists(hex64, min_size=1, max_size=8), st.lists(hex64, min_size=1, max_size=8), st.integers(0, 10**6))
def test_match_is_symmetric(a: list[str], b: list[str], seed: int) -> None:
    rng = random.Random(seed)
    # b shares some of a's frames (a little changed), so that all three relations' paths are exercised
    shared = [flip_bits(h, rng.randrange(0, 50), rng) for h in a if rng.random() < 0.6]
    first, second = synthetic(a), synthetic(b + shared, sha="b" * 64)
    one, other = match(first, second), match(second, first)
    assert (one.relation, one.distance, one.matched_fraction) == (other.relation, other.distance, other.matched_fraction)


@pytest.mark.parametrize("seed", range(30))
def test_random_frames_are_different(seed: int) -> None:
    rng = random.Random(seed)
    a = [f"{rng.getrandbits(256):064x}" for _ in range(rng.randint(1, 8))]
    b = [f"{rng.getrandbits(256):064x}" for _ in range(rng.randint(1, 8))]
    assert min(hamming(x, y) for x in a for y in b) >= 64  # random hashes are ~128 bits apart
    assert match(synthetic(a), synthetic(b, sha="b" * 64)).relation == "different"


def test_flat_frames_are_no_evidence() -> None:
    flat = replace(synthetic(["0" * 64]), frames=(FrameHash(0.0, "0" * 64, quality=10),))
    result = match(flat, replace(flat, sha256="b" * 64))
    assert result.relation == "different" and "reason" in result.details


def test_equal_bytes_are_duplicates_without_looking_further() -> None:
    result = match(synthetic(["0" * 64]), synthetic(["f" * 64]))  # same sha256
    assert (result.relation, result.distance, result.details["exact"]) == ("duplicate", 0.0, True)


@given(st.lists(st.tuples(hex64, hex16), min_size=1, max_size=6))
def test_a_stored_contract_from_before_frame_times_still_matches(frames: list[tuple[str, str]]) -> None:
    old = Fingerprints(sha256="a" * 64, pdq=[p for p, _ in frames])  # only what the first contract had
    new = Fingerprints(sha256="b" * 64, pdq=[p for p, _ in frames], phash=[h for _, h in frames],
                       frame_times=[float(i) for i in range(len(frames))])
    assert match(old, new).relation == "duplicate"


# --- real clips -----------------------------------------------------------------------------

EDITS = {
    "lower-bitrate": (lambda: scene(1), {"bit_rate": 120_000}),
    "half-size": (lambda: half(scene(1)), {}),
    "brighter": (lambda: [np.clip(f * 1.2, 0, 255).astype(np.uint8) for f in scene(1)], {}),
    "mirrored": (lambda: mirrored(scene(1)), {}),
    "letterboxed": (lambda: letterboxed(scene(1)), {}),
    "cropped-10": (lambda: cropped(scene(1)), {}),
    "first-30-percent-cut": (lambda: scene(1)[round(0.3 * 125) :], {}),  # 1.52 s: off the 1 s sampling grid
    "keyframes-every-0.4s": (lambda: scene(1), {"gop": 10}),  # decoded keyframes only, at other instants
    "embedded": (lambda: scene(2, seconds=2.2) + scene(1) + scene(3, seconds=2), {}),
}


@pytest.mark.parametrize("edit", list(EDITS))
def test_an_edited_copy_is_a_duplicate(clips: Clips, edit: str) -> None:  # noqa: F811
    make, encoding = EDITS[edit]
    original = clips.fingerprint(clips.get("plain", lambda: scene(1)))
    copy = clips.fingerprint(clips.get(edit, make, **encoding))
    result = match(original, copy)
    assert result.relation == "duplicate", result
    assert result.matched_fraction >= 0.5
    if edit == "mirrored":
        assert result.details["transform"] == "mirror"
    if edit == "first-30-percent-cut":
        assert result.details["offset_s"] == pytest.approx(-1.52, abs=0.6)  # b starts 1.52 s into a
    if edit == "embedded":
        assert result.details["offset_s"] == pytest.approx(2.2, abs=0.6)
    assert match(copy, original).relation == "duplicate"


@pytest.mark.parametrize(("first", "second"), [(1, 2), (1, 3), (2, 3), (4, 5)])
def test_other_clips_are_different(clips: Clips, first: int, second: int) -> None:  # noqa: F811
    a = clips.fingerprint(clips.get("plain" if first == 1 else f"other-{first}", lambda: scene(first)))
    b = clips.fingerprint(clips.get(f"other-{second}", lambda: scene(second)))
    result = match(a, b)
    assert result.relation == "different", result
    assert result.matched_fraction < 0.5


def test_other_clips_edited_are_different(clips: Clips) -> None:  # noqa: F811
    a = clips.fingerprint(clips.get("other-2", lambda: scene(2)))
    for edit in ("mirrored", "cropped-10", "letterboxed"):
        make, encoding = EDITS[edit]
        assert match(a, clips.fingerprint(clips.get(edit, make, **encoding))).relation == "different"


# --- faces ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def face_clips(clips: Clips) -> dict[str, MediaFingerprint]:  # noqa: F811
    faces = face_images()
    made = {
        "real": clips.get("face-0", lambda: with_face(scene(31), faces[0])),
        "real-half": clips.get("face-0-half", lambda: half(with_face(scene(31), faces[0]))),
        "real-mirrored": clips.get("face-0-mirrored", lambda: mirrored(with_face(scene(31), faces[0]))),
        "swapped": clips.get("face-1", lambda: with_face(scene(31), faces[1])),
        "swapped-half": clips.get("face-1-half", lambda: half(with_face(scene(31), faces[1]))),
        "inner-swapped": clips.get("face-0-inner-1", lambda: with_swapped_face(scene(31), faces[0], faces[1])),
        "elsewhere": clips.get("face-1-elsewhere", lambda: with_face(scene(32), faces[1])),
    }
    return {name: clips.fingerprint(path) for name, path in made.items()}


@pytest.mark.parametrize("copy", ["real-half", "real-mirrored"])
def test_the_same_faces_keep_a_copy_a_duplicate(face_clips: dict[str, MediaFingerprint], copy: str) -> None:
    result = match(face_clips["real"], face_clips[copy])
    assert result.relation == "duplicate", result
    assert result.details["faces"]["compared"] > 0


@pytest.mark.parametrize("fake", ["swapped", "swapped-half", "inner-swapped"])
def test_a_face_swap_is_a_variant(face_clips: dict[str, MediaFingerprint], fake: str) -> None:
    result = match(face_clips["real"], face_clips[fake])
    assert result.relation == "variant", result
    faces = result.details["faces"]
    assert faces["compared"] > 0 and faces["differing"] / faces["compared"] >= 0.5
    assert match(face_clips[fake], face_clips["real"]).relation == "variant"


def test_the_same_face_in_another_scene_is_different(face_clips: dict[str, MediaFingerprint]) -> None:
    assert match(face_clips["swapped"], face_clips["elsewhere"]).relation == "different"


@pytest.mark.parametrize(("a", "b"), [("real", "real-half"), ("real", "swapped"), ("real", "elsewhere")])
def test_stored_contracts_match_like_the_fingerprints(face_clips: dict[str, MediaFingerprint], a: str, b: str) -> None:
    direct = match(face_clips[a], face_clips[b])
    stored = match(face_clips[a].to_contract(), face_clips[b].to_contract())
    assert (stored.relation, stored.matched_fraction) == (direct.relation, direct.matched_fraction)


# --- the commands ---------------------------------------------------------------------------


def test_match_command_prints_the_relation(clips: Clips) -> None:  # noqa: F811
    a = clips.get("plain", lambda: scene(1))
    b = clips.get("mirrored", EDITS["mirrored"][0])
    c = clips.get("other-2", lambda: scene(2))
    runner = CliRunner()
    result = runner.invoke(app, ["match", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["relation"] == "duplicate"
    assert set(document) == {"relation", "distance", "matched_fraction", "details"}
    assert document["details"]["transform"] == "mirror"
    result = runner.invoke(app, ["match", str(a), str(c), "--json"])
    assert json.loads(result.stdout)["relation"] == "different"


def test_fingerprint_command_prints_the_fingerprints(clips: Clips) -> None:  # noqa: F811
    path = clips.get("plain", lambda: scene(1))
    result = CliRunner().invoke(app, ["fingerprint", str(path), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    expected = clips.fingerprint(path)
    assert document["sha256"] == expected.sha256 and document["kind"] == "video"
    assert [f["pdq"] for f in document["frames"]] == [f.pdq for f in expected.frames]
    assert Fingerprints.model_validate(document["fingerprints"]) == expected.to_contract()


def test_commands_report_bad_files(tmp_path: Path, clips: Clips) -> None:  # noqa: F811
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(100))
    runner = CliRunner()
    result = runner.invoke(app, ["fingerprint", str(broken), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.stdout)["kind"] == "Corrupt"
    text = tmp_path / "notes.mp4"
    text.write_text("not a video, whatever its name says")
    result = runner.invoke(app, ["fingerprint", str(text), "--json"])  # sniffed from its bytes, as the stream does
    assert result.exit_code == 1 and json.loads(result.stdout)["kind"] == "Unsupported"
    result = runner.invoke(app, ["match", str(clips.get("plain", lambda: scene(1))), str(tmp_path / "gone.mp4"), "--json"])
    assert result.exit_code == 2
    assert "not a file" in json.loads(result.stdout)["error"]


def test_the_commands_fingerprint_an_animated_webp_as_the_stream_does(tmp_path: Path) -> None:
    """An animated WebP is a video to the stream (converted losslessly, since FFmpeg cannot decode it frame by
    frame); the commands see the same video, under the original file's sha256."""
    import hashlib

    from PIL import Image

    from deepwatch.media.fingerprint import fingerprint_normalized
    from deepwatch.media.normalize import normalize
    from deepwatch.settings import load_settings

    rng = np.random.default_rng(5)
    pictures = [Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((160, 120)) for _ in range(6)]
    path = tmp_path / "anim.webp"
    pictures[0].save(path, save_all=True, append_images=pictures[1:], duration=1000, loop=0, lossless=True)
    settings = load_settings(data_dir=tmp_path / "data")
    media = normalize(path, settings=settings, workdir=tmp_path / "work")
    assert media.kind == "video" and media.converted
    expected = fingerprint_normalized(media, settings=settings)
    result = CliRunner().invoke(app, ["fingerprint", str(path), "--json", "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["kind"] == "video" and document["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(document["frames"]) >= 5 and [f["pdq"] for f in document["frames"]] == [f.pdq for f in expected.frames]
