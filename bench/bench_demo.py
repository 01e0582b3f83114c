"""The demo's wall time and peak memory: ``fxrun topology=demo serve_after=false`` as a newcomer runs it.

    .venv/bin/python bench/bench_demo.py            # the demo, then its data half alone (the baseline)
    .venv/bin/python bench/bench_demo.py --full-only

Each run is a child process in a fresh data directory. Peak memory is the largest sum of the
resident set sizes of the run's whole process tree (fxrun and the worker processes it starts
for training, the backtest's child), sampled every 100 ms from /proc, beside the largest single
process. Summing counts pages the processes share more than once: an upper bound. The baseline, in the same invocation, is the
demo's data half alone (``only=`` the sources, aggregation and the stores' writers): the ratio
says what the trading half (features, training, inference, risk, execution, broker,
performance, dashboard, notifications) adds. The issue's aims: under 3 minutes, under 2 GB.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_HALF = "only=[polygon-live-collector,polygon-historical-downloader,dukascopy-historical-downloader,external-data-collector,data-bridge,tick-aggregator]"


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run(label: str, *overrides: str) -> dict[str, float]:
    fxrun = Path(sys.executable).parent / "fxrun"
    with tempfile.TemporaryDirectory(prefix="bench-demo-") as tmp:
        cmd = [str(fxrun), "topology=demo", "serve_after=false", f"data_dir={tmp}/demo", "progress=false",
               "topology.services.dashboard-service.params.port=0", *overrides]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        peak = biggest = 0
        done = threading.Event()

        def sample() -> None:
            nonlocal peak, biggest
            while not done.is_set():
                sizes = [_rss(pid) for pid in _tree(proc.pid)]
                peak, biggest = max(peak, sum(sizes)), max(biggest, max(sizes, default=0))
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out, _ = proc.communicate()
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
        if proc.returncode:
            sys.exit(f"{label}: fxrun exited with {proc.returncode}:\n{out.decode()[-3000:]}")
        summary = next((line for line in out.decode().splitlines() if line.startswith("run ended after")), "")
        print(f"{label:24} wall {wall:6.1f} s   peak RSS of the tree {peak / 2**20:7.0f} MiB   largest process {biggest / 2**20:6.0f} MiB")
        if summary:
            print(f"{'':24} {summary}")
        return {"wall": wall, "peak": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-only", action="store_true", help="skip the baseline")
    args = parser.parse_args(argv)
    full = run("demo (every service)")
    if args.full_only:
        return
    base = run("data half alone", DATA_HALF)
    print(f"ratio demo / data half: wall {full['wall'] / base['wall']:.2f}x, peak memory {full['peak'] / base['peak']:.2f}x"
          f"   (aims: under 180 s and 2,048 MiB: {'met' if full['wall'] < 180 and full['peak'] < 2**31 else 'NOT met'})")  # fmt: skip


if __name__ == "__main__":
    main()
