"""The demo end to end, as a newcomer sees it: ``fxrun topology=demo`` in a subprocess, its
dashboard kept serving the finished run until Ctrl-C (``serve_after=true``: a terminal's default).

The whole pipeline has to happen: 14 instruments of quotes become bars and features, a model is
trained and promoted, inference signals with it, the risk gate approves some signals, execution
sends orders the paper broker fills, performance-monitoring records the account. The console
shows the progress (simulated time against the feed's end), the dashboard's URL, and a summary
(trades, P&L, Sharpe, maximum drawdown, then messages and dead letters per service); the data
stays in the embedded store. The single long test of the suite (about a minute or two).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import orjson

from framework.testing import query

ROOT = Path(__file__).resolve().parents[1]


def fxrun() -> list[str]:
    script = Path(sys.executable).parent / "fxrun"
    return [str(script)] if script.exists() else [sys.executable, "-m", "framework.cli"]


def rows(data_dir: Path, sql: str) -> list[dict[str, Any]]:
    return asyncio.run(query(data_dir, sql))


def count(data_dir: Path, sql: str) -> int:
    return int(rows(data_dir, sql)[0]["n"])


def serve_then_interrupt(cmd: list[str], log: Path) -> tuple[int, str, str, str]:
    """Run ``cmd`` until it says its dashboard keeps serving the finished run; read the page; Ctrl-C it.
    Returns the exit code, stdout, stderr and the page's HTML."""
    with log.open("w") as errors:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0"}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=errors, text=True)  # fmt: skip
        assert proc.stdout is not None
        lines, page = [], ""
        try:
            for line in proc.stdout:
                lines.append(line)
                serving = re.search(r"^>>> dashboard-service keeps serving the finished run on (\S+) until Ctrl-C$", line)
                if serving:
                    with urllib.request.urlopen(serving[1], timeout=10) as response:
                        page = response.read().decode()
                    proc.send_signal(signal.SIGINT)
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    return code, "".join(lines), log.read_text(), page


def test_the_demo_runs_the_whole_pipeline_and_ends_with_a_summary(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"
    code, out, err, page = serve_then_interrupt(
        [*fxrun(), "topology=demo", "serve_after=true", f"data_dir={data_dir}", "progress=2s",
         "topology.services.dashboard-service.params.port=0"],  # any free port: 8050 may be taken on a CI machine
        tmp_path / "stderr.log",
    )  # fmt: skip
    assert code == 0, err[-4000:]
    assert "Traceback" not in out + err, err[-4000:]
    assert "<title>fxflow dashboard</title>" in page  # the finished run stayed on view until Ctrl-C

    # the dashboard's URL, prominent on stdout
    assert re.search(r"^>>> dashboard-service: open http://127\.0\.0\.1:\d+/ in a browser$", out, re.M), out

    # progress while it ran (not a terminal: log lines): simulated time against the end of the feed
    progress = re.findall(r"progress: .*", err)
    assert any(re.search(r"sim 2026-11-02 \d\d:\d\d / 02:00 UTC \(\d+%\) · [\d,]+ msgs", line) for line in progress), progress
    assert any("trades" in line and "equity" in line for line in progress), progress

    # the summary: the run, the performance, then messages and dead letters per service
    summary = re.search(r"^run ended after .*: ([\d,]+) messages published, 0 dead letter\(s\)$", out, re.M)
    assert summary, out
    perf = re.search(
        r"^  performance-monitoring +trades (\d+) · P&L ([-+][\d,.]+) USD \(([-+][\d.]+)%\) · Sharpe (\S+).* · max drawdown ([\d.]+)%",
        out, re.M,
    )  # fmt: skip
    assert perf, out
    trades, pnl, drawdown = int(perf[1]), float(perf[2].replace(",", "")), float(perf[5])
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:3] == ["service", "state", "in"])
    end = next(i for i, line in enumerate(lines) if line.startswith("dead letters: "))
    table = {line.split()[0]: line.split() for line in lines[header + 2 : end]}
    assert lines[end] == f"dead letters: 0; data under {data_dir}/"

    # every service ran, and none dead-lettered anything
    services = orjson.loads((data_dir / "metrics.json").read_bytes())["services"]
    assert set(table) == {s["service"] for s in services}
    assert {"polygon-live-collector", "tick-aggregator", "feature-engineering-service", "supervised-training-service",
            "finrl-training-service", "inference-service", "risk-management", "execution-service", "mt5-connector",
            "performance-monitoring", "dashboard-service", "notification-hub"} <= set(table)  # fmt: skip
    assert all(s["dead_lettered"] == 0 and s["state"] == "stopped" for s in services), services
    assert all(row[5] == "0" for row in table.values()), table
    assert int(summary[1].replace(",", "")) == sum(s["out"] for s in services)

    # the pipeline, stage by stage, in the embedded store
    pairs = {r["symbol"] for r in rows(data_dir, "SELECT DISTINCT symbol FROM live_ticks")}
    assert len(pairs) == 14
    assert count(data_dir, "SELECT count() AS n FROM live_aggregates FINAL WHERE source = 'aggregator' AND timeframe = '1m'") > 1000
    assert count(data_dir, "SELECT count() AS n FROM ml_features FINAL WHERE timeframe = '1m'") > 500
    promoted = rows(data_dir, "SELECT name, version FROM model_promotions WHERE decision = 'promoted'")
    assert {"name": "signal-1m", "version": 1} in promoted, promoted
    assert count(data_dir, "SELECT count() AS n FROM training_runs WHERE kind = 'rl'") > 0  # the tiny RL run
    signals = {r["model_id"]: int(r["n"]) for r in rows(data_dir, "SELECT model_id, count() AS n FROM trading_signals FINAL GROUP BY model_id")}
    assert signals.get("signal-1m-v1", 0) > 0, signals  # inference served the model promoted during the run
    assert any(m.startswith("sma-cross-1m") for m in signals), signals
    # backtesting-engine backtested the promoted model over the demo's bars (a child run): completed, its results here
    assert [r["status"] for r in rows(data_dir, "SELECT status FROM backtest_runs WHERE status IN ('completed', 'failed')")] == ["completed"]
    backtest = rows(data_dir, "SELECT details FROM backtest_results WHERE metric = 'trades'")
    assert len(backtest) == 1 and orjson.loads(backtest[0]["details"])["models"].get("signal-1m-v1", 0) > 0, backtest
    assert count(data_dir, "SELECT count() AS n FROM risk_decisions FINAL WHERE decision = 'approved'") > 0
    assert count(data_dir, "SELECT count() AS n FROM orders FINAL WHERE status = 'filled'") > 0
    assert count(data_dir, "SELECT count() AS n FROM executions FINAL") > 0
    assert count(data_dir, "SELECT count() AS n FROM portfolio_value FINAL") > 100  # a point a minute for two hours
    assert count(data_dir, "SELECT count() AS n FROM performance_metrics FINAL") > 0

    # the summary says what the tables say
    assert trades == count(data_dir, "SELECT count() AS n FROM trade_analysis FINAL") > 0
    final = rows(data_dir, "SELECT equity FROM portfolio_value FINAL ORDER BY ts DESC LIMIT 1")[0]["equity"]
    assert abs(pnl - (final - 100_000)) < 0.01
    worst = rows(data_dir, "SELECT max(drawdown) AS d FROM portfolio_value FINAL")[0]["d"]
    assert abs(drawdown - 100 * worst) < 0.01
