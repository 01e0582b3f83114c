"""dashboard-service: the page in headless Chromium, live updates, reconnection, escaping, the token, a slow page.

Each runtime runs only the dashboard, on the wall clock (the live path: buffered inputs), with the
demo profile's embedded ClickHouse for the tables it reads. Screenshots are kept under the test's
tmp dir and copied to ``$FXFLOW_ARTIFACTS`` when set.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import pytest_asyncio

from framework.asgi import AsgiServer, is_loopback
from framework.errors import UserError
from framework.testing import load, make_runtime, recording_bus
from nodes.dashboard.fanout import ClientQueue, Hub
from nodes.dashboard.state import DashboardState, clean
from tests import browser as chromium

SERVICE = "dashboard-service"
ROOT = Path(__file__).resolve().parents[1]
XSS = "<img src=x onerror=alert(1)>"
T0 = 1793577600000  # 2026-11-02T00:00Z
TOKEN = "s3cret-token-for-the-test-0123456789"


def artifact(path: Path) -> None:
    target = os.environ.get("FXFLOW_ARTIFACTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)


async def start(tmp_path: Path, *overrides: str) -> tuple[Any, Any, Any]:
    loaded = load(tmp_path, "topology.runtime.clock=wall", f"topology.services.{SERVICE}.params.port=0", *overrides)
    bus, _ = await recording_bus()
    rt = make_runtime(loaded, tmp_path, pubsub=bus, only=[SERVICE])
    await rt.start()
    return rt, bus, rt.hosts[SERVICE].node


@pytest_asyncio.fixture(scope="class", loop_scope="class")
async def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """One dashboard on 127.0.0.1 for the tests of a class: (runtime, bus, node, data_dir). Class scope, not module:
    the embedded ClickHouse takes one data directory per process at a time, so it closes before the next runtime."""
    data_dir = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as env:  # read at start: no token on loopback, whatever the caller's environment
        env.delenv("FXFLOW_DASHBOARD_TOKEN", raising=False)
        rt, bus, node = await start(data_dir)
    try:
        yield rt, bus, node, data_dir
    finally:
        await rt.stop()


SHARED = pytest.mark.asyncio(loop_scope="class")


def bar(i: int, symbol: str = "EURUSD", timeframe: str = "1m") -> dict[str, Any]:
    price = 1.16 + 0.001 * math.sin(i / 7) + 0.00002 * i
    return {"symbol": symbol, "timeframe": timeframe, "ts": T0 + i * 60_000, "ts_close": T0 + (i + 1) * 60_000,
            "open": price, "high": price + 0.0004, "low": price - 0.0003, "close": price + 0.0001, "volume": 10 + i,
            "tick_count": 10 + i, "spread_mean": 0.00012, "spread_min": 0.0001, "spread_max": 0.0002, "source": "test",
            "complete": True}  # fmt: skip


def alert(message: str, ts: int = T0, severity: str = "warning") -> dict[str, Any]:
    return {"alert_id": f"al-{message[:20]}", "ts": ts, "source": "risk-management", "type": "drawdown",
            "severity": severity, "message": message, "symbol": "EURUSD"}  # fmt: skip


# --------------------------------------------------------------------------- pieces


def test_payloads_are_cleaned_and_bad_events_become_notices() -> None:
    state = DashboardState(keep=10, max_string=20, max_message_bytes=2048)
    cleaned = clean({"password": "hunter2", "api_key": "k", "nested": {"x": [1, float("nan"), "y" * 50]},
                     "url": "nats://fx:pw@127.0.0.1:4222"}, 20)  # fmt: skip
    assert cleaned["password"] == "***" and cleaned["api_key"] == "***"
    assert cleaned["nested"]["x"][1] is None and cleaned["nested"]["x"][2] == "y" * 20 + "…"
    assert "pw" not in cleaned["url"] and cleaned["url"].startswith("nats://fx:***@")
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(10):
        node["d"] = {}
        node = node["d"]
    assert "…" in str(clean(deep, 20))

    assert state.apply("orders.filled.EURUSD", {"symbol": "EURUSD"})[0][1]["type"] == "notice"  # no order id
    assert state.apply("bars.EURUSD.1m", {"symbol": "EURUSD", "timeframe": "1m", "ts": "soon"})[0][1]["type"] == "notice"
    assert state.apply("risk.alert.x", ["not", "an", "object"])[0][1]["type"] == "notice"  # type: ignore[arg-type]
    (_, notice), = state.apply("risk.alert.x", alert("z" * 5000))
    assert notice["type"] == "notice" and "bytes" in notice["message"]
    (_, shown), = state.apply("risk.alert.drawdown", alert("fine"))
    assert shown["t"] == "alert" and shown["message"] == "fine"


def test_a_page_queue_is_bounded_and_conflates() -> None:
    queue = ClientQueue(size=3)
    for i in range(5):
        queue.put("tick:EURUSD", b"%d" % i)
    assert len(queue) == 1 and queue.conflated == 4
    for i in range(5):
        queue.put(None, b"e%d" % i)
    assert len(queue) == 3 and queue.dropped == 3 and queue.high_water == 3
    hub = Hub(queue_size=2)
    _, q = hub.join(lambda: None)
    hub.broadcast(None, {"t": "a"})
    hub.broadcast(None, {"t": "b"})
    hub.broadcast(None, {"t": "c"})
    assert hub.dropped == 1 and len(q) == 2


def test_every_dashboard_input_is_buffered_without_blocking(tmp_path: Path) -> None:
    for profile in ("demo", "live"):
        service = load(tmp_path, profile=profile).topology.services[SERVICE]
        assert service.enabled and service.inputs
        for port, binding in service.inputs.items():
            assert binding.buffer is not None and binding.buffer.policy != "block", (profile, port)
            assert not any(s.startswith("broker.query") or s == "broker.>" for s in binding.subjects), "must not see requests"
    assert not load(tmp_path, profile="backtest").topology.services[SERVICE].enabled


async def test_an_asgi_server_falls_back_to_a_free_port_and_leaves_the_signals_alone() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    taken = holder.getsockname()[1]
    before = signal.getsignal(signal.SIGINT)
    server = AsgiServer(app, "127.0.0.1", taken, fallback=True)
    strict = AsgiServer(app, "127.0.0.1", taken)
    try:
        await server.start()
        assert server.port != taken
        assert signal.getsignal(signal.SIGINT) is before  # the run keeps Ctrl-C
        async with aiohttp.ClientSession() as session, session.get(server.url) as response:
            assert await response.text() == "ok"
        with pytest.raises(OSError):
            await strict.start()
    finally:
        await server.close()
        holder.close()
    assert signal.getsignal(signal.SIGINT) is before
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")


# --------------------------------------------------------------------------- in the browser


async def _seed_tables(rt: Any) -> None:
    """Table history: candles, an equity curve and a position, as the store would have them."""
    await rt.hosts[SERVICE].ctx.table("historical_aggregates").store.insert("historical_aggregates", [bar(i) for i in range(90)])
    equity, rows = 100_000.0, []
    for i in range(120):
        equity *= 1 + 0.0008 * math.sin(i / 9) + 0.0001
        rows.append({"ts": T0 + i * 60_000, "equity": equity, "balance": 100_000.0 + 10 * (i // 30)})
    await _insert(rt, "portfolio_value", rows)
    await _insert(rt, "positions", [{"symbol": "EURUSD", "ts": T0, "quantity": 0.4, "avg_price": 1.1601,
                                       "realized_pnl": 12.5, "unrealized_pnl": -3.25, "currency": "USD"}])  # fmt: skip


async def _insert(rt: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """``rows``, with zeros in the table's other declared columns (it belongs to another service)."""
    zero = {"str": "", "int": 0, "float": 0.0, "timestamp_ms": 0, "json": "{}", "bool": False}
    declared = rt.topology.tables[table].columns or {}
    full = [{**{c: zero.get(str(t).rstrip("?")) for c, t in declared.items()}, **r} for r in rows]
    await rt.hosts[SERVICE].ctx.table(table).store.insert(table, full)


@SHARED
class TestOnLoopback:
    """The dashboard as the demo and the live profile start it: on 127.0.0.1, no token."""

    async def test_system_view_shows_the_graph_and_this_processs_counters(self, dashboard: Any) -> None:
        rt, bus, node, _ = dashboard
        graph = rt.system.graph()
        names = {s["name"]: s for s in graph["services"]}
        assert names[SERVICE]["here"] and not names["tick-aggregator"]["here"]
        links = {(lk["source"], lk["target"], lk["kind"]) for lk in graph["links"]}
        assert ("tick-aggregator", "feature-engineering-service", "nats") in links
        assert ("risk-management", "execution-service", "nats") in links
        assert ("data-bridge", "risk-management", "table") in links  # historical_aggregates, read for the ATR warm-up
        before = rt.system.metrics()[0]["in"]
        await bus.publish("risk.alert.drawdown", alert("one"))
        for _ in range(200):
            if rt.system.metrics()[0]["in"] > before:
                break
            await asyncio.sleep(0.01)
        (mine,) = rt.system.metrics()
        assert mine["service"] == SERVICE and mine["in"] == before + 1 and "buffers" in mine
        hello = node._hello()
        assert not any(SERVICE in (lk["source"], lk["target"]) for lk in hello["system"]["links"])

    @pytest.mark.skipif(not chromium.available(), reason="chromium is not installed (tasks.py test installs it)")
    async def test_the_page_shows_live_events_escapes_them_and_reconnects(self, dashboard: Any) -> None:
        rt, bus, node, tmp_path = dashboard
        shots = tmp_path / "screenshots"
        await _seed_tables(rt)
        for i in range(90, 100):  # live candles since the page's history, with a signal and a fill on them
            await bus.publish("bars.EURUSD.1m", bar(i))
        await bus.publish("signals.raw.EURUSD", {"signal_id": "s1", "symbol": "EURUSD", "timeframe": "1m", "ts": T0 + 92 * 60_000,
                                                 "side": "buy", "confidence": 0.7, "model_id": "sma-cross-1m"})  # fmt: skip
        await bus.publish("signals.approved.EURUSD", {"signal_id": "s1", "decision_id": "d1", "symbol": "EURUSD", "side": "buy",
                                                      "quantity": 0.4, "ts": T0 + 92 * 60_000})  # fmt: skip
        await bus.publish("orders.filled.EURUSD", {"order_id": "o1", "client_order_id": "c1", "signal_id": "s1", "decision_id": "d1",
            "symbol": "EURUSD", "side": "buy", "order_type": "market", "quantity": 0.4, "status": "filled", "ts": T0 + 93 * 60_000,
            "filled_quantity": 0.4, "avg_price": 1.1601})  # fmt: skip
        await bus.publish("training.progress.run-7", {"run_id": "run-7", "ts": T0, "kind": "supervised", "status": "progress",
                                                      "model_type": "lightgbm", "progress": 0.6, "message": "fold 2 of 3"})  # fmt: skip
        async with aiohttp.ClientSession() as session, session.get(node.url) as response:
            csp = response.headers["Content-Security-Policy"]
            assert response.status == 200 and "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "<script>" not in await response.text()  # no inline script: only served files

        async with chromium.Browser.launch(tmp_path / "chromium") as browser:
            page = await browser.page()
            await page.goto(node.url)
            await page.wait_for("document.getElementById('status').dataset.state === 'live'", timeout=15)
            await page.wait_for("document.querySelectorAll('#map .svc').length > 10")
            assert await page.wait_for("document.getElementById('chart-note').textContent.includes('100 candles')")
            assert await page.wait_for("document.getElementById('equity-note').textContent.includes('max drawdown')")
            assert await page.wait_for("document.querySelector('#positions tbody').textContent.includes('EURUSD')")
            assert "fold 2 of 3" in await page.eval("document.getElementById('runs').textContent")

            # a live event reaches the page: alerts, quotes and open orders come only as pushed events (no refresh
            # re-reads them), so a generous deadline still proves the push; latency is not timed on a loaded machine
            for subject, message, where, text in [
                ("risk.alert.drawdown", alert("drawdown 3.2% above 3%"), "alerts", "drawdown 3.2% above 3%"),
                ("ticks.GBPUSD", {"symbol": "GBPUSD", "ts": T0, "bid": 1.31234, "ask": 1.31251, "source": "t"}, "quotes", "1.31251"),
                ("orders.submitted.XAUUSD", {"order_id": "o2", "client_order_id": "c2", "signal_id": "s2", "decision_id": "d2",
                  "symbol": "XAUUSD", "side": "sell", "order_type": "market", "quantity": 0.07, "status": "submitted", "ts": T0},
                 "open-orders", "o2"),  # fmt: skip
            ]:
                await bus.publish(subject, message)
                await page.wait_for(f"document.getElementById({where!r}).textContent.includes({text!r})", timeout=15)

            # the payload is text, wherever it appears; no dialog, no image element
            await bus.publish("market.external.economic_calendar", {"type": "economic_calendar", "ts": T0, "source": "sim",
                "series": "NFP", "value": None, "country": "US", "impact": "high", "title": XSS})  # fmt: skip
            await bus.publish("risk.alert.exposure", {**alert(XSS), "type": "exposure", "symbol": XSS})
            await page.wait_for(f"document.getElementById('external').textContent.includes({XSS!r})")
            await page.wait_for(f"document.getElementById('alerts').textContent.includes({XSS!r})")
            await asyncio.sleep(0.3)
            assert await page.eval("document.querySelectorAll('img').length") == 0
            assert not page.dialogs
            # malformed and oversized events: a notice, and the page goes on
            await bus.publish("orders.filled.EURUSD", {"status": "filled"})
            await bus.publish("risk.alert.huge", alert("x" * 100_000))
            await bus.publish("risk.alert.drawdown", alert("after the bad ones"))
            await page.wait_for("document.getElementById('alerts').textContent.includes('after the bad ones')")
            assert "is not shown" in await page.eval("document.getElementById('alerts').textContent")
            assert await page.eval("window.fxflowDashboard.pageErrors()") == 0
            await page.wait_for("document.getElementById('summary').textContent.includes('messages seen')", timeout=15)
            artifact(await page.screenshot(shots / "dashboard.png"))

            # the server closes the socket: the page reconnects and resumes
            await node.hub.disconnect_all()
            await page.wait_for("window.fxflowDashboard.reconnectCount() >= 2", timeout=10)
            await page.wait_for("document.getElementById('status').dataset.state === 'live'")
            await bus.publish("risk.alert.drawdown", alert("after the reconnection", ts=T0 + 1))
            await page.wait_for("document.getElementById('alerts').textContent.includes('after the reconnection')", timeout=15)
            assert "drawdown 3.2% above 3%" in await page.eval("document.getElementById('alerts').textContent")  # the picture is back
            artifact(await page.screenshot(shots / "dashboard-reconnected.png"))
            assert page.problems() == [], page.problems()  # no CSP violation, no script error
            assert not page.dialogs

    async def test_on_loopback_a_foreign_host_or_origin_is_refused(self, dashboard: Any) -> None:
        rt, bus, node, _ = dashboard
        async with aiohttp.ClientSession() as session:
            async with session.get(node.url) as response:
                assert response.status == 200
            async with session.get(node.url, headers={"Host": "evil.example"}) as response:  # DNS rebinding
                assert response.status == 403
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await session.ws_connect(node.url + "ws", headers={"Origin": "http://evil.example"})
            async with session.ws_connect(node.url + "ws") as ws:
                assert (await ws.receive_json(timeout=5))[0]["t"] == "hello"


# --------------------------------------------------------------------------- the token


def _host_ip() -> str | None:
    """An address of this machine that is not loopback (None when it has none)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # no packet is sent: this only picks the outgoing interface
        address = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if is_loopback(address) or address == "0.0.0.0" else address


async def test_off_loopback_it_refuses_to_start_without_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXFLOW_DASHBOARD_TOKEN", raising=False)
    with pytest.raises(UserError, match="FXFLOW_DASHBOARD_TOKEN"):
        rt, _, _ = await start(tmp_path, f"topology.services.{SERVICE}.params.host=0.0.0.0")
        await rt.stop()


async def test_off_loopback_every_request_needs_the_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    monkeypatch.setenv("FXFLOW_DASHBOARD_TOKEN", TOKEN)
    caplog.set_level("INFO", logger=f"fxflow.{SERVICE}")
    rt, bus, node = await start(tmp_path, f"topology.services.{SERVICE}.params.host=0.0.0.0")
    try:
        assert any("dashboard on http://0.0.0.0:" in r.getMessage() for r in caplog.records)
        assert TOKEN not in caplog.text  # the URL is logged, the token is not
        port = node.server.port
        for host in filter(None, (_host_ip(), "127.0.0.1")):
            base = f"http://{host}:{port}"
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session:
                for path in ("/", "/static/app.js", "/api/chart?symbol=EURUSD&timeframe=1m"):
                    async with session.get(base + path) as response:
                        assert response.status == 401, (host, path)
                        assert TOKEN not in await response.text()
                async with session.get(base + "/?token=wrong-token-0123456789abcdef") as response:
                    assert response.status == 401
                async with session.get(base + "/", headers={"Authorization": f"Bearer {TOKEN}"}) as response:
                    assert response.status == 200 and "Content-Security-Policy" in response.headers
                async with session.get(base + "/api/chart?symbol=EURUSD&timeframe=1m", headers={"Authorization": "Bearer nope"}) as response:
                    assert response.status == 401
                with pytest.raises(aiohttp.WSServerHandshakeError):
                    await session.ws_connect(base + "/ws")
                async with session.get(base + f"/?token={TOKEN}", allow_redirects=False) as response:
                    assert response.status == 303 and response.headers["Location"] == "/"
                    cookie = response.headers["Set-Cookie"]
                    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
                jar = {"Cookie": cookie.split(";")[0]}
                async with session.get(base + "/static/app.js", headers=jar) as response:
                    assert response.status == 200
                    assert TOKEN not in await response.text()
                async with session.ws_connect(base + "/ws", headers=jar) as ws:
                    hello = (await ws.receive_json(timeout=5))[0]
                    assert hello["t"] == "hello" and TOKEN not in str(hello)
                with pytest.raises(aiohttp.WSServerHandshakeError):  # the cookie, from another site's page
                    await session.ws_connect(base + "/ws", headers={**jar, "Origin": "http://evil.example"})
        if chromium.available():  # the browser's way in: ?token= once, then the cookie
            async with chromium.Browser.launch(tmp_path / "chromium") as browser:
                page = await browser.page()
                await page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
                await page.wait_for("document.getElementById('status').dataset.state === 'live'", timeout=15)
                assert await page.eval("location.search") == ""  # the token left the address bar
                assert TOKEN not in await page.eval("document.documentElement.outerHTML + document.cookie")
    finally:
        await rt.stop()


# --------------------------------------------------------------------------- a slow page


async def _stalled_page(port: int) -> socket.socket:
    """A WebSocket client that completes the handshake and then never reads (a tiny receive buffer)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())  # fmt: skip
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_stalled_page_does_not_hold_the_publisher(tmp_path: Path) -> None:
    rt, bus, node = await start(
        tmp_path, f"++topology.services.{SERVICE}.params.client_queue=32", f"++topology.services.{SERVICE}.params.max_string=4000",
    )  # fmt: skip
    stalled = await _stalled_page(node.server.port)
    try:
        for _ in range(200):
            if len(node.hub.clients) == 1:
                break
            await asyncio.sleep(0.01)
        (slow,) = node.hub.clients.values()
        async with aiohttp.ClientSession() as session, session.ws_connect(node.url + "ws") as reader:
            await reader.receive_json(timeout=5)  # hello
            count, body = 3000, "z" * 3900  # ~12 MB for the stalled page: more than the sockets' buffers hold
            published = asyncio.ensure_future(_publish_alerts(bus, count, body))
            await asyncio.wait_for(published, timeout=30)  # the publisher never waits for a page
            last = f"alert {count - 1} "
            deadline = time.monotonic() + 10
            seen = False
            while not seen and time.monotonic() < deadline:  # a page that reads gets the newest at once
                for update in await reader.receive_json(timeout=5):
                    seen = seen or str(update.get("message", "")).startswith(last)
            assert seen
        stats = slow.stats
        assert stats["high_water"] <= 32 and stats["dropped"] > 0, stats  # bounded: the oldest went, nothing piled up
        assert rt.metrics()[0]["buffers"]["events"]["high_water"] <= 1000
    finally:
        stalled.close()
        await rt.stop()


async def _publish_alerts(bus: Any, count: int, body: str) -> None:
    for i in range(count):
        await bus.publish("risk.alert.drawdown", alert(f"alert {i} {body}", ts=T0 + i))
        if i % 100 == 0:
            await asyncio.sleep(0)  # let the server's tasks run, as a live loop would


# --------------------------------------------------------------------------- after the run


@pytest.mark.parametrize("serve_after", [True, False])
async def test_a_finished_run_keeps_its_dashboard_serving_only_when_asked(tmp_path: Path, serve_after: bool,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv("FXFLOW_DASHBOARD_TOKEN", raising=False)
    loaded = load(tmp_path, f"topology.services.{SERVICE}.enabled=true", f"topology.services.{SERVICE}.params.port=0",
                  "topology.services.synthetic-ticks.enabled=true", "topology.services.synthetic-ticks.params.duration=2m",
                  "pairs=[EURUSD,XAUUSD]", profile="backtest")  # fmt: skip
    rt = make_runtime(loaded, tmp_path, only=["synthetic-ticks", SERVICE])
    ended: list[list[dict[str, Any]]] = []
    run = asyncio.ensure_future(rt.run(serve_after=serve_after, ended=lambda: ended.append(rt.metrics())))
    if not serve_after:
        await asyncio.wait_for(run, 60)  # the server does not keep the run alive
        assert not ended
        return
    for _ in range(600):
        if ended:
            break
        await asyncio.sleep(0.05)
    states = {m["service"]: m["state"] for m in ended[0]}
    assert states == {"synthetic-ticks": "stopped", SERVICE: "running"}
    node = rt.hosts[SERVICE].node
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(node.url + "ws") as ws:
            hello = (await ws.receive_json(timeout=5))[0]
            assert any(t["symbol"] == "EURUSD" for t in hello["ticks"])  # what the run left
        async with session.get(node.url + "api/chart?symbol=EURUSD&timeframe=1m") as response:
            assert response.status == 200  # the tables are still open
    assert not run.done()
    rt.request_stop()  # Ctrl-C
    await asyncio.wait_for(run, 30)
    assert rt.metrics()[-1]["state"] == "stopped"


async def test_an_address_it_cannot_listen_on_is_one_line_naming_the_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_DASHBOARD_TOKEN", TOKEN)
    with pytest.raises(UserError, match=r"cannot listen on 192\.0\.2\.1:") as info:  # TEST-NET-1: on no machine
        rt, _, _ = await start(tmp_path / "a", f"topology.services.{SERVICE}.params.host=192.0.2.1")
        await rt.stop()
    assert info.value.path == f"services.{SERVICE}.params.host"
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    try:
        with pytest.raises(UserError, match="cannot listen on 127.0.0.1") as info:
            rt, _, _ = await start(tmp_path / "b", f"topology.services.{SERVICE}.params.port={held.getsockname()[1]}",
                                   f"++topology.services.{SERVICE}.params.port_fallback=false")  # fmt: skip
            await rt.stop()
        assert info.value.path == f"services.{SERVICE}.params.port"
    finally:
        held.close()


def test_an_absurd_timestamp_is_no_time_and_an_unencodable_update_reaches_no_page() -> None:
    from nodes.dashboard.state import ts_of

    assert ts_of(1e20) is None and ts_of(-1e20) is None and ts_of(float("nan")) is None and ts_of(True) is None
    assert ts_of(1_793_606_400_000.0) == 1_793_606_400_000
    hub = Hub(queue_size=16)

    async def close() -> None:
        pass

    client, queue = hub.join(close)
    hub.broadcast("x", {"t": "bad", "v": 2**70})  # beyond 64 bits: orjson refuses it
    hub.send_to(client, "y", {"t": "bad", "v": 2**70})
    hub.broadcast("z", {"t": "ok", "v": 1})
    assert [orjson.loads(data) for data in asyncio.run(queue.take(10))] == [{"t": "ok", "v": 1}]


def test_fxrun_says_where_the_setting_it_cannot_listen_on_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    from framework.cli import main

    monkeypatch.setenv("FXFLOW_DASHBOARD_TOKEN", TOKEN)
    monkeypatch.chdir(ROOT)
    code = main(["topology=demo", f"only=[{SERVICE}]", "serve_after=false", "duration=3s", f"data_dir={tmp_path}",
                 f"topology.services.{SERVICE}.params.host=192.0.2.1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 1
    assert f"fxrun: error: <command line>: services.{SERVICE}.params.host: the dashboard cannot listen on 192.0.2.1:" in err
    assert "Traceback" not in err
