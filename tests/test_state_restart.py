"""A node's snapshot survives a real process restart: saved at SIGTERM, saved periodically for SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _counts(data: Path) -> list[int]:
    path = data / "counts.txt"
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().splitlines() if line.strip()]


def _start(data: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "tests.state_runner", str(data)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _run_until(data: Path, more_than: int, timeout: float = 60.0) -> subprocess.Popen:
    proc = _start(data)
    deadline = time.monotonic() + timeout
    while len(_counts(data)) <= more_than:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the counter did not get going"
        time.sleep(0.05)
    return proc


def test_a_snapshot_carries_a_nodes_state_across_sigterm_and_sigkill(tmp_path: Path) -> None:
    state = tmp_path / "services" / "counter" / "state.json"
    proc = _run_until(tmp_path, 100)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    first = _counts(tmp_path)
    saved = json.loads(state.read_text())
    assert saved["node"] == "counter" and saved["version"] == 1
    assert saved["state"]["count"] == first[-1]  # the stop saved the state after the last message handled

    proc = _run_until(tmp_path, len(first) + 200)
    time.sleep(0.5)
    proc.kill()  # no stop, no final snapshot: only the periodic ones
    proc.wait(30)
    second = _counts(tmp_path)[len(first) :]
    assert second[0] == first[-1] + 1  # it went on counting where the first process stopped
    periodic = json.loads(state.read_text())["state"]["count"]  # whole: replaced atomically, never torn
    assert first[-1] < periodic <= second[-1]

    proc = _run_until(tmp_path, len(first) + len(second) + 10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    third = _counts(tmp_path)[len(first) + len(second) :]
    assert third[0] == periodic + 1  # the last periodic snapshot was the state it came back with
