"""The declaration of performance-monitoring: broker fills and prices in; equity, metrics, trades and alerts out.

Kept light (pydantic and framework imports only): the lint and the docs import every spec.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from framework.durations import parse_ms
from framework.params import PositiveDuration
from framework.registry import NodeSpec, Port

DAY_MS = 86_400_000


class PerformanceParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mark_timeframe: str = Field(
        default="1m", pattern=r"^[1-9][0-9]*(m|h|d|w)$", description="closed bars of this timeframe mark positions to market"
    )
    use_ticks: bool = Field(default=True, description="ticks mark positions too, where they arrive (false: bars only)")
    record_every: PositiveDuration = Field(
        default="1m", description="the equity curve's step (event time): one portfolio_value row per step that saw a price or a fill"
    )
    metrics_every: PositiveDuration = Field(default="1h", description="performance_metrics rows this often (and a final set at stop)")
    windows: list[str] = Field(
        default_factory=lambda: ["all", "1d"],
        description="the metrics' windows: 'all' (since the first mark) or a duration back from now (1d, 30d)",
    )
    drawdown_limit: float | None = Field(
        default=0.10, gt=0, lt=1, description="performance.alert.drawdown_limit above this fall from the equity peak (none: off)"
    )
    daily_loss_limit: float | None = Field(
        default=0.03, gt=0, lt=1, description="performance.alert.daily_loss_limit above this fall from the day's starting equity (UTC)"
    )
    low_sharpe: float | None = Field(
        default=0.0, description="performance.alert.low_sharpe when the Sharpe ratio of the whole curve falls below this (none: off)"
    )
    low_sharpe_min_days: int = Field(
        default=20, ge=2, description="daily returns the Sharpe ratio needs before it can raise low_sharpe"
    )
    keep_fill_ids: PositiveDuration = Field(default="7d", description="applied fill ids are remembered this long (redeliveries)")
    snapshot_every: PositiveDuration = Field(default="1m", description="state saved this often (and at stop) for a restart")
    equity_table: str | None = Field(
        default="portfolio_value",
        description="the table the equity port writes, read back after a restart for the curve before it (none: not read)",
    )
    trades_table: str | None = Field(
        default="trade_analysis",
        description="the table the trades port writes, read back after a restart for the trades closed before it (none: not read)",
    )

    @field_validator("record_every")
    @classmethod
    def _divides_a_day(cls, value: str) -> str:
        ms = parse_ms(value) or 0
        if DAY_MS % ms:
            raise ValueError(f"{value} does not divide a day evenly (the curve's daily returns need it)")
        return value

    @field_validator("windows")
    @classmethod
    def _windows(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one window")
        for window in value:
            if window != "all":
                ms = parse_ms(window)
                if ms is None or ms <= 0:
                    raise ValueError(f"window {window!r} is neither 'all' nor a positive duration")
        if len(set(value)) != len(value):
            raise ValueError("a window is listed twice")
        return value


SPEC = NodeSpec(
    name="performance_monitor",
    factory="nodes.performance.node:PerformanceMonitor",
    description="Equity marked to market (balance, margin, unrealized P&L), performance metrics over windows, closed "
    "round trips, and alerts on drawdown, daily loss and a low Sharpe ratio, from broker fills and prices.",
    params=PerformanceParams,
    inputs={
        "fills": Port("fill.v1", "broker executions: the money that moved (each fill_id once)"),
        "bars": Port("bar.v1", "closed bars of mark_timeframe: positions marked at bid / bid + spread", required=False),
        "ticks": Port("tick.v1", "quotes: positions marked at bid / ask", required=False),
        "query": Port("performance_query.v1", "requests for a report; the reply is a performance_report.v1", required=False),
    },
    outputs={
        "equity": Port("any", "one row per record_every step: equity, balance, margin used, unrealized P&L, drawdown"),
        "metrics": Port("any", "name, window, value: every metric of nodes.trading.metrics.summary and the P&L per symbol"),
        "trades": Port("any", "one row per closed round trip: P&L after commission, holding time, slippage"),
        "alerts": Port("alert.v1", "drawdown_limit, daily_loss_limit, low_sharpe: once per breach, again after a recovery"),
    },
)
