"""The RL training service: the declared agents, trained off the event loop, evaluated, stored, promoted.

**When agents train.** Like the supervised service: feature rows of the service's timeframe
arrive on ``features`` (the feature service's backfill included) and are counted per symbol, on
top of what ``ml_features`` held at start. An agent trains once every symbol has ``min_rows``
rows, then again whenever the newest row common to all symbols (``cut``, that bar's close) has
moved on by ``retrain_every`` (event time) since its last run, failed runs included, so an
agent whose data is bad is not retried on every row. History found at start counts (the
``check_every`` timer starts what is due without a new row); each agent's last ``cut`` is kept
in the service's state. Everything is decided on event time, so a simulated run trains at the
same points with the same rows every time.

**What on.** The window ``[cut - window, cut)``: feature rows from ``ml_features`` and bars from
``historical_aggregates``, plus the rows and bars this service received since it started (they
win over table rows of the same symbol and bar), so the rows do not depend on when table
writers flush.

**How.** One run per agent, in a worker process (``ctx.background(worker.train, ...,
process=True)``; runs go one at a time). ``training.rl.started.<run_id>`` when it starts; when
it is done: the agent as artifact ``<agent name>`` (its card as metadata), one
``training.rl.episode.<run_id>`` per finished training episode (training_episodes), the
episodes' rewards (reward_history), an ``agent_checkpoints`` row, ``training.rl.completed``
with the held-out evaluation against buy-and-hold and flat, and a promotion decision
(``model_promotions``, a log line; promoted agents are tagged ``<name>@promoted``). A run that
cannot train (too little data, an unknown algorithm, hyperparameters the library refuses) is
one log line and ``training.rl.failed`` with the reason; the service goes on.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from framework.artifacts import ArtifactNotFound
from framework.durations import parse_ms
from framework.errors import FxflowError
from framework.node import Node, every, handles
from framework.timeframes import parse_timeframe
from nodes.ml import promotion
from nodes.rl_training import worker
from nodes.rl_training.spec import AgentDecl, RlTrainingParams

BARS_TABLE = "historical_aggregates"
FEATURE_COLUMNS = ("symbol", "ts", "feature_set", "values")
BAR_COLUMNS = ("symbol", "ts", "close", "spread_mean")


@dataclass(frozen=True)
class _Run:
    name: str
    agent: AgentDecl
    run_id: str
    cut: int
    window_start: int


class RlTraining(Node[RlTrainingParams]):
    state_version = 1

    def __init__(self, ctx: Any, params: RlTrainingParams) -> None:
        super().__init__(ctx, params)
        self.attempted: dict[str, int] = {}
        """Agent name → the cut of its last run (completed or failed)."""

    def snapshot(self) -> Any:
        return {"attempted": dict(sorted(self.attempted.items()))}

    def restore(self, state: Any) -> None:
        self.attempted = {str(k): int(v) for k, v in dict(state.get("attempted", {})).items()}

    async def on_start(self) -> None:
        p = self.params
        self.tf_ms = parse_timeframe(p.timeframe).ms
        self.symbols = sorted(s for s in (p.symbols or self.ctx.pairs) if s in self.ctx.pairs)
        self.agents: dict[str, AgentDecl] = dict(p.agents)
        if p.timeframe not in self.ctx.timeframes:
            self.ctx.log.warning("timeframe %s is not one of this run's (%s): no agent will train", p.timeframe, ", ".join(self.ctx.timeframes))
            self.agents = {}
        elif not self.symbols:
            self.ctx.log.warning("none of the symbols %s is a pair of this run: no agent will train", ", ".join(p.symbols))
            self.agents = {}
        elif self.agents and self.ctx.artifacts is None:
            self.ctx.log.error("the topology declares no artifact store (a `kind: files` store) to keep agents in: no agent will train")
            self.agents = {}
        self.features: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in self.symbols}
        self.bars: dict[str, dict[int, dict[str, Any]]] = {s: {} for s in self.symbols}
        self.count: dict[str, int] = {s: 0 for s in self.symbols}
        self.latest: dict[str, int] = {}
        self.table_latest: dict[str, int] = {}
        self.pending: deque[tuple[str, int]] = deque()
        self.active: _Run | None = None
        self.window_ms = parse_ms(p.window) or 0
        self.retrain_ms = parse_ms(p.retrain_every) or 0
        if self.agents:
            await self._table_history()
            self._consider()

    @every("check_every")
    async def on_check(self) -> None:
        """Start a run that is due without a feature row arriving (history found at start)."""
        await self._next()

    # ------------------------------------------------------------------ what data there is

    async def _table_history(self) -> None:
        rows = await self.ctx.table("ml_features").query(
            "SELECT symbol, count() AS n, max(ts) AS latest FROM {table} FINAL "
            "WHERE timeframe = {tf:String} AND symbol IN {symbols:Array(String)} GROUP BY symbol",
            {"tf": self.params.timeframe, "symbols": self.symbols},
        )
        for row in rows:
            symbol = str(row["symbol"])
            self.count[symbol] = int(row["n"])
            self.latest[symbol] = self.table_latest[symbol] = int(row["latest"])

    @handles("features")
    async def on_features(self, row: dict[str, Any]) -> None:
        held = self.features.get(row["symbol"]) if row["timeframe"] == self.params.timeframe and self.agents else None
        if held is None:
            return
        symbol, ts = row["symbol"], int(row["ts"])
        if ts not in held and ts > self.table_latest.get(symbol, -1):
            self.count[symbol] += 1
        held[ts] = {c: row[c] for c in FEATURE_COLUMNS}
        if ts > self.latest.get(symbol, -1):
            self.latest[symbol] = ts
            _trim(held, ts - self.window_ms - 2 * self.tf_ms)
        self._consider()
        await self._next()

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        held = self.bars.get(bar["symbol"]) if bar["timeframe"] == self.params.timeframe and self.agents else None
        if held is None or bar.get("complete") is False:
            return
        held[int(bar["ts"])] = {c: bar.get(c) for c in BAR_COLUMNS}
        if len(held) % 1024 == 0:
            _trim(held, self.latest.get(bar["symbol"], 0) - self.window_ms - 2 * self.tf_ms)

    # ------------------------------------------------------------------ when to train

    def _consider(self) -> None:
        if any(self.count.get(s, 0) < self.params.min_rows or s not in self.latest for s in self.symbols):
            return
        cut = min(self.latest[s] for s in self.symbols) + self.tf_ms
        busy = {name for name, _ in self.pending} | ({self.active.name} if self.active else set())
        for name in self.agents:
            last = self.attempted.get(name)
            if name not in busy and (last is None or cut - last >= self.retrain_ms):
                self.pending.append((name, cut))

    async def _next(self) -> None:
        if self.active is not None or not self.pending:
            return
        name, cut = self.pending.popleft()
        agent = self.agents[name]
        start = cut - self.window_ms
        run = self.active = _Run(name, agent, _run_id(name, agent, self.params, start, cut), cut, start)
        await self._status(run, "started", message=(
            f"{agent.algorithm} on {', '.join(self.symbols)} {self.params.timeframe}, window {_iso(start)} to {_iso(cut)}, "
            f"{agent.total_timesteps} steps, seed {self._seed(agent)}"))  # fmt: skip
        try:
            job = await self._job(run)
        except Exception as exc:
            await self._failed(exc)
            return
        self.ctx.log.info("%s: training %s on %d feature rows", run.run_id, agent.algorithm, len(job.features_rows["ts"]))
        await self.ctx.background(worker.train, job, then=self._done, failed=self._failed, process=True, name=f"rl:{name}")

    def _seed(self, agent: AgentDecl) -> int:
        return self.params.seed if agent.seed is None else agent.seed

    async def _job(self, run: _Run) -> worker.TrainJob:
        p, agent = self.params, run.agent
        features, bars = await self._rows(run)
        env = p.env.model_dump()
        if agent.reward is not None:
            env["reward"] = agent.reward
        if agent.episode_length is not None:
            env["episode_length"] = agent.episode_length
        return worker.TrainJob(
            run_id=run.run_id, name=run.name, algorithm=agent.algorithm, total_timesteps=agent.total_timesteps,
            timeframe=p.timeframe, features_rows=features, bar_rows=bars, fallback_spread=self._fallback_spreads(),
            features=tuple(p.features), feature_set=p.feature_set, hyperparams=dict(agent.hyperparams),
            net_arch=tuple(agent.net_arch), activation=agent.activation, env=env, obs_clip=p.obs_clip,
            deadband=agent.deadband, eval_fraction=p.eval_fraction, seed=self._seed(agent), reward_every=p.reward_every,
        )  # fmt: skip

    def _fallback_spreads(self) -> dict[str, float]:
        pips = self.params.spread_pips
        return {s: pips.get(s, pips.get("default", 0.0)) * self.ctx.instrument(s).pip for s in self.symbols}

    async def _rows(self, run: _Run) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
        """The window's feature rows and bars as columns: the tables first, what this service received after (it wins)."""
        window = {"tf": self.params.timeframe, "symbols": self.symbols, "start": run.window_start, "end": run.cut}
        where = "timeframe = {tf:String} AND symbol IN {symbols:Array(String)} AND ts >= {start:Int64} AND ts < {end:Int64}"
        features: dict[tuple[str, int], dict[str, Any]] = {}
        frame = await self.ctx.table("ml_features").query_frame(f"SELECT symbol, ts, feature_set, `values` FROM {{table}} FINAL WHERE {where}", window)
        for row in _records(frame, FEATURE_COLUMNS):
            if int(row["ts"]) + self.tf_ms <= run.cut:
                features[(str(row["symbol"]), int(row["ts"]))] = row
        bars: dict[tuple[str, int], dict[str, Any]] = {}
        frame = await self.ctx.table(BARS_TABLE).query_frame(f"SELECT {', '.join(BAR_COLUMNS)} FROM {{table}} FINAL WHERE {where}", window)
        for row in _records(frame, BAR_COLUMNS):
            bars[(str(row["symbol"]), int(row["ts"]))] = row
        for symbol in self.symbols:
            for held, rows, end in ((self.features[symbol], features, run.cut - self.tf_ms), (self.bars[symbol], bars, run.cut - 1)):
                stored = [ts for ts, row in held.items() if _same(rows.get((symbol, ts)), row)]
                for ts, row in held.items():
                    if run.window_start <= ts <= end:
                        rows[(symbol, ts)] = row
                for ts in stored:  # the table holds it as received: later runs read it there (a revision arrives as a message)
                    del held[ts]
        return _columns(features, FEATURE_COLUMNS), _columns(bars, BAR_COLUMNS)

    # ------------------------------------------------------------------ results

    async def _done(self, result: worker.TrainResult) -> None:
        run = self.active
        assert run is not None and run.run_id == result.run_id
        try:
            await self._store(run, result)
        except Exception as exc:  # the store or a table refused: the run failed, the service goes on
            await self._failed(exc)
            return
        self._finish(run)
        await self._next()

    def _finish(self, run: _Run) -> None:
        """The run is over (completed or failed): the agent waits ``retrain_every`` from its cut."""
        self.attempted[run.name] = run.cut
        self.active = None

    async def _store(self, run: _Run, result: worker.TrainResult) -> None:
        ref = await self.ctx.artifacts.put(result.name, result.agent, kind=result.algorithm, metadata=result.card)
        agent_id = f"{ref.name}:{ref.version}"
        now = self.ctx.clock.now_ms()
        await self.ctx.publish_many("episodes", [
            {"run_id": run.run_id, "ts": now, "kind": "rl", "status": "episode", "model_type": result.algorithm, "episode": e["index"],
             "metrics": {k: float(e[k]) for k in ("reward", "net_return", "cost", "trades", "steps", "start_ts", "end_ts")},
             "message": f"{e['symbol']} {_iso(e['start_ts'])} to {_iso(e['end_ts'])}"}
            for e in result.episodes
        ])  # fmt: skip
        r = result.rewards
        await self.ctx.publish_many("rewards", [
            {"run_id": run.run_id, "episode": e, "step": s, "ts": t, "reward": v}
            for e, s, t, v in zip(r["episode"].tolist(), r["step"].tolist(), r["ts"].tolist(), r["reward"].tolist())
        ])  # fmt: skip
        card = result.card
        await self.ctx.publish("checkpoints", {
            "run_id": run.run_id, "ts": now, "name": ref.name, "version": ref.version, "sha256": ref.sha256,
            "algorithm": result.algorithm, "symbols": ",".join(card["symbols"]), "timeframe": card["timeframe"],
            "feature_set": card["feature_set"], "train_start": card["train_start_ms"], "train_end": card["train_end_ms"],
            "eval_start": card["params"]["eval_start_ms"], "eval_end": card["params"]["eval_end_ms"],
            "artifact": agent_id, "metrics": _finite(result.metrics),
        })  # fmt: skip
        m = result.metrics
        steps = int(card["params"]["total_timesteps"])
        await self._status(run, "completed", metrics=_finite(m), message=(
            f"agent {agent_id} (sha256 {ref.sha256[:12]}); held out {int(m['eval_steps'])} bars: return {m['eval_return']:+.4%}, "
            f"Sharpe {m['eval_sharpe']:.2f}; buy-and-hold {m['buy_and_hold_return']:+.4%} (Sharpe {m['buy_and_hold_sharpe']:.2f}); flat 0"))  # fmt: skip
        self.ctx.log.info("%s: agent %s stored (sha256 %s), %d episodes; %d steps trained in %.1fs (%.0f steps/s)", run.run_id, agent_id,
                          ref.sha256[:12], len(result.episodes), steps, result.seconds, steps / max(result.seconds, 1e-9))  # fmt: skip
        await self._promote(run, ref, m)

    async def _promote(self, run: _Run, ref: Any, metrics: dict[str, float]) -> None:
        baseline = run.agent.baseline
        sharpe = metrics["eval_sharpe"]
        beaten = []
        decision = None
        for other in baseline.beat:
            theirs = metrics[f"{other}_sharpe"]
            if not sharpe > theirs:
                decision = promotion.Decision(False, f"held-out sharpe {sharpe:.4f} does not beat {other} ({theirs:.4f})", "sharpe", sharpe)
                break
            beaten.append(f"beats {other} ({theirs:.4f})")
        if decision is None:
            current, current_id = None, None
            try:
                live = await self.ctx.artifacts.resolve(promotion.promoted_name(run.name))
            except ArtifactNotFound:
                pass
            else:
                source = live.metadata.get("promoted_from")
                current, current_id = dict(live.metadata.get("metrics") or {}), str(source or f"{live.name}:{live.version}")
            rule = promotion.Baseline(metric="sharpe", min=baseline.min, beat_promoted=baseline.beat_promoted, margin=baseline.margin)
            decision = promotion.decide({"sharpe": sharpe}, rule, current, current_id)
            reason = "; ".join([f"held-out sharpe {sharpe:.4f}", *beaten, decision.reason])
            decision = promotion.Decision(decision.promote, reason, decision.metric, decision.value)
        if decision.promote:
            await self.ctx.artifacts.tag(ref, promotion.promoted_name(run.name), metadata={"promoted_from": f"{ref.name}:{ref.version}"})
        row = promotion.record(decision, name=ref.name, version=ref.version, sha256=ref.sha256, run_id=run.run_id,
                               ts=self.ctx.clock.now_ms(), by=self.ctx.service)  # fmt: skip
        await self.ctx.publish("promotions", row)
        self.ctx.log.info("%s", promotion.log_line(decision, f"{ref.name}:{ref.version}"))

    async def _failed(self, exc: Exception) -> None:
        run = self.active
        if run is None:
            raise exc
        self._finish(run)
        reason = _one_line(exc)
        self.ctx.log.error("%s: training failed: %s", run.run_id, reason)
        if not isinstance(exc, FxflowError):
            self.ctx.log.debug("%s: traceback", run.run_id, exc_info=exc)
        await self._status(run, "failed", message=reason)
        await self._next()

    async def _status(self, run: _Run, status: str, *, metrics: dict[str, Any] | None = None, message: str | None = None) -> None:
        event: dict[str, Any] = {"run_id": run.run_id, "ts": self.ctx.clock.now_ms(), "kind": "rl", "status": status, "model_type": run.agent.algorithm}
        if metrics:
            event["metrics"] = metrics
        if message:
            event["message"] = message
        await self.ctx.publish("status", event)


def _trim(held: dict[int, Any], oldest: int) -> None:
    if held and next(iter(held)) < oldest:
        for ts in [t for t in held if t < oldest]:
            del held[ts]


def _same(stored: dict[str, Any] | None, held: dict[str, Any]) -> bool:
    """A table row equal to what was received (``values`` compared as parsed JSON)."""
    if stored is None:
        return False
    return all(_parsed(stored.get(c)) == _parsed(v) for c, v in held.items())


def _parsed(value: Any) -> Any:
    if isinstance(value, (str, bytes)) and value[:1] in ("{", b"{"):
        return orjson.loads(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _records(frame: Any, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    if frame is None or len(frame) == 0:
        return []
    data = {c: frame[c].tolist() for c in columns}
    return [{c: data[c][i] for c in columns} for i in range(len(frame))]


def _columns(rows: dict[tuple[str, int], dict[str, Any]], columns: tuple[str, ...]) -> dict[str, list[Any]]:
    ordered = [rows[k] for k in sorted(rows)]
    return {c: [row.get(c) for row in ordered] for c in columns}


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {k: (float(v) if math.isfinite(v) else None) for k, v in sorted(metrics.items())}


def _run_id(name: str, agent: AgentDecl, params: RlTrainingParams, start: int, cut: int) -> str:
    """``<name>-<cut as yyyymmddThhmm>-<8 hex>``: the same agent, environment, data window and seed give the same id."""
    declaration = {"agent": agent.model_dump(), "env": params.env.model_dump(), "timeframe": params.timeframe, "symbols": params.symbols,
                   "features": params.features, "feature_set": params.feature_set, "seed": params.seed}  # fmt: skip
    digest = hashlib.sha256(orjson.dumps([name, start, cut, declaration], option=orjson.OPT_SORT_KEYS)).hexdigest()[:8]
    return f"{name}-{dt.datetime.fromtimestamp(cut / 1000, dt.timezone.utc).strftime('%Y%m%dT%H%M')}-{digest}"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    if isinstance(exc, FxflowError):
        return line or type(exc).__name__
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")
