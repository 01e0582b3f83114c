"""The HTTP client every REST-speaking collector uses: retries, back-off, clear errors.

Retries transient failures (connection errors, timeouts, 429 and 5xx) with capped
exponential back-off plus jitter, honouring ``Retry-After`` when the server sends one.
Anything else raises :class:`HttpError` at once, with the status, the URL (secrets
redacted) and the start of the body, so a bad key or a bad request is one clear line.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson

SECRET_PARAMS = frozenset({"apikey", "api_key", "token", "key", "access_token", "password"})
_BOT_TOKEN = re.compile(r"/bot[^/]+/")


def redact(url: str) -> str:
    """``url`` without credentials: user:password, secret query values, Telegram bot tokens."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = urlencode(
        [(k, "***" if k.lower() in SECRET_PARAMS else v) for k, v in parse_qsl(parts.query, keep_blank_values=True)],
        safe="*:/,",
    )
    path = _BOT_TOKEN.sub("/bot***/", parts.path)
    return urlunsplit((parts.scheme, netloc, path, query, parts.fragment))


class HttpError(Exception):
    """A request that failed for good (after retries when the failure was transient)."""

    def __init__(self, message: str, *, status: int | None, url: str, body: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.url = url
        self.body = body
        self.retryable = retryable


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    retry_statuses: frozenset[int] = field(default_factory=lambda: frozenset({408, 413, 425, 429, 499, 500, 502, 503, 504}))

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        backoff = min(self.base_delay * 2 ** (attempt - 1), self.max_delay)
        return backoff * (0.5 + random.random() / 2)


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    import time

    return max(when.timestamp() - time.time(), 0.0)


def _excerpt(body: bytes, limit: int = 300) -> str:
    text = body.decode("utf-8", "replace").strip()
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text)) if text.startswith("<") else text
    return text[:limit]


class HttpClient:
    """An aiohttp session with retries; one per node, closed in its ``on_stop``.

    ``concurrency`` bounds requests in flight (a download pool). ``on_retry`` is told of
    every retry (status or exception text and the delay), for logs and metrics.
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        concurrency: int | None = None,
        on_retry: Callable[[str, str, float], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.headers = dict(headers or {})
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retry = retry or RetryPolicy()
        self._limit = asyncio.Semaphore(concurrency) if concurrency else None
        self._on_retry = on_retry
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.requests = 0
        self.retries = 0

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path_or_url: str) -> str:
        if "://" in path_or_url or self.base_url is None:
            return path_or_url
        return f"{self.base_url}/{path_or_url.lstrip('/')}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
        return self._session

    async def get_bytes(self, path_or_url: str, params: Mapping[str, Any] | None = None, *, ok: tuple[int, ...] = (200,)) -> tuple[int, bytes]:
        """GET with retries; returns ``(status, body)`` for a status in ``ok``, raises :class:`HttpError` otherwise."""
        return await self.request("GET", path_or_url, params=params, ok=ok)

    async def get_json(self, path_or_url: str, params: Mapping[str, Any] | None = None) -> Any:
        url = self.url(path_or_url)
        _, body = await self.request("GET", url, params=params)
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(
                f"GET {redact(url)}: the answer is not JSON ({exc}): {_excerpt(body)!r}", status=200, url=redact(url), body=_excerpt(body)
            ) from None

    async def request(
        self,
        method: str,
        path_or_url: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        auth: aiohttp.BasicAuth | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204),
    ) -> tuple[int, bytes]:
        url = self.url(path_or_url)
        shown = redact(url if not params else f"{url}?{urlencode(params)}")
        attempt = 0
        while True:
            attempt += 1
            status: int | None = None
            retry_after: float | None = None
            try:
                if self._limit is not None:
                    async with self._limit:
                        status, body, retry_after = await self._once(method, url, params, data, json, headers, auth)
                else:
                    status, body, retry_after = await self._once(method, url, params, data, json, headers, auth)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                problem = problem.replace(url, shown)
                if attempt >= self.retry.attempts:
                    raise HttpError(
                        f"{method} {shown} failed after {attempt} attempt(s): {problem}", status=None, url=shown, retryable=True
                    ) from None
            else:
                if status in ok:
                    return status, body
                problem = f"HTTP {status}: {_excerpt(body)}"
                if status not in self.retry.retry_statuses or attempt >= self.retry.attempts:
                    raise HttpError(
                        f"{method} {shown} failed: {problem}" + (f" (after {attempt} attempts)" if attempt > 1 else ""),
                        status=status,
                        url=shown,
                        body=_excerpt(body),
                        retryable=status in self.retry.retry_statuses,
                    )
            delay = self.retry.delay(attempt, retry_after)
            self.retries += 1
            if self._on_retry is not None:
                self._on_retry(shown, problem, delay)
            await self._sleep(delay)

    async def _once(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        data: Any,
        json: Any,
        headers: Mapping[str, str] | None,
        auth: aiohttp.BasicAuth | None,
    ) -> tuple[int, bytes, float | None]:
        self.requests += 1
        session = self._get_session()
        async with session.request(method, url, params=params, data=data, json=json, headers=headers, auth=auth) as response:
            body = await response.read()
            return response.status, body, retry_after_seconds(response.headers.get("Retry-After"))
