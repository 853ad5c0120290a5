"""`deepwatch bench fingerprint --quick`, and the pieces of its clip generator: edits, footage, face swaps, scoring."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pdqhash
import pytest
from typer.testing import CliRunner

from bench import clips_transforms as tf
from bench.clips import FACE_SWAP, SOURCE, TRANSFORMS, Clip, SetSpec, face_plan, source_clips
from bench.clips_faces import FacePhoto, composite, face_photos, swap_face
from bench.clips_scenes import footage
from bench.fingerprint_eval import plan_pairs, score
from deepwatch.cli import app

runner = CliRunner()


def frames(n: int = 10, h: int = 48, w: int = 64, seed: int = 0) -> list[np.ndarray]:
    return list(np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8))


def pdq_distance(a: np.ndarray, b: np.ndarray) -> int:
    return int((pdqhash.compute(np.ascontiguousarray(a))[0] != pdqhash.compute(np.ascontiguousarray(b))[0]).sum())


# --- edits: pure functions over frames ---------------------------------------------------------
def test_letterbox_adds_black_bars_of_the_right_size() -> None:
    clip = frames(h=48, w=64)
    boxed = tf.letterbox(clip)  # 12.5 % of 48 = 6 rows each side
    assert boxed[0].shape == (60, 64, 3)
    assert not boxed[0][:6].any() and not boxed[0][-6:].any()
    assert np.array_equal(boxed[3][6:-6], clip[3])


def test_flip_is_an_involution_and_inputs_stay_untouched() -> None:
    clip = frames()
    before = [f.copy() for f in clip]
    flipped = tf.hflip(clip)
    assert not np.array_equal(flipped[0], clip[0])
    assert all(np.array_equal(a, b) for a, b in zip(tf.hflip(flipped), clip, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(before, clip, strict=True))


def test_trims_keep_the_right_frames() -> None:
    clip = frames(n=20)
    start, end = tf.trim_start(clip), tf.trim_end(clip)
    assert len(start) == len(end) == 14
    assert start[0] is clip[6] and end[-1] is clip[13]


def test_sizes_stay_even_and_edits_do_what_they_say() -> None:
    clip = frames(h=50, w=70)
    assert tf.resize(clip)[0].shape == (24, 36, 3)  # 25 x 35 rounded to even
    assert tf.crop(clip)[0].shape == (44, 64, 3)
    assert np.array_equal(tf.crop(clip)[0], clip[0][3:47, 3:67])
    brighter = tf.brightness(clip, 1.2)[0].astype(int)
    assert (brighter >= clip[0]).all() and brighter.max() == 255
    assert (tf.brightness(clip, 0.8)[0] <= clip[0]).all()
    logo = tf.logo(clip)[0]
    assert not np.array_equal(logo[:10, -20:], clip[0][:10, -20:])  # top-right corner changed
    assert np.array_equal(logo[-20:, :30], clip[0][-20:, :30])  # bottom-left untouched
    wrapped = tf.embed(clip, frames(n=3, seed=1), frames(n=4, h=20, w=30, seed=2))
    assert len(wrapped) == 17 and wrapped[3] is clip[0] and wrapped[-1].shape == clip[0].shape


# --- footage ----------------------------------------------------------------------------------
def test_footage_is_deterministic_and_sources_differ() -> None:
    a = list(footage(1, 128, 96, 12, 10))
    assert all(np.array_equal(x, y) for x, y in zip(a, footage(1, 128, 96, 12, 10), strict=True))
    firsts = [next(footage(seed, 128, 96, 12, 10)) for seed in range(6)]
    across = []
    for i, x in enumerate(firsts):
        assert x.std() > 20  # textured, not flat
        across += [pdq_distance(x, y) for y in firsts[i + 1:]]
    assert min(across) > 64  # of 256 bits: unrelated pictures sit near 128
    assert pdq_distance(a[0], a[1]) < min(across)  # a tenth of a second apart in one shot: alike


# --- faces ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def photos() -> list[FacePhoto]:
    found = face_photos()
    if len(found) < 2:
        pytest.skip("fewer than two face photos (MesoNet test images under ../shared, or scikit-image)")
    return found


def test_face_swap_changes_the_face_only(photos: list[FacePhoto]) -> None:
    target, donor = photos[0], photos[1]
    swapped = swap_face(target, donor)
    x, y, w, h = target.box
    outside = np.ones(target.rgb.shape[:2], bool)
    outside[y:y + h, x:x + w] = False
    assert np.array_equal(swapped.rgb[outside], target.rgb[outside])
    inner = (slice(y + h // 4, y + 3 * h // 4), slice(x + w // 4, x + 3 * w // 4))
    assert np.abs(swapped.rgb[inner].astype(int) - target.rgb[inner]).mean() > 10

    background = list(footage(3, 160, 120, 4, 4))
    original, variant = composite(background, target.rgb, 3, 4), composite(background, swapped.rgb, 3, 4)
    untouched = np.all(original[0] == background[0], axis=2)  # where the head does not reach
    assert untouched.mean() > 0.5 and np.array_equal(variant[0][untouched], background[0][untouched])
    assert not np.array_equal(original[0], variant[0])


def test_face_plan_spreads_faces_and_never_swaps_a_face_with_itself(photos: list[FacePhoto]) -> None:
    plan = face_plan(SetSpec(sources=30, face_sources=12), photos)
    assert len(plan) == 12
    assert all(target is not donor for target, donor in plan.values())
    assert face_plan(SetSpec(sources=30, face_sources=12), photos[:1]) == {}


def test_one_source_writes_every_edit(tmp_path: Path, photos: list[FacePhoto]) -> None:
    spec = SetSpec(sources=1, face_sources=1, width=96, height=64, seconds=2, fps=5)
    written = list(source_clips(spec, 0, tmp_path, (photos[0], photos[1])))
    assert [c.transform for c in written] == [SOURCE, FACE_SWAP, *TRANSFORMS]
    assert all(c.path.stat().st_size > 0 and c.source == 0 for c in written)
    assert written[1].face == f"{photos[0].name}<-{photos[1].name}"


# --- scoring ----------------------------------------------------------------------------------
def test_pairs_and_scores() -> None:
    clips = [Clip(Path(f"{s}-{t}"), s, t) for s in range(3) for t in (SOURCE, "hflip", "logo")]
    clips.append(Clip(Path("0-swap"), 0, FACE_SWAP, "a<-b"))
    pairs = plan_pairs(clips)
    assert len(pairs.recall) == 6 and len(pairs.face) == 1 and len(pairs.among_sources) == 3
    assert len(pairs.cross) == pairs.cross_total == 3 * 4 + 1 * 2 and all(a.source != b.source for a, b in pairs.cross)
    assert len(plan_pairs(clips, max_cross=5).cross) == 5

    def relation(a: Clip, b: Clip) -> str:
        if a.source == b.source:
            if b.transform == FACE_SWAP:
                return "variant"
            return "different" if b.transform == "hflip" else "duplicate"
        return "duplicate" if (a.source, b.source) == (1, 2) and b.transform == SOURCE else "different"

    scored = score(pairs, relation)
    assert scored["recall"] == 0.5 and scored["recall_by_edit"] == {"hflip": 0.0, "logo": 1.0}
    assert scored["false_matches"] == scored["false_among_sources"] == 1 and scored["face_variant"] == 1.0


# --- the benchmark ----------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Image.Image.getdata is deprecated:DeprecationWarning")  # videohash2's dependency
def test_bench_fingerprint_quick_prints_the_benchmark_document() -> None:
    result = runner.invoke(app, ["bench", "fingerprint", "--quick", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["benchmark"] == "fingerprint" and doc["machine"]["cpus"]
    names = [r["name"] for r in doc["results"]]
    assert names[0].startswith("fingerprint CPU time")
    assert any(n.startswith("duplicate recall") for n in names)
    assert any(n.startswith("false matches") for n in names)
    for r in doc["results"]:
        assert r["better"] in ("lower", "higher") and r["unit"] and r["params"]
        assert math.isfinite(r["value"]) and math.isfinite(r["peer"]["value"]) and r["peer"]["name"]
        if r["peer"]["value"]:
            assert r["ratio"] == pytest.approx(r["value"] / r["peer"]["value"], rel=1e-2, abs=1e-3)
        if "target" in r:
            assert isinstance(r["meets_target"], bool)
    cpu = doc["results"][0]
    assert cpu["value"] > 0 and cpu["peer"]["value"] > 0 and cpu["params"]["runs"] >= 3
    recall = next(r for r in doc["results"] if r["name"].startswith("duplicate recall"))
    assert 0 <= recall["value"] <= 1 and set(recall["params"]["recall_by_edit"]) == set(TRANSFORMS)
