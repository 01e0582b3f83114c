"""The chaos run of bench/chaos.py at a small size: real servers, real processes, SIGKILLs while ticks flow.

Kills data-bridge, polygon-live-collector and nats-server at random moments (a fixed seed) and
checks, with independent clients, that tick_archive, live_ticks and historical_ticks hold the
same ticks, none twice, and that every bar equals the batch aggregation of its ticks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_nothing_acknowledged_is_lost_when_services_and_nats_are_killed(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "bench/chaos.py", "--seconds", "75", "--kills", "6", "--seed", "2", "--keep", str(tmp_path / "run")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    report = result.stdout + result.stderr[-3000:]
    assert result.returncode == 0, report
    assert "verdict: nothing lost, nothing twice, every bar right" in result.stdout, report
    kills = [line for line in result.stdout.splitlines() if " kill " in line]
    assert len(kills) == 6 and {line.split(" kill ")[1].split()[0] for line in kills} == {
        "nats-server", "data-bridge", "polygon-live-collector"
    }, report
