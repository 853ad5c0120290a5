"""Keeps the parts of the embedded stack running.

A part is a child process plus a health probe. A part whose process dies is restarted with
exponential backoff and reported with its last log lines; a part that dies too often within a window
is given up on, and then the supervisor fails (``deepwatch up`` exits non-zero).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from deepwatch.embedded.processes import ManagedProcess, stop_all

log = logging.getLogger(__name__)


@dataclass
class Part:
    name: str
    start: Callable[[], ManagedProcess]
    healthy: Callable[[], bool]
    process: ManagedProcess | None = None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None


@dataclass
class RestartPolicy:
    max_crashes: int = 5
    window_s: float = 300.0
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0

    def delay(self, crashes_in_window: int) -> float:
        return min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, crashes_in_window - 1))


class PartFailed(RuntimeError):
    pass


class Supervisor:
    def __init__(
        self,
        parts: list[Part],
        policy: RestartPolicy | None = None,
        report: Callable[[str], None] = print,
    ) -> None:
        self.parts = parts
        self.policy = policy or RestartPolicy()
        self.report = report

    def start_all(self) -> None:
        for part in self.parts:
            part.process = part.start()

    def unhealthy(self) -> list[str]:
        return [p.name for p in self.parts if not (p.process and p.process.alive() and p.healthy())]

    def wait_healthy(self, timeout_s: float, stop: threading.Event) -> list[str]:
        """Wait until every part is healthy; return the parts that are not (empty on success)."""
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            self.check_crashes()
            pending = self.unhealthy()
            if not pending or time.monotonic() >= deadline:
                return pending
            stop.wait(0.25)
        return self.unhealthy()

    def check_crashes(self) -> None:
        """Restart dead parts when their backoff has passed; raise PartFailed when one gives up."""
        now = time.monotonic()
        for part in self.parts:
            proc = part.process
            if proc is None or proc.alive():
                continue
            if part.restart_at is None:
                part.crashes.append(now)
                while part.crashes and now - part.crashes[0] > self.policy.window_s:
                    part.crashes.popleft()
                lines = "\n    ".join(proc.last_lines(15)) or "(no output)"
                self.report(f"part {part.name} exited with code {proc.exit_code()}; last log lines:\n    {lines}")
                if len(part.crashes) > self.policy.max_crashes:
                    raise PartFailed(
                        f"part {part.name} crashed {len(part.crashes)} times in {self.policy.window_s:.0f} s; "
                        f"giving up (log: {proc.log_path})"
                    )
                delay = self.policy.delay(len(part.crashes))
                part.restart_at = now + delay
                self.report(f"restarting {part.name} in {delay:.1f} s")
                # the group may still hold grandchildren of the dead process: clear them first
                stop_all([proc], grace_s=2.0)
            elif now >= part.restart_at:
                part.restart_at = None
                part.process = part.start()

    def run(self, stop: threading.Event, interval_s: float = 0.5) -> None:
        while not stop.wait(interval_s):
            self.check_crashes()

    def stop_all(self, grace_s: float) -> None:
        stop_all([p.process for p in self.parts if p.process is not None], grace_s=grace_s)
