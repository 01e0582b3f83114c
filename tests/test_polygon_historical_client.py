"""The Polygon REST client against the simulator: pagination, 429 back-off, auth errors, 5xx, rate limiting."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from typing import Any

import aiohttp
import pytest

from nodes.marketdata.http import RetryPolicy
from nodes.polygon_historical.client import PolygonAuthError, PolygonClient, PolygonError, RateLimiter, next_path
from nodes.polygon_historical.simulator import PolygonSimulator

KEY = "sk-test-5f0e8a1c9b"
MIN = 60_000
HOUR = 60 * MIN


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp() * 1000)


MON = ms("2026-11-02T00:00:00Z")


class FakeTime:
    """A monotonic clock that only sleeping moves; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
async def sim() -> AsyncIterator[PolygonSimulator]:
    async with PolygonSimulator(api_key=KEY, page_size=100) as server:
        yield server


def client(sim: PolygonSimulator, key: str = KEY, fake: FakeTime | None = None, **kwargs: Any) -> PolygonClient:
    fake = fake or FakeTime()
    kwargs.setdefault("retry", RetryPolicy(attempts=4, base_delay=2.0, max_delay=60.0))
    return PolygonClient(key, base_url=sim.url, sleep=fake.sleep, monotonic=fake.monotonic, **kwargs)


async def fetch(c: PolygonClient, symbol: str = "EURUSD", mult: int = 1, span: str = "minute",
                start: int = MON, end: int = MON + 5 * HOUR) -> list[list[Any]]:
    return [page async for page in c.aggregates(symbol, mult, span, start, end - 1)]


async def test_pagination_follows_next_url_with_the_bearer_header(sim: PolygonSimulator) -> None:
    async with client(sim) as c:
        pages = await fetch(c)
    rows = [r for page in pages for r in page]
    served = sim.bars("EURUSD", "1m", MON, MON + 5 * HOUR - 1)
    assert len(served) > 250 and len(pages) == -(-len(served) // 100)
    assert [r["t"] for r in rows] == served.ts.tolist()  # every bar once, in order, across pages
    assert [r["c"] for r in rows] == served.close.tolist()
    assert [r.cursor for r in sim.requests] == [False] + [True] * (len(pages) - 1)
    assert all(r.key == KEY and KEY not in r.path and r.status == 200 for r in sim.requests)
    assert c.pages == len(pages) and c.requests == len(pages) and c.retries == 0


async def test_a_page_limit_below_the_bars_paginates_by_base_aggregates(sim: PolygonSimulator) -> None:
    async with client(sim) as c:
        pages = [p async for p in c.aggregates("XAUUSD", 1, "hour", MON, MON + 10 * HOUR - 1, limit=180)]
    assert [len(p) for p in pages] == [3, 3, 3, 1]  # 180 minute aggregates = 3 hourly bars per response
    assert [r["t"] for p in pages for r in p] == [MON + i * HOUR for i in range(10)]


async def test_rate_limited_requests_back_off_then_succeed(sim: PolygonSimulator, caplog: pytest.LogCaptureFixture) -> None:
    sim.fail_next(429, times=2)
    fake = FakeTime()
    caplog.set_level(logging.INFO)
    async with client(sim, fake=fake) as c:
        pages = await fetch(c, end=MON + HOUR)
    assert sum(len(p) for p in pages) == len(sim.bars("EURUSD", "1m", MON, MON + HOUR - 1))
    assert [r.status for r in sim.requests][:3] == [429, 429, 200]
    assert c.retries == 2 and c.rate_limited == 2
    assert len(fake.sleeps) == 2 and 1.0 <= fake.sleeps[0] <= 2.0 and 2.0 <= fake.sleeps[1] <= 4.0
    waits = [r.getMessage() for r in caplog.records if "rate limit reached" in r.getMessage()]
    assert len(waits) == 2 and all("waiting" in w and "requests_per_minute" in w for w in waits)


async def test_rate_limited_for_good_is_a_clear_error(sim: PolygonSimulator) -> None:
    sim.fail_next(429, times=10)
    async with client(sim, retry=RetryPolicy(attempts=3, base_delay=1.0)) as c:
        with pytest.raises(PolygonError, match="still rate-limited after 3 attempts.*requests_per_minute") as err:
            await fetch(c)
    assert err.value.status == 429 and len(sim.requests) == 3


async def test_a_wrong_key_is_a_clear_error_without_the_key(sim: PolygonSimulator, caplog: pytest.LogCaptureFixture) -> None:
    wrong = "sk-wrong-77aa31"
    caplog.set_level(logging.DEBUG)
    async with client(sim, key=wrong) as c:
        with pytest.raises(PolygonAuthError) as err:
            await fetch(c)
    message = str(err.value)
    assert err.value.status == 401
    assert "$POLYGON_API_KEY" in message and "Unknown API Key" in message
    assert wrong not in message and wrong not in caplog.text
    assert len(sim.requests) == 1  # no retry
    assert sim.requests[0].key == wrong  # it was sent, in the header


async def test_a_plan_without_the_timespan_is_a_clear_error(caplog: pytest.LogCaptureFixture) -> None:
    async with PolygonSimulator(api_key=KEY, forbidden={"minute"}) as sim, client(sim) as c:
        with pytest.raises(PolygonAuthError, match=r"not entitled to C:EURUSD 1/minute.*HTTP 403: Your plan doesn't include") as err:
            await fetch(c)
        assert sum(len(p) for p in await fetch(c, span="hour")) == 5
    assert err.value.status == 403 and [r.status for r in sim.requests] == [403, 200]


async def test_gateway_timeouts_are_retried(sim: PolygonSimulator) -> None:
    sim.fail_next(504, times=2)
    async with client(sim) as c:
        pages = await fetch(c, span="hour")
    assert [r["t"] for p in pages for r in p] == [MON + i * HOUR for i in range(5)]
    assert [r.status for r in sim.requests] == [504, 504, 200] and c.retries == 2


async def test_persistent_gateway_timeouts_end_in_a_clear_error(sim: PolygonSimulator) -> None:
    sim.fail_next(504, times=10)
    async with client(sim, retry=RetryPolicy(attempts=3, base_delay=0.5)) as c:
        with pytest.raises(PolygonError) as err:
            await fetch(c)
    message = str(err.value)
    assert "HTTP 504" in message and "504 Gateway Time-out" in message and "after 3 attempts" in message
    assert "<" not in message and KEY not in message
    assert not isinstance(err.value, PolygonAuthError) and len(sim.requests) == 3


async def test_an_empty_range_has_no_results_key_and_yields_no_rows(sim: PolygonSimulator) -> None:
    saturday = ms("2026-10-31T00:00:00Z")
    url = f"{sim.url}/v2/aggs/ticker/C:EURUSD/range/1/minute/{saturday}/{saturday + 6 * HOUR}?apiKey={KEY}"
    async with aiohttp.ClientSession() as session, session.get(url) as response:  # the key as a query parameter
        body = await response.json()
    assert response.status == 200 and "results" not in body and body["resultsCount"] == 0 and "next_url" not in body
    async with client(sim) as c:
        assert await fetch(c, start=saturday, end=saturday + 6 * HOUR) == [[]]


async def test_client_side_rate_limit_spaces_requests(sim: PolygonSimulator, caplog: pytest.LogCaptureFixture) -> None:
    fake = FakeTime()
    caplog.set_level(logging.INFO)
    async with client(sim, fake=fake, requests_per_minute=2) as c:
        pages = await fetch(c, end=MON + 4 * HOUR)  # 240 bars: 3 pages of 100
    assert len(pages) == 3 and len(fake.sleeps) == 1 and fake.sleeps[0] == pytest.approx(60.0)
    assert c.limiter.waited == pytest.approx(60.0)
    assert any("2 requests/minute: waited 60.0 s" in r.getMessage() for r in caplog.records)


async def test_rate_limiter_windows() -> None:
    fake = FakeTime()
    limiter = RateLimiter(5, monotonic=fake.monotonic, sleep=fake.sleep)
    waits = [await limiter.acquire() for _ in range(11)]
    assert waits == [0.0] * 5 + [pytest.approx(60.0)] + [0.0] * 4 + [pytest.approx(60.0)]
    slow = RateLimiter(0.5, monotonic=fake.monotonic, sleep=fake.sleep)
    assert [await slow.acquire() for _ in range(3)] == [0.0, pytest.approx(120.0), pytest.approx(120.0)]
    assert await RateLimiter(None).acquire() == 0.0
    with pytest.raises(ValueError, match="positive"):
        RateLimiter(0)


def test_next_url_keeps_path_and_cursor_and_drops_any_key() -> None:
    url = "https://api.polygon.io/v2/aggs/ticker/C:EURUSD/range/1/minute/1626912000000/2021-07-23?cursor=bGltaXQ9&apiKey=abc&limit=50000"
    assert next_path(url) == "/v2/aggs/ticker/C:EURUSD/range/1/minute/1626912000000/2021-07-23?cursor=bGltaXQ9&limit=50000"
