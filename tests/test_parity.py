"""Live and replay give the same trades: one recorded feed through `topology=live` (real `fxrun` process, NATS and
Kafka servers, the paper broker) and through the simulated backtest profile yields identical orders and fills: ids,
sides, volumes, prices, commissions and event timestamps.

The live run is paced (`runtime.clock_origin`, 60x): every message crosses NATS (and the Kafka archives of signals,
decisions and orders) with real, varying delays that the pacing multiplies sixtyfold, so ticks that follow a signal
routinely reach the risk gate or the broker before the signal's order does, and three instruments interleave
differently on each run. What must not depend on that: a decision is judged on the prices of its own time, an order
carries its decision's time, the paper broker fills it on the first tick after that time (however late the order
arrives), at the conversion rates of that tick, and its tickets follow from the ids, not from arrival order.

Both runs share the same settings, chosen so that no *timeout* fires in either (they are about wall time by design and
the pacing multiplies wall delays sixtyfold): signal time to live, max signal and order ages, the acknowledgement and
pending-approval timeouts, the gate's price history. The tick aggregator takes every symbol's ticks on one wildcard
subscription: its watermark is shared by the symbols, and NATS keeps the order of one subscription only (per-symbol
subscriptions are handled by separate tasks that drift apart under load, and a tick the watermark overtook revises
its bar). Stores: ClickHouse is the embedded chdb in both (the live profile's default); no PostgreSQL or Redis table
is on this path.

Compared: every order and fill but those decided on the bars that the end of the input closes (a bounded run drains
its unfinished buckets at stop, and the stop hands them on in another order on simulated time than over NATS, where
the trading services, a cycle, also stop one after the other): the run's last minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from framework.testing import query
from nodes.marketdata.synthetic import SyntheticQuotes

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_793_606_400_000  # Monday 2026-11-02 08:00 UTC
MINUTES = 30
SYMBOLS = ["EURUSD", "XAUUSD", "USDJPY"]
SPEED = 60
SERVICES = "[tick-replay,tick-aggregator,feature-engineering-service,inference-service,risk-management,execution-service,mt5-connector]"
FEATURES = (
    "{name: parity, history: 8, block: 10, groups: {returns: null, volatility: null, momentum: null, bands: null, "
    "activity: null, crosspair: null, session: null, events: null, macro: null, context: null, "
    "trend: {sma: [2, 4], ema: [], slope_lag: 2, crosses: [], macd: null, adx: null, aroon: null, linreg: null}}}"
)
ORDER_COLUMNS = ("order_id, client_order_id, signal_id, decision_id, status, symbol, side, quantity, filled_quantity, avg_price, "
                 "ts, reason, broker_order_id, stop_loss, take_profit")  # fmt: skip
FILL_COLUMNS = "fill_id, order_id, broker_order_id, symbol, side, quantity, price, ts, commission, slippage"


def overrides(ticks: Path) -> list[str]:
    s = "++topology.services"
    return [
        f"pairs=[{','.join(SYMBOLS)}]",
        f"only={SERVICES}",
        f"{s}.tick-replay.enabled=true",
        f"{s}.tick-replay.params.source=csv",
        f"{s}.tick-replay.params.path={ticks}",
        f"{s}.tick-aggregator.enabled=true",
        f"{s}.tick-aggregator.inputs.ticks.nats='ticks.>'",  # one subscription: the ticks of all symbols in their order
        f"{s}.tick-aggregator.params.lateness=10s",
        f"{s}.tick-aggregator.params.close_every=1h",  # bars close on the ticks' watermark, not on a paced timer
        f"{s}.feature-engineering-service.params.feature_set={FEATURES}",
        f"{s}.inference-service.params.models={{sma-cross-1m: {{kind: sma_cross, timeframe: 1m, ttl: 1h, "
        "params: {fast: sma_dist_2, slow: sma_dist_4}}, signal-1h: null}",
        f"{s}.risk-management.params.risk_per_trade=0.002",
        f"{s}.risk-management.params.atr_period=5",
        f"{s}.risk-management.params.quote_history=1h",
        f"{s}.risk-management.params.pending_timeout=1h",
        f"{s}.execution-service.params.max_signal_age=1h",
        f"{s}.execution-service.params.ack_timeout=1h",
        f"{s}.mt5-connector.params.max_order_age=1h",
        f"{s}.mt5-connector.params.paper={{fill_on: tick, slippage: {{points: 2}}, commission: {{per_lot: 2.5, per_million: 20}}}}",
    ]


def fxrun(args: list[str], env: dict[str, str] | None = None) -> float:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "framework.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=240)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    return time.monotonic() - started


def trades(data_dir: Path, before: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The order events and fills of the orders decided before ``before``."""
    orders = asyncio.run(query(data_dir, f"SELECT {ORDER_COLUMNS} FROM orders FINAL ORDER BY ts, order_id, status"))
    decided = {o["order_id"] for o in orders if o["status"] == "pending" and o["ts"] < before}
    fills = asyncio.run(query(data_dir, f"SELECT {FILL_COLUMNS} FROM executions FINAL ORDER BY ts, fill_id"))
    return [o for o in orders if o["order_id"] in decided], [f for f in fills if f["order_id"] in decided]


def difference(replayed: list[dict[str, Any]], live: list[dict[str, Any]], show: int = 4) -> str:
    """The rows only one run has (the first few), in one line each."""
    def brief(row: dict[str, Any]) -> str:
        return " ".join(f"{k}={row[k]}" for k in ("order_id", "fill_id", "status", "symbol", "side", "quantity", "price",
                                                   "avg_price", "ts", "reason") if row.get(k) is not None)  # fmt: skip

    a, b = [brief(r) for r in replayed], [brief(r) for r in live]
    only_a, only_b = [r for r in a if r not in b], [r for r in b if r not in a]
    return (f"{len(only_a)} row(s) only on replay, {len(only_b)} only live (of {len(a)} and {len(b)}):\n  replay: "
            + "\n  replay: ".join(only_a[:show]) + "\n  live:   " + "\n  live:   ".join(only_b[:show]))


def healthy(data_dir: Path) -> dict[str, Any]:
    snapshot = json.loads((data_dir / "metrics.json").read_text())
    services = {s["service"]: s for s in snapshot["services"]}
    assert all(s["dead_lettered"] == 0 and s["errors"] == 0 for s in services.values()), services
    assert not (data_dir / "deadletter").exists() or not any((data_dir / "deadletter").iterdir())
    return snapshot


def test_a_recorded_feed_gives_the_same_orders_and_fills_live_and_on_replay(tmp_path: Path, nats_server_fn, kafka_server_fn) -> None:
    quotes = SyntheticQuotes(SYMBOLS, seed=5, mean_interval_ms=1500).between(T0, T0 + MINUTES * 60_000)
    recorded = pd.DataFrame([q._asdict() for q in quotes])
    ticks = tmp_path / "ticks.csv"
    recorded.to_csv(ticks, index=False)
    common = overrides(ticks)

    replayed = tmp_path / "backtest"
    fxrun(["topology=backtest", f"data_dir={replayed}", *common])

    live = tmp_path / "live"
    env = dict(os.environ, FXFLOW_NATS_URL=nats_server_fn.url, FXFLOW_KAFKA_BOOTSTRAP=kafka_server_fn.url.removeprefix("kafka://"))
    origin = pd.Timestamp(T0 - 5 * 60_000, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ")
    wall = fxrun(["topology=live", f"data_dir={live}", *common, "topology.nats.auth=null", "topology.runtime.metrics_port=null",
                  f"++topology.runtime.clock_speed={SPEED}", f"++topology.runtime.clock_origin={origin}"], env)  # fmt: skip
    print(f"live run: {wall:.1f} s wall for {MINUTES} min of {len(recorded)} ticks at {SPEED}x")

    healthy(replayed)
    snapshot = healthy(live)
    assert snapshot["pubsub"]["disconnects"] == 0 and snapshot["pubsub"]["publish_errors"] == 0  # NATS, without a hitch
    metrics = {s["service"]: s for s in snapshot["services"]}
    assert metrics["tick-replay"]["out"] == len(recorded) == metrics["tick-aggregator"]["in"]

    end = T0 + MINUTES * 60_000
    orders, fills = trades(replayed, before=end)
    live_orders, live_fills = trades(live, before=end)
    assert live_orders == orders, difference(orders, live_orders)
    assert live_fills == fills, difference(fills, live_fills)

    # not a trivial agreement: every instrument trades both ways, positions reverse, fills cost money
    assert len(fills) >= 8 and {f["symbol"] for f in fills} == set(SYMBOLS)
    assert {f["side"] for f in fills} == {"buy", "sell"} and all(f["commission"] > 0 for f in fills)
    assert len({round(f["quantity"], 2) for f in fills}) > len(SYMBOLS)  # reversals close and open in one order
    # each order carries its decision's time (the close of the signal's bar) and fills on the first tick after it
    submitted = {o["order_id"]: o for o in orders if o["status"] == "submitted"}
    assert submitted and all(o["ts"] % 60_000 == 0 for o in submitted.values())
    by_symbol = {s: recorded[recorded["symbol"] == s].sort_values("ts") for s in SYMBOLS}
    for f in fills:
        order = submitted[f["order_id"]]
        after = by_symbol[f["symbol"]]
        first = after[after["ts"] > order["ts"]].iloc[0]
        assert f["ts"] == first["ts"], (f, order)
        quoted = first["ask"] if f["side"] == "buy" else first["bid"]
        assert f["price"] - quoted == pytest.approx(f["slippage"]) and f["slippage"] != 0  # 2 points, against the trader
