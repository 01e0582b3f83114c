"""The data bridge: everything real-time lands in the archive tables once.

Messages are collected into batches. For each batch the bridge asks the key-value store
(Dragonfly/Redis live, in-process in the demo) which dedup keys are already claimed, and
hands the rest to its table ports, remembering their keys as unclaimed (a repeat of one is
dropped too). Its claimer waits until those rows are durably written
(:meth:`~framework.context.NodeContext.flush`) and only then claims their keys. A claim
therefore always stands for a row in the table: a bridge killed between the write and the
claim writes the row again after its restart (ReplacingMergeTree ordering keys collapse the
copy), and one killed before the write has claimed nothing, so the catch-up replay writes
it (docs/decisions.md, "Claim after the write"). Handlers never wait for a write; which
messages are archived does not depend on when the claims land (claimed or unclaimed, a key
counts as seen).

Gaps in the real-time path (NATS is at most once) are filled from the Kafka archive:
- sequence gaps of the tick stream by the runtime (the input is bound to the archive with
  ``replay: true``; :mod:`framework.sequencing`), which hands the missing ticks to
  :meth:`on_tick` like any other;
- a collector's gap marker, and the bridge's own downtime (on start, from the newest tick it
  archived, less ``catch_up_margin``), by replaying that span here.
Spans not yet replayed when the bridge stops are kept in its state file and replayed on the
next start, so a restart never drops one.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson

from framework.durations import parse_ms
from framework.node import Node, every, handles
from nodes.data_bridge.spec import DataBridgeParams

EXTERNAL_PORTS = {
    "economic_calendar": "archived_calendar",
    "fred_indicators": "archived_fred",
    "commodity_prices": "archived_commodities",
}
Span = tuple[int, int, str]
CATCH_UP = "catch-up after a restart"


def tick_key(t: dict[str, Any]) -> str:
    return f"t|{t['symbol']}|{t['ts']}|{t['source']}|{t['bid']!r}|{t['ask']!r}"


def bar_key(b: dict[str, Any]) -> str:
    return f"b|{b['symbol']}|{b['timeframe']}|{b['ts']}|{b['source']}|{b.get('revision', 0)}"


def external_key(e: dict[str, Any]) -> str:
    return f"e|{e['type']}|{e['series']}|{e['ts']}|{e['source']}"


class DataBridge(Node[DataBridgeParams]):
    async def on_start(self) -> None:
        self.pending: list[tuple[str, str, dict[str, Any], str | None]] = []
        self.duplicates = 0
        self.written = 0
        self.replayed = 0
        self.gaps_seen = 0
        self.margin_ms = parse_ms(self.params.replay_margin) or 0
        self._replays: asyncio.Queue[Span] = asyncio.Queue()
        self._unfilled: list[Span] = []
        self._flush_lock = asyncio.Lock()
        self._unclaimed: dict[str, int | None] = {}
        """Keys handed to the table writers and not yet claimed, with the tick time of each tick."""
        self._claims = asyncio.Event()
        state = self._load_state()
        self.archived_through: int | None = state.get("archived_through")
        self._replayer = asyncio.create_task(self._replay_loop(), name=f"{self.ctx.service}.replay")
        self._claimer = asyncio.create_task(self._claim_loop(), name=f"{self.ctx.service}.claims")
        for start, end, why in state.get("unfilled", []):
            self._request_replay((int(start), int(end), str(why)))
        await self._catch_up()

    async def on_stop(self) -> None:
        for task in (self._replayer, self._claimer):
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        await self.flush()
        await self._claim_written()
        for start, end, why in self._unfilled:
            self.ctx.log.warning(
                "stopping before the replay of %s (%d..%d): that gap is not filled yet; it is replayed on the next start",
                why, start, end,
            )  # fmt: skip
        self._save_state()
        self.ctx.log.info(
            "archived %d message(s), dropped %d duplicate(s), replayed %d, %d gap marker(s) seen",
            self.written, self.duplicates, self.replayed, self.gaps_seen,
        )  # fmt: skip

    # --- inputs -----------------------------------------------------------------------

    @handles("ticks")
    async def on_tick(self, tick: dict[str, Any]) -> None:
        await self._add("archived_ticks", tick_key(tick), tick)

    @handles("bars")
    async def on_bar(self, bar: dict[str, Any]) -> None:
        await self._add("archived_bars", bar_key(bar), bar)

    @handles("external")
    async def on_external(self, event: dict[str, Any]) -> None:
        await self._add(EXTERNAL_PORTS[event["type"]], external_key(event), event)

    @handles("gaps")
    async def on_gap(self, gap: dict[str, Any]) -> None:
        self.gaps_seen += 1
        if self.params.replay_on_gap_marker:
            self._request_replay((gap["start_ts"], gap["end_ts"], f"gap marker from {gap['source']} ({gap['reason']})"))

    # --- batching, dedup, claims ---------------------------------------------------------

    async def _add(self, port: str, key: str, message: dict[str, Any]) -> None:
        self.pending.append((port, key, message, self.ctx.current_id))
        if len(self.pending) >= self.params.batch_size:
            await self.flush()

    @every("flush_every")
    async def flush(self) -> None:
        async with self._flush_lock:
            while self.pending:
                batch = self.pending[: self.params.batch_size]
                del self.pending[: len(batch)]
                try:
                    await self._archive(batch)
                except BaseException:
                    self.pending[:0] = batch  # a stop interrupted it: kept for the next flush (handed keys are skipped)
                    raise

    async def _archive(self, batch: list[tuple[str, str, dict[str, Any], str | None]]) -> None:
        """Hand the batch's new messages to the table writers; the claimer claims them once written."""
        unique: dict[str, tuple[str, dict[str, Any], str | None]] = {}
        for port, key, message, cause in batch:
            unique.setdefault(key, (port, message, cause))
        self.duplicates += len(batch) - len(unique)
        keys = [key for key in unique if key not in self._unclaimed]
        known = await self.ctx.table(self.params.dedup_table).seen(keys)
        fresh = [key for key, old in zip(keys, known) if not old]
        self.duplicates += len(unique) - len(fresh)
        for key in fresh:
            port, message, cause = unique[key]
            self._unclaimed[key] = message["ts"] if port == "archived_ticks" else None
            await self.ctx.publish(port, message, caused_by=cause)
        if fresh:
            self._claims.set()

    async def _claim_loop(self) -> None:
        while True:
            await self._claims.wait()
            self._claims.clear()
            await self._claim_written()

    async def _claim_written(self) -> bool:
        """Wait until what was handed over so far is written, then claim its keys."""
        handed = dict(self._unclaimed)
        if not handed:
            return True
        if not await self.ctx.flush():
            self.ctx.log.error("%d archived row(s) could not be written (spilled); their keys stay unclaimed", len(handed))
            return False
        await self.ctx.table(self.params.dedup_table).claim(list(handed))
        for key in handed:
            self._unclaimed.pop(key, None)
        self.written += len(handed)
        ticks = [ts for ts in handed.values() if ts is not None]
        if ticks:
            self.archived_through = max(self.archived_through or 0, max(ticks))
        self._save_state()
        return True

    # --- state ----------------------------------------------------------------------------

    @property
    def _state_file(self) -> Path:
        return Path(self.ctx.data_dir) / "bridge-state.json"

    def _load_state(self) -> dict[str, Any]:
        try:
            state = orjson.loads(self._state_file.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as exc:
            self.ctx.log.warning("ignoring an unreadable state file %s: %s", self._state_file, exc)
            return {}
        return state if isinstance(state, dict) else {}

    def _save_state(self) -> None:
        path = self._state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(orjson.dumps({"archived_through": self.archived_through, "unfilled": self._unfilled}))
        os.replace(tmp, path)

    # --- gap filling --------------------------------------------------------------------

    async def _catch_up(self) -> None:
        """Replay what arrived while this bridge was down: from the newest tick it archived
        (less ``catch_up_margin``), at most ``catch_up`` back."""
        if self.params.catch_up is None:
            return
        now = self.ctx.clock.now_ms()
        if now <= 0:
            return
        oldest = now - (parse_ms(self.params.catch_up) or 0)
        last = self.archived_through
        if last is None:
            rows = await self.ctx.table("historical_ticks").query(
                "SELECT max(ts) AS last FROM historical_ticks WHERE ts >= {since:Int64}", {"since": oldest}
            )
            last = int(rows[0]["last"]) if rows and rows[0]["last"] else None
        if last:
            start = max(oldest, last - (parse_ms(self.params.catch_up_margin) or 0))
            self._request_replay((start, now, CATCH_UP))

    def _request_replay(self, span: Span) -> None:
        self._unfilled.append(span)
        self._replays.put_nowait(span)

    async def _replay_loop(self) -> None:
        while True:
            span = await self._replays.get()
            start, end, why = span
            try:
                await self.replay_span(start - self.margin_ms, end + self.margin_ms, why)
            except Exception as exc:
                self.ctx.log.error("replay of %s (%d..%d) failed: %s; the gap stays open", why, start, end, exc)
                continue
            self._unfilled.remove(span)
            self._save_state()

    async def replay_span(self, start: int, end: int, why: str) -> int:
        """Feed the archived ticks stamped in ``[start, end)`` through the dedup path (after a restart, bars and
        external data too: they were missed as well); returns how many ticks were read."""
        ports = ("ticks", "bars", "external") if why == CATCH_UP else ("ticks",)
        counts = dict.fromkeys(ports, 0)
        for port in ports:
            handle = {"ticks": self.on_tick, "bars": self.on_bar, "external": self.on_external}[port]
            async for records in self.ctx.replay(port, start, end):
                for record in records:
                    counts[port] += 1
                    await handle(record.value)
        await self.flush()
        self.replayed += counts["ticks"]
        others = "".join(f", {counts[p]} {p}" for p in ports[1:])
        self.ctx.log.info("replayed %d archived tick(s)%s for %s", counts["ticks"], others, why)
        return counts["ticks"]
