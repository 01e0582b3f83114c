"""SIGTERM/SIGINT stop a running fxrun gracefully: sources stop, batches flush, counters are written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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
