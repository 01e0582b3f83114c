"""Causation: every message carries its id and its cause; ``fxrun trace ID`` walks the chain in the stores."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from framework.testing import load, make_runtime, query

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120.0


async def test_a_bar_traces_back_to_the_tick_that_closed_it_and_forward_to_its_archive(tmp_path: Path) -> None:
    overrides = (
        "pairs=[EURUSD]", "only=[polygon-live-collector,tick-aggregator,data-bridge]",
        "topology.services.polygon-live-collector.params.simulation.duration=10m",
        "++topology.services.tick-aggregator.params.close_every=1h",  # bars closed by the next tick, not the clock
    )  # fmt: skip
    rt = make_runtime(load(tmp_path, *overrides), tmp_path)
    await asyncio.wait_for(rt.run(), TIMEOUT)
    bars = await query(tmp_path, "SELECT msg_id, cause_id, ts FROM live_aggregates WHERE timeframe = '1m' ORDER BY ts LIMIT 3")
    assert bars and all(b["msg_id"].startswith("tick-aggregator-sim-") for b in bars)
    caused = [b for b in bars if b["cause_id"]]
    assert len(caused) == len(bars), bars
    tick = (await query(tmp_path, f"SELECT msg_id, ts FROM live_ticks WHERE msg_id = '{caused[0]['cause_id']}'"))[0]
    assert tick["msg_id"].startswith("polygon-live-collector-sim-") and tick["ts"] >= caused[0]["ts"] + 60_000
    archived = await query(tmp_path, f"SELECT cause_id FROM historical_ticks WHERE cause_id = '{tick['msg_id']}'")
    assert archived == [{"cause_id": tick["msg_id"]}]  # data-bridge's copy names the tick it archived

    result = subprocess.run(
        [sys.executable, "-m", "framework.cli", "trace", caused[0]["msg_id"], "topology=demo", f"data_dir={tmp_path}", *overrides[:1]],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith(tick["msg_id"]) and "[live_ticks]" in lines[0]
    assert lines[1].lstrip(" └─").startswith(caused[0]["msg_id"]) and "[live_aggregates]" in lines[1]


def test_tracing_an_unknown_id_is_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "framework.cli", "trace", "nobody-1", f"data_dir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "no traced table holds a message 'nobody-1'" in result.stderr
