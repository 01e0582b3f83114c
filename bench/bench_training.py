"""Supervised training: what purged walk-forward evaluation costs over one plain fit of the same model.

    .venv/bin/python bench/bench_training.py                  # 4 symbols x 2,000 1m bars, 40 features, 100 trees, 4 folds
    .venv/bin/python bench/bench_training.py -n 300 -t 5 -r 1 # a smoke run

For each library (XGBoost, LightGBM, CatBoost), in one run, on the same synthetic rows
(nodes/supervised_training/synthetic.py plus noise columns):
1. the training set: ``worker.prepare`` (parse the rows, label, plan the folds), in µs per row;
2. the whole run (``worker.train``: the set, every fold fitted and scored, the final fit) against
   the baseline, one fit of the same model on the same samples: their ratio is the price of the
   walk-forward metrics (about ``1 + sum of the folds' training fractions`` plus scoring).
Every figure is the median of the repeats; the loops compared alternate within a repeat.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nodes.supervised_training import worker  # noqa: E402
from nodes.supervised_training.synthetic import bars_and_features  # noqa: E402

T0 = 1_793_577_600_000
M = 60_000
SYMBOLS = ["EURUSD", "GBPUSD", "USDJPY", "XAUUSD", "AUDUSD", "USDCAD", "NZDUSD", "EURGBP"]
PARAMS = {"xgboost": {"max_depth": 4}, "lightgbm": {"num_leaves": 15}, "catboost": {"depth": 4}}


def rows(n: int, symbols: int, extra: int) -> tuple[list, list]:
    bars, features = bars_and_features(SYMBOLS[:symbols], start_ms=T0, n=n, momentum=0.3)
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(len(features), extra))
    for row, values in zip(features, noise):
        if row["values"]["r1"] is not None:
            row["values"].update({f"noise_{j}": float(v) for j, v in enumerate(values)})
    return bars, features


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="bars per symbol")
    parser.add_argument("-s", type=int, default=4, help="symbols")
    parser.add_argument("-f", type=int, default=36, help="noise features added to the four real ones")
    parser.add_argument("-t", type=int, default=100, help="trees")
    parser.add_argument("-k", type=int, default=4, help="folds")
    parser.add_argument("-r", type=int, default=3, help="repeats")
    args = parser.parse_args()
    bars, features = rows(args.n, args.s, args.f)
    print(f"{args.s} symbols x {args.n} 1m bars, {args.f + 4} features, {args.t} trees, {args.k} purged walk-forward folds; median of {args.r}")
    for kind in ("xgboost", "lightgbm", "catboost"):
        job = worker.Job(
            name=f"bench-{kind}", kind=kind, timeframe="1m", symbols=tuple(SYMBOLS[: args.s]),
            target={"kind": "direction", "horizon": "5m", "dead_zone": 0.0}, model_params={"n_estimators": args.t, **PARAMS[kind]},
            threshold=0.5, folds={"n": args.k, "min_train": 10, "min_test": 10}, seed=1,
            window_start=T0, cut=T0 + args.n * M, run_id="bench",
        )  # fmt: skip
        worker.train(job, features[: 200 * args.s], bars)  # imports and warm-up
        prepare, whole, single = [], [], []
        samples = 0
        for _ in range(args.r):
            t0 = time.perf_counter()
            prepared = worker.prepare(job, features, bars)
            t1 = time.perf_counter()
            worker.train(job, features, bars)
            t2 = time.perf_counter()
            X, y = prepared.dataset.binary(np.arange(len(prepared.dataset)))
            worker.TREE_KINDS[kind].fit(X, y, job.card(prepared.dataset))
            t3 = time.perf_counter()
            prepare.append(t1 - t0)
            whole.append(t2 - t1)
            single.append(t3 - t2)
            samples = len(prepared.dataset)
        p, w, b = (statistics.median(v) for v in (prepare, whole, single))
        print(f"{kind:9} training set {p * 1e6 / len(features):8.1f} us/row ({samples} samples)")
        print(f"{kind:9} walk-forward run {w:7.3f} s   one fit {b:7.3f} s   ratio run/fit {w / b:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
