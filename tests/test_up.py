"""`deepwatch up` end to end: healthy, restarts a crashed part, and stops leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from deepwatch.embedded.processes import free_port, process_table, wait_until

pytestmark = pytest.mark.slow


def descendants(root: int) -> set[int]:
    """Every process below ``root``, and every member of their process groups."""
    table = process_table()
    found: set[int] = set()
    todo = [root]
    while todo:
        parent = todo.pop()
        for proc in table:
            if proc.ppid == parent and proc.pid not in found:
                found.add(proc.pid)
                todo.append(proc.pid)
    groups = {p.pid for p in table if p.pid in found}
    return found | {p.pid for p in table if p.pgrp in groups}


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    return any(p.pid == pid and p.state != "Z" for p in process_table())


def health(url: str) -> dict:
    try:
        response = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return {}
    return response.json() if response.status_code == 200 else {}


def test_up_runs_heals_and_stops_cleanly(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEEPWATCH_")}
    stderr_path = tmp_path / "up.stderr"
    with stderr_path.open("w") as stderr:
        up = subprocess.Popen(
            [sys.executable, "-m", "deepwatch", "up", "--data-dir", str(data_dir), "--api-port", str(port)],
            stdout=subprocess.DEVNULL, stderr=stderr, env=env, start_new_session=True,
        )
    endpoints_file = data_dir / "endpoints.json"
    try:
        # a local Ray with the API, faces and four detector deployments: about a minute on 2 busy cores
        assert wait_until(lambda: endpoints_file.exists() or up.poll() is not None, 180), "not up within 180 s"
        assert up.poll() is None, stderr_path.read_text()[-3000:]
        endpoints = json.loads(endpoints_file.read_text())
        assert endpoints["api_url"] == f"http://127.0.0.1:{port}"

        response = httpx.get(f"{endpoints['api_url']}/healthz", timeout=10)
        assert response.status_code == 200, response.text
        assert set(response.json()["parts"]) == {"api", "kafka", "index", "store", "worker", "crawler"}
        key = (data_dir / "api-key").read_text().strip()
        assert oct((data_dir / "api-key").stat().st_mode & 0o777) == "0o600"
        assert httpx.get(f"{endpoints['api_url']}/v1/version", headers={"X-API-Key": key}).status_code == 200

        # A crashed worker is restarted and reported.
        old_pid = health(endpoints["health"]["worker"])["pid"]
        os.kill(old_pid, signal.SIGKILL)
        assert wait_until(lambda: health(endpoints["health"]["worker"]).get("pid") not in (None, old_pid), 60)
        log = stderr_path.read_text()
        assert "part worker exited with code -9" in log and "restarting worker" in log

        everything = descendants(up.pid)
        assert len(everything) >= 5  # broker, serve (+ Ray's processes), worker, crawler
        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=20) == 0
        assert not endpoints_file.exists()
        assert wait_until(lambda: not [pid for pid in everything if alive(pid)], 5), [
            (pid, Path(f"/proc/{pid}/cmdline").read_bytes()[:80]) for pid in everything if alive(pid)
        ]
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
