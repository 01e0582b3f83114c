"""SIGTERM/SIGINT stop a running fxrun gracefully: sources stop, batches flush, counters are written."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework.testing import query

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_the_demo_gracefully(tmp_path, sig):
    cmd = [
        sys.executable, "-m", "framework.cli", "topology=demo", f"data_dir={tmp_path}",
        "topology.services.synthetic-ticks.enabled=true", "topology.services.synthetic-ticks.params.duration=null",
        "pairs=[EURUSD,XAUUSD]", "only=[synthetic-ticks,tick-aggregator,data-bridge,spread-watch]",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    log = tmp_path / "logs" / "fxrun.log"
    while time.time() < deadline and not (log.exists() and "synthetic-ticks started" in log.read_text()):
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "spread-watch" in out
    snapshot = json.loads((tmp_path / "metrics.json").read_text())
    states = {s["service"]: s for s in snapshot["services"]}
    assert states["synthetic-ticks"]["state"] == "stopped"
    produced = states["synthetic-ticks"]["out"]
    assert produced > 0
    assert states["spread-watch"]["in"] == produced
    segments = list((tmp_path / "log" / "topics" / "tick_archive").rglob("*.jsonl"))
    records = sum(len(p.read_text().splitlines()) for p in segments)
    assert records == produced
    bars = sum(len(p.read_text().splitlines()) for p in (tmp_path / "log" / "topics" / "aggregate_archive").rglob("*.jsonl"))
    assert bars == states["tick-aggregator"]["out"]
    # every table batch was flushed before the process exited
    assert _count(tmp_path, "live_ticks") == produced
    assert _count(tmp_path, "live_aggregates") == states["tick-aggregator"]["out"]


def _count(data_dir: Path, table: str) -> int:
    [row] = asyncio.run(query(data_dir, f"SELECT count() AS n FROM {table}"))
    return int(row["n"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_commits_what_a_group_handled_and_the_next_process_takes_the_rest(tmp_path, sig):
    """A slow consumer has a backlog when the signal comes: after the stop, a new process
    gets exactly what was not handled (no record lost, none handled twice)."""
    data = tmp_path / "data"
    first = subprocess.Popen(
        [sys.executable, "-m", "tests.shutdown_runner", "first", str(data)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert first.stdout is not None and first.stdout.readline().strip() == "READY"
    time.sleep(1.5)
    first.send_signal(sig)
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    one = json.loads((data / "seen-first.json").read_text())
    produced = one["metrics"]["source"]["out"]
    assert one["metrics"]["archiver"]["in"] == len(one["seen"]) < produced  # a backlog was left

    second = subprocess.run(
        [sys.executable, "-m", "tests.shutdown_runner", "second", str(data)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert second.returncode == 0, second.stderr
    two = json.loads((data / "seen-second.json").read_text())
    seen = one["seen"] + two["seen"]
    assert sorted(seen) == list(range(1, produced + 1))  # none lost, none twice
    assert not (data / "deadletter" / "archiver.jsonl").exists()
