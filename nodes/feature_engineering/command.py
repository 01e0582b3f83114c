"""``fxrun check lookahead | recursive``: the declared feature set against look-ahead and history dependence.

    fxrun check lookahead [topology=live] [data_dir=DIR] [--bars N] [--cuts K] [--seed S] [--symbols A,B] [--plant NAME]
    fxrun check recursive [topology=live] [data_dir=DIR] [--bars N] [--factor F] [--tolerance T] [--plant NAME]

The feature set is the ``feature_set`` param of the profile's feature-engineering service
(``--service`` picks another). The history is deterministic synthetic bars of every timeframe
with a synthetic calendar and FRED, each datum with its true release time, so the look-ahead
check also catches a publication lag declared shorter than the real one; with ``data_dir=`` it
is the stored bars and external data of that run's embedded ClickHouse (their release times
are unknown there: the declared lags stand in). ``--plant`` adds a canary feature
(next_bar, window_mean, cumulative) that must make a check fail.

Exit 0 when the set passes, 1 with one line per offending feature, 2 on a usage mistake.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from framework.command_parser import CommandParser
from framework.errors import UserError

EXIT_OK, EXIT_FINDINGS, EXIT_USAGE = 0, 1, 2
NODE = "feature_engineering"
DEFAULT_SYMBOLS = ("EURUSD", "USDJPY", "XAUUSD")



def _parser() -> CommandParser:
    parser = CommandParser(
        prog="fxrun check", description="checks of the declared feature set",
        epilog="key=value words anywhere are topology overrides (topology=live, data_dir=DIR, ++topology.services...=...)",
    )  # fmt: skip
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=CommandParser)
    for verb, text in (("lookahead", "recompute on history cut at random instants: no earlier value may change"),
                       ("recursive", "recompute with more history before the warm-up: no value may move")):  # fmt: skip
        sub = verbs.add_parser(verb, help=text)
        sub.add_argument("--service", help="the feature-engineering service whose feature_set is checked (default: the first)")
        sub.add_argument("--bars", type=int, default=None, help="synthetic bars per (symbol, timeframe) (default: enough for the set)")
        sub.add_argument("--seed", type=int, default=7, help="seed of the synthetic history and of the cut instants")
        sub.add_argument("--symbols", default=",".join(DEFAULT_SYMBOLS), help="synthetic instruments (default: EURUSD,USDJPY,XAUUSD)")
        sub.add_argument("--plant", action="append", default=[], metavar="NAME", help="add a canary feature: next_bar, window_mean, cumulative")
        if verb == "lookahead":
            sub.add_argument("--cuts", type=int, default=14, help="random instants the history is cut at, each just after a row of a stream taken in turn (default 14)")
        else:
            sub.add_argument("--factor", type=int, default=3, help="the longer history is factor x W (default 3)")
            sub.add_argument("--tolerance", type=float, default=1e-9, help="largest difference allowed (absolute; relative above 1)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parsed = _parser().parse(list(sys.argv[1:] if argv is None else argv))
    if isinstance(parsed, int):
        return parsed
    args, args.overrides = parsed
    try:
        return _run(args)
    except UserError as exc:
        print(f"fxrun check: {str(exc).splitlines()[0]}", file=sys.stderr)
        return EXIT_FINDINGS


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def _feature_set(loaded: Any, service: str | None) -> tuple[str, Any, list[str]]:
    from nodes.feature_engineering.spec import FeatureEngineeringParams

    topology = loaded.topology
    names = [n for n, s in topology.services.items() if s.node == NODE]
    if service is None:
        if not names:
            raise UserError(f"topology={loaded.profile} has no service with node {NODE}")
        service = names[0]
    elif service not in names:
        raise UserError(f"--service {service}: not a {NODE} service of topology={loaded.profile} ({', '.join(names) or 'none'})")
    raw = topology.services[service].params
    try:
        params = FeatureEngineeringParams.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        where = loaded.source.find(("topology", "services", service, "params", *loc)) or loaded.source.find(("services", service, "params", *loc))
        message = str(err["msg"]).removeprefix("Value error, ")
        raise UserError(f"{where or loaded.profile}: services.{service}.params.{'.'.join(loc)}: {message}") from None
    return service, params, list(params.timeframes or topology.timeframes)


def _run(args: argparse.Namespace) -> int:
    from framework.topology.load import load_run
    from nodes.features.checks import PLANTED, cut_times, lookahead, recursive
    from nodes.features.featureset import FeatureSetError, ResolvedFeatureSet

    unknown = [p for p in args.plant if p not in PLANTED]
    if unknown:
        print(f"fxrun check: --plant {unknown[0]}: not a canary ({', '.join(PLANTED)})", file=sys.stderr)
        return EXIT_USAGE
    loaded = load_run(args.overrides)
    service, params, timeframes = _feature_set(loaded, args.service)
    extra = {f"planted_{p}": PLANTED[p] for p in args.plant}
    try:
        fs = ResolvedFeatureSet(params.feature_set, loaded.topology.instruments, timeframes, extra=extra)
    except FeatureSetError as exc:
        raise UserError(f"services.{service}.params.feature_set.{exc}") from None
    data_dir = next((o.split("=", 1)[1] for o in args.overrides if o.lstrip("+").startswith("data_dir=")), None)
    started = time.perf_counter()
    factor = getattr(args, "factor", 1)
    history_at, source = _history(fs, params, args, data_dir, factor)
    head = f"{args.verb}: feature set {fs.version} of {service} (topology={loaded.profile}), {len(fs.names(timeframes[0]))} features, {source}"
    if args.verb == "lookahead":
        cuts = cut_times(history_at(None), args.cuts, args.seed, fs)
        findings, compared = lookahead(fs, history_at, cuts)
        for f in findings:
            print(
                f"lookahead: {f.feature} ({f.stream[0]} {f.stream[1]}): the row at {_when(f.ts)} changed when the history was cut at "
                f"{_when(f.cut)} ({f.before!r} with the whole history, {f.after!r} without what followed); {f.rows} row(s) in all"
            )
        tail = f"{compared} published rows compared at {len(cuts)} cuts"
    else:
        findings, compared = recursive(fs, history_at(None), factor=args.factor, tolerance=args.tolerance)
        for f in findings:
            print(
                f"recursive: {f.feature} ({f.stream[0]} {f.stream[1]}): {f.before!r} with W={fs.history} bars of history, {f.after!r} with "
                f"{args.factor * fs.history} (row at {_when(f.ts)}); {f.rows} row(s) beyond tolerance {args.tolerance:g}"
            )
        tail = f"{compared} published rows compared, W={fs.history} against {args.factor * fs.history}"
    if not compared:
        print(f"{head}: no row of the set is defined on this history (warm-up longer than it, or an input missing): nothing was checked")
        return EXIT_FINDINGS
    verdict = f"{len(findings)} feature(s) failed" if findings else "passed"
    print(f"{head}: {tail}: {verdict} ({time.perf_counter() - started:.1f}s)")
    return EXIT_FINDINGS if findings else EXIT_OK


def _history(fs: Any, params: Any, args: argparse.Namespace, data_dir: str | None, factor: int) -> tuple[Any, str]:
    groups = params.feature_set.groups
    if data_dir is not None:
        return _stored(fs, params, Path(data_dir))
    from nodes.features.synthetic import SyntheticWorld

    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    unknown = [s for s in symbols if s not in fs.instruments]
    if unknown:
        raise UserError(f"--symbols: {unknown[0]} is not an instrument of the topology")
    for needed in [fs.gold] if fs.gold else []:
        if needed not in symbols:
            symbols.append(needed)
    bars = args.bars or max(1000, factor * fs.history + 2 * fs.block + 64)
    fred = list(groups.macro.series) if groups.macro is not None else []
    world = SyntheticWorld(symbols, fs.timeframes, bars, seed=args.seed, fred_series=fred, with_calendar=groups.events is not None)
    return (lambda at: world.history(groups.events, groups.macro, at)), (
        f"synthetic history of {len(symbols)} instruments x {len(fs.timeframes)} timeframes x {bars} bars (seed {args.seed})"
    )


def _stored(fs: Any, params: Any, data_dir: Path) -> tuple[Any, str]:
    from framework.testing import query, query_df
    from nodes.features.bars import Bars
    from nodes.features.synthetic import stored_history

    if not (data_dir / "clickhouse").exists():
        raise UserError(f"data_dir={data_dir}: no embedded ClickHouse there (run the demo or a backtest with this data_dir first)")
    groups = params.feature_set.groups

    async def read() -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]]]:
        frame = await query_df(data_dir, f"SELECT * FROM {params.bars_table} FINAL ORDER BY symbol, timeframe, ts")
        calendar = await query(data_dir, f"SELECT * FROM {params.calendar_table} FINAL") if groups.events is not None and params.calendar_table else []
        fred = await query(data_dir, f"SELECT * FROM {params.fred_table} FINAL") if groups.macro is not None and params.fred_table else []
        return frame, calendar, fred

    try:
        frame, calendar, fred = asyncio.run(read())
    except Exception as exc:
        raise UserError(f"data_dir={data_dir}: cannot read the stored history: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    bars: dict[tuple[str, str], Bars] = {}
    for (symbol, timeframe), group in frame.groupby(["symbol", "timeframe"], sort=True):
        if timeframe in fs.timeframes and symbol in fs.instruments:
            b = Bars.from_columns(group)
            bars[(str(symbol), str(timeframe))] = b.take(b.sane().nonzero()[0])
    if not bars:
        raise UserError(f"data_dir={data_dir}: {params.bars_table} holds no bars of the set's timeframes")
    return (lambda at: stored_history(bars, calendar, fred, groups.events, groups.macro, at)), (
        f"stored history of {data_dir} ({sum(len(b) for b in bars.values())} bars; declared lags stand in for release times)"
    )
