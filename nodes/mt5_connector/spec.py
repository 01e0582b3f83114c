"""The mt5-connector service: orders to a broker, its deals back as fills, its state on request.

Light on purpose (pydantic and framework imports only): lint and docs import every spec.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from framework.params import PositiveDuration
from framework.registry import NodeSpec, Port
from nodes.broker.models import PaperParams
from nodes.broker.mt5 import Mt5Params


class Mt5ConnectorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    broker: Literal["paper", "mt5", "mt5linux"] = Field(
        default="paper",
        description="paper (default): the simulated account; mt5: the MetaTrader5 package (Windows); "
        "mt5linux: the same terminal through mt5linux's RPyC bridge (Linux)",
    )
    poll: PositiveDuration = Field(default="1s", description="how often MT5 deals are polled (the paper broker needs no polling)")
    max_order_age: PositiveDuration = Field(
        default="1m",
        description="an order older than this (its ts against the clock) when it first arrives is refused with a broker error "
        "`stale_order`, never sent: an old decision redelivered after a replay or a long outage must not trade now; the paper "
        "broker keeps this much of recent prices (and a minute more), so a younger order fills on the first price after its time",
    )
    paper: PaperParams = Field(default_factory=PaperParams)
    mt5: Mt5Params = Field(default_factory=Mt5Params)
    sync_state: bool | None = Field(
        default=None,
        description="write the broker's state to disk after every change (so a killed process loses nothing "
        "acknowledged); default: on a wall clock, off on a simulated one (saved at stop)",
    )

    @property
    def poll_every(self) -> str:
        """The timer's period: ``poll`` for MT5; the paper broker's timer only keeps the connection-free loop idle."""
        return self.poll if self.broker != "paper" else "1d"


SPEC = NodeSpec(
    name="mt5_connector",
    factory="nodes.mt5_connector.node:Mt5Connector",
    description="Broker gateway: submits orders to the paper broker or MetaTrader 5, publishes each deal once as a fill "
    "and refusals with their MT5 return code, answers broker.query with the account, positions, orders and fills, "
    "and logs every broker request and response (secrets masked).",
    params=Mt5ConnectorParams,
    inputs={
        "orders": Port("order_event.v1", "orders to send (orders.submitted.*)"),
        "ticks": Port("tick.v1", "quotes: the paper broker's prices and clock", required=False),
        "bars": Port("bar.v1", "bars: the paper broker's prices with fill_on: bar_open", required=False),
        "query": Port("broker_query.v1", "requests for the broker's state; the reply is a broker_state.v1"),
    },
    outputs={
        "fills": Port("fill.v1", "one per broker deal (fill_id from the deal ticket)"),
        "errors": Port("broker_error.v1", "refusals (MT5 retcode; 10031: not sent), stale orders (stale_order: not sent), in-doubt "
                       "orders (10012), stop-outs, cancelled remainders (10010)"),
        "log": Port("broker_log.v1", "every request and response, secrets masked"),
    },
    role="transform",
)
