"""The CLI's shape: every command of the design exists."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from deepwatch.cli import app

runner = CliRunner()

def test_every_command_of_the_design_is_there() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("up", "crawl", "worker", "serve", "submit", "score", "match", "search", "similar",
                    "export", "detectors", "models", "bench", "config"):
        assert command in result.stdout


def test_bad_settings_exit_2_with_the_field(tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "c.yaml"
    config.write_text("api_port: not-a-port\n")
    result = runner.invoke(app, ["config", "show", "--json", "--config", str(config)])
    assert result.exit_code == 2
    assert json.loads(result.stdout)["fields"] == ["api_port"]


def test_worker_without_kafka_says_how_to_get_one(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("DEEPWATCH_KAFKA_BOOTSTRAP", raising=False)
    result = runner.invoke(app, ["worker", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "DEEPWATCH_KAFKA_BOOTSTRAP" in result.output
