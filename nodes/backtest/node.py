"""The backtesting engine: history in, the live trading nodes in between, a report out.

The engine makes no decision of its own. It replays bars (:mod:`nodes.backtest.tape`) on
``bars.{symbol}.{timeframe}`` in event-time order, each instant's bars once the simulated
clock reads their close, so the very services of ``topology=live`` (features, inference, the
risk gate, execution, the paper broker, performance-monitoring) see what they would have seen
live, one close at a time. On the simulation driver a publish returns once everything it set
off downstream is handled, so after the last bar the run is drained: the engine then asks
performance-monitoring for its report (``performance.query``), writes ``backtest_results``
and the HTML report, and says ``backtest.completed.<run_id>``.

- **Run id and config hash**: the hash is the runtime's (``ctx.config_hash``: the resolved
  topology and pairs as canonical JSON, the data directory left out), so a result names the
  configuration that reproduces it; the run id is ``params.run_id`` or ``bt-<12 hex of it>``.
- **Status**: ``started`` (with the bar count), ``progress`` every ``progress_every`` of the
  bars, then ``completed`` with the report's metrics or ``failed`` with the reason.
- **Bad input** is refused at start, in one line, before any bar moves: a timeframe outside
  the topology's, or no bar of the run's symbols in the window (the line says where it looked
  and how to get history).
- **Models**: the ids of the models whose orders were filled go into the results' details,
  beside the params and the hash. They come from ``orders.filled.*`` (a signal id is
  ``<model_id>-<symbol>-<timeframe>-<ts>``, see nodes/inference): the engine never reads a raw
  signal, so nothing it publishes can be mistaken for a path around the risk gate (lint FX501).
- **One run per data directory**: every service keeps its state there (at stop, and periodically)
  and takes it back at the next start, so a second backtest in the same directory would start from
  the first one's positions and balance. A run marks the directory (``backtests/<run_id>/``, made
  before the first bar, so a killed run marks it too): a rerun there is refused.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from framework.errors import UserError
from framework.node import Node, handles
from nodes.backtest import report as html
from nodes.backtest import tape as tapes
from nodes.backtest.spec import BacktesterParams
from nodes.backtest.status import number, status_message

SLICE = 20_000
"""Bars in one timed chunk at most (features and inference compute a chunk ahead; a million dicts would hold gigabytes)."""


def slabs(closes: np.ndarray, size: int, step: int) -> list[tuple[int, int]]:
    """``(lo, hi)`` runs of the tape to publish as one timed chunk each: whole instants (the bars closing at one
    time go together), at most ``size`` bars unless one instant holds more, cut where a progress status is due
    (at the first instant from each multiple of ``step`` bars on), as a bar-by-bar replay would publish it."""
    total = len(closes)
    if not total:
        return []
    starts = np.r_[0, np.flatnonzero(closes[1:] != closes[:-1]) + 1, total]
    marks = np.unique(starts[np.searchsorted(starts, np.arange(step, total, step))])
    out = []
    lo = 0
    while lo < total:
        mark = marks[np.searchsorted(marks, lo, side="right")] if len(marks) and marks[-1] > lo else total
        target = min(lo + size, int(mark))
        j = int(np.searchsorted(starts, target, side="right")) - 1
        hi = int(starts[j]) if starts[j] > lo else int(starts[np.searchsorted(starts, lo, side="right")])
        out.append((lo, hi))
        lo = hi
    return out



def replay_order(pairs: Sequence[str]) -> list[str]:
    """The symbols in the order an instant's bars go out: sorted, not as ``pairs=`` lists them. The config hash takes the
    pairs as a set, and the bars of one instant reach the risk gate in this order (with a limit on open positions or
    exposure, the first symbol's signal takes the room), so the order must not be a free choice of the command line:
    one hash, one result."""
    return sorted(dict.fromkeys(pairs))


def model_of(signal_id: str, symbol: str) -> str:
    """The model id in an inference signal id (``<model_id>-<symbol>-<timeframe>-<ts>``); the id itself otherwise."""
    head, sep, rest = signal_id.rpartition(f"-{symbol}-")
    return head if sep and head and rest.count("-") == 1 else signal_id


class Backtester(Node[BacktesterParams]):
    async def on_start(self) -> None:
        p = self.params
        ctx = self.ctx
        runs = Path(ctx.data_dir).parents[1] / "backtests"
        before = sorted(d.name for d in runs.iterdir()) if runs.is_dir() else []
        if before:
            raise UserError(f"{runs.parent} holds backtest {', '.join(before)} already, and every service has taken back its state "
                            "from it (positions, balance): give each backtest a data_dir of its own")  # fmt: skip
        self.symbols = replay_order(ctx.pairs)
        unknown = [tf for tf in p.timeframes or () if tf not in ctx.timeframes]
        if unknown:
            raise UserError(f"timeframe {unknown[0]} is not one of the topology's ({', '.join(ctx.timeframes)})",
                            path=f"services.{ctx.service}.params.timeframes")  # fmt: skip
        self.timeframes = tapes.ordered_timeframes(p.timeframes or ctx.timeframes)
        self.config_hash: str = getattr(ctx, "config_hash", None) or ""
        self.run_id = p.run_id or f"bt-{self.config_hash[:12] or 'run'}"
        self.models: Counter[str] = Counter()
        self.external: list[dict[str, Any]] = []
        self.tape = await self._load()
        if not len(self.tape):
            reason = await self._no_bars()
            await self._status("failed", p.start_ms, message=reason)
            raise UserError(f"backtest {self.run_id}: {reason}", path=f"services.{ctx.service}.params")
        self.folder.mkdir(parents=True)
        if p.artifacts:
            await self._install(self._path(p.artifacts))
        counts = self.tape.counts()
        ctx.log.info("backtest %s: %d bars of %d streams, %s .. %s, config %s", self.run_id, len(self.tape), len(counts), p.start, p.end,
                     self.config_hash[:16])  # fmt: skip

    async def _load(self) -> tapes.Tape:
        p = self.params
        if p.source == "synthetic":
            return await self.ctx.offload(tapes.synthetic, self.symbols, self.timeframes, p.start_ms, p.end_ms, p.seed)
        if p.source == "file":
            tape, self.external = await self.ctx.offload(tapes.read_file, self._path(p.file or ""), self.symbols, self.timeframes,
                                                         p.start_ms, p.end_ms)  # fmt: skip
            return tape
        table = self._table()
        frame = await table.query_frame(
            tapes.TABLE_SQL, {"symbols": self.symbols, "timeframes": self.timeframes, "start": p.start_ms, "end": p.end_ms}
        )
        return tapes.from_frame(frame, self.symbols, self.timeframes)

    def _path(self, name: str) -> Path:
        return Path(self.ctx.data_dir).parents[1] / name

    async def _install(self, manifest: Path) -> None:
        """Store (and tag) the artifacts ``manifest`` lists, before the first bar: a runner's pinned models."""
        for item in orjson.loads(manifest.read_bytes()):
            ref = await self.ctx.artifacts.put(item["name"], manifest.parent / item["file"], kind=item["kind"], metadata=item.get("metadata"))
            if item.get("tag"):
                await self.ctx.artifacts.tag(ref, item["tag"], metadata=item.get("tag_metadata"))

    def _table(self) -> Any:
        try:
            return self.ctx.table(self.params.table)
        except KeyError:
            raise UserError(f"table {self.params.table} is not declared for {self.ctx.service} (add it to its reads)",
                            path=f"services.{self.ctx.service}.reads") from None  # fmt: skip

    async def _no_bars(self) -> str:
        p = self.params
        what = f"no bars of {','.join(self.symbols)} {','.join(self.timeframes)} between {p.start} and {p.end}"
        if p.source == "synthetic":
            return f"{what}: the window holds no trading minute (the FX weekend?)"
        table = self._table()
        store = f"{getattr(table.store, 'name', '?')} ({getattr(table.store, 'safe_url', '?')})"  # the URL without a password
        held = ""
        try:
            rows = await table.query(tapes.COUNT_SQL)
            if rows:
                first, last = min(r["first"] for r in rows), max(r["last"] for r in rows)
                held = f" (it holds {sum(r['n'] for r in rows)} bars from {html.iso(first)} to {html.iso(last)})"
            else:
                held = " (it is empty)"
        except Exception:  # the count is only a hint
            pass
        return (f"{what} in table {p.table} of store {store}{held}; download history with `fxrun topology=live "
                f"only=[polygon-historical-downloader] topology.services.polygon-historical-downloader.params.run=once "
                f"data_dir=<this data_dir>`, or replay seeded bars with topology.services.{self.ctx.service}.params.source=synthetic")  # fmt: skip

    # ------------------------------------------------------------------ the replay

    @handles("fills")
    async def on_fill(self, order: dict[str, Any]) -> None:
        signal_id, symbol = order.get("signal_id"), order.get("symbol")
        if isinstance(signal_id, str) and isinstance(symbol, str):
            self.models[model_of(signal_id, symbol)] += 1

    async def run(self) -> None:
        p = self.params
        tape = self.tape
        total = len(tape)
        step = max(1, int(total * p.progress_every))
        next_progress = step
        done = 0
        try:
            started = False
            for lo, hi in slabs(tape.ts_close, SLICE, step):
                close = int(tape.ts_close[lo])
                await self.ctx.clock.wait_until(close)
                if not started:
                    started = True
                    await self._status("started", close, message=f"{total} bars, {self._window()}")
                    if self.external:  # the calendar and FRED as known at the start (features use them from their release)
                        await self.ctx.publish_many("external", self.external)
                if done >= next_progress:
                    await self._status("progress", close, progress=done / total)
                    next_progress += step
                await self.ctx.publish_batch("bars", tape.chunk(lo, hi))  # timed: each bar reaches the stateful nodes at its close
                done = hi
            await self._finish(total)
        except Exception as exc:  # a crash must not restart the source (it would replay from the start): failed, and stop
            self.ctx.log.error("backtest %s failed after %d of %d bars: %s: %s", self.run_id, done, total, type(exc).__name__, exc,
                               exc_info=exc)  # fmt: skip
            await self._status("failed", self.ctx.clock.now_ms(), progress=done / total if total else 0.0,
                               message=f"{type(exc).__name__}: {exc}")  # fmt: skip
            self.ctx.fail(f"backtest {self.run_id} failed after {done} of {total} bars: {type(exc).__name__}: {exc}")

    def _window(self) -> str:
        return f"{self.params.start}..{self.params.end} {','.join(self.symbols)} {','.join(self.timeframes)}"

    async def _status(self, status: str, ts: int, *, progress: float | None = None, metrics: dict[str, Any] | None = None,
                      message: str | None = None) -> None:  # fmt: skip
        out = status_message(self.run_id, ts, status, progress=progress, metrics=metrics, message=message)
        await self.ctx.publish("status", out)
        if self.params.status_file:
            with open(self._path(self.params.status_file), "ab") as file:
                file.write(orjson.dumps(out) + b"\n")

    # ------------------------------------------------------------------ the end

    @property
    def folder(self) -> Path:
        """``<data_dir>/backtests/<run_id>``: the report, ``result.json`` and ``report.json`` (performance-monitoring's
        report as received: the curve and the round trips) (a service's own directory is
        ``<data_dir>/services/<name>``)."""
        return Path(self.ctx.data_dir).parents[1] / "backtests" / self.run_id

    async def _finish(self, bars: int) -> None:
        now = self.ctx.clock.now_ms()
        report = await self._report(now)
        metrics: dict[str, Any] = dict(report.get("metrics") or {}) if report else {}
        metrics["bars"] = bars
        details = self._details(report)
        path = None
        if self.params.report:
            path = await self._write_report(report, details)
            details["report"] = f"backtests/{self.run_id}/report.html"  # under the data_dir: the same in every directory
        await self._results(now, metrics, details)
        self.folder.mkdir(parents=True, exist_ok=True)
        result = {"run_id": self.run_id, "ts": now, "metrics": {k: number(v) for k, v in sorted(metrics.items())}, "details": details}
        partial = self.folder / "result.json.partial"  # written whole, then renamed: a kill never leaves half a result
        partial.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        os.replace(partial, self.folder / "result.json")
        if report is not None:  # the curve and the round trips themselves: what a walk-forward chains
            (self.folder / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_SORT_KEYS))
        message = self._window() if report else f"{self._window()}; no performance report: {self._no_report}"
        await self._status("completed", now, progress=1.0, metrics=metrics, message=message)
        if path is not None:
            self.ctx.log.info("backtest %s: report %s", self.run_id, path)

    _no_report = ""

    async def _report(self, now: int) -> dict[str, Any] | None:
        """performance-monitoring's report, or None (why in ``_no_report``, logged)."""
        query = {"query": "report", "ts": now, "curve_points": self.params.curve_points}
        try:
            reply = await self.ctx.request("performance", query, timeout=self.params.report_timeout)
        except Exception as exc:  # no port, nobody answering, a timeout: the run stands, without figures
            self._no_report = f"{type(exc).__name__}: {exc}"
            self.ctx.log.warning("backtest %s: no performance report (%s); is performance-monitoring enabled?", self.run_id, self._no_report)
            return None
        if not isinstance(reply, dict) or not isinstance(reply.get("metrics"), dict):
            self._no_report = f"the reply is not a performance_report.v1 ({type(reply).__name__})"
            self.ctx.log.warning("backtest %s: %s", self.run_id, self._no_report)
            return None
        return reply

    def _details(self, report: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "config_hash": self.config_hash,
            "params": self.params.model_dump(mode="json"),
            "symbols": self.symbols,
            "timeframes": self.timeframes,
            "models": dict(sorted(self.models.items())),  # model id -> filled orders
            "currency": report.get("currency") if report else None,
            "trades": len(report.get("trades") or []) if report else None,
            **({"annotations": dict(sorted(self.params.annotations.items()))} if self.params.annotations else {}),
        }

    async def _results(self, now: int, metrics: dict[str, Any], details: dict[str, Any]) -> None:
        for name, value in sorted(metrics.items()):
            figure = number(value)
            if figure is None:
                continue
            await self.ctx.publish("results", {"run_id": self.run_id, "ts": now, "metric": name, "value": figure, "details": details})
        await self.ctx.flush("results")

    async def _write_report(self, report: dict[str, Any] | None, details: dict[str, Any]) -> Path:
        path = self.folder / "report.html"
        prices = {symbol: self.tape.stream(symbol, self.timeframes[0]) for symbol in self.symbols}
        page = html.render(self.run_id, report, prices, details, price_points=self.params.price_points)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(page, encoding="utf-8")
        if self.ctx.artifacts is not None:
            ref = await self.ctx.artifacts.put(f"backtest-{self.run_id}", page.encode(), kind="backtest_report",
                                               metadata={"run_id": self.run_id, "config_hash": self.config_hash})  # fmt: skip
            details["artifact"] = str(ref)
        return path
