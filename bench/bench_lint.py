"""Time ``framework.lint.lint`` on the full ``topology/services.yaml`` against its 1 s budget.

    .venv/bin/python bench/bench_lint.py          # median of 7 runs
    .venv/bin/python bench/bench_lint.py -r 21

Loading (YAML, registry, contracts) is timed separately: the budget is for the lint itself.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from framework.contracts import ContractRegistry  # noqa: E402
from framework.lint import lint  # noqa: E402
from framework.registry import Registry  # noqa: E402
from framework.topology.load import load_topology_file  # noqa: E402

BUDGET_S = 1.0


def main(runs: int) -> None:
    start = time.perf_counter()
    topology, source = load_topology_file(ROOT / "topology" / "services.yaml")
    registry = Registry.discover()
    contracts = ContractRegistry.load(ROOT / "contracts")
    loading = time.perf_counter() - start

    times = []
    findings = []
    for _ in range(runs):
        start = time.perf_counter()
        findings = lint(topology, source, registry, contracts)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    errors = sum(f.level == "error" for f in findings)
    print(
        f"topology/services.yaml: {len(topology.services)} services, {len(topology.instruments)} instruments, "
        f"{len(topology.timeframes)} timeframes; {len(findings)} finding(s), {errors} error(s)"
    )
    print(f"loading (yaml + registry + contracts): {loading:.3f} s (not in the budget)")
    print(f"lint: median {median:.4f} s of {runs} runs (min {min(times):.4f}, max {max(times):.4f})")
    print(f"ratio to the {BUDGET_S:g} s budget: {median / BUDGET_S:.3f} ({'ok' if median <= BUDGET_S else 'OVER BUDGET'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", "--runs", type=int, default=7, help="number of timed runs (default 7)")
    main(parser.parse_args().runs)
