"""Commands find a running `up` through <data-dir>/endpoints.json, and ignore a dead one's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepwatch.cli import app
from deepwatch.endpoints import Endpoints, read_endpoints, with_running_stack, write_endpoints
from deepwatch.settings import load_settings


def endpoints(pid: int, key_file: Path | None = None) -> Endpoints:
    return Endpoints(
        api_url="http://127.0.0.1:9999",
        api_key_file=str(key_file) if key_file else None,
        kafka_bootstrap="127.0.0.1:19092",
        index={"backend": "sqlite", "location": "/x/index.sqlite3"},
        store={"backend": "local", "location": "/x/objects"},
        pid=pid,
    )


def test_settings_are_filled_from_a_running_stack(tmp_path: Path) -> None:
    key_file = tmp_path / "api-key"
    key_file.write_text("the-key\n")
    settings = load_settings(data_dir=tmp_path)
    write_endpoints(settings.endpoints_file, endpoints(os.getpid(), key_file))
    found = with_running_stack(settings)
    assert found.kafka_bootstrap == "127.0.0.1:19092"
    assert found.serve_url == "http://127.0.0.1:9999"
    assert [k.get_secret_value() for k in found.api_keys] == ["the-key"]
    # explicit settings win over the file
    explicit = with_running_stack(load_settings(data_dir=tmp_path, kafka_bootstrap="kafka:9092"))
    assert explicit.kafka_bootstrap == "kafka:9092"


def test_a_dead_stack_is_ignored(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    settings = load_settings(data_dir=tmp_path)
    write_endpoints(settings.endpoints_file, endpoints(int(dead.stdout)))
    assert read_endpoints(settings.endpoints_file) is None
    assert with_running_stack(settings).kafka_bootstrap is None


def test_a_garbled_file_is_no_stack(tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text("{half a fi")
    assert read_endpoints(tmp_path / "endpoints.json") is None


@pytest.mark.parametrize(
    ("sources_yaml", "named"),
    [
        ("sources:\n  - name: news\n    kind: telepathy\n    interval_s: 60\n", ["sources.0.kind", "telepathy"]),
        ("sources:\n  - name: news\n    interval_s: -5\n", ["sources.0.kind", "sources.0.interval_s"]),
        ("sources: [unclosed\n", ["<file>"]),
    ],
)
def test_crawl_refuses_a_bad_sources_file(tmp_path: Path, sources_yaml: str, named: list[str]) -> None:
    sources = tmp_path / "sources.yaml"
    sources.write_text(sources_yaml)
    result = CliRunner().invoke(app, ["crawl", "--sources", str(sources), "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert all(word in result.output for word in named), result.output
