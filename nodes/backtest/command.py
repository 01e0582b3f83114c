"""``fxrun backtest run | sweep | show``: backtests of ``topology=backtest``, one data directory each.

    fxrun backtest run [overrides…]                       one run; prints its report and metrics
    fxrun backtest sweep --param KEY=V1,V2 [--param …] [--jobs N] [--out DIR] [overrides…]
    fxrun backtest show DIR                               the result of a finished run (its result.json)
    fxrun backtest request (--lookback 2h | --start T --end T) [--symbol S…] [--timeframe TF…] [--model NAME=JSON…]
                           [--set KEY=V…] [--reason TEXT] [--timeout S] [overrides…]
                                                          ask a running backtesting-engine (topology=live, over
                                                          NATS) for a backtest of its stored bars; prints the reply
    fxrun backtest walkforward --train 20d --test 5d [--step D] [--embargo D] [--anchored] [--model NAME]
                               [--start T] [--end T] [--jobs N] [--out DIR] [overrides…]
                                                          a model trained on each rolling window, its checkpoint
                                                          pinned and backtested on the window after it; the folds
                                                          chained (nodes/backtest/walkforward.py)

Every run is ``fxrun topology=backtest`` with the overrides (Hydra strings, as for any run) in a
data directory of its own: every service keeps its state there, and the embedded ClickHouse
(chdb) takes one directory per process. Without ``data_dir=``, ``run`` uses
``.fxrun-backtests/bt-<config hash>``: the same configuration is the same directory, so asking
for it again prints the result it already has (a backtest is deterministic).

``sweep`` runs every combination of the ``--param`` values (the cartesian product, in order), each
in its own process and directory (``<out>/<n>``), ``--jobs`` at a time, and prints one line per run
with the values, the run id and its headline metrics; ``<out>/sweep.json`` keeps them all.

Exit codes: 0 done, 1 a run failed (or nothing to show; a walk-forward fold refused), 2 usage.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from framework.command_parser import CommandParser
from framework.errors import UserError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROFILE = "topology=backtest"
DEFAULT_ROOT = Path(".fxrun-backtests")
HEADLINE = ("total_return", "sharpe", "max_drawdown", "trades", "win_rate", "profit_factor", "bars")



def _parser() -> CommandParser:
    parser = CommandParser(prog="fxrun backtest", description="Backtests of topology=backtest (key=value arguments are overrides).")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=CommandParser)
    verbs.add_parser("run", help="one backtest; prints its report and metrics")
    sweep = verbs.add_parser("sweep", help="every combination of --param values, in parallel processes")
    sweep.add_argument("--param", action="append", default=[], metavar="KEY=V1,V2", help="an override key and its values (repeatable)")
    sweep.add_argument("--jobs", type=int, default=max(1, (os.cpu_count() or 2) // 2), help="runs at a time")
    sweep.add_argument("--out", help="directory of the runs (default: .fxrun-backtests/sweep-<time>)")
    show = verbs.add_parser("show", help="the result of a finished run")
    show.add_argument("dir", help="the run's data_dir")
    ask = verbs.add_parser("request", help="ask a running backtesting-engine (over NATS) for a backtest of its stored bars")
    window = ask.add_mutually_exclusive_group(required=True)
    window.add_argument("--lookback", metavar="DURATION", help="this much history up to the newest stored bar (2h, 7d)")
    window.add_argument("--start", metavar="T", help="first bar (ISO-8601 UTC); with --end")
    ask.add_argument("--end", metavar="T", help="last bar's close (ISO-8601 UTC)")
    ask.add_argument("--symbol", action="append", default=[], help="a symbol replayed (repeatable; default: the service's pairs)")
    ask.add_argument("--timeframe", action="append", default=[], help="a timeframe replayed (repeatable)")
    ask.add_argument("--model", action="append", default=[], metavar="NAME=JSON",
                     help='a model of the run: signal-1h=\'{"timeframe": "1h", "artifact": "signal-1h:3"}\' (repeatable)')
    ask.add_argument("--set", action="append", default=[], metavar="KEY=V", dest="child_overrides", help="an override of the child run (repeatable)")
    ask.add_argument("--run-id", help="the run's id (default: derived from the request)")
    ask.add_argument("--reason", help="why (recorded with the run)")
    ask.add_argument("--service", default="backtesting-engine", help="the service asked (default: backtesting-engine)")
    ask.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply (the bars are read before it)")
    ask.add_argument("--json", action="store_true", help="print the reply as JSON")
    from nodes.backtest import walkforward

    walk = verbs.add_parser("walkforward", help="train on rolling windows, backtest each checkpoint pinned on the window after it, chain the folds")
    walkforward.add_arguments(walk)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    parsed = _parser().parse(args_in)
    if isinstance(parsed, int):
        return parsed
    args, overrides = parsed
    overrides = [o for o in overrides if not o.startswith("topology=")]
    if args.verb == "run":
        return _run(overrides)
    if args.verb == "sweep":
        return _sweep(args.param, overrides, args.jobs, args.out)
    if args.verb == "request":
        return _request(args, overrides)
    if args.verb == "walkforward":
        from nodes.backtest import walkforward

        return walkforward.run(args, overrides)
    return _show(Path(args.dir))


# ---------------------------------------------------------------------------------- run


def default_dir(overrides: Sequence[str]) -> Path:
    """``.fxrun-backtests/bt-<12 hex of the configuration hash>`` (the data directory does not enter the hash)."""
    from framework.confighash import config_hash
    from framework.topology.load import load_run

    placeholder = DEFAULT_ROOT / "pending"
    loaded = load_run([PROFILE, f"data_dir={placeholder}", *overrides])
    pairs = loaded.config.pairs or list(loaded.topology.instruments)
    return DEFAULT_ROOT / f"bt-{config_hash(loaded.topology, pairs, placeholder)[:12]}"


def results_in(data_dir: Path) -> list[dict[str, Any]]:
    """The finished runs' results in ``data_dir``; a result.json that is not one is an error naming the file."""
    out = []
    for path in sorted((data_dir / "backtests").glob("*/result.json")):
        try:
            result = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as exc:
            raise UserError(f"{path}: not a backtest result ({exc}); delete its directory and run the backtest again") from None
        if not isinstance(result, dict) or not isinstance(result.get("run_id"), str):
            raise UserError(f"{path}: not a backtest result (no run_id); delete its directory and run the backtest again")
        out.append(result)
    return out


def _run(overrides: list[str]) -> int:
    from framework.cli import main as fxrun

    if not any(o.split("=", 1)[0].lstrip("+") == "data_dir" for o in overrides):
        data_dir = default_dir(overrides)
        if results_in(data_dir):
            print(f"this configuration ran before, in {data_dir} (a backtest is deterministic: same result):")
            return _show(data_dir)
        if data_dir.exists():  # a run of this configuration that never finished (interrupted, failed): this command's own
            print(f"{data_dir} holds a run of this configuration that did not finish: starting it again", file=sys.stderr)
            shutil.rmtree(data_dir)
        overrides = [*overrides, f"data_dir={data_dir}"]
    else:
        data_dir = Path(next(o for o in overrides if o.split("=", 1)[0].lstrip("+") == "data_dir").split("=", 1)[1])
    code = fxrun([PROFILE, *overrides])
    if code != EXIT_OK:
        return code
    return _show(data_dir)


def _show(data_dir: Path) -> int:
    results = results_in(data_dir)
    if not results:
        print(f"fxrun backtest: no finished backtest in {data_dir} (no backtests/*/result.json)", file=sys.stderr)
        return EXIT_FAILED
    for result in results:
        details = result.get("details") or {}
        print(f"backtest {result['run_id']} (config {str(details.get('config_hash', ''))[:16]})")
        for name, value in result.get("metrics", {}).items():
            print(f"  {name:28s} {_fmt(value)}")
        if details.get("models"):
            print(f"  models: {', '.join(f'{m} ({n} orders filled)' for m, n in details['models'].items())}")
        if details.get("report"):
            print(f"  report: {(data_dir / details['report']).resolve()}")
    return EXIT_OK


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    return f"{value:,.6g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------- sweep


def split_values(text: str) -> list[str]:
    """``a,b,[c,d]`` → ``["a", "b", "[c,d]"]``: commas inside brackets, braces or quotes do not split."""
    out, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(text[start:i])
            start = i + 1
    out.append(text[start:])
    return [v.strip() for v in out]


def grid(params: Sequence[str]) -> list[list[str]]:
    """Every combination of the ``KEY=V1,V2`` params, as override lists, in order."""
    axes = []
    for param in params:
        key, sep, values = param.partition("=")
        if not sep or not key or not values:
            raise UserError(f"--param {param!r}: give KEY=V1,V2")
        axes.append([f"{key}={v}" for v in split_values(values)])
    return [list(combo) for combo in itertools.product(*axes)] if axes else [[]]


class Checker:
    """The lint errors of a composed run: what ``fxrun topology=backtest`` refuses to start (a param of the wrong type,
    a window whose end is not after its start, a timeframe the topology lacks), found before a sweep or a walk-forward
    starts its processes, which would otherwise each fail alone, the reason only in their logs. The node registry and
    the contracts are loaded once for every combination."""

    def __init__(self) -> None:
        self._common: tuple[Any, Any] | None = None

    def errors(self, loaded: Any) -> list[str]:
        """One line per error, each naming the service, the field and where it was written."""
        from framework.contracts import ContractRegistry
        from framework.lint import lint
        from framework.lint.findings import format_finding
        from framework.registry import Registry

        if self._common is None:
            self._common = Registry.discover(), ContractRegistry.load(loaded.project / "contracts")
        registry, contracts = self._common
        findings = lint(loaded.topology, loaded.source, registry, contracts, pairs=loaded.config.pairs)
        return [format_finding(f) for f in findings if f.level == "error"]


def _sweep(params: Sequence[str], overrides: list[str], jobs: int, out: str | None) -> int:
    if any(o.split("=", 1)[0].lstrip("+") == "data_dir" for o in [*overrides, *params]):
        raise UserError("a sweep gives each run its own data_dir (under --out); leave data_dir= out")
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: at least 1 run at a time")
    combos = grid(params)
    from framework.topology.load import load_run

    checker = Checker()
    for combo in combos:  # every combination composes (a misspelt key) and lints (a bad value) before any process starts
        problems = checker.errors(load_run([PROFILE, *overrides, *combo]))
        if problems:
            raise UserError("\n".join([f"--param combination {' '.join(combo) or '(none)'}: nothing was started", *problems]))
    root = Path(out) if out else DEFAULT_ROOT / time.strftime("sweep-%Y%m%d-%H%M%S")
    if root.exists() and any(root.iterdir()):
        raise UserError(f"--out {root} is not empty: a sweep starts in a directory of its own")
    root.mkdir(parents=True, exist_ok=True)
    print(f"sweep of {len(combos)} run(s), {jobs} at a time, under {root}")
    pending = list(enumerate(combos))
    running: list[tuple[int, list[str], subprocess.Popen[bytes], Any]] = []
    codes: dict[int, int] = {}
    try:
        _sweep_loop(root, jobs, overrides, pending, running, codes)
    finally:  # interrupted (Ctrl-C, SIGTERM): the runs stop with it, none is left behind
        for _, _, process, log in running:
            if process.poll() is None:
                process.terminate()
        for _, _, process, log in running:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.close()
    return _sweep_report(root, combos, codes)


def _sweep_loop(root: Path, jobs: int, overrides: list[str], pending: list[tuple[int, list[str]]],
                running: list[tuple[int, list[str], subprocess.Popen[bytes], Any]], codes: dict[int, int]) -> None:  # fmt: skip
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _terminated)
    try:
        _run_pending(root, jobs, overrides, pending, running, codes)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _run_pending(root: Path, jobs: int, overrides: list[str], pending: list[tuple[int, list[str]]],
                 running: list[tuple[int, list[str], subprocess.Popen[bytes], Any]], codes: dict[int, int]) -> None:  # fmt: skip
    while pending or running:
        while pending and len(running) < jobs:
            index, combo = pending.pop(0)
            data_dir = root / f"{index:03d}"
            data_dir.mkdir(parents=True, exist_ok=True)
            log = open(data_dir / "fxrun.out", "wb")
            command = [sys.executable, "-m", "framework.cli", PROFILE, *overrides, *combo, f"data_dir={data_dir}"]
            running.append((index, combo, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(0.2)
        for item in list(running):
            index, combo, process, log = item
            if process.poll() is not None:
                log.close()
                codes[index] = process.returncode
                running.remove(item)
                if process.returncode:
                    state = f"FAILED (exit {process.returncode}, see {root / f'{index:03d}' / 'fxrun.out'})"
                else:  # a run stopped by a signal stops gracefully, exit 0, without reaching its end
                    state = "done" if _finished(root / f"{index:03d}") else "INTERRUPTED (stopped before its end: no result)"
                print(f"  [{index:03d}] {' '.join(combo) or '(the profile as it is)'}: {state}", flush=True)


def _finished(data_dir: Path) -> bool:
    try:
        return bool(results_in(data_dir))
    except UserError:
        return False


def _sweep_report(root: Path, combos: list[list[str]], codes: dict[int, int]) -> int:
    rows = []
    for index, combo in enumerate(combos):
        results = results_in(root / f"{index:03d}")
        result = results[0] if results else None
        rows.append({"index": index, "overrides": combo, "exit": codes.get(index), "run_id": result and result["run_id"],
                     "metrics": result and result["metrics"], "details": result and result["details"]})  # fmt: skip
    (root / "sweep.json").write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))
    print(f"{'run':5s} {'run id':18s} " + " ".join(f"{h:>14s}" for h in HEADLINE) + "  overrides")
    for row in rows:
        metrics = row["metrics"] or {}
        figures = " ".join(f"{_fmt(metrics.get(h)):>14s}" for h in HEADLINE)
        print(f"{row['index']:03d}   {row['run_id'] or '(failed)':18s} {figures}  {' '.join(row['overrides'])}")
    print(f"results: {root / 'sweep.json'}")
    return EXIT_OK if all(row["exit"] == 0 and row["run_id"] for row in rows) else EXIT_FAILED


# ---------------------------------------------------------------------------------- request


def _request(args: argparse.Namespace, overrides: Sequence[str]) -> int:
    """One request to a running backtesting-engine: the reply (accepted with its run id, or refused and why)."""
    import asyncio

    from framework.control import Unreachable, request
    from framework.control import subject as control_subject
    from framework.params import utc_ms
    from framework.topology.load import load_run

    if not (math.isfinite(args.timeout) and args.timeout > 0):
        raise UserError(f"--timeout {args.timeout}: a positive number of seconds", file="<command line>")
    message: dict[str, Any] = {"ts": int(time.time() * 1000)}
    if args.lookback:
        message["lookback"] = args.lookback
    else:
        if not args.end:
            raise UserError("--start needs --end (or give --lookback)", file="<command line>")
        try:
            message["start"], message["end"] = utc_ms(args.start), utc_ms(args.end)
        except ValueError as exc:
            raise UserError(f"--start/--end: {exc}", file="<command line>") from None
    if args.symbol:
        message["symbols"] = args.symbol
    if args.timeframe:
        message["timeframes"] = args.timeframe
    if args.model:
        models: dict[str, Any] = {}
        for item in args.model:
            name, sep, text = item.partition("=")
            try:
                value = orjson.loads(text) if sep else None
            except orjson.JSONDecodeError as exc:
                raise UserError(f"--model {item}: not NAME=JSON ({exc})", file="<command line>") from None
            if not name or not isinstance(value, dict):
                raise UserError(f'--model {item}: expected NAME={{"timeframe": …}}', file="<command line>")
            models[name] = value
        message["models"] = models
    if args.child_overrides:
        message["overrides"] = list(args.child_overrides)
    for key, value in (("run_id", args.run_id), ("reason", args.reason)):
        if value:
            message[key] = value
    loaded = load_run(["topology=live", *overrides])
    topology = loaded.topology
    if args.service not in topology.services:
        raise UserError(f"--service {args.service!r} is not a service of this topology", file="<command line>")
    binding = topology.services[args.service].inputs.get("requests")
    where = getattr(binding, "nats", None) if binding is not None else None
    where = where if isinstance(where, str) else control_subject(args.service)
    try:
        reply = asyncio.run(request(topology, where, message, timeout=args.timeout))
    except Unreachable as exc:
        print(f"fxrun backtest: no backtesting engine answered on {where} ({exc}); is {args.service} running?", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(orjson.dumps(reply, option=orjson.OPT_SORT_KEYS).decode())
    elif reply.get("accepted"):
        print(f"{args.service}: accepted {reply.get('run_id')} ({reply.get('state')}); follow backtest.*.{reply.get('run_id')}, "
              "results in backtest_results")  # fmt: skip
    else:
        print(f"{args.service}: refused: {reply.get('reason')}")
    return EXIT_OK if reply.get("accepted") else EXIT_FAILED
