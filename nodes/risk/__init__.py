"""The risk library behind the ``risk_gate`` node: each rule a small function, tested alone.

- :mod:`.params` — the limits (the node's params; pydantic only, so the spec stays light).
- :mod:`.atr` — TA-Lib's ATR (Wilder), one bar at a time.
- :mod:`.sizing` — pip values and position sizes in the account currency.
- :mod:`.exposure` — notional per symbol, exposure per currency, gross leverage.
- :mod:`.book` — positions, pending approvals, balance and equity, from order and fill events.
- :mod:`.calendar` — the blackout around high-impact economic releases.
- :mod:`.state` — the trading state (active, reducing, halted) and who set it.
- :mod:`.rules` — the checks, each returning a :class:`~nodes.risk.rules.Check`.
- :mod:`.engine` — the decision: every check on a signal, its record, the approved order.
"""
