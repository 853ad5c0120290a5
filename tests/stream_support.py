"""What the stream worker's tests share: media bytes, the scoring API over real HTTP, a real ``deepwatch
worker`` process, and a reader of the results and dead-letter topics."""

from __future__ import annotations

import io
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
from kafka import KafkaConsumer
from PIL import Image

from deepwatch.contracts import TOPIC_DLQ, TOPIC_RESULTS, DeadLetter, ScoredMedia, UrlDiscovered, UrlFailure, parse
from deepwatch.embedded.processes import ManagedProcess, free_port, wait_until
from deepwatch.settings import load_settings
from storage.keys import failure_key


def jpeg(array: np.ndarray, quality: int = 95, scale: float = 1.0) -> bytes:
    image = Image.fromarray(array)
    if scale != 1.0:
        image = image.resize((int(image.width * scale), int(image.height * scale)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def blotches(seed: int) -> np.ndarray:
    """A smooth picture of its own (low-resolution noise, upscaled): no near-duplicate of any other seed's."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
    return np.asarray(small.resize((320, 240), Image.Resampling.BILINEAR))


@contextmanager
def scoring_api(data_dir: Path, models_dir: Path, key: str) -> Iterator[str]:
    """The real API under uvicorn in a thread (scoring in process with the real detectors); yields its URL."""
    import uvicorn

    from serve.api import build_api

    settings = load_settings(data_dir=data_dir, api_keys=key, models_dir=models_dir)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_api(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_until(lambda: _up(url), 30)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/livez", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def scored_total(api: str) -> float:
    """Items the API has scored (``deepwatch_media_scored_total``, all labels)."""
    text = httpx.get(api + "/metrics", timeout=5).text
    return sum(float(v) for v in re.findall(r"^deepwatch_media_scored_total\{[^}]*\} (\S+)$", text, re.M))


def failure_count(data_dir: Path, canonical_url: str) -> int:
    path = data_dir / "objects" / failure_key(canonical_url)
    return parse(UrlFailure, path.read_bytes()).sighting.count if path.is_file() else 0


def worker(bootstrap: str, data_dir: Path, api: str, key: str, name: str = "worker", **extra: str) -> ManagedProcess:
    """A ``deepwatch worker`` process (not started) on its own web port, logging to ``data_dir/<name>.log``."""
    env = dict(os.environ)
    env.update({"DEEPWATCH_KAFKA_BOOTSTRAP": bootstrap, "DEEPWATCH_DATA_DIR": str(data_dir),
                "DEEPWATCH_WORKER_WEB_PORT": str(free_port()), "DEEPWATCH_FETCH_ALLOW_NETWORKS": "127.0.0.0/8",
                "DEEPWATCH_SERVE_URL": api, "DEEPWATCH_API_KEYS": key, "DEEPWATCH_WORKER_RETRY_BASE_S": "0.1",
                "DEEPWATCH_WORKER_RETRY_MAX_S": "0.5"})
    env.update({f"DEEPWATCH_{k.upper()}": v for k, v in extra.items()})
    return ManagedProcess(name, [sys.executable, "-m", "deepwatch", "worker"], data_dir / f"{name}.log", env=env)


def log_lines(proc: ManagedProcess) -> list[str]:
    """The worker's log without Faust's banner (a table drawn with | and +)."""
    return [line for line in proc.last_lines(80) if not line.startswith(("|", "+"))]


class Outcomes:
    """Reads ``deepwatch.results`` and ``deepwatch.dlq`` and keeps, per trace id, what became of each event
    (a redelivered event is published again: the last message wins, ``published`` counts them all)."""

    def __init__(self, bootstrap: str) -> None:
        self.results: dict[str, ScoredMedia] = {}
        self.letters: dict[str, DeadLetter] = {}
        self.published = 0
        self.consumer = KafkaConsumer(TOPIC_RESULTS, TOPIC_DLQ, bootstrap_servers=bootstrap,
                                      auto_offset_reset="earliest")

    def poll(self) -> None:
        batches = self.consumer.poll(timeout_ms=200)
        for message in (m for messages in batches.values() for m in messages):
            self.published += 1
            if message.topic == TOPIC_RESULTS:
                r = parse(ScoredMedia, message.value)
                self.results[r.trace_id] = r
            else:
                d = parse(DeadLetter, message.value)
                trace = parse(UrlDiscovered, d.payload).trace_id if d.stage != "validate" else ""
                self.letters[trace] = d

    def done(self) -> set[str]:
        return set(self.results) | set(self.letters)

    def wait(self, events: Iterable[UrlDiscovered], deadline_s: float, *workers: ManagedProcess,
             at_least: int | None = None) -> None:
        """Until every event has an outcome (or ``at_least`` of them do); fails naming what is missing."""
        traces = {e.trace_id for e in events}
        want = len(traces) if at_least is None else at_least
        end = time.monotonic() + deadline_s
        while time.monotonic() < end and len(traces & self.done()) < want:
            for w in workers:
                assert w.alive(), log_lines(w)
            self.poll()
        got = len(traces & self.done())
        assert got >= want, (f"{got} of {want} events have an outcome", [log_lines(w) for w in workers])

    def close(self) -> None:
        self.consumer.close()
