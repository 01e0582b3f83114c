"""Polygon (Massive) REST aggregates client: pagination, rate limits, clear auth errors.

The key travels only in the ``Authorization: Bearer`` header, so no URL this client logs
or raises carries it; error texts are scrubbed of it anyway. Transient failures (429, 5xx,
timeouts) are retried by :class:`~nodes.marketdata.http.HttpClient` with back-off; Polygon
sends no ``Retry-After``, so the back-off must outlast its one-minute window (the default
:data:`RETRY` waits about 2+4+8+16+32 s at most). Each retry is reported through the log,
a 429 named as the rate limit it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson

from nodes.marketdata.http import HttpClient, HttpError, RetryPolicy
from nodes.marketdata.ratelimit import RateLimiter
from nodes.marketdata.symbols import polygon_ticker

RETRY = RetryPolicy(attempts=6, base_delay=2.0, max_delay=60.0)
RATE_LIMIT_TEXT = "exceeded the maximum requests per minute"
"""The start of Polygon's 429 body: ``You've exceeded the maximum requests per minute, …``."""
MAX_PAGES = 10_000


class PolygonError(Exception):
    """A request that failed for good; the message names the request, never the key."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PolygonAuthError(PolygonError):
    """401 (the key is wrong) or 403 (the plan does not cover the data): retrying cannot help."""


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


def _error_text(body: str) -> str:
    """Polygon's own words from an error body (``error`` or ``message``), else the body."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body
    if isinstance(data, dict):
        for key in ("error", "message"):
            if isinstance(data.get(key), str):
                return data[key]
    return body


def next_path(next_url: str) -> str:
    """Path and query of ``next_url`` (as the official client does), minus any ``apiKey``."""
    parts = urlsplit(next_url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower() != "apikey"])
    return parts.path + (f"?{query}" if query else "")


class PolygonClient:
    """Aggregates over :class:`HttpClient`; one per node, closed in ``on_stop``."""

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = "https://api.polygon.io",
        key_env: str = "POLYGON_API_KEY",
        requests_per_minute: float | None = None,
        retry: RetryPolicy = RETRY,
        timeout: float = 30.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        log: logging.Logger | None = None,
    ) -> None:
        self._key = api_key
        self.key_env = key_env
        self.log = log or logging.getLogger(__name__)
        self.limiter = RateLimiter(requests_per_minute, monotonic=monotonic, sleep=sleep)
        self.http = HttpClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
            timeout=timeout,
            retry=retry,
            on_retry=self._retried,
            sleep=sleep,
        )
        self.pages = 0
        self.rate_limited = 0

    async def __aenter__(self) -> PolygonClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.close()

    @property
    def requests(self) -> int:
        """HTTP requests sent, retries included."""
        return self.http.requests

    @property
    def retries(self) -> int:
        return self.http.retries

    def _retried(self, url: str, problem: str, delay: float) -> None:
        problem = _scrub(problem, self._key)
        if problem.startswith("HTTP 429"):
            self.rate_limited += 1
            what = "rate limit reached" if RATE_LIMIT_TEXT in problem else "HTTP 429 Too Many Requests"
            self.log.warning(
                "Polygon %s (%s): waiting %.1f s before retrying %s; lower requests_per_minute if this repeats "
                "(the free tier allows 5)", what, problem[len("HTTP 429: "):][:120], delay, url,
            )
        else:
            self.log.warning("Polygon request %s failed (%s): retrying in %.1f s", url, problem[:200], delay)

    async def aggregates(
        self,
        symbol: str,
        multiplier: int,
        timespan: str,
        from_ms: int,
        to_ms: int,
        *,
        limit: int = 50_000,
    ) -> AsyncIterator[list[Any]]:
        """Each page of ``results`` (possibly empty) for bars starting in ``[from_ms, to_ms]``, following ``next_url``."""
        what = f"{polygon_ticker(symbol)} {multiplier}/{timespan}"
        path: str | None = f"/v2/aggs/ticker/{polygon_ticker(symbol)}/range/{multiplier}/{timespan}/{from_ms}/{to_ms}"
        params: dict[str, Any] | None = {"adjusted": "true", "sort": "asc", "limit": limit}
        seen: set[str] = set()
        while path is not None:
            if len(seen) >= MAX_PAGES or path in seen:
                raise PolygonError(f"Polygon {what}: pagination does not end (next_url repeats or exceeds {MAX_PAGES} pages)")
            seen.add(path)
            waited = await self.limiter.acquire()
            if waited >= 1.0:
                self.log.info("Polygon client-side limit of %g requests/minute: waited %.1f s", self.limiter.per_minute, waited)
            body = await self._get(path, params, what)
            self.pages += 1
            results = body.get("results")
            if results is None:
                results = []
            elif not isinstance(results, list):
                raise PolygonError(f"Polygon {what}: `results` is a {type(results).__name__}, not a list")
            yield results
            next_url = body.get("next_url")
            path, params = (next_path(next_url), None) if isinstance(next_url, str) and next_url else (None, None)

    async def _get(self, path: str, params: dict[str, Any] | None, what: str) -> dict[str, Any]:
        try:
            body = await self.http.get_json(path, params)
        except HttpError as exc:
            raise self._failure(exc, what) from None
        if not isinstance(body, dict):
            raise PolygonError(f"Polygon {what}: the answer is a JSON {type(body).__name__}, not an object")
        return body

    def _failure(self, exc: HttpError, what: str) -> PolygonError:
        said = _scrub(_error_text(exc.body), self._key)
        if exc.status == 401:
            return PolygonAuthError(
                f"Polygon rejected the API key from ${self.key_env} (HTTP 401: {said}); check the key", status=401
            )
        if exc.status == 403:
            return PolygonAuthError(
                f"Polygon: the plan of the API key from ${self.key_env} is not entitled to {what} for this range "
                f"(HTTP 403: {said})",
                status=403,
            )
        if exc.status == 429:
            return PolygonError(
                f"Polygon {what}: still rate-limited after {self.http.retry.attempts} attempts (HTTP 429: {said}); "
                "set requests_per_minute to your plan's limit (free tier: 5)",
                status=429,
            )
        return PolygonError(f"Polygon {what}: {_scrub(str(exc), self._key)}", status=exc.status)
