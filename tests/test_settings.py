"""One Settings object: environment over YAML over defaults, strict, secrets masked."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepwatch.contracts import ContractError
from deepwatch.settings import MASK, load_settings


def test_defaults_are_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DEEPWATCH_CONFIG", raising=False)
    settings = load_settings()
    assert settings.index_backend == "sqlite" and settings.store_backend == "local"
    assert settings.kafka_bootstrap is None
    assert settings.fetch_allow_networks == []  # the SSRF guard is closed by default
    assert settings.index_path == settings.data_dir / "index.sqlite3"


def test_environment_wins_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "deepwatch.yaml"
    config.write_text("api_port: 9000\nkafka_partitions: 8\nfetch_allow_networks: ['10.0.0.0/8']\n")
    monkeypatch.setenv("DEEPWATCH_API_PORT", "9100")
    settings = load_settings(config)
    assert settings.api_port == 9100
    assert settings.kafka_partitions == 8
    assert settings.fetch_allow_networks == [ipaddress.ip_network("10.0.0.0/8")]


def test_comma_separated_lists_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEEPWATCH_FETCH_ALLOW_NETWORKS", "127.0.0.0/8, ::1/128")
    monkeypatch.setenv("DEEPWATCH_API_KEYS", "k1,k2")
    settings = load_settings()
    assert [str(n) for n in settings.fetch_allow_networks] == ["127.0.0.0/8", "::1/128"]
    assert [k.get_secret_value() for k in settings.api_keys] == ["k1", "k2"]


@pytest.mark.parametrize(
    ("yaml_text", "field"),
    [
        ("bogus_setting: 1\n", "bogus_setting"),
        ("api_port: 70000\n", "api_port"),
        ("fetch_allow_networks: ['10.0.0.1/8']\n", "fetch_allow_networks"),
        ("index_backend: mongodb\n", "index_backend"),
        # YAML's .nan and .inf: a parameter that makes every ensemble score NaN, a weight that makes it fail
        ("ensemble_platt: {meso4_df: [.nan, 0]}\n", "ensemble_platt.meso4_df.0"),
        ("ensemble_weights: {meso4_df: .inf}\n", "ensemble_weights.meso4_df"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, yaml_text: str, field: str) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ContractError) as info:
        load_settings(config)
    assert any(f.startswith(field) for f in info.value.fields), info.value


def test_backend_choice_needs_its_location() -> None:
    with pytest.raises(ContractError, match="needs es_url"):
        load_settings(index_backend="elasticsearch")
    with pytest.raises(ContractError, match="needs s3_endpoint"):
        load_settings(store_backend="s3")


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="no such file"):
        load_settings(tmp_path / "nope.yaml")


def test_config_show_json_masks_every_secret(tmp_path: Path) -> None:
    """Through the real CLI: one JSON document on stdout, no secret in it."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "s3_endpoint: minio:9000\ns3_access_key: AKIDSECRET1\ns3_secret_key: SECRETKEY2\n"
        "store_backend: s3\nindex_backend: elasticsearch\nes_url: https://elastic:PASSWORD3@es:9200\n"
        "es_api_key: APIKEY4\n"
    )
    env = {"DEEPWATCH_API_KEYS": "KEY5,KEY6", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "deepwatch", "config", "show", "--json", "--config", str(config)],
        capture_output=True, text=True, env=env, timeout=60, check=True,
    )
    shown = json.loads(result.stdout)  # exactly one document: json.loads fails on trailing data
    for secret in ("AKIDSECRET1", "SECRETKEY2", "PASSWORD3", "APIKEY4", "KEY5", "KEY6"):
        assert secret not in result.stdout
    assert shown["s3_secret_key"] == MASK
    assert shown["api_keys"] == [MASK, MASK]
    assert shown["es_url"] == f"https://elastic:{MASK}@es:9200"
    assert shown["s3_endpoint"] == "minio:9000"  # not a secret: shown as is
