"""`deepwatch search`, `similar` and `bench index` on a real index in a temporary data directory."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.contracts import Fingerprints, MediaRecord
from deepwatch.settings import load_settings
from storage.index import open_index
from tests.index_support import T0, hex_of, record, sighting

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """Five records: three fakes (two of them near-duplicates of each other), one real, one unscored."""
    index = open_index(load_settings(data_dir=tmp_path))
    now = datetime.now(UTC)
    base = int("0f" * 8, 16)
    index.upsert_many(
        [
            record(1, score=0.95, verdict="fake", videohash=hex_of(base, 64), first=now - timedelta(hours=2),
                   sightings=[sighting("https://youtube.example/1", platform="youtube", title="Leaked CEO speech",
                                       first=now - timedelta(hours=2))]),
            record(2, score=0.9, verdict="fake", videohash=hex_of(base ^ 0b1011, 64), first=T0,
                   sightings=[sighting("https://tiktok.example/2", platform="tiktok", title="CEO speech reupload")]),
            record(3, score=0.8, verdict="fake", videohash=hex_of(~base & (2**64 - 1), 64), first=T0,
                   sightings=[sighting("https://youtube.example/3", platform="youtube", title="cat video")]),
            record(4, score=0.1, verdict="real", first=T0,
                   sightings=[sighting("https://youtube.example/4", platform="youtube", title="CEO interview")]),
            record(5, first=T0, sightings=[sighting("https://x.example/5", platform="x")]),
        ]
    )
    index.close()
    return tmp_path


def run_json(*argv: str) -> tuple[int, dict]:
    result = runner.invoke(app, [*argv, "--json"])
    return result.exit_code, json.loads(result.stdout)


def ids(document: dict) -> list[str]:
    return [item["media_id"] for item in document["items"]]


def mid(n: int) -> str:
    return record(n).media_id


def test_search_filters_sorts_and_pages(data_dir: Path) -> None:
    code, doc = run_json("search", "--data-dir", str(data_dir))
    assert code == 0 and doc["total"] == 5 and doc["next"] is None
    assert ids(doc) == [mid(1), mid(2), mid(3), mid(4), mid(5)]  # highest score first, unscored last

    code, doc = run_json("search", "ceo speech", "--verdict", "fake", "--data-dir", str(data_dir))
    assert (code, ids(doc)) == (0, [mid(1), mid(2)])
    code, doc = run_json("search", "CEO", "--platform", "youtube", "--min-score", "0.05", "--max-score", "0.5",
                         "--data-dir", str(data_dir))
    assert ids(doc) == [mid(4)]
    code, doc = run_json("search", "--since", "1d", "--data-dir", str(data_dir))
    assert ids(doc) == [mid(1)]
    code, doc = run_json("search", "--verdict", "unscored", "--data-dir", str(data_dir))
    assert ids(doc) == [mid(5)]

    code, first = run_json("search", "--limit", "2", "--sort", "score_asc", "--data-dir", str(data_dir))
    assert first["total"] == 5 and first["next"]
    code, second = run_json("search", "--limit", "2", "--sort", "score_asc", "--cursor", first["next"],
                            "--data-dir", str(data_dir))
    assert ids(first) + ids(second) == [mid(5), mid(4), mid(3), mid(2)]
    # The items are whole MediaRecords.
    assert second["items"][0]["sightings"][0]["hints"]["title"] == "cat video"


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["--verdict", "maybe"], "verdict"),
        (["--min-score", "2"], "min_score"),
        (["--limit", "0"], "limit"),
        (["--detector", "mesonet=0.9"], "detector"),
        (["--sort", "random"], "sort"),
        (["--cursor", "not-a-cursor"], "cursor"),
    ],
)
def test_search_bad_input_exits_2_naming_the_field(data_dir: Path, argv: list[str], field: str) -> None:
    code, doc = run_json("search", *argv, "--data-dir", str(data_dir))
    assert code == 2 and doc["fields"] == [field], doc
    assert argv[0] in doc["error"], doc  # the option as typed, not the query's own name for it


def test_search_bad_time_exits_2(data_dir: Path) -> None:
    code, doc = run_json("search", "--since", "last tuesday", "--data-dir", str(data_dir))
    assert code == 2 and "not a time" in doc["error"]


def test_similar_by_media_id_and_by_file(data_dir: Path, tmp_path: Path) -> None:
    code, doc = run_json("similar", mid(1), "--data-dir", str(data_dir))
    assert code == 0
    assert [(i["media_id"], i["kind"], i["distance"]) for i in doc["items"]] == [(mid(2), "videohash", 3)]
    assert doc["items"][0]["record"]["verdict"] == "fake"
    code, doc = run_json("similar", mid(1), "--radius", "videohash=2", "--data-dir", str(data_dir))
    assert doc["items"] == []

    # A file is found by the sha256 of its bytes.
    clip = tmp_path / "clip.bin"
    clip.write_bytes(b"some bytes")
    sha = hashlib.sha256(b"some bytes").hexdigest()
    index = open_index(load_settings(data_dir=data_dir))
    index.upsert(MediaRecord(media_id=sha, kind="video", first_seen=T0, last_seen=T0,
                             fingerprints=Fingerprints(sha256=sha, videohash=hex_of(int("0f" * 8, 16) ^ 1, 64))))
    index.close()
    code, doc = run_json("similar", str(clip), "--data-dir", str(data_dir))
    assert code == 0 and {i["media_id"] for i in doc["items"]} == {mid(1), mid(2)}

    # A file never recorded is fingerprinted (tests/test_cli_similar.py); these bytes are no media format.
    unknown = tmp_path / "other.bin"
    unknown.write_bytes(b"never recorded")
    code, doc = run_json("similar", str(unknown), "--data-dir", str(data_dir))
    assert code == 1 and doc["kind"] == "Unsupported"
    code, doc = run_json("similar", "f" * 64, "--data-dir", str(data_dir))
    assert code == 1 and "no record" in doc["error"]
    code, doc = run_json("similar", "nonsense", "--data-dir", str(data_dir))
    assert code == 2


def test_bench_index_quick_prints_the_benchmark_document() -> None:
    code, doc = run_json("bench", "index", "--quick")
    assert code == 0, doc
    assert doc["benchmark"] == "index" and doc["machine"]["cpus"]
    names = [r["name"] for r in doc["results"]]
    assert names[0] == "bulk upsert rate" and any("near-duplicate" in n for n in names)
    for r in doc["results"]:
        assert r["value"] > 0 and r["peer"]["value"] > 0 and r["better"] in ("lower", "higher")
        assert r["ratio"] == pytest.approx(r["value"] / r["peer"]["value"], rel=1e-3)
    code, doc = run_json("bench", "nosuch")
    assert code == 2
