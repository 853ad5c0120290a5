"""Children stop completely, grandchildren included; crashed parts restart, then give up."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from deepwatch.embedded.processes import ManagedProcess, group_members, stop_all
from deepwatch.embedded.supervisor import Part, PartFailed, RestartPolicy, Supervisor

# A parent that ignores SIGTERM and has a grandchild that ignores it too: the worst case.
IGNORE_AND_SLEEP = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
STUBBORN = f"""
import signal, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {IGNORE_AND_SLEEP!r}])
{IGNORE_AND_SLEEP}
"""


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(tmp_path: Path) -> None:
    proc = ManagedProcess("stubborn", [sys.executable, "-c", STUBBORN], tmp_path / "s.log").start()
    deadline = time.monotonic() + 10
    while len(group_members(proc.pid or 0)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(group_members(proc.pid or 0)) == 2
    started = time.monotonic()
    stop_all([proc], grace_s=0.5)
    assert group_members(proc.pid or 0) == []
    assert time.monotonic() - started < 8


def test_sigterm_lets_a_well_behaved_child_exit_cleanly(tmp_path: Path) -> None:
    script = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\ntime.sleep(600)\n"
    proc = ManagedProcess("polite", [sys.executable, "-c", script], tmp_path / "p.log").start()
    time.sleep(0.3)
    proc.stop(grace_s=5)
    assert proc.exit_code() == 0


def crashing_part(tmp_path: Path, name: str, code: str) -> Part:
    def start() -> ManagedProcess:
        return ManagedProcess(name, [sys.executable, "-c", code], tmp_path / f"{name}.log").start()

    return Part(name, start, healthy=lambda: True)


def test_supervisor_restarts_a_crashed_part_and_reports_its_last_lines(tmp_path: Path) -> None:
    marker = tmp_path / "ran-once"
    # crashes on its first run, stays up on the second
    code = (
        "import pathlib, sys, time\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    m.touch(); print('boom: first run', flush=True); sys.exit(3)\n"
        "time.sleep(600)\n"
    )
    reports: list[str] = []
    sup = Supervisor([crashing_part(tmp_path, "flaky", code)], RestartPolicy(backoff_base_s=0.1), reports.append)
    sup.start_all()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            sup.check_crashes()
            proc = sup.parts[0].process
            restarted = marker.exists() and proc is not None and proc.alive() and sup.parts[0].restart_at is None
            if restarted and reports:
                break
            time.sleep(0.05)
        assert any("exited with code 3" in r and "boom: first run" in r for r in reports), reports
        assert any("restarting flaky" in r for r in reports)
        assert sup.parts[0].process is not None and sup.parts[0].process.alive()
    finally:
        sup.stop_all(2)


def test_supervisor_gives_up_on_a_part_that_keeps_crashing(tmp_path: Path) -> None:
    sup = Supervisor(
        [crashing_part(tmp_path, "broken", "import sys; print('bad config'); sys.exit(1)")],
        RestartPolicy(max_crashes=2, backoff_base_s=0.05, backoff_max_s=0.1),
        report=lambda _: None,
    )
    sup.start_all()
    stop = threading.Event()
    with pytest.raises(PartFailed, match="broken crashed 3 times"):
        sup.run(stop, interval_s=0.05)
    sup.stop_all(1)
