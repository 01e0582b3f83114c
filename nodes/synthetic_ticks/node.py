"""Synthetic quotes on the node's clock, from :class:`nodes.marketdata.synthetic.SyntheticQuotes`.

Realistic levels and spreads per instrument, activity and spreads that follow the trading
sessions, nothing from Friday 22:00 to Sunday 22:00 UTC or on 25 December and 1 January;
identical for a seed. The source waits on the node's clock before each quote, so on the
simulated clock it runs as fast as the pipeline takes it and on the wall clock at real pace.
"""

from __future__ import annotations

from framework.durations import parse_ms
from framework.node import Node
from framework.params import utc_ms
from nodes.marketdata.synthetic import SyntheticQuotes, in_weekend, weekend_end
from nodes.synthetic_ticks.spec import SyntheticTicksParams

__all__ = ["SyntheticTicks", "in_weekend", "weekend_end"]

FOREVER_MS = 2**62


class SyntheticTicks(Node[SyntheticTicksParams]):
    async def run(self) -> None:
        params = self.params
        start = (
            utc_ms(params.start)
            if params.start
            else self.ctx.clock.now_ms()
        )
        span = parse_ms(params.duration) if params.duration else None
        end = start + span if span is not None else FOREVER_MS
        instruments = {s: self.ctx.instrument(s) for s in self.ctx.pairs}
        quotes = SyntheticQuotes(
            self.ctx.pairs,
            seed=params.seed,
            mean_interval_ms=params.mean_interval_ms,
            digits={s: i.digits for s, i in instruments.items()},
            pips={s: i.pip for s, i in instruments.items()},
        )
        seqs: dict[str, int] = {}  # numbered per symbol from 1: a replay of the same window numbers it the same way
        for quote in quotes.between(start, end):
            await self.ctx.clock.wait_until(quote.ts)
            seq = seqs[quote.symbol] = seqs.get(quote.symbol, 0) + 1
            await self.ctx.publish(
                "ticks",
                {"symbol": quote.symbol, "ts": quote.ts, "bid": quote.bid, "ask": quote.ask, "source": "synthetic", "seq": seq},
            )
