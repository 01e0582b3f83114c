"""Walk-forward over model checkpoints: ``fxrun backtest walkforward``.

    fxrun backtest walkforward --train 20d --test 5d [--step 5d] [--embargo 4h] [--anchored] [--model NAME]
                               [--start T] [--end T] [--jobs N] [--out DIR] [overrides…]

The window ``start``..``end`` (the backtesting engine's params, or ``--start``/``--end``) is cut
into folds. Fold k trains on ``[train_start, train_end)`` (``train`` long; rolling: it moves by
``step``; ``--anchored``: it always starts at ``start``) and is tested on ``[train_end + embargo,
+ test)``; ``step`` defaults to ``test``, so the test windows tile the window without overlap,
and the embargo to the model's target horizon. Every fold runs in a process and a data
directory of its own (``<out>/fold-NN``, ``--jobs`` at a time):

1. **Bars.** The window's bars are made once here (``source: synthetic``: the seeded bars
   ``fxrun backtest run`` replays over the same window; ``source: table``: the engine's table
   in the ``data_dir=`` the overrides name), and each fold gets its slice (``bars.npz``). In the
   fold's data directory, ``live_aggregates`` holds what is known before the test window and
   ``historical_aggregates`` the test window, which the backtest replays (``source: table``).
2. **Features.** feature-engineering-service, as declared in the profile, computes the training
   window's rows from its bars (its backfill: the batch kernel of :mod:`nodes.features`) into
   ``ml_features``.
3. **Training.** supervised-training-service, as declared (kind, target, params, folds, seed,
   baseline), trains the model once on that window (``window`` = ``--train``; the artifact is
   named ``<model>-wfNN``): its purged walk-forward, its artifact and its ``model_checkpoints``
   row with the training window and the feature-set version, exactly as it does live. Nothing
   is trained here: the service is started in a runtime of its own on the fold's tables, and
   its ``check_every`` timer starts the training that its stored history makes due.
4. **Refusal.** The checkpoint's recorded training window (its last label included) plus the
   embargo must end at or before the test window starts; otherwise the fold is refused in one
   line, before any bar is replayed. The plan is checked the same way before anything runs.
5. **Test.** ``topology=backtest`` over the test window, with inference-service serving only
   that checkpoint, pinned (``version``); feature-engineering warms up from the bars before the
   window (``bars_table: live_aggregates``). The results' details carry the config hash and,
   as annotations, the fold's windows and the pinned model id and sha256: a fold reruns alone
   with ``python -m nodes.backtest.walkforward <out>/fold-NN`` on a copy of its ``fold.json``
   and ``bars.npz``.

Then the folds are stitched: the out-of-sample equity is chained (each fold's returns,
compounded from where the previous fold ended), the round trips concatenated as traded, and
the metrics of :mod:`nodes.trading.metrics` taken of that curve and those trades. One line per
fold and the combined figures are printed; ``<out>/walkforward.json`` keeps them (and the
chained curve), ``<out>/walkforward.html`` is the report of :mod:`nodes.backtest.report` for
the chained result. The same command gives the same ``walkforward.json``.

Exit codes: 0 done, 1 a fold cannot run, was refused or failed, 2 usage (options, a plan that
does not fit the window).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from pydantic import ValidationError

from framework.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROFILE = "topology=backtest"
DEFAULT_ROOT = Path(".fxrun-backtests")
SPEC, OUTCOME, BARS, LOG = "fold.json", "outcome.json", "bars.npz", "fxrun.out"
BEFORE_TABLE, TEST_TABLE = "live_aggregates", "historical_aggregates"
"""The fold's bars known before its test window (training, the features' warm-up) and those it replays."""
HEADLINE = ("total_return", "sharpe", "max_drawdown", "trades", "win_rate")
ALL_POINTS = 1_000_000_000
"""``curve_points`` of a fold's backtest: every mark of its equity curve, which the chaining needs."""
REPORT_POINTS = 4000
NODES = {"engine": "backtester", "features": "feature_engineering", "training": "supervised_training", "inference": "inference"}
OTHER_TRAINERS = ("rl_training",)

log = logging.getLogger("fxflow.walkforward")


class WalkForwardError(UserError):
    """A fold that cannot run or is refused; the message is one line."""


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def span(ms: int) -> str:
    """``86400000`` → ``1d``, ``5400000`` → ``1h30m``."""
    if ms <= 0:
        return "0"
    days, rest = divmod(ms, 86_400_000)
    hours, rest = divmod(rest, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m")) if v]
    return "".join(parts) + (f"{rest}ms" if rest else "")


def duration(ms: int) -> str:
    """``ms`` in the largest one unit that writes it exactly (``59h``, ``90m``): what a duration param takes."""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


# ---------------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Fold:
    """One fold's windows, half-open, in epoch ms."""

    index: int
    train_start: int
    train_end: int
    test_start: int
    test_end: int

    @property
    def name(self) -> str:
        return f"fold-{self.index:02d}"

    def text(self) -> str:
        return f"train {iso(self.train_start)} → {iso(self.train_end)}, test {iso(self.test_start)} → {iso(self.test_end)}"


def plan(start: int, end: int, *, train: int, test: int, step: int, embargo: int, anchored: bool = False) -> list[Fold]:
    """The folds of ``[start, end)``: rolling (or anchored) training windows, each followed by the embargo and its test window."""
    folds: list[Fold] = []
    k = 0
    while True:
        train_end = start + train + k * step
        test_start = train_end + embargo
        test_end = test_start + test
        if test_end > end:
            return folds
        folds.append(Fold(k + 1, start if anchored else train_end - train, train_end, test_start, test_end))
        k += 1


def check_before(what: str, trained_end: int, embargo: int, test_start: int) -> None:
    """Refuse a model whose training window (up to ``trained_end``, labels included) plus ``embargo`` is not
    strictly before the test window starting at ``test_start``."""
    if trained_end + embargo > test_start:
        raise WalkForwardError(
            f"{what}: refused: the model is trained on data up to {iso(trained_end)} and, with the embargo of {span(embargo)}, "
            f"may be used from {iso(trained_end + embargo)} on, but its test window starts at {iso(test_start)}"
        )


# ---------------------------------------------------------------------------------- chaining


def chain(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The folds' equity curves as one: each fold's simple returns mark to mark (none at its first mark),
    compounded from the first fold's first equity, so a fold starts where the previous one ended."""
    parts = [(np.asarray(ts, np.int64), np.asarray(eq, np.float64)) for ts, eq in curves if len(eq)]
    if not parts:
        return np.empty(0, np.int64), np.empty(0)
    returns = np.concatenate([np.r_[0.0, eq[1:] / eq[:-1] - 1.0] for _, eq in parts])
    return np.concatenate([ts for ts, _ in parts]), parts[0][1][0] * np.cumprod(1.0 + returns)


def combine(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The chained curve, the concatenated trades (each with its fold) and their metrics."""
    from nodes.performance.curve import WEEKDAYS_ONLY
    from nodes.trading import metrics as M

    curves, trades, balances = [], [], []
    for k, report in enumerate(reports, start=1):
        points = report.get("equity_curve") or []
        ts = np.array([int(p["ts"]) for p in points], dtype=np.int64)
        equity = np.array([float(p["equity"]) for p in points])
        curves.append((ts, equity))
        balances.append(np.array([float(p.get("balance") if p.get("balance") is not None else math.nan) for p in points]))
        trades.extend({**t, "fold": k} for t in report.get("trades") or [])
    ts, chained = chain(curves)
    raw = np.concatenate([eq for _, eq in curves]) if curves else np.empty(0)
    balance = np.concatenate(balances) * (chained / raw) if len(raw) else np.empty(0)  # each fold's balance, scaled as its equity
    values = M.summary(ts, chained, [t["pnl"] for t in trades], weekdays_only=WEEKDAYS_ONLY)  # as each fold's report
    return {
        "metrics": {k: (v if math.isfinite(v) else None) for k, v in values.items()},
        "currency": next((r.get("currency") for r in reports if r.get("currency")), None),
        "equity_curve": {"ts": ts.tolist(), "equity": chained.tolist(), "balance": [None if b != b else b for b in balance.tolist()]},
        "trades": trades,
        "pnl_by_symbol": M.pnl_by_symbol(trades),
    }


# ---------------------------------------------------------------------------------- bars


def window(tape: Any, start: int, end: int, *, after: int | None = None) -> Any:
    """The bars of ``tape`` that start at or after ``start`` and close at or before ``end`` (and after ``after``)."""
    from nodes.backtest.tape import Tape

    keep = (tape.columns["ts"] >= start) & (tape.columns["ts_close"] <= end)
    if after is not None:
        keep &= tape.columns["ts_close"] > after
    return Tape(tape.symbols, tape.timeframes, tape.symbol[keep], tape.timeframe[keep], tape.source[keep],
                {k: v[keep] for k, v in tape.columns.items()})  # fmt: skip


def save_tape(path: Path, tape: Any) -> None:
    np.savez_compressed(
        path, symbols=np.array(tape.symbols, dtype=str), timeframes=np.array(tape.timeframes, dtype=str), symbol=tape.symbol,
        timeframe=tape.timeframe, source=np.array([str(s) for s in tape.source.tolist()], dtype=str),
        **{f"col_{k}": v for k, v in tape.columns.items()},
    )  # fmt: skip


def load_tape(path: Path) -> Any:
    from nodes.backtest.tape import BAR_COLUMNS, Tape

    with np.load(path, allow_pickle=False) as z:
        return Tape([str(s) for s in z["symbols"]], [str(t) for t in z["timeframes"]], z["symbol"], z["timeframe"],
                    z["source"].astype(object), {k: z[f"col_{k}"] for k in BAR_COLUMNS})  # fmt: skip


def _missing(tape: Any, symbols: Sequence[str], timeframe: str) -> list[str]:
    """Symbols of ``symbols`` without a bar of ``timeframe`` in ``tape``."""
    counts = tape.counts()
    return [s for s in symbols if not counts.get((s, timeframe))]


# ---------------------------------------------------------------------------------- the command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--train", required=True, metavar="DURATION", help="each fold's training window (20d)")
    parser.add_argument("--test", required=True, metavar="DURATION", help="each fold's test window (5d)")
    parser.add_argument("--step", metavar="DURATION", help="how far each fold moves on (default: --test, test windows that tile)")
    parser.add_argument("--embargo", metavar="DURATION", help="gap between a training window and its test (default: the target horizon)")
    parser.add_argument("--anchored", action="store_true", help="every training window starts at the window's start (expanding)")
    parser.add_argument("--model", help="the supervised-training model walked forward (default: the only one declared)")
    parser.add_argument("--start", help="the window's start (default: the backtesting engine's params.start)")
    parser.add_argument("--end", help="the window's end (default: the backtesting engine's params.end)")
    parser.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="folds at a time")
    parser.add_argument("--out", help="directory of the folds and the result (default: .fxrun-backtests/walkforward-<time>)")


def _usage(message: str) -> int:
    print(f"fxrun backtest walkforward: {message}", file=sys.stderr)
    return EXIT_USAGE


def _failed(message: str) -> int:
    print(f"fxrun backtest walkforward: {message}", file=sys.stderr)
    return EXIT_FAILED


def _duration(option: str, text: str | None, *, zero: bool = False) -> int:
    from framework.durations import parse_ms

    try:
        ms = parse_ms(text or "")
    except ValueError as exc:
        raise _Usage(f"{option}: {exc}") from None
    if ms is None or ms < 0 or (ms == 0 and not zero):
        raise _Usage(f"{option} {text}: give a {'non-negative' if zero else 'positive'} duration (e.g. 20d, 5d, 4h)")
    return ms


class _Usage(Exception):
    pass


def run(args: argparse.Namespace, overrides: list[str]) -> int:
    """The driver: plan, bars, the folds in processes, the stitched result."""
    try:
        setup = _setup(args, overrides)
        return _drive(setup, args)
    except _Usage as exc:
        return _usage(str(exc))
    except WalkForwardError as exc:
        return _failed(str(exc))


@dataclass
class _Setup:
    """What the command line and the profile say, checked: the folds, the model, where the bars come from."""

    loaded: Any
    services: dict[str, str]
    engine: Any
    """The backtesting engine's params (the window, the source of bars)."""
    training: Any
    model: Any
    """The declared model walked forward (``ModelParams``)."""
    pairs: list[str]
    symbols: list[str]
    timeframes: list[str]
    source_dir: str | None
    overrides: list[str]
    """The user's overrides, ``data_dir=`` left out (each fold has its own)."""
    train: int
    test: int
    step: int
    embargo: int
    folds: list[Fold]


def _data_dir(override: str) -> bool:
    return override.split("=", 1)[0].lstrip("+") == "data_dir"


def _service(topology: Any, node: str, *, enabled: bool = True) -> str:
    names = [n for n, s in topology.services.items() if s.node == node and (s.enabled or not enabled)]
    if not names:
        raise _Usage(f"the profile has no {'enabled ' if enabled else ''}service of node {node}")
    return names[0]


def _setup(args: argparse.Namespace, overrides: list[str]) -> _Setup:
    from framework.durations import parse_ms
    from framework.topology.load import load_run
    from nodes.backtest import tape as tapes
    from nodes.backtest.command import Checker
    from nodes.backtest.spec import BacktesterParams
    from nodes.supervised_training.spec import SupervisedTrainingParams

    train, test = _duration("--train", args.train), _duration("--test", args.test)
    step = _duration("--step", args.step) if args.step is not None else test
    if step < test:
        raise _Usage(f"--step {args.step} is shorter than --test {args.test}: the test windows would overlap and the chained "
                     "equity would count their bars twice")  # fmt: skip
    if args.jobs < 1:
        raise _Usage(f"--jobs {args.jobs}: at least 1")
    source_dir = next((o.split("=", 1)[1] for o in overrides if _data_dir(o)), None)
    user = [o for o in overrides if not _data_dir(o)]
    loaded = load_run([PROFILE, f"data_dir={source_dir or DEFAULT_ROOT / 'pending'}", *user])
    problems = Checker().errors(loaded)
    if problems:
        raise _Usage(f"nothing was started: {'; '.join(problems)}")
    topology = loaded.topology
    services = {role: _service(topology, node, enabled=role != "training") for role, node in NODES.items()}
    engine = BacktesterParams.model_validate(topology.services[services["engine"]].params)
    if args.start or args.end:
        try:
            engine = BacktesterParams.model_validate({**engine.model_dump(), "start": args.start or engine.start, "end": args.end or engine.end})
        except ValidationError as exc:
            first = exc.errors()[0]
            raise _Usage(f"--start/--end: {first['msg'].removeprefix('Value error, ')}") from None
    if engine.source == "synthetic" and source_dir:
        raise _Usage("data_dir= names where source: table reads its bars; with source: synthetic each fold has its own "
                     "directory under --out: leave data_dir= out")  # fmt: skip
    training = SupervisedTrainingParams.model_validate(topology.services[services["training"]].params)
    model = _pick_model(training.models, args.model, services["training"])
    pairs = list(loaded.config.pairs or topology.instruments)
    symbols = sorted(s for s in (model.symbols or pairs) if s in pairs)
    timeframes = tapes.ordered_timeframes(engine.timeframes or topology.timeframes)
    if not symbols:
        raise _Usage(f"model {model.name}: none of its symbols ({', '.join(model.symbols or [])}) is a pair of this run ({', '.join(pairs)})")
    if model.timeframe not in timeframes:
        raise _Usage(f"model {model.name} trades {model.timeframe} bars, which this backtest does not replay ({', '.join(timeframes)})")
    horizon = parse_ms(model.target.horizon) or 0
    embargo = _duration("--embargo", args.embargo, zero=True) if args.embargo is not None else horizon
    if train <= horizon:
        raise _Usage(f"--train {args.train} is not longer than the target horizon {model.target.horizon} of model {model.name}: "
                     "no training sample would have a complete label")  # fmt: skip
    start, end = engine.start_ms, engine.end_ms
    folds = plan(start, end, train=train, test=test, step=step, embargo=embargo, anchored=args.anchored)
    if not folds:
        raise _Usage(f"the window {iso(start)} → {iso(end)} ({span(end - start)}) is shorter than --train + --embargo + --test "
                     f"({span(train)} + {span(embargo)} + {span(test)}): no fold fits; widen it with --start/--end")  # fmt: skip
    for fold in folds:
        check_before(f"{fold.name} ({fold.text()})", fold.train_end, embargo, fold.test_start)
    return _Setup(loaded, services, engine, training, model, pairs, symbols, timeframes, source_dir, user, train, test, step, embargo, folds)


def _pick_model(models: Sequence[Any], name: str | None, service: str) -> Any:
    names = [m.name for m in models]
    if name is not None:
        chosen = [m for m in models if m.name == name]
        if not chosen:
            raise _Usage(f"--model {name}: {service} declares {', '.join(names) or 'no model'}")
        return chosen[0]
    if len(models) != 1:
        raise _Usage(f"{service} declares {len(models)} models ({', '.join(names) or 'none'}): name one with --model")
    return models[0]


def _check_bars(setup: _Setup, tape: Any) -> None:
    """Every training window holds bars of the model's symbols and timeframe, every test window bars to replay."""
    engine, first = setup.engine, setup.timeframes[0]
    where = ("seeded synthetic bars skip the FX weekend" if engine.source == "synthetic"
             else f"table {engine.table} in {setup.source_dir or 'the data_dir'}")  # fmt: skip
    for fold in setup.folds:
        missing = _missing(window(tape, fold.train_start, fold.train_end), setup.symbols, setup.model.timeframe)
        if missing:
            raise WalkForwardError(f"{fold.name}: its training window {iso(fold.train_start)} → {iso(fold.train_end)} holds no "
                                   f"{setup.model.timeframe} bar of {', '.join(missing)} ({where})")  # fmt: skip
        missing = _missing(window(tape, fold.test_start, fold.test_end), setup.pairs, first)
        if len(missing) == len(setup.pairs):
            raise WalkForwardError(f"{fold.name}: its test window {iso(fold.test_start)} → {iso(fold.test_end)} holds no {first} bar "
                                   f"of {', '.join(missing)} ({where})")  # fmt: skip


def _params(setup: _Setup, anchored: bool) -> dict[str, Any]:
    """What the walk-forward is (walkforward.json's ``params``; its id is their hash with the profile's)."""
    engine = setup.engine
    return {
        "model": setup.model.name, "train": span(setup.train), "test": span(setup.test), "step": span(setup.step),
        "embargo": span(setup.embargo), "anchored": anchored, "start": iso(engine.start_ms), "end": iso(engine.end_ms),
        "source": engine.source, "seed": engine.seed if engine.source == "synthetic" else None,
        "table": engine.table if engine.source == "table" else None, "symbols": setup.symbols, "pairs": setup.pairs,
        "timeframes": setup.timeframes, "overrides": setup.overrides,
    }  # fmt: skip


def _spec(setup: _Setup, fold: Fold, wf_id: str) -> dict[str, Any]:
    """A fold's ``fold.json``: its windows and the overrides of its three runs (features, training, backtest)."""
    from nodes.backtest.reference import leaves

    S, services, model, engine = "topology.services", setup.services, setup.model, setup.engine
    name = f"{model.name}-wf{fold.index:02d}"
    declared = model.model_dump(mode="json", exclude_none=True)
    trained = {**declared, "name": name, "window": duration(fold.train_end - fold.train_start), "retrain_every": "100y"}
    inference = setup.loaded.topology.services[services["inference"]].params.get("models") or {}
    serving = {k: v for k, v in (inference.get(model.name) or {}).items() if k != "version"}
    trainers = [n for n, s in setup.loaded.topology.services.items() if s.node in (NODES["training"], *OTHER_TRAINERS)]
    features = f"{S}.{services['features']}.params"
    return {
        "walkforward": wf_id, "fold": asdict(fold), "name": fold.name, "embargo_ms": setup.embargo, "model": name,
        "declared": model.name, "timeframe": model.timeframe, "symbols": setup.symbols, "min_rows": model.min_rows,
        "check_every": setup.training.check_every, "services": services, "overrides": setup.overrides,
        "features": [f"++{features}.bars_table={BEFORE_TABLE}", f"++{features}.backfill=true", f"++{features}.backfill_lookback=null"],
        "training": [f"++{S}.{services['training']}.enabled=true", *leaves(f"{S}.{services['training']}.params.models", [trained]),
                     f"++{S}.{services['training']}.params.progress_bar=false"],
        "backtest": [
            *leaves(f"{S}.{services['engine']}.params", {"start": iso(fold.test_start), "end": iso(fold.test_end), "source": "table",
                                                        "table": TEST_TABLE, "curve_points": ALL_POINTS}),
            *(f"++{S}.{services['inference']}.params.models.{other}=null" for other, decl in inference.items() if decl is not None),
            *leaves(f"{S}.{services['inference']}.params.models.{name}", {**serving, "timeframe": model.timeframe}),
            f"++{features}.bars_table={BEFORE_TABLE}", f"++{features}.backfill=false",
            *(f"++{S}.{n}.enabled=false" for n in trainers),
        ],
        "annotations": {
            "walkforward": wf_id, "fold": fold.index, "train_start": iso(fold.train_start), "train_end": iso(fold.train_end),
            "test_start": iso(fold.test_start), "test_end": iso(fold.test_end), "embargo": span(setup.embargo),
            "bars": f"synthetic seed {engine.seed}" if engine.source == "synthetic" else f"table {engine.table}",
        },
    }  # fmt: skip


def _drive(setup: _Setup, args: argparse.Namespace) -> int:
    from framework.confighash import config_hash

    tape = _bars(setup)
    _check_bars(setup, tape)
    base_hash = config_hash(setup.loaded.topology, setup.pairs, setup.loaded.config.data_dir)
    params = _params(setup, args.anchored)
    wf_id = "wf-" + hashlib.sha256(orjson.dumps([base_hash, params], option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
    root = Path(args.out) if args.out else DEFAULT_ROOT / time.strftime("walkforward-%Y%m%d-%H%M%S")
    if root.exists() and any(root.iterdir()):
        raise _Usage(f"--out {root} is not empty: a walk-forward starts in a directory of its own")
    root.mkdir(parents=True, exist_ok=True)
    for fold in setup.folds:
        folder = root / fold.name
        folder.mkdir()
        save_tape(folder / BARS, window(tape, fold.train_start, fold.test_end))
        (folder / SPEC).write_bytes(orjson.dumps(_spec(setup, fold, wf_id), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    model, folds = setup.model, setup.folds
    print(f"walk-forward {wf_id} of {model.name} ({model.kind} {model.timeframe}, target {model.target.kind} {model.target.horizon}) on "
          f"{', '.join(setup.symbols)}: {len(folds)} fold(s), train {params['train']}{' anchored' if args.anchored else ''}, embargo "
          f"{params['embargo']}, test {params['test']}, step {params['step']}, in {params['start']} → {params['end']}; "
          f"{min(args.jobs, len(folds))} at a time under {root}", flush=True)  # fmt: skip
    codes = _run_folds(root, folds, args.jobs, setup.loaded.project)
    outcomes = []
    for fold in folds:
        path = root / fold.name / OUTCOME
        outcome = orjson.loads(path.read_bytes()) if path.is_file() else {
            "fold": fold.index, "name": fold.name, "windows": asdict(fold),
            "error": f"{fold.name}: its process exited {codes.get(fold.index)} without an outcome; see {root / fold.name / LOG}"}  # fmt: skip
        outcomes.append(outcome)
    return _finish(root, wf_id, base_hash, params, folds, outcomes, tape)


def _bars(setup: _Setup) -> Any:
    """The window's bars, as ``fxrun backtest run`` over it replays them."""
    from nodes.backtest import tape as tapes

    engine = setup.engine
    if engine.source == "synthetic":
        return tapes.synthetic(setup.pairs, setup.timeframes, engine.start_ms, engine.end_ms, engine.seed)
    return asyncio.run(_table_bars(setup))


async def _table_bars(setup: _Setup) -> Any:
    from framework.context import TableHandle
    from nodes.backtest import tape as tapes

    loaded, engine = setup.loaded, setup.engine
    if engine.table not in loaded.topology.tables:
        raise WalkForwardError(f"table {engine.table} (the backtesting engine's params.table) is not declared")
    async with stores(loaded, Path(loaded.config.data_dir), [setup.services["engine"]]) as rt:
        handle = TableHandle(engine.table, rt.stores[loaded.topology.tables[engine.table].store], None)
        frame = await handle.query_frame(tapes.TABLE_SQL, {"symbols": setup.pairs, "timeframes": setup.timeframes,
                                                           "start": engine.start_ms, "end": engine.end_ms})  # fmt: skip
    return tapes.from_frame(frame, setup.pairs, setup.timeframes)


def _run_folds(root: Path, folds: Sequence[Fold], jobs: int, project: Path) -> dict[int, int]:
    """Each fold in a process of its own (``python -m nodes.backtest.walkforward <fold dir>``), ``jobs`` at a time."""
    pending = list(folds)
    running: list[tuple[Fold, subprocess.Popen[bytes], Any]] = []
    codes: dict[int, int] = {}
    while pending or running:
        while pending and len(running) < jobs:
            fold = pending.pop(0)
            folder = (root / fold.name).resolve()
            (folder / "tmp").mkdir(exist_ok=True)  # chdb's temporary files (see framework/cli.py _run_tmpdir)
            env = {**os.environ, "FXFLOW_PROJECT": str(project), "TMPDIR": str(folder / "tmp")}
            out = open(folder / LOG, "wb")
            command = [sys.executable, "-m", "nodes.backtest.walkforward", str(folder)]
            running.append((fold, subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env), out))
        time.sleep(0.1)
        for item in list(running):
            fold, process, out = item
            if process.poll() is None:
                continue
            out.close()
            running.remove(item)
            codes[fold.index] = process.returncode
            print(f"  [{fold.name}] {'done' if process.returncode == 0 else f'FAILED (exit {process.returncode})'}", flush=True)
    return codes


def _figure(name: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if name in ("total_return", "max_drawdown", "win_rate"):
        return f"{value * 100:.2f}%"
    return f"{value:,.6g}" if isinstance(value, float) else str(value)


def _line(label: str, train: str, test: str, model: str, metrics: Mapping[str, Any]) -> str:
    return f"{label:8s} {train:37s}  {test:37s}  {model:24s}" + "".join(f" {_figure(h, metrics.get(h)):>13s}" for h in HEADLINE)


def _finish(root: Path, wf_id: str, base_hash: str, params: dict[str, Any], folds: Sequence[Fold], outcomes: list[dict[str, Any]],
            tape: Any) -> int:  # fmt: skip
    print(f"{'fold':8s} {'train':37s}  {'test (out of sample)':37s}  {'pinned model':24s}" + "".join(f" {h:>13s}" for h in HEADLINE))
    for fold, outcome in zip(folds, outcomes):
        train, test = f"{iso(fold.train_start)} → {iso(fold.train_end)}", f"{iso(fold.test_start)} → {iso(fold.test_end)}"
        if outcome.get("error"):
            print(f"{fold.name:8s} {train:37s}  {test:37s}  FAILED (below)")
        else:
            print(_line(fold.name, train, test, outcome["model"]["id"], outcome["backtest"]["metrics"]))
    doc: dict[str, Any] = {"walkforward": wf_id, "config_hash": base_hash, "params": params, "folds": outcomes, "combined": None}
    failed = [o for o in outcomes if o.get("error")]
    if failed:
        (root / "walkforward.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        print(f"{len(failed)} of {len(outcomes)} fold(s) failed: no combined result; the folds are in {root / 'walkforward.json'}")
        for outcome in failed:
            print(f"fxrun backtest walkforward: {outcome['error']}", file=sys.stderr)
        return EXIT_FAILED
    combined = combine([orjson.loads((root / o["name"] / o["backtest"]["report_json"]).read_bytes()) for o in outcomes])
    combined["metrics"]["bars"] = float(sum(o["backtest"]["metrics"].get("bars") or 0 for o in outcomes))
    doc["combined"] = combined
    (root / "walkforward.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    (root / "walkforward.html").write_text(_html(wf_id, base_hash, params, folds, outcomes, combined, tape), encoding="utf-8")
    print(_line("chained", "", f"{iso(folds[0].test_start)} → {iso(folds[-1].test_end)}", "", combined["metrics"]))
    print(f"result: {root / 'walkforward.json'}\nreport: {(root / 'walkforward.html').resolve()}")
    return EXIT_OK


def _html(wf_id: str, base_hash: str, params: Mapping[str, Any], folds: Sequence[Fold], outcomes: Sequence[Mapping[str, Any]],
          combined: Mapping[str, Any], tape: Any) -> str:  # fmt: skip
    """The chained result as a backtest report (nodes/backtest/report.py), the folds' table above it."""
    from html import escape

    from nodes.backtest import report as html
    from nodes.performance.curve import sample

    curve = combined["equity_curve"]
    points = [{"ts": curve["ts"][i], "equity": curve["equity"][i], "balance": curve["balance"][i]}
              for i in sample(len(curve["ts"]), REPORT_POINTS).tolist()]  # fmt: skip
    report = {"currency": combined["currency"], "balance": None, "equity": curve["equity"][-1] if curve["equity"] else None,
              "margin": None, "open_positions": None, "metrics": combined["metrics"], "equity_curve": points,
              "trades": combined["trades"], "pnl_by_symbol": combined["pnl_by_symbol"]}  # fmt: skip
    first, last = folds[0].test_start, folds[-1].test_end
    tested = window(tape, first, last)
    prices = {symbol: tested.stream(symbol, params["timeframes"][0]) for symbol in params["pairs"]}
    models = {k: v for o in outcomes for k, v in o["backtest"]["models"].items()}
    details = {"params": {"start": iso(first), "end": iso(last), "source": params["source"]}, "symbols": params["pairs"],
               "timeframes": params["timeframes"], "models": models, "config_hash": base_hash}  # fmt: skip
    head = "".join(f"<th>{escape(h)}</th>" for h in ("fold", "train", "test (out of sample)", "pinned model", "sha256", *HEADLINE))
    rows = "".join(
        f"<tr><td>{escape(o['name'])}</td><td>{iso(f.train_start)} → {iso(f.train_end)}</td><td>{iso(f.test_start)} → {iso(f.test_end)}</td>"
        f"<td>{escape(o['model']['id'])}</td><td>{escape(o['model']['sha256'][:12])}</td>"
        + "".join(f"<td>{escape(_figure(h, o['backtest']['metrics'].get(h)))}</td>" for h in HEADLINE) + "</tr>"
        for f, o in zip(folds, outcomes)
    )  # fmt: skip
    preface = (f'<p class="meta">walk-forward of {escape(params["model"])}: train {params["train"]}'
               f'{" anchored" if params["anchored"] else ""}, embargo {params["embargo"]}, test {params["test"]}, step {params["step"]}; '
               "the equity is the folds' test windows chained (returns compounded), the trades are concatenated as traded</p>"
               f'<h2>Folds</h2><table class="trades"><tr>{head}</tr>{rows}</table>')  # fmt: skip
    return html.render(wf_id, report, prices, details, price_points=REPORT_POINTS, preface=preface)


# ---------------------------------------------------------------------------------- one fold (its own process)


@functools.lru_cache(maxsize=2)
def _registries(project: Path) -> tuple[Any, Any]:
    """The node registry and the contracts, loaded once per process."""
    from framework.contracts import ContractRegistry
    from framework.registry import Registry

    return Registry.discover(), ContractRegistry.load(project / "contracts")


def _runtime(loaded: Any, data_dir: Path, only: Sequence[str]) -> Any:
    from framework.runtime import Runtime

    registry, contracts = _registries(loaded.project)
    return Runtime(loaded.topology, registry, contracts, pairs=loaded.config.pairs, only=list(only), data_dir=data_dir)


@asynccontextmanager
async def stores(loaded: Any, data_dir: Path, only: Sequence[str]) -> AsyncIterator[Any]:
    """A runtime of ``only`` whose stores are open and tables made (nothing started), closed on the way out."""
    from framework.runtime import assembly

    rt = _runtime(loaded, data_dir, only)
    try:
        await assembly.open_tables(rt)
        yield rt
    finally:
        for store in {id(s): s for s in rt.stores.values()}.values():
            await store.close()


async def _insert(rt: Any, loaded: Any, table: str, tape: Any) -> None:
    store = rt.stores[loaded.topology.tables[table].store]
    for lo in range(0, len(tape), 50_000):
        await store.insert(table, tape.messages(lo, lo + 50_000))


async def train_fold(folder: Path, spec: Mapping[str, Any], tape: Any) -> dict[str, Any]:
    """Steps 2-4 of a fold: features, training, the checkpoint read back and checked; the bars of the test put in place."""
    from framework.durations import parse_ms
    from framework.runtime import assembly
    from framework.topology.load import load_run

    fold = Fold(**spec["fold"])
    what = f"{fold.name} ({fold.text()})"
    check_before(what, fold.train_end, spec["embargo_ms"], fold.test_start)
    services = spec["services"]
    loaded = load_run([PROFILE, f"data_dir={folder}", *spec["overrides"], *spec["features"], *spec["training"]])
    rt = _runtime(loaded, folder, [services["features"]])
    try:
        await assembly.open_tables(rt)
        await _insert(rt, loaded, BEFORE_TABLE, window(tape, fold.train_start, fold.train_end))
        await rt.start()  # its backfill: the training window's feature rows into ml_features
    finally:
        await rt.stop()

    async with stores(loaded, folder, [services["training"]]) as rt:
        ml = rt.stores[loaded.topology.tables["ml_features"].store]
        rows = await ml.query("SELECT symbol, count() AS n FROM ml_features FINAL WHERE timeframe = {tf:String} GROUP BY symbol",
                              {"tf": spec["timeframe"]})  # fmt: skip
        counts = {str(r["symbol"]): int(r["n"]) for r in rows}
        short = [f"{s} {counts.get(s, 0)}" for s in spec["symbols"] if counts.get(s, 0) < spec["min_rows"]]
        if short:
            raise WalkForwardError(f"{what}: its training window gives too few {spec['timeframe']} feature rows ({', '.join(short)}); "
                                   f"model {spec['declared']} needs min_rows {spec['min_rows']} per symbol: lengthen --train or lower "
                                   "the model's min_rows")  # fmt: skip
    rt = _runtime(loaded, folder, [services["training"]])
    try:
        await rt.start()
        await rt.clock.wait_until(fold.train_end)
        await rt.clock.wait_until(fold.train_end + (parse_ms(spec["check_every"]) or 60_000))  # its timer starts the due training
    finally:
        await rt.stop()

    async with stores(loaded, folder, [services["training"], services["features"]]) as rt:
        table = rt.stores[loaded.topology.tables["model_checkpoints"].store]
        checkpoints = await table.query("SELECT * FROM model_checkpoints WHERE name = {n:String} ORDER BY version", {"n": spec["model"]})
        if not checkpoints:
            runs = await table.query("SELECT status, message FROM training_runs WHERE startsWith(run_id, {p:String}) ORDER BY ts",
                                     {"p": spec["model"] + "-"})  # fmt: skip
            why = f"training failed: {runs[-1]['message']}" if runs and runs[-1]["status"] == "failed" else (
                "training did not run" + (f" (last status: {runs[-1]['status']})" if runs else ""))  # fmt: skip
            raise WalkForwardError(f"{what}: {why}")
        if len(checkpoints) != 1:
            raise WalkForwardError(f"{what}: {len(checkpoints)} checkpoints of {spec['model']} in {folder}: one fold trains one model")
        cp = checkpoints[0]
        check_before(f"{what}: checkpoint {cp['artifact']} (trained {iso(int(cp['train_start']))} → {iso(int(cp['train_end']))})",
                     int(cp["train_end"]), spec["embargo_ms"], fold.test_start)  # fmt: skip
        await _insert(rt, loaded, BEFORE_TABLE, window(tape, fold.train_start, fold.test_start, after=fold.train_end))  # the embargo: warm-up
        await _insert(rt, loaded, TEST_TABLE, window(tape, fold.test_start, fold.test_end))
    metrics = cp.get("metrics")
    return {
        "id": f"{cp['name']}-v{int(cp['version'])}", "name": str(cp["name"]), "version": int(cp["version"]), "sha256": str(cp["sha256"]),
        "run_id": str(cp["run_id"]), "kind": str(cp["model_type"]), "feature_set": str(cp["feature_set"]), "samples": int(cp["samples"]),
        "trained": [int(cp["train_start"]), int(cp["train_end"])], "trained_text": f"{iso(int(cp['train_start']))} → {iso(int(cp['train_end']))}",
        "cv_metrics": orjson.loads(metrics) if isinstance(metrics, (str, bytes)) else metrics,
    }  # fmt: skip


def backtest_fold(folder: Path, spec: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """Step 5: the backtest of the test window with the checkpoint pinned; its result and report read back."""
    from framework.cli import main as fxrun
    from nodes.backtest.reference import leaves

    services = spec["services"]
    annotations = {**spec["annotations"], "model_id": model["id"], "model_sha256": model["sha256"], "checkpoint": model["run_id"],
                   "trained": model["trained_text"], "feature_set": model["feature_set"]}  # fmt: skip
    overrides = [PROFILE, f"data_dir={folder}", *spec["overrides"], *spec["backtest"],
                 f"++topology.services.{services['inference']}.params.models.{spec['model']}.version={model['version']}",
                 *leaves(f"topology.services.{services['engine']}.params.annotations", annotations)]  # fmt: skip
    code = fxrun(overrides)
    fold = Fold(**spec["fold"])
    what = f"{fold.name} ({fold.text()})"
    results = sorted((folder / "backtests").glob("*/result.json"))
    if code != EXIT_OK or len(results) != 1:
        raise WalkForwardError(f"{what}: the backtest of its test window failed (exit {code}; see {folder / LOG})")
    result = orjson.loads(results[0].read_bytes())
    details = result.get("details") or {}
    others = sorted(m for m in details.get("models") or {} if m != model["id"])
    if others:
        raise WalkForwardError(f"{what}: models other than the pinned {model['id']} traded in its test: {', '.join(others)}")
    report = results[0].parent / "report.json"
    if not report.is_file():
        raise WalkForwardError(f"{what}: performance-monitoring gave the backtest no report (is it enabled?)")
    return {
        "run_id": result["run_id"], "config_hash": details.get("config_hash"), "metrics": result["metrics"],
        "models": details.get("models") or {}, "result": str(results[0].relative_to(folder)), "report_json": str(report.relative_to(folder)),
        "report": str(details.get("report") or ""),
    }  # fmt: skip


def run_fold(folder: Path) -> int:
    """One fold, in this process: ``<folder>/fold.json`` and ``bars.npz`` in, ``outcome.json`` out."""
    spec = orjson.loads((folder / SPEC).read_bytes())
    fold = Fold(**spec["fold"])
    outcome: dict[str, Any] = {"fold": fold.index, "name": fold.name, "windows": asdict(fold), "embargo_ms": spec["embargo_ms"],
                               "text": fold.text(), "error": None}  # fmt: skip
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        tape = load_tape(folder / BARS)
        outcome["model"] = asyncio.run(train_fold(folder, spec, tape))
        root.removeHandler(handler)  # the backtest logs through fxrun's own handlers
        outcome["backtest"] = backtest_fold(folder, spec, outcome["model"])
    except UserError as exc:
        outcome["error"] = str(exc).splitlines()[0]
    except Exception as exc:  # a bug: its traceback goes to the fold's log, its one line to the outcome
        log.exception("%s failed", fold.name)
        outcome["error"] = f"{fold.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (see {folder / LOG})"
    finally:
        root.removeHandler(handler)
        (folder / OUTCOME).write_bytes(orjson.dumps(outcome, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    if outcome["error"]:
        print(f"fxrun backtest walkforward: {outcome['error']}", file=sys.stderr)
        return EXIT_FAILED
    shutil.rmtree(folder / "tmp", ignore_errors=True)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(run_fold(Path(sys.argv[1])))
