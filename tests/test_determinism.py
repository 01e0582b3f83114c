"""Same input, same output: the demo pipeline twice, under two hash seeds, writes the same bytes.

Several sources (the simulated Polygon WebSocket feed, the REST and Dukascopy downloaders with
parallel downloads, the FRED and calendar poller), timers (the aggregator's clock, the bridge's
flushes, spread-watch's stats), work in threads (the embedded ClickHouse, .bi5 decoding): every
message on every subject in the same order with the same ids, and every table with the same rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = [
    "pairs=[EURUSD,XAUUSD,USDJPY]",
    "topology.services.polygon-live-collector.params.simulation.duration=40m",
    "topology.services.dukascopy-historical-downloader.params.start=2026-11-01T20:00Z",
    "topology.services.polygon-historical-downloader.params.lookback=1d",
]


def run(tmp_path: Path, name: str, seed: str) -> bytes:
    out = tmp_path / f"{name}.out"
    env = dict(os.environ, PYTHONHASHSEED=seed)
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "determinism_runner.py"), str(out), str(tmp_path / name), *OVERRIDES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return out.read_bytes()


def test_the_demo_gives_byte_identical_output_across_runs_and_hash_seeds(tmp_path: Path) -> None:
    first = run(tmp_path, "a", "0")
    second = run(tmp_path, "b", "12345")
    lines = first.splitlines()
    assert len(lines) > 20_000 and any(line.startswith(b"[\"ticks.EURUSD\"") for line in lines)
    if first != second:
        other = second.splitlines()
        diff = next(i for i, (x, y) in enumerate(zip(lines, other)) if x != y) if len(lines) == len(other) else None
        detail = f"first difference at line {diff}: {lines[diff][:300]!r} vs {other[diff][:300]!r}" if diff is not None else f"{len(lines)} vs {len(other)} lines"
        raise AssertionError(detail)
