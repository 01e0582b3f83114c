"""Lint of the full topology, as ``fxrun lint topology=live`` composes it, against its 1 s budget.

    .venv/bin/python bench/bench_lint.py              # median of 7 in-process runs, 5 fxrun runs
    .venv/bin/python bench/bench_lint.py -r 21 -e 9
    .venv/bin/python bench/bench_lint.py -p demo      # another profile

Prints three figures, each as a median and as a ratio to the 1 s budget:
1. ``framework.lint.lint`` alone on the composed profile (every service, instrument and timeframe);
2. load + lint in one process, what ``fxrun lint`` does after start-up: the contracts, the node
   registry, the Hydra composition of the profile (``load_run``) and the lint;
3. ``fxrun lint --quiet topology=<profile>`` end to end in a subprocess (interpreter start-up and
   imports included), wall time.
and the findings of the composed profile (the live profile should have 0 errors).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.contracts import ContractRegistry  # noqa: E402
from framework.lint import lint  # noqa: E402
from framework.registry import Registry  # noqa: E402
from framework.topology.load import load_run  # noqa: E402

BUDGET_S = 1.0


def timed(fn: Callable[[], Any], runs: int) -> tuple[list[float], Any]:
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return times, result


def load_and_lint(overrides: list[str]) -> list[Any]:
    contracts = ContractRegistry.load(ROOT / "contracts")
    registry = Registry.discover()
    loaded = load_run(overrides, ROOT)
    return lint(loaded.topology, loaded.source, registry, contracts, pairs=loaded.config.pairs)


def fxrun_lint(overrides: list[str]) -> None:
    fxrun = Path(sys.executable).with_name("fxrun")
    command = [str(fxrun)] if fxrun.exists() else [sys.executable, "-m", "framework.cli"]
    done = subprocess.run([*command, "lint", "--quiet", *overrides], cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise SystemExit(f"fxrun lint failed (exit {done.returncode}): {done.stderr.strip()}")


def report(label: str, times: list[float]) -> None:
    median = statistics.median(times)
    verdict = "ok" if median <= BUDGET_S else "OVER BUDGET"
    print(f"{label:<38} median {median:7.4f} s of {len(times):>2} (first {times[0]:.4f}, min {min(times):.4f}, max {max(times):.4f})"
          f"   ratio to budget {median / BUDGET_S:.3f} ({verdict})")  # fmt: skip


def main(runs: int, e2e_runs: int, profile: str) -> None:
    overrides = [f"topology={profile}"]
    registry = Registry.discover()
    contracts = ContractRegistry.load(ROOT / "contracts")
    loaded = load_run(overrides, ROOT)
    topology, pairs = loaded.topology, loaded.config.pairs

    lint_times, findings = timed(lambda: lint(topology, loaded.source, registry, contracts, pairs=pairs), runs)
    load_times, _ = timed(lambda: load_and_lint(overrides), runs)
    e2e_times, _ = timed(lambda: fxrun_lint(overrides), e2e_runs)

    errors = sum(f.level == "error" for f in findings)
    warnings = sum(f.level == "warning" for f in findings)
    enabled = sum(service.enabled for service in topology.services.values())
    print(
        f"topology={profile}: {len(topology.services)} services ({enabled} enabled), {len(topology.instruments)} instruments, "
        f"{len(topology.timeframes)} timeframes"
    )
    print(f"findings: {len(findings)} ({errors} error(s), {warnings} warning(s))")
    print(f"budget {BUDGET_S:g} s")
    report("1. lint() alone", lint_times)
    report("2. load + lint, in-process", load_times)
    report(f"3. fxrun lint --quiet topology={profile}", e2e_times)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--runs", type=int, default=7, help="in-process timed runs of 1 and 2 (default 7)")
    parser.add_argument("-e", "--e2e-runs", type=int, default=5, help="fxrun subprocess runs of 3 (default 5)")
    parser.add_argument("-p", "--profile", default="live", help="topology profile (default live)")
    args = parser.parse_args()
    main(args.runs, args.e2e_runs, args.profile)
