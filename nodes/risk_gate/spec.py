"""The declaration of the risk gate: raw signals in, approved or rejected decisions out.

Kept light (pydantic and framework imports only): the lint imports every spec.
"""

from __future__ import annotations

from framework.registry import NodeSpec, Port
from nodes.risk.params import RiskParams

SPEC = NodeSpec(
    name="risk_gate",
    factory="nodes.risk_gate.node:RiskGate",
    description="The risk gate every order passes: sizing, exposure, losses, spreads, news, stale and duplicate "
    "signals, a rate throttle and a trading state; fails closed when its state is unknown.",
    params=RiskParams,
    inputs={
        "signals": Port("signal.v1", "raw model signals: the only decision input"),
        "orders": Port("order_event.v1", "order lifecycle: positions and pending approvals, as they happen"),
        "ticks": Port("tick.v1", "latest quotes: prices, spreads, currency conversion", required=False),
        "bars": Port("bar.v1", "ATR per symbol and timeframe; prices where no fresher tick is", required=False),
        "fills": Port("fill.v1", "fills, once per fill id: positions (also stop-loss and stop-out closes) and commissions"),
        "calendar": Port("external_event.v1", "economic calendar: the blackout around high-impact releases", required=False),
        "control": Port("risk_control.v1", "fxrun risk halt|reduce|resume|status (request/reply: the status)", required=False),
    },
    outputs={
        "approved": Port("approved_signal.v1", "sized orders that passed every check"),
        "rejected": Port("risk_decision.v1", "rejections, with reasons and every check's result"),
        "decisions": Port("risk_decision.v1", "every decision, approved or not (audit)"),
        "alerts": Port("alert.v1", "breaches, trading-state changes, stale data, limits, reconciliation"),
        "broker": Port("broker_query.v1", "reconciliation: the broker's state, asked before the first decision", required=False),
    },
    role="risk_gate",
)
