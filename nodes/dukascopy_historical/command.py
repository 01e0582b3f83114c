"""``fxrun bi5 decode FILE [--symbol EURUSD] [--hour 2019-02-04T07] [--out CSV]``: a .bi5 tick file as CSV.

The symbol and hour default to what the standard path says (``…/EURUSD/2019/01/04/07h_ticks.bi5``
is EURUSD, 2019-02-04 07:00 UTC: the month in the path is zero-based). Columns: ``time`` (ISO,
milliseconds, UTC), ``ts`` (epoch ms), ``bid``, ``ask``, ``bid_volume``, ``ask_volume``.
Bad records are skipped with one stderr line each (a file of bad records only is a header-only
CSV and one more line saying so, exit code 0); a file that cannot be decoded is one stderr line
and exit code 1; a usage mistake exits 2.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from framework.command_parser import CommandParser
from nodes.dukascopy_historical.bi5 import Bi5Error, Ticks, decode_ticks
from nodes.dukascopy_historical.hours import HOUR_MS, floor_hour, iso_hour, iso_ms, parse_utc_ms
from nodes.dukascopy_historical.instruments import UnknownInstrument, decimal_factor, price_digits
from nodes.dukascopy_historical.urls import parse_tick_path

EXIT_OK, EXIT_BAD_INPUT, EXIT_USAGE = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="fxrun bi5", description="Dukascopy .bi5 files")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=CommandParser)
    decode = verbs.add_parser("decode", help="decode an hourly tick file to CSV")
    decode.add_argument("file", help="a .bi5 tick file (…/EURUSD/2019/01/04/07h_ticks.bi5)")
    decode.add_argument("--symbol", help="instrument (default: from the path); sets the price factor")
    decode.add_argument("--hour", help="UTC hour the file holds, e.g. 2019-02-04T07 (default: from the path)")
    decode.add_argument("--factor", type=int, help="price = points / factor (default: the instrument's)")
    decode.add_argument("--out", help="CSV file to write (default: stdout)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return _decode(args)


def _fail(message: str, code: int) -> int:
    print(f"fxrun bi5: {message}", file=sys.stderr)
    return code


def _decode(args: argparse.Namespace) -> int:
    symbol, hour = (args.symbol.upper() if args.symbol else None), None
    if args.hour:
        try:
            hour = parse_utc_ms(args.hour)
        except ValueError as exc:
            return _fail(f"--hour: {exc}", EXIT_USAGE)
        if hour % HOUR_MS:
            return _fail(f"--hour {args.hour} is not the start of an hour (a tick file holds one whole UTC hour)", EXIT_USAGE)
    if symbol is None or hour is None:
        try:
            path_symbol, path_hour = parse_tick_path(args.file)
        except ValueError as exc:
            return _fail(f"{exc}: give --symbol and --hour", EXIT_USAGE)
        symbol, hour = symbol or path_symbol, path_hour if hour is None else hour
    try:
        factor = args.factor or decimal_factor(symbol)
    except UnknownInstrument as exc:
        return _fail(f"{exc} (or pass --factor)", EXIT_USAGE)
    if factor <= 0:
        return _fail("--factor must be positive", EXIT_USAGE)
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    try:
        ticks = decode_ticks(data, floor_hour(hour), factor)
    except Bi5Error as exc:
        return _fail(f"{args.file}: {exc.reason}", EXIT_BAD_INPUT)
    for record in ticks.bad:
        print(f"fxrun bi5: {args.file}: skipped {record.reason}", file=sys.stderr)
    if ticks.bad and not len(ticks):
        print(f"fxrun bi5: {args.file}: 0 good ticks, {len(ticks.bad)} bad: the CSV has only its header", file=sys.stderr)
    if not args.out:
        try:
            _write_csv(sys.stdout, ticks, price_digits(factor))
            sys.stdout.flush()
        except BrokenPipeError:  # `fxrun bi5 decode F | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    try:
        with open(args.out, "w", newline="") as out:
            _write_csv(out, ticks, price_digits(factor))
    except OSError as exc:
        return _fail(f"cannot write {args.out}: {exc.strerror or exc}", EXIT_BAD_INPUT)
    print(f"{len(ticks)} ticks of {symbol} {iso_hour(hour)} written to {args.out}", file=sys.stderr)
    return EXIT_OK


def _write_csv(out: TextIO, ticks: Ticks, digits: int) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", "ts", "bid", "ask", "bid_volume", "ask_volume"])
    price = f"{{:.{digits}f}}".format
    columns = (ticks.ts.tolist(), ticks.bid.tolist(), ticks.ask.tolist(), ticks.bid_volume.tolist(), ticks.ask_volume.tolist())
    for ts, bid, ask, bid_volume, ask_volume in zip(*columns):
        writer.writerow([iso_ms(ts), ts, price(bid), price(ask), repr(bid_volume), repr(ask_volume)])
