"""backtesting-engine in service mode: backtests on request while the system runs (topology=live and demo).

There is one implementation of a backtest: ``topology=backtest`` with the replay node
(:mod:`nodes.backtest.node`), as ``fxrun backtest run`` runs it. This node runs it as a child
process (``fxrun topology=backtest``), one data directory per run under its own
(``<data_dir>/services/<service>/runs/<run_id>``), and tells the rest of the system about it:

- **Requests** (``backtest.request``, ``backtest_request.v1``, request/reply): a window
  (``start``/``end``, or ``lookback`` up to the newest bar), symbols, timeframes, models
  (rules, or trained models pinned to a stored artifact) and overrides of the child run. The
  request is checked before the reply: the child's topology is composed and linted here, and the
  window must hold bars, so a bad request is refused at once with the reason, in one line. The
  reply is the run id, with ``running``, ``queued`` (behind ``max_concurrent`` runs) or ``done``
  (the same request ran before: its results stand).
- **Promotions** (``params.on_promotion``): on ``training.completed`` the node looks the run's
  model up in the artifact store; if it is now ``<name>@promoted``, it backtests it over the
  last ``lookback`` of bars, pinned to that version.
- **The bars** come from this run's store (``params.tables``, with ``FINAL``) and from the bars
  this node received on ``bars`` (held for ``params.hold``; they win), and go to the child as a
  file (:func:`nodes.backtest.tape.write_file`), with the calendar and FRED rows its features
  need: the embedded ClickHouse cannot be opened by two processes. Held bars make the tape
  independent of when a table writer flushed, so on simulated time every run gets the same one.
- **Pinned models** are copied out of the artifact store into the child's directory; its replay
  node stores them before the first bar and tags them ``<name>@promoted`` (with the version they
  have here), which is what inference loads. ``params.child`` gives the child's services the
  settings a model needs (the feature set it was trained on).
- **The run** goes off the event loop through ``ctx.background`` (a thread waiting on the
  process), at most ``max_concurrent`` at a time, killed after ``timeout``. Its replay node
  appends every status to ``status.jsonl``; the node republishes ``started`` and ``progress``
  as ``backtest.{status}.{run_id}`` (every ``status_every`` on a wall clock, the rest when the
  run ends), then, from the child's ``result.json``, writes one ``backtest_results`` row per
  metric (details: the child's config hash, params and models, the request, and what this run's
  account did over the same window, from performance-monitoring's report on ``performance.query``)
  and says ``completed`` with the metrics. A child that fails, is killed or times out is
  ``backtest.failed.<run_id>`` with the reason; the service goes on with the next request.
- **Retention** (``params.retention``): at start and after each run, the directories of finished
  runs beyond the newest ``keep`` or unchanged for ``max_age`` (wall time) are removed, never a
  running or queued one's. The results stay in backtest_results, the statuses in backtest_runs and
  the pinned models in the artifact store; the same request again runs once more instead of
  answering ``done`` from the removed directory.
- **Simulated time** (the demo): background work takes its turn in the run's single queue with
  the clock held, so a child runs to its end before anything else happens and its statuses and
  rows land at the same point of every run; the run cannot end with a child in flight. On a wall
  clock, a child still running when the service stops is killed and recorded as failed.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from framework.artifacts import ArtifactError
from framework.durations import parse_ms
from framework.errors import UserError
from framework.node import Node, every, handles
from nodes.backtest import tape as tapes
from nodes.backtest.reference import leaves
from nodes.backtest.runner_spec import BacktestRunnerParams
from nodes.backtest.status import RUN_ID, check_run_id, number, status_message

PROFILE = "topology=backtest"
BARS_FILE, MODELS_FILE, STATUS_FILE, OUTPUT_FILE = "bars.npz", "artifacts.json", "status.jsonl", "fxrun.out"
MODELS_SERVICE = "inference-service"
"""The child's service whose ``params.models`` a request's models replace."""
HELD = ("source", "ts_close", "open", "high", "low", "close", "volume", "tick_count", "spread_mean", "spread_min", "spread_max")
EXTERNAL_FIELDS = ("type", "ts", "source", "series", "value", "unit", "country", "impact", "actual", "forecast", "previous", "title")
ACCOUNT_POINTS = 5000
"""At most this many points of the account's equity curve asked for (its points in a run's window are compared)."""
RUNNER_PARAMS = frozenset({"source", "file", "start", "end", "timeframes", "run_id", "status_file", "artifacts", "table"})
"""The child replay's params the runner sets (a request gives the window, symbols and timeframes)."""
CONFINED = ("topology.runtime.pubsub", "topology.runtime.log", "topology.nats", "topology.kafka", "topology.stores", "topology.tables")
"""What a request may not reach: the child's bus, log and stores stay its own (never the running system's)."""
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
PENDING = "pending"
"""The data directory a request's child topology is checked with (:func:`check_child`): not a run."""
REMOVING = ".removing-"
"""A run directory being removed is renamed to this prefix first, so a request never finds it half gone."""


class Refused(Exception):
    """A request this node will not run; the message is the reply's reason."""


class Request(BaseModel):
    """``backtest_request.v1``, checked again here (live validation samples)."""

    model_config = ConfigDict(extra="forbid")

    ts: int = Field(ge=0)
    run_id: str | None = None
    start: int | None = Field(default=None, ge=0)
    end: int | None = Field(default=None, ge=0)
    lookback: str | None = None
    symbols: list[str] | None = None
    timeframes: list[str] | None = None
    models: dict[str, dict[str, Any]] | None = None
    overrides: list[str] = Field(default_factory=list)
    reason: str | None = None

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, value: str | None) -> str | None:
        return check_run_id(value)

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str | None) -> str | None:
        if value is not None and not (parse_ms(value) or 0) > 0:
            raise ValueError(f"lookback {value!r} is not a positive duration (2h, 7d)")
        return value


@dataclass
class Run:
    """One accepted request: where its child runs and what it has said so far."""

    run_id: str
    request: dict[str, Any]
    folder: Path
    command: list[str]
    env: dict[str, str]
    symbols: list[str]
    timeframes: list[str]
    start_ms: int
    end_ms: int
    pinned: dict[str, Any] = field(default_factory=dict)
    """Request model name -> the stored artifact it runs."""
    offset: int = 0
    last_failure: str | None = None
    completed_message: str | None = None

    @property
    def result_path(self) -> Path:
        return self.folder / "backtests" / self.run_id / "result.json"


@dataclass(frozen=True)
class Outcome:
    """What became of a child process."""

    code: int | None
    timed_out: bool = False
    seconds: float = 0.0
    error: str | None = None


@dataclass
class _Children:
    """The child processes now running, by run id (shared with the threads that wait on them)."""

    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def kill(self, run_id: str) -> bool:
        proc = self.procs.get(run_id)
        if proc is None or proc.poll() is not None:
            return False
        _kill_group(proc)
        return True


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child and its worker processes (a session of their own)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def run_child(run_id: str, folder: Path, command: Sequence[str], env: Mapping[str, str], timeout_s: float,
              children: _Children) -> Outcome:  # fmt: skip
    """Run one child to its end (a worker thread: ``ctx.background``); killed with its group after ``timeout_s``."""
    began = time.monotonic()
    with open(folder / OUTPUT_FILE, "ab") as out:
        proc = subprocess.Popen(list(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=dict(env),
                                start_new_session=True)  # fmt: skip
        children.procs[run_id] = proc
        try:
            code = proc.wait(timeout=timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            code, timed_out = proc.wait(), True
        finally:
            children.procs.pop(run_id, None)
    return Outcome(code=code, timed_out=timed_out, seconds=time.monotonic() - began)


@lru_cache(maxsize=1)
def _registries(project: str) -> tuple[Any, Any]:
    from framework.contracts import ContractRegistry
    from framework.registry import Registry

    return Registry.discover(), ContractRegistry.load(Path(project) / "contracts")


def check_child(overrides: Sequence[str], data_dir: str) -> tuple[str, str, list[str]]:
    """Compose and lint the child's topology (a worker thread): its configuration hash, the project and the names of its
    models; a :class:`UserError` with the first problem otherwise (what the child itself would refuse to start with)."""
    from framework.confighash import config_hash
    from framework.lint import format_finding, lint
    from framework.topology.load import load_run

    loaded = load_run([PROFILE, f"data_dir={data_dir}", *overrides])
    registry, contracts = _registries(str(loaded.project))
    errors = [f for f in lint(loaded.topology, loaded.source, registry, contracts, pairs=loaded.config.pairs) if f.level == "error"]
    if errors:
        raise UserError(format_finding(errors[0]))
    runtime = loaded.topology.runtime
    if (runtime.pubsub, runtime.log) != ("inprocess", "inprocess"):
        raise UserError(f"its bus and log must be in-process, not {runtime.pubsub}/{runtime.log}: a backtest publishes nothing to the running system")
    live = [name for name, s in loaded.topology.services.items() if s.enabled and s.params.get("broker") not in (None, "paper")]
    if live:
        raise UserError(f"{live[0]} would trade with broker {loaded.topology.services[live[0]].params['broker']!r}: a backtest trades on paper")
    pairs = loaded.config.pairs or list(loaded.topology.instruments)
    service = loaded.topology.services.get(MODELS_SERVICE)
    models = sorted(name for name, decl in ((service.params.get("models") or {}) if service else {}).items() if decl is not None)
    return config_hash(loaded.topology, pairs, data_dir), str(loaded.project), models


def write_inputs(folder: Path, frame: Any, external: list[dict[str, Any]], models: list[dict[str, Any]]) -> None:
    """The child's directory with what it reads (a worker thread): the bars and events, the pinned models."""
    if folder.exists():
        shutil.rmtree(folder)  # a run that never finished here (killed with the service): it starts again from nothing
    folder.mkdir(parents=True)
    tapes.write_file(folder / BARS_FILE, frame, external)
    if models:
        (folder / "models").mkdir()
        manifest = []
        for item in models:
            source = Path(item.pop("path"))
            shutil.copyfile(source, folder / item["file"])
            manifest.append(item)
        (folder / MODELS_FILE).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))



def _last_change(folder: Path) -> float:
    """When a run directory last changed (wall time, s): the newest mtime of it and what it directly holds."""
    newest = folder.stat().st_mtime
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                newest = max(newest, entry.stat(follow_symlinks=False).st_mtime)
            except OSError:
                continue
    return newest


def expired_runs(root: Path, keep: int | None, max_age_s: float | None, now_s: float, busy: Container[str]) -> list[Path]:
    """The run directories under ``root`` the retention rule removes: finished ones (not in ``busy``) beyond the newest
    ``keep`` or unchanged for more than ``max_age_s``, oldest last. Only directories named as run ids are runs."""
    finished: list[tuple[float, str, Path]] = []
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    for path in entries:
        if path.name in busy or path.name == PENDING or not RUN_ID.match(path.name) or not path.is_dir():
            continue
        try:
            finished.append((_last_change(path), path.name, path))
        except OSError:
            continue
    finished.sort(reverse=True)
    return [path for i, (changed, _, path) in enumerate(finished)
            if (keep is not None and i >= keep) or (max_age_s is not None and now_s - changed > max_age_s)]  # fmt: skip


def remove_dirs(paths: Sequence[Path]) -> None:
    """Remove directories (a worker thread: a run's store can be large)."""
    for path in paths:
        shutil.rmtree(path, ignore_errors=True)


def _iso(ms: int) -> str:
    when = datetime.fromtimestamp(ms / 1000, timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z" if ms % 1000 else when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str, limit: int = 400) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _error_line(path: Path) -> str | None:
    """The child's last error line (a user error is one line; a crash ends with its exception)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line for line in lines if re.search(r"error", line, re.I) and " INFO " not in line and " WARNING " not in line]
    return (errors or lines or [None])[-1]


class BacktestRunner(Node[BacktestRunnerParams]):
    async def on_start(self) -> None:
        p = self.params
        self.root = Path(self.ctx.data_dir) / "runs"
        self.hold_ms = parse_ms(p.hold)  # None: forever
        self.timeout_s = (parse_ms(p.timeout) or 0) / 1000
        self.held: dict[tuple[str, str], dict[int, tuple[Any, ...]]] = {}
        self.newest: dict[tuple[str, str], int] = {}
        self.running: dict[str, Run] = {}
        self.queue: deque[Run] = deque()
        self.children = _Children()
        self.accepted = self.completed = self.failed = 0
        await self._retain()

    def headline(self, final: bool = False) -> dict[str, Any] | None:
        if not (self.accepted or final):
            return None
        return {"backtests": self.accepted, "completed": self.completed, "failed": self.failed}

    # ------------------------------------------------------------------ inputs

    @handles("requests")
    async def on_request(self, message: dict[str, Any]) -> dict[str, Any]:
        return await self.submit(message)

    @handles("trainings")
    async def on_training(self, status: dict[str, Any]) -> None:
        rule = self.params.on_promotion
        if rule is None or status.get("status") != "completed" or self.ctx.artifacts is None:
            return
        ref = await self._promoted(str(status.get("run_id")))
        if ref is None or (rule.models is not None and ref.name not in rule.models):
            return
        card = ref.metadata
        timeframe = str(card.get("timeframe"))
        symbols = [s for s in card.get("symbols") or () if s in self.ctx.pairs] or list(self.ctx.pairs)
        request = {
            "ts": int(status.get("ts") or self.ctx.clock.now_ms()), "lookback": rule.lookback, "symbols": symbols,
            "models": {ref.name: {"timeframe": timeframe, "artifact": f"{ref.name}:{ref.version}"}},
            "reason": f"{ref.name}:{ref.version} promoted by training run {status.get('run_id')}",
        }  # fmt: skip
        reply = await self.submit(request)
        if not reply["accepted"]:
            self.ctx.log.warning("no backtest of promoted model %s:%s: %s", ref.name, ref.version, reply.get("reason"))

    async def _promoted(self, run_id: str) -> Any:
        """The artifact the training run ``run_id`` stored, if it is the promoted version of its name now."""
        try:
            mine = next((r for r in await self.ctx.artifacts.list() if "@" not in r.name and r.metadata.get("run_id") == run_id), None)
            if mine is None:
                return None
            tag = await self.ctx.artifacts.resolve(f"{mine.name}@promoted")
        except ArtifactError:
            return None
        return mine if tag.sha256 == mine.sha256 else None

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        if bar.get("complete") is False:
            return
        key = (bar["symbol"], bar["timeframe"])
        held = self.held.setdefault(key, {})
        ts = int(bar["ts"])
        held[ts] = tuple(bar.get(c) for c in HELD)
        if ts > self.newest.get(key, -1):
            self.newest[key] = ts
        if self.hold_ms is not None and len(held) % 256 == 0:
            cut = self.newest[key] - self.hold_ms
            self.held[key] = {t: row for t, row in held.items() if t >= cut}

    # ------------------------------------------------------------------ accepting a request

    async def submit(self, message: dict[str, Any]) -> dict[str, Any]:
        """Accept (and start or queue) or refuse one request; the reply."""
        now = self.ctx.clock.now_ms()
        run_id = message.get("run_id") if isinstance(message, dict) else None
        try:
            run = await self._plan(message)
            run_id = run.run_id
            if run_id in self.running:
                return {"ts": now, "accepted": True, "run_id": run_id, "state": "running"}
            if any(r.run_id == run_id for r in self.queue):
                return {"ts": now, "accepted": True, "run_id": run_id, "state": "queued"}
            if run.result_path.is_file():
                return {"ts": now, "accepted": True, "run_id": run_id, "state": "done"}
            if len(self.running) >= self.params.max_concurrent and len(self.queue) >= self.params.max_queued:
                raise Refused(f"busy: {len(self.running)} backtest(s) running and {len(self.queue)} queued (max_queued); ask again later")
            await self._prepare(run)
        except Refused as exc:
            self.ctx.log.warning("backtest request refused: %s", exc)
            reply: dict[str, Any] = {"ts": now, "accepted": False, "reason": _one_line(str(exc)) or "refused"}
            if isinstance(run_id, str) and RUN_ID.match(run_id):
                reply["run_id"] = run_id
            return reply
        self.accepted += 1
        if len(self.running) < self.params.max_concurrent:
            await self._launch(run)
            state = "running" if run.run_id in self.running else "done"
        else:
            self.queue.append(run)
            state = "queued"
        return {"ts": now, "accepted": True, "run_id": run.run_id, "state": state}

    async def _plan(self, message: Any) -> Run:
        try:
            req = Request.model_validate(message)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(part) for part in err["loc"])
            raise Refused(f"{where}: {err['msg']}" if where else err["msg"]) from None
        p = self.params
        for item in req.overrides:
            problem = self._forbidden(item)
            if problem:
                raise Refused(f"override {item!r}: {problem}")
        symbols = list(dict.fromkeys(req.symbols or self.ctx.pairs))
        unknown = [s for s in symbols if s not in self.ctx.instruments]
        if unknown:
            raise Refused(f"unknown symbol {unknown[0]} (the topology's: {', '.join(self.ctx.instruments)})")
        models = req.models
        wanted = [*(req.timeframes or p.timeframes), *(str(d.get("timeframe")) for d in (models or {}).values() if not req.timeframes)]
        outside = [t for t in wanted if t not in self.ctx.timeframes]
        if outside:
            raise Refused(f"timeframe {outside[0]} is not one of the topology's ({', '.join(self.ctx.timeframes)})")
        timeframes = tapes.ordered_timeframes(wanted)
        if req.lookback is not None:
            if req.start is not None or req.end is not None:
                raise Refused("give start and end, or lookback, not both")
            end = await self._newest(symbols, timeframes)
            if end is None:
                raise Refused(f"no bars of {','.join(symbols)} {','.join(timeframes)} stored in {', '.join(p.tables)} or received: nothing to look back on")
            start = end - (parse_ms(req.lookback) or 0)
        else:
            if req.start is None or req.end is None:
                raise Refused("give the window: start and end (ms), or lookback (2h)")
            start, end = req.start, req.end
            if end <= start:
                raise Refused(f"empty window: end {_iso(end)} is not after start {_iso(start)}")
        pinned = {name: await self._artifact(str(decl["artifact"])) for name, decl in (models or {}).items() if decl.get("artifact")}
        overrides = self._overrides(req, symbols, timeframes, start, end, pinned)
        try:
            digest, project, declared = await self.ctx.offload(check_child, overrides, str(self.root / PENDING))
        except UserError as exc:
            raise Refused(f"the child run would not start: {str(exc).splitlines()[0]}") from None
        dropped = {name: None for name in declared if models is not None and name not in models}
        if dropped:  # the request's models replace the others (a model removed leaves the topology valid)
            overrides += leaves(f"topology.services.{MODELS_SERVICE}.params.models", dropped)
        request = req.model_dump(mode="json", exclude_none=True)
        run_id = req.run_id or "bt-" + hashlib.sha256(orjson.dumps([request, digest], option=orjson.OPT_SORT_KEYS)).hexdigest()[:12]
        overrides += leaves(f"topology.services.{self.ctx.service}.params.run_id", run_id)
        folder = self.root / run_id
        command = [sys.executable, "-m", "framework.cli", PROFILE, f"data_dir={folder}", *overrides]
        env = {**os.environ, "FXFLOW_PROJECT": project}
        return Run(run_id, request, folder, command, env, symbols, timeframes, start, end, pinned)

    def _forbidden(self, override: str) -> str | None:
        """Why a request may not override this (a backtest stays in its own process and directory, and trades on paper)."""
        key = override.partition("=")[0].lstrip("+~").strip()
        if not key.startswith("topology."):
            return "a request sets the topology of its run (topology.…); the window, symbols and directory are the runner's"
        engine = f"topology.services.{self.ctx.service}.params."
        if key.startswith(engine) and key.removeprefix(engine).split(".")[0] in RUNNER_PARAMS:
            return f"the runner sets {key.removeprefix(engine)} (give the window, symbols and timeframes in the request)"
        if key.startswith(CONFINED):
            return "a backtest runs in a process of its own, with its own bus, log and stores"
        return None

    async def _artifact(self, key: str) -> Any:
        if self.ctx.artifacts is None:
            raise Refused(f"artifact {key}: this run has no artifact store")
        name, sep, version = key.rpartition(":")
        try:
            if sep and version.isdigit() and not _SHA256.match(key):
                return await self.ctx.artifacts.resolve(name, version=int(version))
            return await self.ctx.artifacts.resolve(key)
        except ArtifactError as exc:
            raise Refused(f"artifact {key}: {_one_line(str(exc))}") from None

    def _overrides(self, req: Request, symbols: list[str], timeframes: list[str], start: int, end: int, pinned: dict[str, Any]) -> list[str]:
        p = self.params
        engine: dict[str, Any] = {"source": "file", "file": BARS_FILE, "start": _iso(start), "end": _iso(end), "timeframes": timeframes,
                                  "status_file": STATUS_FILE}  # fmt: skip
        if pinned:
            engine["artifacts"] = MODELS_FILE
        out = [f"pairs=[{','.join(symbols)}]", "progress=false", *leaves(f"topology.services.{self.ctx.service}.params", engine)]
        for service, params in p.child.items():
            out += leaves(f"topology.services.{service}.params", params)
        out += p.overrides
        if req.models:
            declared = {name: {k: v for k, v in decl.items() if k != "artifact"} for name, decl in req.models.items()}
            out += leaves(f"topology.services.{MODELS_SERVICE}.params.models", declared)
        return [*out, *req.overrides]

    async def _newest(self, symbols: list[str], timeframes: list[str]) -> int | None:
        """The close of the newest bar of these streams, received or stored."""
        keys = {(s, t) for s in symbols for t in timeframes}
        closes = [max(v[HELD.index("ts_close")] for v in rows.values()) for key, rows in self.held.items() if key in keys and rows]
        for name in self.params.tables:
            rows = await self._table(name).query(
                "SELECT max(ts_close) AS last, count() AS n FROM {table} WHERE symbol IN {symbols:Array(String)} "
                "AND timeframe IN {timeframes:Array(String)} AND coalesce(complete, true)", {"symbols": symbols, "timeframes": timeframes},
            )  # fmt: skip
            if rows and rows[0].get("n"):
                closes.append(int(rows[0]["last"]))
        return max(closes) if closes else None

    def _table(self, name: str) -> Any:
        try:
            return self.ctx.table(name)
        except KeyError:
            raise Refused(f"table {name} is not declared for {self.ctx.service} (add it to its reads)") from None

    # ------------------------------------------------------------------ the child's inputs

    async def _prepare(self, run: Run) -> None:
        frame = await self._bars(run)
        if frame is None or not len(frame):
            raise Refused(f"no bars of {','.join(run.symbols)} {','.join(run.timeframes)} between {_iso(run.start_ms)} and "
                          f"{_iso(run.end_ms)} in {', '.join(self.params.tables)} (or received)")  # fmt: skip
        external = await self._external()
        models = []
        for name, ref in run.pinned.items():
            path = await self.ctx.artifacts.path(ref)
            models.append({"name": name, "kind": ref.kind, "metadata": ref.metadata, "file": f"models/{ref.sha256}", "path": str(path),
                           "tag": f"{name}@promoted", "tag_metadata": {"promoted_from": f"{ref.name}:{ref.version}"}})  # fmt: skip
        await self.ctx.offload(write_inputs, run.folder, frame, external, models)

    async def _bars(self, run: Run) -> Any:
        import pandas as pd

        window = {"symbols": run.symbols, "timeframes": run.timeframes, "start": run.start_ms, "end": run.end_ms}
        frames = [self._held_frame(run)]
        for name in self.params.tables:
            frames.append(await self._table(name).query_frame(tapes.TABLE_SQL, window))
        frames = [f for f in frames if f is not None and len(f)]
        if not frames:
            return None
        frame = pd.concat(frames, ignore_index=True)
        return frame.drop_duplicates(["symbol", "timeframe", "ts"], keep="first").reset_index(drop=True)

    def _held_frame(self, run: Run) -> Any:
        import pandas as pd

        columns = ["symbol", "timeframe", "ts", *HELD]
        i_close = HELD.index("ts_close")
        rows = [
            (symbol, timeframe, ts, *row)
            for (symbol, timeframe), held in sorted(self.held.items())
            if symbol in run.symbols and timeframe in run.timeframes
            for ts, row in sorted(held.items())
            if ts >= run.start_ms and row[i_close] is not None and row[i_close] <= run.end_ms
        ]
        return pd.DataFrame(rows, columns=columns) if rows else None

    async def _external(self) -> list[dict[str, Any]]:
        """Every calendar and FRED row stored (features take each from its release, so later rows do no harm)."""
        out: list[dict[str, Any]] = []
        for name in self.params.external_tables:
            rows = await self._table(name).query("SELECT * FROM {table} FINAL ORDER BY ts, series")
            for row in rows:
                out.append({k: row[k] for k in EXTERNAL_FIELDS if k in row and (row[k] is not None or k == "value")})
        return out

    # ------------------------------------------------------------------ running

    async def _launch(self, run: Run) -> None:
        self.running[run.run_id] = run
        self.ctx.log.info("backtest %s: %s %s, %s .. %s%s", run.run_id, ",".join(run.symbols), ",".join(run.timeframes),
                          _iso(run.start_ms), _iso(run.end_ms), f" ({run.request['reason']})" if run.request.get("reason") else "")  # fmt: skip

        async def done(outcome: Outcome) -> None:
            await self._finished(run, outcome)

        async def crashed(exc: Exception) -> None:
            await self._finished(run, Outcome(code=None, error=f"{type(exc).__name__}: {exc}"))

        await self.ctx.background(run_child, run.run_id, run.folder, run.command, run.env, self.timeout_s, self.children,
                                  then=done, failed=crashed, name=f"backtest:{run.run_id}")  # fmt: skip

    @every("status_every")
    async def follow(self) -> None:
        for run in list(self.running.values()):
            await self._follow(run)

    async def _follow(self, run: Run) -> None:
        """Republish the child's new ``started`` and ``progress`` statuses."""
        path = run.folder / STATUS_FILE
        try:
            with open(path, "rb") as file:
                file.seek(run.offset)
                data = file.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        run.offset += end
        for line in data[:end].splitlines():
            try:
                status = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            kind = status.get("status")
            if kind in ("started", "progress"):
                await self._status(run, kind, progress=status.get("progress"), message=status.get("message"))
            elif kind == "failed":
                run.last_failure = status.get("message")
            elif kind == "completed":
                run.completed_message = status.get("message")

    async def _finished(self, run: Run, outcome: Outcome) -> None:
        if self.running.pop(run.run_id, None) is None:
            return  # already recorded (the service stopped meanwhile)
        await self._follow(run)
        result = orjson.loads(run.result_path.read_bytes()) if outcome.code == 0 and run.result_path.is_file() else None
        if result is not None:
            await self._completed(run, result)
        else:
            await self._failed(run, self._reason(run, outcome))
        await self._retain()
        await self._next()

    async def _retain(self) -> None:
        """Remove the directories of finished runs the retention rule says go (see the module docstring)."""
        rule = self.params.retention
        max_age = parse_ms(rule.max_age) if rule.max_age is not None else None
        busy = {*self.running, *(r.run_id for r in self.queue)}
        expired = expired_runs(self.root, rule.keep, None if max_age is None else max_age / 1000, time.time(), busy)
        doomed = [p for p in self.root.glob(f"{REMOVING}*") if p.is_dir()] if self.root.is_dir() else []  # a removal cut short
        for path in expired:
            target = path.with_name(REMOVING + path.name)
            try:
                os.rename(path, target)
            except OSError as exc:
                self.ctx.log.warning("backtest run directory %s not removed: %s", path, exc)
                continue
            doomed.append(target)
        if doomed:
            await self.ctx.offload(remove_dirs, doomed)
        if expired:
            self.ctx.log.info("removed %d old backtest run director%s (retention: keep %s, max_age %s)", len(expired),
                              "y" if len(expired) == 1 else "ies", rule.keep, rule.max_age)  # fmt: skip

    def _reason(self, run: Run, outcome: Outcome) -> str:
        if outcome.error:
            return outcome.error
        if outcome.timed_out:
            return f"timed out after {self.params.timeout} (killed)"
        if outcome.code is not None and outcome.code < 0:
            try:
                name = signal.Signals(-outcome.code).name
            except ValueError:
                name = f"signal {-outcome.code}"
            return f"the child run was killed by {name} after {outcome.seconds:.1f}s"
        detail = run.last_failure or _error_line(run.folder / OUTPUT_FILE) or "no result.json"
        return f"the child run failed (exit {outcome.code}): {_one_line(detail)}; see {run.folder / OUTPUT_FILE}"

    async def _next(self) -> None:
        while self.queue and len(self.running) < self.params.max_concurrent:
            await self._launch(self.queue.popleft())

    # ------------------------------------------------------------------ reporting

    async def _status(self, run: Run, status: str, *, progress: Any = None, metrics: dict[str, Any] | None = None,
                      message: str | None = None) -> None:  # fmt: skip
        out = status_message(run.run_id, self.ctx.clock.now_ms(), status, progress=progress, metrics=metrics, message=message)
        await self.ctx.publish("status", out)

    async def _completed(self, run: Run, result: dict[str, Any]) -> None:
        now = self.ctx.clock.now_ms()
        metrics = dict(result.get("metrics") or {})
        details = {**(result.get("details") or {}), "request": run.request, "account": await self._account(run, now)}
        for name, value in sorted(metrics.items()):
            figure = number(value)
            if figure is not None:
                await self.ctx.publish("results", {"run_id": run.run_id, "ts": now, "metric": name, "value": figure, "details": details})
        await self.ctx.flush("results")
        self.completed += 1
        self.ctx.log.info("backtest %s completed: %s", run.run_id, ", ".join(f"{k} {v:.6g}" for k, v in sorted(metrics.items())
                                                                             if number(v) is not None and k in ("trades", "total_return", "sharpe", "max_drawdown")))  # fmt: skip
        await self._status(run, "completed", progress=1.0, metrics=metrics, message=run.completed_message)

    async def _account(self, run: Run, now: int) -> dict[str, Any] | None:
        """What this run's account did over the run's window (performance-monitoring's report): the backtest's result
        beside it shows how far the replay is from the account. None when nobody answers."""
        try:
            report = await self.ctx.request("performance", {"query": "report", "ts": now, "curve_points": ACCOUNT_POINTS}, timeout=10.0)
        except Exception as exc:  # no port bound, nobody answering, a timeout: the result stands without it
            self.ctx.log.debug("backtest %s: no account report: %s: %s", run.run_id, type(exc).__name__, exc)
            return None
        curve = [pt for pt in report.get("equity_curve") or () if run.start_ms <= pt.get("ts", -1) <= run.end_ms]
        trades = [t for t in report.get("trades") or () if run.start_ms <= (t.get("close_ts") or -1) <= run.end_ms]
        first, last = (curve[0]["equity"], curve[-1]["equity"]) if curve else (None, None)
        change = last / first - 1.0 if first and last is not None else None
        return {"currency": report.get("currency"), "equity_start": first, "equity_end": last, "return": change,
                "trades": len(trades), "pnl": round(sum(float(t.get("pnl") or 0.0) for t in trades), 2)}  # fmt: skip

    async def _failed(self, run: Run, reason: str) -> None:
        self.failed += 1
        self.ctx.log.error("backtest %s failed: %s", run.run_id, reason)
        await self._status(run, "failed", message=reason)

    async def on_stop(self) -> None:
        """A child still running when the service stops is killed and recorded as failed (live; on simulated time the run
        cannot end with one in flight); a queued request never ran."""
        for run in list(self.running.values()):
            killed = self.children.kill(run.run_id)
            self.running.pop(run.run_id, None)
            await self._follow(run)
            if not killed and run.result_path.is_file():  # it ended, and the service stopped before hearing of it
                await self._completed(run, orjson.loads(run.result_path.read_bytes()))
            else:
                await self._failed(run, "stopped with the service before it finished")
        while self.queue:
            await self._failed(self.queue.popleft(), "not run: the service stopped first")
