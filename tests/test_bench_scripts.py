"""The bench scripts run by hand, so nothing else would notice one breaking: run each cheap one at a
tiny size and check it prints its ratio lines. Figures are only parsed, never compared with a
speed threshold.

bench_nats.py and bench_kafka.py start a nats-server and a tansu broker, and the PostgreSQL part
of bench_stores.py a PostgreSQL server; those stay import-only here (bench_stores runs with
--skip-postgres), as does bench_demo.py (two whole demo runs; test_demo_e2e runs the demo).
"""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
NUMBER = r"(-?\d[\d,]*(?:\.\d+)?)"


class Figure(NamedTuple):
    """``count`` output lines match ``pattern``, whose one group is a positive number (any sign
    when ``signed``: a difference of two timings, which noise may flip at a tiny size)."""

    pattern: str
    count: int = 1
    signed: bool = False


RUNS: dict[str, tuple[list[str], list[Figure]]] = {
    "bench_bus.py": (
        ["-n", "2000", "-r", "3"],
        [
            Figure(rf"ratio bus/bare\s+{NUMBER}\s+\(target >= 0\.5"),
            Figure(rf"ratio codec/no codec {NUMBER}"),
            Figure(rf"strict validation adds\s+{NUMBER} us/msg", signed=True),
            Figure(rf"strict adds\s+{NUMBER} us/msg", signed=True),
            Figure(rf"ratio strict/off rate {NUMBER}"),
            Figure(rf"BoundaryValidator\('strict'\)\.check\s+{NUMBER} us/msg"),
        ],
    ),
    "bench_lint.py": (
        ["-r", "1", "-e", "1"],
        [
            Figure(rf"1\. lint\(\) alone .*ratio to budget {NUMBER}"),
            Figure(rf"2\. load \+ lint, in-process .*ratio to budget {NUMBER}"),
            Figure(rf"3\. fxrun lint --quiet topology=live .*ratio to budget {NUMBER}"),
        ],
    ),
    "bench_aggregation.py": (
        ["-n", "20000", "-s", "5000"],
        [Figure(rf"StreamingAggregator .*ratio {NUMBER}"), Figure(rf"aggregate_frame .*speed-up {NUMBER}x")],
    ),
    "bench_chunks.py": (
        ["-n", "500", "-r", "1"],
        [
            Figure(rf"(?:tick|features)\.v1 .*row-wise is_valid\s+{NUMBER} rows/s", 2),
            Figure(rf"ChunkValidator\.check\s+[\d,]+ rows/s\s+ratio {NUMBER}x", 2),
            Figure(rf"from_rows \+ check\s+\S+ rows/s\s+ratio {NUMBER}x", 2),
            Figure(rf"^1 row: from_rows {NUMBER} us"),
        ],
    ),
    "bench_bi5.py": (
        ["--hours", "1", "--publish-hours", "1", "--mean-interval-ms", "2000"],
        [Figure(rf"ratio numpy/struct\s+{NUMBER}x"), Figure(rf"^\s+ratio\s+{NUMBER}x$"), Figure(rf"validation=\w+\s+{NUMBER} ticks/s", 2)],
    ),
    "bench_bridge.py": (["-n", "2000"], [Figure(rf"data-bridge .*ratio {NUMBER}")]),
    "bench_external_data.py": (
        ["-n", "2000"],
        [Figure(rf"(?:FRED|calendar) rows: .*ratio {NUMBER}", 2), Figure(rf"FRED over HTTP .*:\s+{NUMBER} obs/s", 2)],
    ),
    "bench_polygon_historical.py": (
        ["--days", "2", "--hours", "2", "--rows", "2000"],
        [Figure(rf"find_gaps .*ratio {NUMBER}x"), Figure(rf"PolygonClient .*ratio {NUMBER}x"), Figure(rf"problem_of\+to_bar .*ratio {NUMBER}x")],
    ),
    "bench_polygon_live.py": (
        ["-m", "1"],
        [Figure(rf"ratio parse/bare {NUMBER}"), Figure(rf"ratio client/bare {NUMBER}"), Figure(rf"ratio polygon/synthetic {NUMBER}")],
    ),
    "bench_runtime.py": (
        ["-n", "2000", "-r", "1", "--rows", "20000", "--chunk", "1000"],
        [Figure(rf"per hop\s+ratio bare/runtime {NUMBER}"), Figure(rf"per firing\s+ratio bare/runtime {NUMBER}"), Figure(rf"{NUMBER} rows/s through the chain")],
    ),
    "bench_replay.py": (["-n", "500", "-r", "1"], [Figure(rf"speed-up {NUMBER}x")]),
    "bench_features.py": (
        ["-n", "20000", "-r", "1", "--hours", "0.25"],
        [Figure(rf"batch TA-Lib subset .* ratio {NUMBER}x"), Figure(rf"batch full set .* ratio to TA-Lib alone {NUMBER}x"),
         Figure(rf"streaming 14 pairs x 7 timeframes: .* p99 {NUMBER} ms")],
    ),
    "bench_training.py": (
        ["-n", "300", "-s", "2", "-f", "4", "-t", "5", "-k", "2", "-r", "1"],
        [Figure(rf"training set\s+{NUMBER} us/row", 3), Figure(rf"ratio run/fit\s+{NUMBER}", 3)],
    ),
    "bench_execution.py": (
        ["-n", "100", "--skip-nats"],
        [Figure(rf"in-process ratio p50 order/bare\s+{NUMBER}"), Figure(rf"in-process ratio p99 order/bare\s+{NUMBER}"),
         Figure(rf"persisted ratio p99 order/bare\s+{NUMBER}"), Figure(rf"approved signal → orders\.submitted\s+p50\s+{NUMBER} us", 2)],
    ),
    "bench_backtest.py": (
        ["-n", "1500"],
        [Figure(rf"^backtesting\.py\s+[\d.]+ s\s+{NUMBER} bars/s"), Figure(rf"^live nodes \(replay\)\s+[\d.]+ s\s+{NUMBER} bars/s"),
         Figure(rf"ratio live/backtesting\.py {NUMBER}"), Figure(rf"trades identical: yes \({NUMBER} fills"),
         Figure(rf"cycle collector during the run\s+[\d.]+ s in {NUMBER} collections")],
    ),
    "bench_dashboard.py": (
        ["-n", "200", "-c", "2"],
        [Figure(rf"ratio events/s per page 2 pages/1 page\s+{NUMBER}"), Figure(rf"ratio lag p99 2 pages/1 page\s+{NUMBER}")],
    ),
    "bench_risk_gate.py": (["-n", "100"], [Figure(rf"ratio p50 gate/bare\s+{NUMBER}"), Figure(rf"ratio p99 gate/bare\s+{NUMBER}")]),
    "bench_inference.py": (
        ["-n", "200", "--features", "20", "--rounds", "3", "--train-rows", "200", "--chunk", "100"],
        [
            Figure(rf"bare model\.predict, 1 row\s+p50\s+{NUMBER} us", 2),
            Figure(rf"features -> signal\s+p50 .*ratio node/bare {NUMBER}", 4),
            Figure(rf"{NUMBER} msg/s", 4),
            Figure(rf"a chunk \(batch path\)\s+{NUMBER} rows/s", 4),
        ],
    ),
    "bench_stores.py": (
        ["-n", "2000", "--batch", "500", "--single", "20", "--skip-postgres"],
        [Figure(rf"\(\s*{NUMBER}x baseline\)", 2)],
    ),
}
IMPORT_ONLY = {"bench_nats.py", "bench_kafka.py", "bench_demo.py"}  # bench_demo: two whole demo runs (test_demo_e2e runs one)


def test_every_script_is_run_or_listed_as_import_only() -> None:
    scripts = {p.name for p in BENCH.glob("bench_*.py")}
    assert scripts == set(RUNS) | IMPORT_ONLY


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("bench_*.py")))
def test_bench_script_imports(script: str) -> None:
    spec = importlib.util.spec_from_file_location(f"bench_{script[:-3]}", BENCH / script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{script} has no main()"


def figures(output: str, pattern: str) -> list[float]:
    return [float(m.group(1).replace(",", "")) for m in re.finditer(pattern, output, re.MULTILINE)]


@pytest.fixture(scope="module")
def run_bench(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], str]:
    """Runs a script once at its tiny size (cwd and TMPDIR in a temporary directory); its stdout."""
    outputs: dict[str, str] = {}

    def run(script: str) -> str:
        if script not in outputs:
            tmp = tmp_path_factory.mktemp(script[:-3])
            env = {**os.environ, "TMPDIR": str(tmp)}
            command = [sys.executable, str(BENCH / script), *RUNS[script][0]]
            done = subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, f"{script} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
            assert "Traceback" not in done.stderr, done.stderr
            outputs[script] = done.stdout
        return outputs[script]

    return run


@pytest.mark.parametrize("script", sorted(RUNS))
def test_bench_script_runs_and_prints_its_ratios(script: str, run_bench: Callable[[str], str]) -> None:
    output = run_bench(script)
    for figure in RUNS[script][1]:
        values = figures(output, figure.pattern)
        assert len(values) == figure.count, f"{script}: expected {figure.count} line(s) matching {figure.pattern!r} in:\n{output}"
        assert all(math.isfinite(v) for v in values), (figure.pattern, values, output)
        if not figure.signed:
            assert all(v > 0 for v in values), (figure.pattern, values, output)


def test_bench_lint_reports_the_composed_live_profile_clean(run_bench: Callable[[str], str]) -> None:
    output = run_bench("bench_lint.py")
    assert re.search(r"^topology=live: \d+ services", output, re.MULTILINE), output
    match = re.search(r"^findings: (\d+) \((\d+) error\(s\), (\d+) warning\(s\)\)$", output, re.MULTILINE)
    assert match, output
    assert int(match.group(2)) == 0, output
