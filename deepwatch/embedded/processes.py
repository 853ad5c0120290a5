"""Child processes that can always be stopped completely.

Each child starts in a session of its own, so it leads a process group that also holds whatever it
spawns (Ray's raylet and workers, for instance). Stopping sends SIGTERM to the leader, waits, then
SIGKILLs the whole group: no grandchild outlives the stack.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (the caller must still cope with a race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> list[str]:
    """The last lines of a log file, for crash reports."""
    try:
        with path.open("r", errors="replace") as handle:
            return [line.rstrip("\n") for line in deque(handle, maxlen=lines)]
    except FileNotFoundError:
        return []


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    state: str
    ppid: int
    pgrp: int


def process_table() -> list[ProcInfo]:
    """Every process Linux shows in /proc, with its state, parent and process group."""
    table = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        # Fields after the ")" that closes the command name: state, ppid, pgrp, ...
        state, ppid, pgrp = stat[stat.rfind(")") + 2 :].split()[:3]
        table.append(ProcInfo(int(entry.name), state, int(ppid), int(pgrp)))
    return table


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group.

    Read from /proc rather than probed with ``killpg(pgid, 0)``, which also counts zombies that a
    container's PID 1 may never reap.
    """
    if not Path("/proc").is_dir():  # not Linux: fall back to the signal probe
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    return [p.pid for p in process_table() if p.pgrp == pgid and p.state != "Z"]


def _group_alive(pgid: int) -> bool:
    return bool(group_members(pgid))


@dataclass
class ManagedProcess:
    """One child process and its process group, logging to a file."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    preexec: Callable[[], None] | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(self.env) if self.env is not None else None,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=self.preexec,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def exit_code(self) -> int | None:
        return self.popen.poll() if self.popen else None

    def last_lines(self, lines: int = 20) -> list[str]:
        return tail(self.log_path, lines)

    def terminate(self) -> None:
        """Ask the leader to stop (non-blocking).

        Only the leader: it shuts down what it started in order (Ray's driver stops its raylet and
        workers); signalling the whole group at once would kill those under its feet and leave its
        own shutdown waiting on dead peers. Stragglers get SIGKILL with the group later.
        """
        if self.popen is None:
            return
        try:
            os.kill(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.popen is None:
            return
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def group_alive(self) -> bool:
        return self.popen is not None and _group_alive(self.popen.pid)

    def reap(self) -> None:
        if self.popen is not None:
            try:
                self.popen.wait(timeout=0)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, grace_s: float = 10.0) -> None:
        stop_all([self], grace_s)


def stop_all(processes: Sequence[ManagedProcess], grace_s: float = 10.0) -> None:
    """SIGTERM every leader at once, wait up to ``grace_s``, SIGKILL the groups, and reap."""
    running = [p for p in processes if p.popen is not None]
    for proc in running:
        proc.terminate()
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        for proc in running:
            proc.reap()
        if not any(p.group_alive() for p in running):
            break
        time.sleep(0.1)
    for proc in running:
        if proc.group_alive():
            proc.kill()
    for proc in running:
        if proc.popen is not None:
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
    # SIGKILL is asynchronous: wait until the kernel has removed every member of each group.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(p.group_alive() for p in running):
        time.sleep(0.05)


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
