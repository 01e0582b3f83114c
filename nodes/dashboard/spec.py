"""The declaration of the dashboard: a read-only web page fed by every real-time stream.

Kept light (pydantic and framework imports only): the web stack loads with ``node.py``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from framework.params import PositiveDuration
from framework.registry import NodeSpec, Port, Serves


class DashboardParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        default="127.0.0.1",
        description="address to bind; anything but a loopback address needs a token (token_env)",
    )
    port: int = Field(default=8050, ge=0, le=65535, description="0: any free port (the URL is logged at start)")
    port_fallback: bool = Field(default=True, description="a port another program holds is replaced by a free one (logged)")
    token_env: str = Field(
        default="FXFLOW_DASHBOARD_TOKEN",
        min_length=1,
        description="environment variable holding the access token: required when bound to a non-loopback address, "
        "enforced whenever set; open http://HOST:PORT/?token=… once (the browser keeps it in an HttpOnly cookie)",
    )
    history_bars: int = Field(default=500, ge=10, le=10_000, description="candles per chart (table history plus live bars)")
    keep: int = Field(default=200, ge=10, le=5_000, description="recent signals, orders, alerts and events kept for a new page")
    client_queue: int = Field(
        default=512, ge=16, le=100_000,
        description="updates waiting for one browser; beyond it the oldest go (quotes and counters are conflated: the latest wins)",
    )  # fmt: skip
    max_string: int = Field(default=300, ge=16, description="longer strings in a payload are cut (with …)")
    max_message_bytes: int = Field(default=16_384, ge=1024, description="a larger event reaches the page as a one-line notice")
    refresh: PositiveDuration = Field(
        default="2s", description="while a page is open: counters, positions, equity and metrics are re-read this often (wall clock)"
    )
    equity_points: int = Field(default=2_000, ge=10, description="the equity curve is downsampled to at most this many points")


SPEC = NodeSpec(
    name="dashboard",
    factory="nodes.dashboard.node:Dashboard",
    description="Read-only web dashboard: system map with live rates and health, candles with signals and orders, "
    "equity and drawdown, positions and orders, alerts, training and backtest progress; pushed over a WebSocket.",
    params=DashboardParams,
    inputs={
        "ticks": Port("any", "quotes (bind with a conflating buffer: the page needs the latest per symbol)", required=False),
        "bars": Port("any", "candles of every timeframe", required=False),
        "features": Port("any", "feature vectors (counted only)", required=False),
        "events": Port("any", "signals, orders, fills, broker errors, alerts, training, backtests, external data, gaps, dead letters",
                       required=False),  # fmt: skip
    },
    role="server",
    serves=Serves(port_param="port", host_param="host", token_env_param="token_env"),
    extras=("web",),
)
