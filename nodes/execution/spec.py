"""The declaration of the execution service: approved signals in, orders, executions and positions out.

Kept light (pydantic and framework imports only): the lint and the docs import every spec.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from framework.params import PositiveDuration
from framework.registry import NodeSpec, Port


class ExecutionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_signal_age: PositiveDuration = Field(
        default="10s", description="an approved signal older than this (by its ts) is stale: dead-lettered, never traded"
    )
    ack_timeout: PositiveDuration = Field(
        default="5s", description="a submitted order with no fill, error or acknowledgement this long after it went out is queried"
    )
    ack_retries: int = Field(
        default=3, ge=1, description="queries the broker may leave unanswered before such an order is failed"
    )
    query_timeout: PositiveDuration = Field(default="5s", description="how long one broker query (request/reply) may take")
    check_every: PositiveDuration = Field(
        default="1s", description="how often in-flight orders are checked and a failed reconciliation is retried (event time)"
    )
    mark_every: PositiveDuration = Field(default="1m", description="open positions are marked to market in `positions` this often")
    snapshot_every: PositiveDuration = Field(default="5s", description="state saved this often (and at stop) for a restart")
    keep: PositiveDuration = Field(
        default="7d", description="finished orders and applied fill ids are remembered this long (duplicate signals and fills)"
    )
    orders_table: str | None = Field(
        default="orders",
        description="the table the orders port writes, read at start for the orders a lost snapshot missed (none: not read; "
        "a backtest, whose tables may hold an earlier run)",
    )


SPEC = NodeSpec(
    name="execution",
    factory="nodes.execution.node:Execution",
    description="Orders from approved signals through the order state machine; broker fills and errors; netting positions "
    "with P&L in the account currency; reconciliation with the broker at start.",
    params=ExecutionParams,
    inputs={
        "approved": Port("approved_signal.v1", "sized signals from the risk gate: one order each (client order id from the signal id)"),
        "fills": Port("fill.v1", "broker executions, each applied once (fill_id)"),
        "broker_errors": Port("broker_error.v1", "broker refusals and failures, with the MT5 retcode"),
        "ticks": Port("tick.v1", "quotes: positions marked to market, P&L converted to the account currency", required=False),
        "bars": Port("bar.v1", "closes, where a run has bars and no ticks (backtests)", required=False),
    },
    outputs={
        "orders": Port("order_event.v1", "every state change of every order (orders.submitted.* is what the broker executes)"),
        "executions": Port("fill.v1", "every broker fill once, also for an order this service does not know"),
        "positions": Port("any", "one row per symbol per change or mark: netting quantity, average price, P&L in the account currency"),
        "alerts": Port("alert.v1", "unknown fills, illegal broker events, position differences, reconciliation and acknowledgement trouble"),
        "broker": Port("broker_query.v1", "request/reply to the broker connector: its state, open orders and fills (reconciliation)"),
    },
    role="execution",
)
