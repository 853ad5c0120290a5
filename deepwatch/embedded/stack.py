"""``deepwatch up``: the whole system on one machine, with no external service.

Parts: the Tansu broker (unless ``DEEPWATCH_KAFKA_BOOTSTRAP`` names a Kafka), the Serve app with
the API, the Faust worker and the crawler. Each runs as a child process started from this same
CLI, configured through ``DEEPWATCH_*`` variables, and supervised until SIGTERM/SIGINT.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import httpx

from deepwatch.embedded.broker import ensure_topics, start_broker
from deepwatch.embedded.processes import ManagedProcess, free_port, port_open
from deepwatch.embedded.supervisor import Part, PartFailed, Supervisor
from deepwatch.endpoints import Endpoints, write_endpoints
from deepwatch.settings import Settings

STOP_GRACE_S = 15.0


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM the child if ``up`` itself is killed, so no part is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def api_keys(settings: Settings) -> tuple[str, Path | None]:
    """``DEEPWATCH_API_KEYS`` for the parts: every configured entry (names and scopes included), or one
    key generated once and kept (0600) in the data directory."""
    if settings.api_keys:
        return ",".join(k.get_secret_value() for k in settings.api_keys), None
    path = settings.data_dir / "api-key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip(), path


class Stack:
    def __init__(
        self,
        settings: Settings,
        config: str | None,
        report: Callable[[str], None],
        progress: Callable[[str], AbstractContextManager[object]] = lambda _: nullcontext(),
    ) -> None:
        self.settings = settings
        self.config = config
        self.report = report
        self.progress = progress
        self.data_dir = settings.data_dir.resolve()
        self.logs = self.data_dir / "logs"
        self.stop = threading.Event()

    def _child(self, name: str, command: list[str], env: dict[str, str]) -> Callable[[], ManagedProcess]:
        argv = [sys.executable, "-m", "deepwatch", *command]

        def start() -> ManagedProcess:
            return ManagedProcess(name, argv, self.logs / f"{name}.log", env=env, preexec=_die_with_parent).start()

        return start

    def plan(self) -> tuple[list[Part], Endpoints]:
        s = self.settings
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The launcher composes the apps, so it (like the CLI) imports them late; the core stays free of them.
        from storage.index import open_index
        from storage.objects import open_object_store

        # Create the index and the store now: a bad backend setting fails here, before any child starts.
        open_index(s).close()
        store_location = open_object_store(s).location
        keys, key_file = api_keys(s)
        parts: list[Part] = []

        if s.kafka_bootstrap:
            bootstrap = s.kafka_bootstrap
            ensure_topics(bootstrap, s.kafka_partitions, s.kafka_replication)
        else:
            broker_port = free_port()
            bootstrap = f"127.0.0.1:{broker_port}"

            def start_embedded_broker() -> ManagedProcess:
                proc = start_broker(broker_port, self.logs / "broker.log")
                # memory storage: a (re)started broker has no topics until we create them
                ensure_topics(bootstrap, s.kafka_partitions, s.kafka_replication)
                return proc

            parts.append(Part("broker", start_embedded_broker, lambda: port_open("127.0.0.1", broker_port)))

        worker_port, crawler_port = free_port(), free_port()
        worker_health = f"http://127.0.0.1:{worker_port}/healthz"
        crawler_health = f"http://127.0.0.1:{crawler_port}/healthz"
        env = dict(os.environ)
        env.update(
            {
                "DEEPWATCH_DATA_DIR": str(self.data_dir),
                "DEEPWATCH_KAFKA_BOOTSTRAP": bootstrap,
                "DEEPWATCH_API_KEYS": keys,
                "DEEPWATCH_API_HOST": s.api_host,
                "DEEPWATCH_API_PORT": str(s.api_port),
                "DEEPWATCH_WORKER_WEB_PORT": str(worker_port),
                "DEEPWATCH_CRAWLER_PORT": str(crawler_port),
                "DEEPWATCH_HEALTH_WORKER_URL": worker_health,
                "DEEPWATCH_HEALTH_CRAWLER_URL": crawler_health,
                "DEEPWATCH_SERVE_URL": s.serve_url or s.api_url,
                "RAY_USAGE_STATS_ENABLED": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.config:
            env["DEEPWATCH_CONFIG"] = str(Path(self.config).resolve())

        parts += [
            Part("serve", self._child("serve", ["serve"], env), lambda: _http_ok(f"{s.api_url}/livez")),
            Part("worker", self._child("worker", ["worker"], env), lambda: _http_ok(worker_health)),
            Part("crawler", self._child("crawler", ["crawl"], env), lambda: _http_ok(crawler_health)),
        ]
        endpoints = Endpoints(
            api_url=s.api_url,
            api_key_file=str(key_file) if key_file else None,
            kafka_bootstrap=bootstrap,
            index={"backend": s.index_backend, "location": str(s.index_path.resolve())
                   if s.index_backend == "sqlite" else str(s.es_url)},
            store={"backend": s.store_backend, "location": store_location},
            health={"api": f"{s.api_url}/healthz", "worker": worker_health, "crawler": crawler_health},
            pid=os.getpid(),
        )
        return parts, endpoints

    def _api_healthy(self, url: str, deadline: float) -> bool:
        """The API's /healthz (every part, as the API sees them) answers 200 before the deadline.

        Asked again until then: its first answer can be slow (it opens the index and the store) or see
        a part that became healthy a moment ago.
        """
        while not self.stop.is_set():
            try:
                if httpx.get(url, timeout=10.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            if time.monotonic() >= deadline:
                return False
            self.stop.wait(1.0)
        return False

    def run(self, ready_timeout_s: float) -> int:
        """Start, wait until healthy, supervise until a signal; return the exit code."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop.set())
        if port_open("127.0.0.1", self.settings.api_port):
            self.report(f"port {self.settings.api_port} is already in use; choose another with --api-port")
            return 1
        parts, endpoints = self.plan()
        supervisor = Supervisor(parts, report=self.report)
        started = time.monotonic()
        try:
            with self.progress(f"starting {', '.join(p.name for p in parts)} …"):
                supervisor.start_all()
                pending = supervisor.wait_healthy(ready_timeout_s, self.stop)
            if self.stop.is_set():
                return 0
            if pending or not self._api_healthy(endpoints.health["api"], started + ready_timeout_s):
                for part in supervisor.parts:
                    if part.name in pending and part.process:
                        lines = "\n    ".join(part.process.last_lines(15))
                        self.report(f"{part.name} is not healthy after {ready_timeout_s:.0f} s:\n    {lines}")
                if not pending:
                    try:
                        body = httpx.get(endpoints.health["api"], timeout=5).text
                    except httpx.HTTPError as exc:
                        body = repr(exc)
                    self.report(f"{endpoints.health['api']} does not answer 200: {body}")
                return 1
            write_endpoints(self.settings.endpoints_file, endpoints)
            self.report(
                f"deepwatch is up in {time.monotonic() - started:.1f} s\n"
                f"  API      {endpoints.api_url}  (key in {endpoints.api_key_file or 'DEEPWATCH_API_KEYS'})\n"
                f"  Kafka    {endpoints.kafka_bootstrap}\n"
                f"  index    {endpoints.index['location']}\n"
                f"  store    {endpoints.store['location']}\n"
                f"  logs     {self.logs}\n"
                f"  endpoints written to {self.settings.endpoints_file}; Ctrl-C stops everything"
            )
            supervisor.run(self.stop)
            return 0
        except PartFailed as exc:
            self.report(str(exc))
            return 1
        finally:
            began = time.monotonic()
            self.settings.endpoints_file.unlink(missing_ok=True)
            supervisor.stop_all(STOP_GRACE_S)
            self.report(f"stopped in {time.monotonic() - began:.1f} s")
