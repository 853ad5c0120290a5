"""`deepwatch bench stream --quick` keeps working: the JSON of ../shared/BENCHMARKS.md, measured on a real
worker process whose every result was a URL hit and whose index counted every event once (the bench
itself raises otherwise)."""

from __future__ import annotations

import pytest

from bench.stream import run


@pytest.mark.slow
def test_quick_bench_document() -> None:
    document = run(quick=True)

    assert document["benchmark"] == "stream" and set(document["machine"]) == {"cpus", "python", "gpu"}
    reposts, distinct = document["results"]
    assert reposts["params"]["reposts_per_known_url"] == 10 and distinct["params"]["reposts_per_known_url"] == 1
    for entry in (reposts, distinct):
        check_entry(entry)


def check_entry(entry: dict) -> None:  # type: ignore[type-arg]
    assert entry["unit"] == "events/s" and entry["better"] == "higher" and entry["target"] == 10_000
    assert entry["value"] > 0 and entry["peer"]["value"] > 0 and "aiokafka" in entry["peer"]["name"]
    assert entry["ratio"] == round(entry["value"] / entry["peer"]["value"], 4)
    assert entry["meets_target"] is (entry["value"] >= 10_000)
    params = entry["params"]
    assert params["repeats"] >= 2 and len(params["runs_ours"]) == len(params["runs_peer"]) == params["repeats"]
    assert all(x > 0 for x in params["runs_ours"] + params["runs_peer"])
    assert params["verified_sightings_in_index"] == params["known_urls"] + params["events_per_run"] * params["repeats"]
