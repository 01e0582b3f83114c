"""Ctrl-C in the middle of a Dukascopy download: every published tick is accounted for.

A real ``fxrun`` process (demo profile, the downloader alone, the simulated datafeed) downloads
faster than the embedded ClickHouse writes, so the table writer's buffer fills and publishing
waits for room. SIGINT then stops it mid-hour: the chunk being handed over still gets in, and the
downloader's last line says how many ticks of finished hours and of the cut-short hour went out.
Those add up to the service's ``out``, which is what the table holds.
"""

from __future__ import annotations

import asyncio
import calendar
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from framework.testing import query

ROOT = Path(__file__).resolve().parents[1]
SVC = "dukascopy-historical-downloader"


def _number(text: str) -> int:
    return int(text.replace(",", ""))


def _writer_waited(metrics: Path) -> bool:
    try:
        snapshot = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return False
    return any(t["waits"] > 0 for s in snapshot["services"] for t in s.get("tables", []))


def test_sigint_mid_download_accounts_for_every_published_tick(tmp_path: Path) -> None:
    cmd = [
        sys.executable, "-m", "framework.cli", "topology=demo", f"data_dir={tmp_path}", f"only=[{SVC}]",
        f"topology.services.{SVC}.params.start=2026-06-01T00:00Z", "topology.runtime.metrics_interval=1s",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and proc.poll() is None and not _writer_waited(tmp_path / "metrics.json"):
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        assert _writer_waited(tmp_path / "metrics.json"), "the table writer never filled up"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "Traceback" not in err

    [stopped] = [line for line in err.splitlines() if f"fxflow.{SVC}: stopped after " in line]
    finished = _number(re.search(r"([\d,]+) ticks of finished hours published", stopped).group(1))  # type: ignore[union-attr]
    cut = re.search(r"(\w+) (\S+) was cut short: ([\d,]+) of its ([\d,]+) ticks published", stopped)
    cut_published = _number(cut.group(3)) if cut else 0

    snapshot = json.loads((tmp_path / "metrics.json").read_text())
    [service] = [s for s in snapshot["services"] if s["service"] == SVC]
    [table] = service["tables"]
    assert (table["pending"], table["spilled"], table["rejected"], service["dead_lettered"]) == (0, 0, 0, 0)
    assert service["out"] == finished + cut_published == table["written"]
    [row] = asyncio.run(query(tmp_path, "SELECT count() AS n FROM historical_ticks"))
    assert int(row["n"]) == table["written"]
    if cut:
        lines = (tmp_path / "services" / SVC / "progress-simulated.jsonl").read_text().splitlines()
        done = {(p["symbol"], p["hour"]) for p in map(json.loads, lines)}
        hour_ms = calendar.timegm(time.strptime(cut.group(2), "%Y-%m-%dT%H:%MZ")) * 1000
        assert (cut.group(1), hour_ms) not in done  # fetched again next time
