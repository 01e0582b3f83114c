"""The supervised training service: declared tree models, trained off the event loop, stored, promoted.

**When a model trains.** Feature rows arrive on the ``features`` input as the feature service
computes them (its backfill included); the service counts them per (symbol, timeframe), on top
of what ``ml_features`` held when it started. A model trains once each of its symbols has
``min_rows`` rows, then again whenever the newest row common to all its symbols has moved on
by ``retrain_every`` (event time) since the window of its last finished run, failed runs
included (a model whose data is bad is not retried on every row). History already in the table
counts at start (a ``check_every`` timer starts what is due), so a restarted service trains at
once if the data moved on while it was down; the last window per model is in its state.

**What it trains on.** The window ``[cut - window, cut)``, ``cut`` being the close of that
newest common bar: feature rows from ``ml_features`` and bars from ``historical_aggregates`` and
``live_aggregates``, plus the rows this service received on ``features`` and ``bars``, which win
over table rows of the same (symbol, ts). On simulated time the received rows of the whole
window are held, so the training set never depends on when a table writer flushed and a run
trains on the same rows every time; on a wall clock only the last ``hold_live``. Nothing after
``cut`` is used, labels included.

**How.** Each step runs in a worker process through ``ctx.background``: build the set, each
fold, the final fit. Between steps the node handles messages, publishes
``training.progress.<run_id>`` with the fold's metrics and writes them to ``training_metrics``.
At the end: the artifact named after the model (its card as metadata), a ``model_checkpoints``
row, the promotion decision (``model_promotions``, a log line, the ``@promoted`` tag), then
``training.completed`` saying what was decided. A run that cannot train is one log line and
``training.failed`` with the reason; the service goes on.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from framework.artifacts import ArtifactNotFound
from framework.durations import parse_ms
from framework.node import Node, every, handles
from framework.params import CANONICAL
from framework.timeframes import parse_timeframe
from nodes.ml import metrics as M
from nodes.ml import promotion
from nodes.ml.dataset import BAR_COLUMNS
from nodes.ml.model import ModelCard, ModelError
from nodes.supervised_training import worker
from nodes.supervised_training.spec import ModelParams, SupervisedTrainingParams

BAR_TABLES = ("historical_aggregates", "live_aggregates")
Key = tuple[str, str]


@dataclass
class _Run:
    """The run in progress: its job, then the steps' results as they come back."""

    model: ModelParams
    job: worker.Job
    prepared: worker.Prepared | None = None
    results: list[worker.FoldResult] = field(default_factory=list)

    @property
    def steps(self) -> int:
        return int(self.job.folds.get("n", 4)) + 1


class _Held:
    """Rows of one (symbol, timeframe) received since the service started, by ts (the latest wins), compactly."""

    __slots__ = ("rows", "added")

    def __init__(self) -> None:
        self.rows: dict[int, tuple[Any, ...]] = {}
        self.added = 0

    def put(self, ts: int, row: tuple[Any, ...]) -> bool:
        """Keep ``row``; True if ``ts`` is new."""
        new = ts not in self.rows
        self.rows[ts] = row
        self.added += 1
        return new

    def trim(self, oldest: int) -> None:
        if self.added % 1024 == 0:
            for ts in [t for t in self.rows if t < oldest]:
                del self.rows[ts]

    def between(self, start: int, end: int) -> list[tuple[int, tuple[Any, ...]]]:
        return sorted((ts, row) for ts, row in self.rows.items() if start <= ts < end)


class SupervisedTraining(Node[SupervisedTrainingParams]):
    state_version = 1

    def __init__(self, ctx: Any, params: SupervisedTrainingParams) -> None:
        super().__init__(ctx, params)
        self.attempted: dict[str, int] = {}
        """Model name → the cut of its last finished run (completed or failed)."""

    def snapshot(self) -> Any:
        return {"attempted": dict(sorted(self.attempted.items()))}

    def restore(self, state: Any) -> None:
        self.attempted = {str(k): int(v) for k, v in dict(state.get("attempted", {})).items()}

    async def on_start(self) -> None:
        self.models = self._models()
        self.keys: dict[Key, list[ModelParams]] = {}
        for model in self.models:
            for symbol in self._symbols(model):
                self.keys.setdefault((symbol, model.timeframe), []).append(model)
        hold_live = parse_ms(self.params.hold_live) or 0
        self.hold_ms = {
            key: max(parse_ms(m.window) or 0 for m in models) if self.ctx.clock.simulated else hold_live for key, models in self.keys.items()
        }
        self.features: dict[Key, _Held] = {key: _Held() for key in self.keys}
        self.bars: dict[Key, _Held] = {key: _Held() for key in self.keys}
        self.names: dict[tuple[str, ...], tuple[str, ...]] = {}
        self.count: dict[Key, int] = {key: 0 for key in self.keys}
        self.latest: dict[Key, int] = {}
        self.table_latest: dict[Key, int] = {}
        self.pending: deque[tuple[ModelParams, int]] = deque()
        self.active: _Run | None = None
        self.bar_shown = self.params.progress_bar and sys.stderr.isatty()
        if self.keys:
            await self._table_history()
        for model in self.models:
            self._consider(model)

    async def on_stop(self) -> None:
        run, self.active = self.active, None
        if run is not None:  # live: the worker's task is cancelled with the runtime
            reason = "the service stopped before the run finished; it trains again when the service starts"
            self.ctx.log.warning("%s: %s", run.job.run_id, reason)
            await self._status(run.job, "failed", message=reason)

    @every("check_every")
    async def on_check(self) -> None:
        """Start a training that is due without a feature row arriving (history found at start)."""
        await self._next()

    # ------------------------------------------------------------------ configuration

    def _models(self) -> list[ModelParams]:
        models = []
        for model in self.params.models:
            if model.timeframe not in self.ctx.timeframes:
                self.ctx.log.warning("model %s: timeframe %s is not one of this run's timeframes (%s); it will not train",
                                     model.name, model.timeframe, ", ".join(self.ctx.timeframes))  # fmt: skip
                continue
            if not self._symbols(model):
                self.ctx.log.warning("model %s: none of its symbols (%s) is a pair of this run; it will not train", model.name, ", ".join(model.symbols or []))
                continue
            models.append(model)
        return models

    def _symbols(self, model: ModelParams) -> list[str]:
        if model.symbols is None:
            return sorted(self.ctx.pairs)
        return sorted(s for s in model.symbols if s in self.ctx.pairs)

    # ------------------------------------------------------------------ what data there is

    async def _table_history(self) -> None:
        timeframes = sorted({tf for _, tf in self.keys})
        symbols = sorted({s for s, _ in self.keys})
        rows = await self.ctx.table("ml_features").query(
            "SELECT symbol, timeframe, count() AS n, max(ts) AS latest FROM {table} FINAL "
            "WHERE timeframe IN {tfs:Array(String)} AND symbol IN {symbols:Array(String)} GROUP BY symbol, timeframe",
            {"tfs": timeframes, "symbols": symbols},
        )
        for row in rows:
            key = (str(row["symbol"]), str(row["timeframe"]))
            if key in self.keys:
                self.count[key] = int(row["n"])
                self.latest[key] = self.table_latest[key] = int(row["latest"])

    @handles("features")
    async def on_features(self, row: dict[str, Any]) -> None:
        key = (row["symbol"], row["timeframe"])
        held = self.features.get(key)
        if held is None:
            return
        ts = int(row["ts"])
        values = row["values"]
        names = tuple(values)
        names = self.names.setdefault(names, names)
        numbers = tuple(v if isinstance(v, (int, float)) else None for v in values.values())
        if held.put(ts, (row["feature_set"], names, numbers)) and ts > self.table_latest.get(key, -1):
            self.count[key] += 1
        if ts > self.latest.get(key, -1):
            self.latest[key] = ts
        held.trim(self.latest[key] - self.hold_ms[key])
        for model in self.keys[key]:
            self._consider(model)
        await self._next()

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        key = (bar["symbol"], bar["timeframe"])
        held = self.bars.get(key)
        if held is None or bar.get("complete") is False:
            return
        held.put(int(bar["ts"]), tuple(bar.get(c) for c in BAR_COLUMNS))
        held.trim(self.latest.get(key, 0) - self.hold_ms[key])

    # ------------------------------------------------------------------ when to train

    def _consider(self, model: ModelParams) -> None:
        if (self.active is not None and self.active.model.name == model.name) or any(m.name == model.name for m, _ in self.pending):
            return
        keys = [(s, model.timeframe) for s in self._symbols(model)]
        if any(self.count.get(k, 0) < model.min_rows or k not in self.latest for k in keys):
            return
        cut = min(self.latest[k] for k in keys) + parse_timeframe(model.timeframe).ms
        last = self.attempted.get(model.name)
        if last is not None and cut - last < (parse_ms(model.retrain_every) or 0):
            return
        self.pending.append((model, cut))

    async def _next(self) -> None:
        if self.active is not None or not self.pending:
            return
        model, cut = self.pending.popleft()
        job = self._job(model, cut)
        run = self.active = _Run(model, job)
        await self._status(job, "started", progress=0.0, message=(
            f"{model.kind} on {', '.join(job.symbols)} {job.timeframe}, window {_iso(job.window_start)} to {_iso(cut)}, "
            f"{job.folds.get('n')} purged walk-forward folds, seed {job.seed}"))  # fmt: skip
        try:
            features, bars = await self._rows(job)
        except Exception as exc:
            await self._failed(exc)
            return
        await self._background(run, worker.prepare_parts, (job, features, bars), self._prepared)

    async def _background(self, run: _Run, fn: Any, args: tuple[Any, ...], then: Any) -> None:
        """One step in the worker process; its result goes to ``then``, and any failure (of the step
        or of ``then``) ends the run with its reason."""

        async def done(result: Any) -> None:
            if self.active is not run:  # stopped meanwhile
                return
            try:
                await then(run, result)
            except Exception as exc:
                await self._failed(exc)

        async def failed(exc: Exception) -> None:
            if self.active is run:
                await self._failed(exc)

        await self.ctx.background(fn, *args, then=done, failed=failed, process=True, name=f"{fn.__name__}:{run.job.name}")

    def _job(self, model: ModelParams, cut: int) -> worker.Job:
        target = model.target.model_dump(exclude_none=True, context={CANONICAL: True})  # equal configs (4h, 240m): one run id
        folds = model.folds.model_dump(context={CANONICAL: True})
        start = cut - (parse_ms(model.window) or 0)
        symbols = tuple(self._symbols(model))
        declaration = {"kind": model.kind, "timeframe": model.timeframe, "symbols": symbols, "target": target,
                       "params": model.params, "threshold": model.threshold, "folds": folds, "feature_set": model.feature_set}  # fmt: skip
        return worker.Job(
            name=model.name, kind=model.kind, timeframe=model.timeframe, symbols=symbols, target=target,
            model_params=dict(model.params), threshold=model.threshold, folds=folds, seed=model.seed,
            window_start=start, cut=cut, feature_set=model.feature_set,
            run_id=worker.run_id(model.name, start, cut, model.seed, declaration),
        )  # fmt: skip

    async def _rows(self, job: worker.Job) -> tuple[list[Any], list[Any]]:
        """The window's feature rows and bars, in parts (:func:`worker.prepare_parts` makes them rows in the worker):
        the tables first, what this service received after (it wins)."""
        tf_ms = parse_timeframe(job.timeframe).ms
        window = {"tf": job.timeframe, "symbols": list(job.symbols), "start": job.window_start, "end": job.cut}
        where = "timeframe = {tf:String} AND symbol IN {symbols:Array(String)} AND ts >= {start:Int64} AND ts < {end:Int64}"
        frame = await self.ctx.table("ml_features").query_frame(
            f"SELECT symbol, ts, feature_set, `values` FROM {{table}} FINAL WHERE {where} ORDER BY ts, symbol", window
        )
        bars: list[Any] = []
        for table in BAR_TABLES:
            bars.append(await self.ctx.table(table).query_frame(
                f"SELECT {', '.join(BAR_COLUMNS)} FROM {{table}} FINAL WHERE {where} AND (complete IS NULL OR complete) ORDER BY ts, symbol", window
            ))  # fmt: skip
        received: list[dict[str, Any]] = []
        received_bars: list[dict[str, Any]] = []
        for symbol in job.symbols:
            key = (symbol, job.timeframe)
            for ts, (feature_set, names, numbers) in self.features[key].between(job.window_start, job.cut - tf_ms + 1):
                received.append({"symbol": symbol, "ts": ts, "feature_set": feature_set, "values": dict(zip(names, numbers))})
            received_bars.extend(dict(zip(BAR_COLUMNS, row)) for _, row in self.bars[key].between(job.window_start, job.cut))
        return [frame, received], [*bars, received_bars]

    # ------------------------------------------------------------------ the steps' results

    async def _prepared(self, run: _Run, prepared: worker.Prepared) -> None:
        run.prepared = prepared
        dropped = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in prepared.dataset.dropped.items() if n)
        self.ctx.log.info("%s: %d samples (%d features of %s)%s", run.job.run_id, len(prepared.dataset), len(prepared.dataset.features),
                          prepared.dataset.feature_set, f"; dropped {dropped}" if dropped else "")  # fmt: skip
        await self._fold(run)

    async def _fold(self, run: _Run) -> None:
        assert run.prepared is not None
        k = len(run.results)
        if k < len(run.prepared.folds):
            await self._background(run, worker.fit_fold, (run.job, run.prepared.dataset, run.prepared.folds[k]), self._fold_done)
            return
        summary = M.summary([r.metrics for r in run.results])
        await self._background(run, worker.fit_final, (run.job, run.prepared.dataset, summary), self._final_done)

    async def _fold_done(self, run: _Run, result: worker.FoldResult) -> None:
        run.results.append(result)
        now = self.ctx.clock.now_ms()
        values = {**result.metrics, "train_samples": float(result.train_samples), "test_samples": float(result.test_samples)}
        for name, value in sorted(values.items()):
            await self.ctx.publish("metrics", {"run_id": run.job.run_id, "ts": now, "name": name, "value": float(value), "step": result.index})
        await self._status(run.job, "progress", progress=result.index / run.steps, metrics=M.finite_or_none(result.metrics), message=(
            f"fold {result.index}/{run.steps - 1}: {result.train_samples} training samples, {result.test_samples} tested, "
            f"{_iso(result.test_start)} to {_iso(result.test_end)}"))  # fmt: skip
        self._bar(run, result.index)
        await self._fold(run)

    async def _final_done(self, run: _Run, final: worker.Final) -> None:
        job = run.job
        card = ModelCard.from_metadata(final.card)
        ref = await self.ctx.artifacts.put(job.name, final.data, kind=job.kind, metadata=final.card)
        model_id = f"{ref.name}:{ref.version}"
        now = self.ctx.clock.now_ms()
        summary = M.summary([r.metrics for r in run.results])
        for name, value in sorted(summary.items()):
            await self.ctx.publish("metrics", {"run_id": job.run_id, "ts": now, "name": name, "value": float(value), "step": 0})
        await self.ctx.publish("checkpoints", {
            "run_id": job.run_id, "ts": now, "name": ref.name, "version": ref.version, "sha256": ref.sha256,
            "model_type": job.kind, "symbols": ",".join(job.symbols), "timeframe": job.timeframe, "feature_set": card.feature_set,
            "train_start": card.train_start_ms, "train_end": card.train_end_ms, "samples": final.samples,
            "artifact": model_id, "metrics": card.metrics,
        })  # fmt: skip
        self.ctx.log.info("%s: model %s stored (sha256 %s)", job.run_id, model_id, ref.sha256[:12])
        decision = await self._promote(run, ref, summary)
        self._bar(run, run.steps)
        self.active = None
        self.attempted[job.name] = job.cut
        await self._status(job, "completed", progress=1.0, metrics=M.finite_or_none(summary),
                           message=f"model {model_id} (sha256 {ref.sha256[:12]}), {final.samples} samples; {decision.outcome}: {decision.reason}")  # fmt: skip
        await self._next()

    async def _promote(self, run: _Run, ref: Any, summary: dict[str, float]) -> promotion.Decision:
        job = run.job
        current, current_id = None, None
        try:
            live = await self.ctx.artifacts.resolve(promotion.promoted_name(job.name))
        except ArtifactNotFound:
            pass
        else:
            current, current_id = dict(live.metadata.get("metrics") or {}), _promoted_id(live)
        baseline = promotion.Baseline.of(run.model.baseline.model_dump())
        decision = promotion.decide(summary, baseline, current, current_id)
        if decision.promote:
            await self.ctx.artifacts.tag(ref, promotion.promoted_name(job.name), metadata={"promoted_from": f"{ref.name}:{ref.version}"})
        row = promotion.record(decision, name=ref.name, version=ref.version, sha256=ref.sha256, run_id=job.run_id,
                               ts=self.ctx.clock.now_ms(), by=self.ctx.service)  # fmt: skip
        await self.ctx.publish("promotions", row)
        self.ctx.log.info("%s", promotion.log_line(decision, f"{ref.name}:{ref.version}"))
        return decision

    async def _failed(self, exc: Exception) -> None:
        run = self.active
        if run is None:
            raise exc
        self.active = None
        self.attempted[run.job.name] = run.job.cut  # not retried before the data moves on by retrain_every
        reason = _one_line(exc)
        self.ctx.log.error("%s: training failed: %s", run.job.run_id, reason)
        if not isinstance(exc, ModelError):
            self.ctx.log.debug("%s: traceback", run.job.run_id, exc_info=exc)
        if self.bar_shown:
            sys.stderr.write("\n")
        await self._status(run.job, "failed", message=reason)
        await self._next()

    # ------------------------------------------------------------------ reporting

    async def _status(self, job: worker.Job, status: str, *, progress: float | None = None,
                      metrics: dict[str, Any] | None = None, message: str | None = None) -> None:  # fmt: skip
        event: dict[str, Any] = {"run_id": job.run_id, "ts": self.ctx.clock.now_ms(), "kind": "supervised", "status": status, "model_type": job.kind}
        if progress is not None:
            event["progress"] = progress
        if metrics:
            event["metrics"] = metrics
        if message:
            event["message"] = message
        await self.ctx.publish("status", event)

    def _bar(self, run: _Run, done: int) -> None:
        if not self.bar_shown:
            return
        width = 24
        filled = width * done // run.steps
        sys.stderr.write(f"\r{run.job.name} [{'#' * filled}{'.' * (width - filled)}] {done}/{run.steps}" + ("\n" if done >= run.steps else ""))
        sys.stderr.flush()


def _promoted_id(ref: Any) -> str:
    source = ref.metadata.get("promoted_from")
    return str(source) if source else f"{ref.name}:{ref.version}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if isinstance(exc, ModelError):
        return line or type(exc).__name__
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _iso(ms: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
