"""Synthetic quotes: reproducible for a seed, in event-time order across symbols.

Each symbol quotes at exponential intervals around ``mean_interval_ms`` with a random-walk
mid price (volatility scaled to the instrument) and a spread around its typical size. The
FX weekend (Friday 22:00 to Sunday 22:00 UTC) is skipped. The source waits on the node's
clock before each quote, so on the simulated clock it runs as fast as the pipeline takes it
and on the wall clock it runs at real pace.
"""

from __future__ import annotations

import heapq
import math
import random
from datetime import datetime, timezone

from framework.durations import parse_ms
from framework.node import Node
from nodes.synthetic_ticks.spec import SyntheticTicksParams

TYPICAL: dict[str, tuple[float, float]] = {
    "EURUSD": (1.0850, 0.8), "GBPUSD": (1.2650, 1.2), "USDJPY": (149.50, 1.0), "USDCHF": (0.8850, 1.5),
    "AUDUSD": (0.6550, 1.0), "USDCAD": (1.3650, 1.5), "NZDUSD": (0.6050, 1.6), "EURGBP": (0.8580, 1.2),
    "EURJPY": (162.20, 1.8), "GBPJPY": (189.10, 2.5), "AUDJPY": (97.90, 2.0), "EURCHF": (0.9600, 1.8),
    "EURAUD": (1.6550, 2.2), "XAUUSD": (2650.0, 25.0),
}
"""Symbol → (typical mid price, typical spread in pips)."""
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
WEEKEND = (4 * DAY_MS + 22 * HOUR_MS, 6 * DAY_MS + 22 * HOUR_MS)
"""Friday 22:00 to Sunday 22:00 UTC, as offsets from Monday 00:00."""


def _since_monday(ts_ms: int) -> int:
    return (ts_ms + 3 * DAY_MS) % WEEK_MS  # 1970-01-01 was a Thursday


def in_weekend(ts_ms: int) -> bool:
    return WEEKEND[0] <= _since_monday(ts_ms) < WEEKEND[1]


def weekend_end(ts_ms: int) -> int:
    """The Sunday 22:00 UTC that ends the weekend containing ``ts_ms``."""
    return ts_ms - _since_monday(ts_ms) + WEEKEND[1]


class SyntheticTicks(Node[SyntheticTicksParams]):
    async def run(self) -> None:
        params = self.params
        rng = random.Random(params.seed)
        start = (
            int(datetime.fromisoformat(params.start.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp() * 1000)
            if params.start
            else self.ctx.clock.now_ms()
        )
        span = parse_ms(params.duration) if params.duration else None
        end = start + span if span is not None else None
        mids: dict[str, float] = {}
        queue: list[tuple[int, str]] = []
        for symbol in self.ctx.pairs:
            mids[symbol] = TYPICAL.get(symbol, (1.0, 2.0))[0] * math.exp(rng.gauss(0, 0.002))
            heapq.heappush(queue, (start + int(rng.expovariate(1 / params.mean_interval_ms)), symbol))
        seq = 0
        while queue:
            ts, symbol = heapq.heappop(queue)
            if end is not None and ts >= end:
                continue
            if in_weekend(ts):
                heapq.heappush(queue, (weekend_end(ts) + int(rng.expovariate(1 / params.mean_interval_ms)), symbol))
                continue
            await self.ctx.clock.wait_until(ts)
            instrument = self.ctx.instrument(symbol)
            typical_mid, typical_spread = TYPICAL.get(symbol, (mids[symbol], 2.0))
            step_vol = 0.00004 * math.sqrt(params.mean_interval_ms / 1000)
            mids[symbol] *= math.exp(rng.gauss(0, step_vol) + 0.0005 * math.log(typical_mid / mids[symbol]))
            spread = max(instrument.pip * 0.1, rng.lognormvariate(math.log(typical_spread), 0.35) * instrument.pip)
            if rng.random() < 0.0005:
                spread *= 8
            digits = instrument.digits
            bid = round(mids[symbol] - spread / 2, digits)
            ask = round(max(bid + 10.0 ** -digits, mids[symbol] + spread / 2), digits)
            seq += 1
            await self.ctx.publish("ticks", {"symbol": symbol, "ts": ts, "bid": bid, "ask": ask, "source": "synthetic", "seq": seq})
            heapq.heappush(queue, (ts + 1 + int(rng.expovariate(1 / params.mean_interval_ms)), symbol))
