"""The dashboard's web application (ASGI, Starlette): the page, its static files, one JSON read
and the WebSocket that pushes updates. Read-only: GET and the WebSocket, nothing else.

Security, in :class:`Guard` (around everything, WebSocket included):

- bound to a loopback address, only requests naming a loopback ``Host`` are served (a web
  page elsewhere cannot reach the dashboard through DNS rebinding);
- with a token (required off loopback), every request must carry it: ``?token=`` once on
  the page (answered with an HttpOnly, SameSite=Strict cookie and a redirect that drops it
  from the address bar, so the page's scripts never see it), the cookie, or an
  ``Authorization: Bearer`` header; compared in constant time;
- a WebSocket whose ``Origin`` is another site is refused;
- every HTTP answer carries a Content-Security-Policy without inline script or style
  (the page is static HTML plus served JS; data is only ever set as text), and
  ``nosniff``, ``no-referrer``, ``frame-ancestors 'none'``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from nodes.dashboard.fanout import Hub

STATIC = Path(__file__).resolve().parent / "static"
COOKIE = "fxflow_dashboard"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
BATCH = 200
"""Updates per WebSocket frame at most (a JSON array)."""

log = logging.getLogger("fxflow.dashboard")


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    """The checks above, as ASGI middleware."""

    def __init__(self, app: Any, *, token: str | None, loopback: bool) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.loopback = loopback

    def _valid(self, candidate: str | None) -> bool:
        return self.token is not None and candidate is not None and hmac.compare_digest(candidate.encode(), self.token)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if self.loopback and _host_name(headers.get("host", "")) not in LOOPBACK_HOSTS:
            await self._deny(kind, scope, receive, send, 403, "forbidden host")
            return
        if kind == "websocket":
            origin = headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1].rstrip("/").lower() != headers.get("host", "").lower():
                await self._deny(kind, scope, receive, send, 403, "forbidden origin")
                return
        if self.token is not None:
            query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
            if kind == "http" and "token" in query:
                if not self._valid(query["token"]):
                    await self._deny(kind, scope, receive, send, 401, "wrong token")
                    return
                await self._enter(scope, query, send)
                return
            if not (self._valid(_cookie(headers)) or self._valid(_bearer(headers))):
                await self._deny(kind, scope, receive, send, 401, "a token is required: open the page once as /?token=…")
                return
        if kind == "http":
            await self.app(scope, receive, _with_headers(send))
        else:
            await self.app(scope, receive, send)

    async def _enter(self, scope: dict[str, Any], query: dict[str, str], send: Any) -> None:
        """A valid ``?token=``: keep it in a cookie and show the same URL without it."""
        rest = {k: v for k, v in query.items() if k != "token"}
        path = scope.get("path", "/")
        if not path.startswith("/") or path.startswith(("//", "/\\")):  # never a way to another site (//host, /\host)
            path = "/"
        location = path + (f"?{urlencode(rest)}" if rest else "")
        cookie = f"{COOKIE}={self.token.decode() if self.token else ''}; HttpOnly; SameSite=Strict; Path=/"
        response = Response(status_code=303, headers={"location": location, "set-cookie": cookie})
        await response(scope, _noop_receive, _with_headers(send))

    @staticmethod
    async def _deny(kind: str, scope: dict[str, Any], receive: Any, send: Any, status: int, text: str) -> None:
        if kind == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": text})
            return
        await PlainTextResponse(text, status_code=status)(scope, receive, _with_headers(send))


async def _noop_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def _cookie(headers: Headers) -> str | None:
    raw = headers.get("cookie")
    if not raw:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(raw)
    except Exception:
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel is not None else None


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization", "")
    return value[7:].strip() if value[:7].lower() == "bearer " else None


def _with_headers(send: Any) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            present = {k.lower() for k, _ in message.get("headers", [])}
            message = {**message, "headers": [*message.get("headers", []), *((k, v) for k, v in SECURITY_HEADERS if k not in present)]}
        await send(message)

    return wrapped


def build_app(
    *,
    hub: Hub,
    hello: Callable[[], dict[str, Any]],
    chart: Callable[[str, str], Awaitable[dict[str, Any] | None]],
    token: str | None,
    loopback: bool,
) -> Any:
    """The ASGI application: ``hello()`` is what a page gets first on its WebSocket (the whole
    current picture), ``chart(symbol, timeframe)`` a chart's candles, signals and orders (None:
    an unknown symbol or timeframe)."""

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8")

    async def icon(request: Request) -> Response:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")

    async def candles(request: Request) -> Response:
        symbol, timeframe = request.query_params.get("symbol", ""), request.query_params.get("timeframe", "")
        body = await chart(symbol, timeframe)
        if body is None:
            return JSONResponse({"error": "unknown symbol or timeframe"}, status_code=404)
        return JSONResponse(body)

    async def stream(ws: WebSocket) -> None:
        await ws.accept()

        async def close() -> None:
            await ws.close(code=1012)

        client, queue = hub.join(close)
        try:
            hub.send_to(client, None, {"t": "hello", **hello()})
            sender = asyncio.create_task(_send(ws, queue))
            try:
                while True:  # pages send nothing; this notices when one goes
                    message = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
            finally:
                sender.cancel()
                try:
                    await sender
                except (asyncio.CancelledError, Exception):
                    pass
        except WebSocketDisconnect:
            pass
        finally:
            hub.leave(client)

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/favicon.ico", icon, methods=["GET", "HEAD"]),
        Route("/api/chart", candles, methods=["GET"]),
        WebSocketRoute("/ws", stream),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    return Guard(Starlette(routes=routes), token=token, loopback=loopback)


async def _send(ws: WebSocket, queue: Any) -> None:
    try:
        while True:
            batch = await queue.take(BATCH)
            await ws.send_text("[" + b",".join(batch).decode() + "]")
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass
