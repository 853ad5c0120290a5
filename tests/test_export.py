"""`deepwatch export` and storage.export on a real SQLite index and object store (and real S3).

One module-scoped data directory holds records whose ids are the sha256 of real media files (JPEGs
from Pillow, MP4s from the encoder): clusters of duplicates and variants (one joined only through
records that are not exported), a reviewed-fake, a reviewed-real, a record whose media is gone and
one whose stored bytes do not hash to its id.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import tarfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.contracts import DetectorScore, EnsembleSettings, Fingerprints, MediaRecord, Review, StoredObjects
from deepwatch.settings import Settings, load_settings
from storage.export import ExportProgress, ExportRequest, run_export
from storage.export.select import routes
from storage.index import open_index
from storage.keys import flagged_key, media_key
from storage.objects import open_object_store
from storage.query import SearchQuery
from storage.splits import SPLIT_NAMES, assign_splits, check_ratios, clusters, split_of
from tests.index_support import HOUR, T0, sighting
from tests.media_support import image_bytes, pattern, video_file

EVEN = (0.34, 0.33, 0.33)  # more splits in play than 80/10/10 with a dozen clusters
SETTINGS_BEHIND = EnsembleSettings(platt={"mesonet4": (1.5, -0.2)}, fake_threshold=0.7, real_threshold=0.3)


@dataclass
class Seed:
    data_dir: Path
    settings: Settings
    ids: dict[str, str]  # name → media_id
    blobs: dict[str, bytes]


def _record(media_id: str, kind: str, n: int, **fields: object) -> MediaRecord:
    return MediaRecord(
        media_id=media_id,
        kind=kind,
        fingerprints=Fingerprints(sha256=media_id),
        sightings=[sighting(f"https://video.example/{n}", platform="tiktok" if n % 2 else "youtube",
                            first=T0 + n * HOUR, title=f"clip {n}")],
        first_seen=T0 + n * HOUR,
        last_seen=T0 + n * HOUR,
        detectors={"mesonet4": DetectorScore(p_fake=0.9 - n / 100, model_version="meso4-df-1", frames=8),
                   "mesoinception4": DetectorScore(p_fake=0.8, model_version="mesoinc4-df-1", frames=8)},
        **fields,
    )


@pytest.fixture(scope="module")
def seed(tmp_path_factory: pytest.TempPathFactory) -> Seed:
    root = tmp_path_factory.mktemp("export-seed")
    settings = load_settings(data_dir=root / "data")
    clips = root / "clips"
    clips.mkdir()
    blobs: dict[str, bytes] = {}
    for name, frames in (("orig", 8), ("dup", 9), ("lone_clip", 10), ("gone", 11)):
        blobs[name] = video_file(clips / f"{name}.mp4", frames=frames, size=(64, 48)).read_bytes()
    image_names = ["variant", "single", "reviewed_fake", "reviewed_real", "real", "g", "x", "y", "h", "bad",
                   *(f"k{i}" for i in range(8))]
    for shift, name in enumerate(image_names):
        blobs[name] = image_bytes("JPEG", pattern(48, 40, shift=7 * shift + 1), quality=90)
    ids = {name: hashlib.sha256(data).hexdigest() for name, data in blobs.items()}
    ids["bad"] = hashlib.sha256(b"what the bytes should have been").hexdigest()

    fake = {"verdict": "fake", "score": 0.91}
    review = lambda label: Review(label=label, reviewer="mod-ana", at=T0 + 100 * HOUR, note=f"looked: {label}")  # noqa: E731
    records = [
        _record(ids["orig"], "video", 1, ensemble=SETTINGS_BEHIND, **fake),
        _record(ids["dup"], "video", 2, dedup="near", duplicate_of=ids["orig"], **fake),
        _record(ids["variant"], "image", 3, variant_of=ids["dup"], **fake),
        _record(ids["lone_clip"], "video", 4, **fake),
        _record(ids["single"], "image", 5, **fake),
        _record(ids["reviewed_fake"], "image", 6, verdict="uncertain", score=0.5, review=review("fake")),
        _record(ids["reviewed_real"], "image", 7, review=review("real"), **fake),
        _record(ids["real"], "image", 8, verdict="real", score=0.1),
        # g → x → y ← h: x and y are real (not exported), yet g and h are one cluster.
        _record(ids["g"], "image", 9, dedup="near", duplicate_of=ids["x"], **fake),
        _record(ids["x"], "image", 10, verdict="real", score=0.2, variant_of=ids["y"]),
        _record(ids["y"], "image", 11, verdict="real", score=0.2),
        _record(ids["h"], "image", 12, dedup="near", duplicate_of=ids["y"], **fake),
        _record(ids["gone"], "video", 13, **fake),
        _record(ids["bad"], "image", 14, **fake),
        *(_record(ids[f"k{i}"], "image", 20 + i, **fake) for i in range(8)),
    ]
    store = open_object_store(settings)
    for number, rec in enumerate(records):
        name = next(n for n, i in ids.items() if i == rec.media_id)
        if name == "gone":
            continue
        ext = "mp4" if rec.kind == "video" else "jpg"
        if number % 2:  # half under media/ named by the record, half only under flagged/
            key = media_key(rec.media_id, ext)
            records[number] = rec.model_copy(update={"objects": StoredObjects(media=key)})
        else:
            key = flagged_key(rec.media_id, ext)
        store.put(key, blobs[name])
    index = open_index(settings)
    index.upsert_many(records)
    index.close()
    return Seed(root / "data", settings, ids, blobs)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


EXPORTED = {"orig", "dup", "variant", "lone_clip", "single", "reviewed_fake", "g", "h", *(f"k{i}" for i in range(8))}


# --- pure parts -------------------------------------------------------------------------------


def test_clusters_and_splits_are_deterministic_and_cluster_wide() -> None:
    links = [("d", "c"), ("c", "b"), ("e", None), ("f", "z"), ("g", "z"), ("a", None)]
    found = clusters(links)
    assert found["d"] == found["c"] == found["b"] == "b"
    assert found["f"] == found["g"] == found["z"] == "f"
    assert found["e"] == "e" and found["a"] == "a"
    # Order of the links does not matter.
    assert clusters(list(reversed(links))) == found

    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(3000)]
    chain = [(ids[i], ids[i - 1]) for i in range(1, 3000) if i % 3]  # clusters of three
    splits, cluster_of = assign_splits(ids, chain, (0.8, 0.1, 0.1))
    by_cluster = defaultdict(set)
    for media_id, split in splits.items():
        by_cluster[cluster_of[media_id]].add(split)
    assert len(by_cluster) == 1000 and all(len(s) == 1 for s in by_cluster.values())
    counts = {name: sum(1 for s in by_cluster.values() if name in s) for name in SPLIT_NAMES}
    assert 740 <= counts["train"] <= 860 and 60 <= counts["validation"] <= 140 and 60 <= counts["test"] <= 140
    assert assign_splits(ids, chain, (0.8, 0.1, 0.1)) == (splits, cluster_of)
    moved = sum(split_of(c) != split_of(c, seed="other") for c in by_cluster)
    assert moved > 100  # another seed draws another assignment
    assert {split_of(c, (0, 0, 1)) for c in by_cluster} == {"test"}
    assert check_ratios([80, 10, 10]) == (0.8, 0.1, 0.1)
    for bad in ([1, 1], [-1, 1, 1], [0, 0, 0]):
        with pytest.raises(ValueError):
            check_ratios(bad)


def test_routes_keep_the_users_filters_and_drop_ruled_out_routes() -> None:
    both = routes(SearchQuery(platform=["tiktok"]))
    assert [(q.verdict, q.review, q.platform) for q in both] == [(["fake"], [], ["tiktok"]), ([], ["fake"], ["tiktok"])]
    only_review = routes(SearchQuery(verdict=["uncertain"]))
    assert [(q.verdict, q.review) for q in only_review] == [(["uncertain"], ["fake"])]


# --- the hf format end to end -----------------------------------------------------------------


def test_hf_export_manifests_splits_resume_and_repair(seed: Seed, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    events: list[ExportProgress] = []
    request = ExportRequest(out=str(out), ratios=EVEN)
    summary = run_export(seed.settings, request, progress=events.append)

    ids = seed.ids
    assert summary.items == len(EXPORTED)
    assert summary.missing.count == 1 and summary.missing.ids == [ids["gone"]]
    assert [e.media_id for e in summary.errors] == [ids["bad"]] and "hash to" in summary.errors[0].error
    assert summary.copied == len(EXPORTED) and summary.kept == 0 and summary.replaced == 0
    assert summary.bytes == summary.copied_bytes == sum(len(seed.blobs[n]) for n in EXPORTED)
    assert sum(summary.splits.values()) == len(EXPORTED) and sum(1 for v in summary.splits.values() if v) >= 2
    assert summary.labels == {"fake": len(EXPORTED)}
    assert events[-1].done == events[-1].total == len(EXPORTED) + 1  # the bad one counts as done too

    # The three manifests agree, row for row.
    table = pq.read_table(out / "metadata.parquet").to_pylist()
    with open(out / "metadata.csv", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    jsonl_rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["media_id"] for r in table] == [r["media_id"] for r in csv_rows] == [r["media_id"] for r in jsonl_rows]
    assert table == jsonl_rows
    assert {r["media_id"] for r in table} == {ids[n] for n in EXPORTED}
    rows = {r["media_id"]: r for r in table}
    first = rows[ids["orig"]]
    assert first["sha256"] == ids["orig"] and first["kind"] == "video" and first["ext"] == "mp4"
    assert first["label"] == "fake" and first["verdict"] == "fake" and first["score"] == 0.91
    assert first["p_fake_mesonet4"] == pytest.approx(0.89) and first["p_fake_mesoinception4"] == 0.8
    assert EnsembleSettings.model_validate_json(first["ensemble"]) == SETTINGS_BEHIND
    assert rows[ids["single"]]["ensemble"] is None  # scored before records kept their settings
    assert first["source_urls"] == ["https://video.example/1"] and first["platform"] == "tiktok"
    assert first["first_seen"] == (T0 + HOUR).isoformat() and first["bytes"] == len(seed.blobs["orig"])
    reviewed = rows[ids["reviewed_fake"]]
    assert (reviewed["label"], reviewed["verdict"], reviewed["review_label"], reviewed["review_reviewer"]) == (
        "fake", "uncertain", "fake", "mod-ana")
    csv_first = next(r for r in csv_rows if r["media_id"] == ids["orig"])
    assert json.loads(csv_first["source_urls"]) == ["https://video.example/1"] and float(csv_first["score"]) == 0.91

    # Every file is where file_name says, and its bytes hash to its id.
    for row in table:
        path = out / row["file_name"]
        assert row["file_name"] == f"{row['kind']}s/{row['split']}/{row['media_id']}.{row['ext']}"
        assert sha(path) == row["media_id"]
    assert not list(out.rglob(f"*{ids['bad']}*")) and not list(out.rglob(f"*{ids['gone']}*"))
    assert not list(out.rglob(".*"))  # no temp files left behind

    # Clusters: orig, its duplicate and the duplicate's variant; g and h through x and y.
    assert rows[ids["orig"]]["cluster"] == rows[ids["dup"]]["cluster"] == rows[ids["variant"]]["cluster"]
    assert rows[ids["g"]]["cluster"] == rows[ids["h"]]["cluster"] == min(ids["g"], ids["h"], ids["x"], ids["y"])
    by_cluster = defaultdict(set)
    for row in table:
        by_cluster[row["cluster"]].add(row["split"])
    assert all(len(s) == 1 for s in by_cluster.values())
    assert len(by_cluster) == len(EXPORTED) - 3

    # Per-folder metadata for Hugging Face, file_name relative to the folder; the card's configs.
    for folder in {Path(r["file_name"]).parent for r in table}:
        local = pq.read_table(out / folder / "metadata.parquet").to_pylist()
        assert local and all((out / folder / r["file_name"]).is_file() and "/" not in r["file_name"] for r in local)
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and 'config_name: videos' in card and 'path: "videos/' in card
    assert f"- items: {len(EXPORTED)} " in card and "meso4-df-1" in card and "1 whose media is no longer" in card

    # Resume: delete half, damage one, keep the rest untouched.
    files = sorted(out / r["file_name"] for r in table)
    deleted, damaged, untouched = files[::2], files[1], files[3::2]
    for path in deleted:
        path.unlink()
    broken = bytearray(damaged.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    damaged.write_bytes(bytes(broken))
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in untouched}
    manifest_before = (out / "metadata.parquet").stat().st_mtime_ns

    again = run_export(seed.settings, request)
    assert (again.copied, again.replaced, again.kept) == (len(deleted) + 1, 1, len(files) - len(deleted) - 1)
    assert again.items == summary.items and again.splits == summary.splits
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in untouched} == before
    assert all(sha(p) == p.stem for p in files)
    assert (out / "metadata.parquet").stat().st_mtime_ns == manifest_before  # same bytes: not rewritten
    assert pq.read_table(out / "metadata.parquet").to_pylist() == table


def test_include_reviewed_real_and_filters(seed: Seed, tmp_path: Path) -> None:
    summary = run_export(seed.settings, ExportRequest(out=str(tmp_path / "a"), include_reviewed_real=True,
                                                      query=SearchQuery(kind=["image"])))
    rows = {r["media_id"]: r for r in pq.read_table(tmp_path / "a" / "metadata.parquet").to_pylist()}
    assert rows[seed.ids["reviewed_real"]]["label"] == "real"
    assert summary.labels == {"fake": len(rows) - 1, "real": 1}
    assert {r["kind"] for r in rows.values()} == {"image"} and seed.ids["orig"] not in rows
    assert summary.missing.count == 0  # the gone one is a video


# --- shards -------------------------------------------------------------------------------------


def test_webdataset_shards_open_with_tarfile_and_resume(seed: Seed, tmp_path: Path) -> None:
    out = tmp_path / "wds"
    request = ExportRequest(out=str(out), format="webdataset", shard_max_items=3, ratios=EVEN)
    summary = run_export(seed.settings, request)
    shards = sorted(out.rglob("*.tar"))
    assert summary.items == len(EXPORTED) and summary.copied == len(shards) >= len(EXPORTED) // 3
    seen = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            for name in names:
                data = tar.extractfile(name).read()  # type: ignore[union-attr]
                key, _, ext = name.partition(".")
                if ext == "json":
                    row = json.loads(data)
                    assert row["media_id"] == key and row["shard"] == str(shard.relative_to(out))
                    assert shard.parent.name == row["split"] and shard.parent.parent.name == f"{row['kind']}s"
                else:
                    assert hashlib.sha256(data).hexdigest() == key
                    seen[key] = ext
        # Pairs of adjacent members, media then json, one key each: webdataset's sample grouping.
        keys = [n.partition(".")[0] for n in names]
        assert len(names) <= 6 and keys[0::2] == keys[1::2] and all(n.endswith(".json") for n in names[1::2])
    assert set(seen) == {seed.ids[n] for n in EXPORTED}
    assert all(r["file_name"] == f"{r['media_id']}.{r['ext']}" for r in pq.read_table(out / "metadata.parquet").to_pylist())

    again = run_export(seed.settings, request)
    assert (again.copied, again.kept) == (0, len(EXPORTED))
    shards[0].unlink()
    inode = shards[1].stat().st_ino
    third = run_export(seed.settings, request)
    assert third.copied == 1 and shards[0].is_file() and shards[1].stat().st_ino == inode


def test_parquet_shards_hold_the_media(seed: Seed, tmp_path: Path) -> None:
    out = tmp_path / "pq"
    summary = run_export(seed.settings, ExportRequest(out=str(out), format="parquet", ratios=EVEN))
    rows = [r for f in sorted((out / "data").glob("*.parquet")) for r in pq.read_table(f).to_pylist()]
    assert len(rows) == summary.items == len(EXPORTED)
    for row in rows:
        assert hashlib.sha256(row["media"]["bytes"]).hexdigest() == row["media_id"]
        assert row["shard"].startswith(f"data/{row['split']}-")
    assert "path: \"data/train-*.parquet\"" in (out / "README.md").read_text()


# --- S3 -----------------------------------------------------------------------------------------


def test_export_to_s3(seed: Seed, s3_server, s3_bucket) -> None:  # type: ignore[no-untyped-def]
    client, bucket = s3_bucket
    settings = seed.settings.model_copy(update={
        "s3_endpoint": s3_server.url, "s3_access_key": load_settings(s3_access_key=s3_server.access_key).s3_access_key,
        "s3_secret_key": load_settings(s3_secret_key=s3_server.secret_key).s3_secret_key,
        "s3_region": s3_server.region})
    request = ExportRequest(out=f"s3://{bucket}/exports/run1", ratios=EVEN)
    summary = run_export(settings, request)
    assert summary.items == len(EXPORTED) and summary.out.endswith(f"/{bucket}/exports/run1")
    keys = {o.object_name for o in client.list_objects(bucket, prefix="exports/run1/", recursive=True)}
    assert {"exports/run1/metadata.parquet", "exports/run1/metadata.csv", "exports/run1/README.md"} <= keys
    table = pq.read_table(io.BytesIO(client.get_object(bucket, "exports/run1/metadata.parquet").read())).to_pylist()
    for row in table:
        data = client.get_object(bucket, f"exports/run1/{row['file_name']}").read()
        assert hashlib.sha256(data).hexdigest() == row["media_id"]
    again = run_export(settings, request)
    assert (again.copied, again.kept) == (0, len(EXPORTED))


# --- the command line ---------------------------------------------------------------------------


def test_cli_json_summary_and_bad_input(seed: Seed, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPWATCH_")}
    result = runner.invoke(app, ["export", "--out", str(out), "--data-dir", str(seed.data_dir), "--platform",
                                 "youtube", "--splits", "34,33,33", "--json"], env=env)
    document = json.loads(result.stdout)
    assert result.exit_code == 1, result.output  # the bad checksum is left out, and says so
    assert document["errors"][0]["media_id"] == seed.ids["bad"]
    table = pq.read_table(out / "metadata.parquet").to_pylist()
    assert document["items"] == len(table) > 0 and {r["platform"] for r in table} == {"youtube"}
    assert document["out"] == str(out.resolve()) and sum(document["splits"].values()) == document["items"]
    assert document["bytes"] == sum(r["bytes"] for r in table)
    assert set(document["splits"]) == set(SPLIT_NAMES)

    for argv, field in ((["--format", "zip"], "format"), (["--splits", "1,2"], "ratios"),
                        (["--verdict", "maybe"], "verdict"), (["--out", "ftp://x/y"], "out")):
        args = ["export", "--out", str(out), *argv, "--data-dir", str(seed.data_dir), "--json"]
        if argv[0] == "--out":
            args = ["export", *argv, "--data-dir", str(seed.data_dir), "--json"]
        result = runner.invoke(app, args, env=env)
        assert result.exit_code == 2, (argv, result.output)
        assert json.loads(result.stdout)["fields"][0].startswith(field.split(".")[0]), (argv, result.stdout)
