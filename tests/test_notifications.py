"""notification-hub through the real runtime, against local servers that speak the providers' wire formats.

Fake Telegram Bot API and Twilio Messages API servers (aiohttp, the real paths, bodies and answers,
429 with ``parameters.retry_after``), an aiosmtpd SMTP server that requires STARTTLS (a self-signed
certificate made by ``openssl`` here) before AUTH, a port nothing listens on for a channel that is
down. Time is the demo profile's simulated clock, moved by the test: every quiet-hours, rate-limit,
dedup, digest and back-off decision is checked at the exact millisecond it is due.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import socket
import ssl
import subprocess
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import ValidationError

from framework.cli import main
from framework.errors import UserError
from framework.registry import Registry
from framework.runtime import Runtime
from framework.testing import contracts, load, query, recording_bus
from nodes.notifications.policy import ChannelPolicy, QuietHours
from nodes.notifications.spec import NotificationHubParams

ROOT = Path(__file__).resolve().parents[1]
HUB = "notification-hub"
BOT_TOKEN = "7311998825:AAH-fake-Telegram-token-9xQ"
TWILIO_SID = "AC" + "5ab1" * 8
TWILIO_TOKEN = "twilio-auth-token-" + "f00d" * 4
SMTP_USER, SMTP_PASSWORD = "hub@example.org", "smtp-password-Zq81"
SECRETS = (BOT_TOKEN, TWILIO_SID, TWILIO_TOKEN, SMTP_PASSWORD)
CHAT = "-1001234567890"
PHONE = "+447700900123"
FAST_RETRY = {"attempts": 3, "base_delay": "2s", "max_delay": "1m", "timeout": "3s"}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


T0 = ms("2026-11-02T10:00:00Z")


def alert(n: int, *, type_: str = "drawdown", severity: str = "critical", symbol: str | None = "EURUSD", source: str = "risk-management") -> dict[str, Any]:
    msg = {"alert_id": f"{type_}-{n}", "ts": T0, "source": source, "type": type_, "severity": severity, "message": f"{type_} number {n}"}
    if symbol:
        msg["symbol"] = symbol
    return msg


# ---------------------------------------------------------------- local servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class FakeProvider:
    """An aiohttp server; ``script`` holds (status, body) answers given before the default success."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: deque[tuple[int, Any]] = field(default_factory=deque)
    by_recipient: dict[str, tuple[int, Any]] = field(default_factory=dict)
    """Answers for one recipient (Twilio ``To``), whatever the order of the channels' requests."""

    async def wait_requests(self, n: int, timeout: float = 10.0) -> None:
        await eventually(lambda: len(self.requests) >= n, timeout, f"{n} request(s) to {self.url}")


async def eventually(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Real-time wait for work outside the simulated driver (a channel task doing network I/O)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def fake_telegram() -> AsyncIterator[FakeProvider]:
    """``POST /bot<token>/sendMessage`` (JSON), answering as the Bot API does."""
    fake = FakeProvider()

    async def send_message(request: web.Request) -> web.Response:
        body = await request.json()
        fake.requests.append({"token": request.match_info["token"], "body": body, "content_type": request.content_type})
        if request.match_info["token"] != BOT_TOKEN:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        if fake.script:
            status, payload = fake.script.popleft()
            return web.json_response(payload, status=status) if not isinstance(payload, str) else web.Response(text=payload, status=status)
        if not body.get("text") or "chat_id" not in body:
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: message text is empty"}, status=400)
        result = {"message_id": len(fake.requests), "from": {"id": 7311998825, "is_bot": True, "first_name": "fxflow"},
                  "chat": {"id": int(body["chat_id"]), "type": "supergroup"}, "date": 1793613600, "text": body["text"]}  # fmt: skip
        return web.json_response({"ok": True, "result": result})

    app = web.Application()
    app.router.add_post("/bot{token}/sendMessage", send_message)
    async with serve(app) as url:
        fake.url = url
        yield fake


def flood(retry_after: int) -> tuple[int, dict[str, Any]]:
    return 429, {"ok": False, "error_code": 429, "description": f"Too Many Requests: retry after {retry_after}", "parameters": {"retry_after": retry_after}}


@asynccontextmanager
async def fake_twilio() -> AsyncIterator[FakeProvider]:
    """``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded, HTTP Basic auth, 201 + the resource."""
    fake = FakeProvider()

    async def create_message(request: web.Request) -> web.Response:
        form = dict(await request.post())
        sid = request.match_info["sid"]
        auth = request.headers.get("Authorization", "")
        fake.requests.append({"sid": sid, "form": form, "auth": auth, "content_type": request.content_type})
        expected = "Basic " + base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
        if sid != TWILIO_SID or auth != expected:
            return web.json_response({"code": 20003, "message": "Authenticate", "more_info": "https://www.twilio.com/docs/errors/20003", "status": 401}, status=401)
        if fake.script or form.get("To") in fake.by_recipient:
            status, payload = fake.by_recipient.get(str(form.get("To"))) or fake.script.popleft()
            return web.json_response(payload, status=status)
        if not str(form.get("To", "")).startswith("+"):
            return web.json_response({"code": 21211, "message": f"The 'To' number {form.get('To')} is not a valid phone number.",
                                      "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}, status=400)  # fmt: skip
        message_sid = f"SM{len(fake.requests):032x}"
        resource = {
            "sid": message_sid, "account_sid": sid, "to": form["To"], "from": form.get("From"), "messaging_service_sid": None,
            "body": form["Body"], "status": "queued", "num_segments": "1", "num_media": "0", "direction": "outbound-api",
            "api_version": "2010-04-01", "price": None, "price_unit": "USD", "error_code": None, "error_message": None,
            "date_created": "Mon, 02 Nov 2026 10:00:00 +0000", "date_sent": None,
            "uri": f"/2010-04-01/Accounts/{sid}/Messages/{message_sid}.json",
        }  # fmt: skip
        return web.json_response(resource, status=201)

    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", create_message)
    async with serve(app) as url:
        fake.url = url
        yield fake


@dataclass
class FakeSmtp:
    port: int
    ca_file: str
    messages: list[dict[str, Any]] = field(default_factory=list)
    sessions_tls: list[bool] = field(default_factory=list)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (openssl, as Debian ships it)."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command is needed to make the test SMTP server's certificate"
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return str(cert), str(key)


@pytest.fixture
def smtp_server(certificate: tuple[str, str]) -> Iterator[FakeSmtp]:
    """aiosmtpd on a free port: STARTTLS required before anything else, AUTH (PLAIN/LOGIN) only over TLS."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    logging.getLogger("mail.log").setLevel(logging.WARNING)  # the server's own transcript is not the hub's log
    cert, key = certificate
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    fake = FakeSmtp(free_port(), cert)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            fake.sessions_tls.append(session.ssl is not None)
            fake.messages.append({"from": envelope.mail_from, "to": list(envelope.rcpt_tos), "content": envelope.content})
            return "250 Message accepted for delivery"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == SMTP_USER.encode() and auth_data.password == SMTP_PASSWORD.encode()
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself

    controller = Controller(Handler(), hostname="127.0.0.1", port=fake.port, tls_context=context, require_starttls=True,
                            authenticator=authenticator, auth_require_tls=True)  # fmt: skip
    controller.start()
    try:
        yield fake
    finally:
        controller.stop()


# ---------------------------------------------------------------- the hub in a runtime


def telegram(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "telegram", "token_env": "TEST_TELEGRAM_TOKEN", "chat_id": CHAT, "base_url": url, **extra}


def sms(url: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "sms", "account_sid_env": "TEST_TWILIO_SID", "auth_token_env": "TEST_TWILIO_TOKEN", "sender": "+15005550006",
            "to": PHONE, "base_url": url, **extra}  # fmt: skip


def email(server: FakeSmtp, **extra: Any) -> dict[str, Any]:
    return {"kind": "email", "host": "127.0.0.1", "port": server.port, "security": "starttls", "username_env": "TEST_SMTP_USER",
            "password_env": "TEST_SMTP_PASSWORD", "sender": "fxflow@example.org", "to": ["ops@example.org", "desk@example.org"],
            "ca_file": server.ca_file, **extra}  # fmt: skip


@pytest.fixture(autouse=True)
def _secrets_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_TELEGRAM_TOKEN", BOT_TOKEN)
    monkeypatch.setenv("TEST_TWILIO_SID", TWILIO_SID)
    monkeypatch.setenv("TEST_TWILIO_TOKEN", TWILIO_TOKEN)
    monkeypatch.setenv("TEST_SMTP_USER", SMTP_USER)
    monkeypatch.setenv("TEST_SMTP_PASSWORD", SMTP_PASSWORD)


@dataclass
class Hub:
    rt: Any
    bus: Any
    rows: list[tuple[str, dict[str, Any]]]

    @property
    def node(self) -> Any:
        return self.rt.hosts[HUB].node

    async def at(self, ts: int) -> None:
        """Move simulated time to ``ts`` (timers and back-off waits due on the way run first)."""
        await self.rt.clock.wait_until(ts)

    async def publish(self, subject: str, msg: dict[str, Any]) -> None:
        await self.bus.publish(subject, msg)

    async def idle(self, timeout: float = 10.0) -> None:
        await asyncio.wait_for(self.node.idle(), timeout)

    async def retrying_at(self, channel: str, timeout: float = 10.0) -> int:
        """The clock time ``channel`` waits for to try again, once it waits."""
        worker = self.node.workers[channel]
        await eventually(lambda: worker.retry_at is not None, timeout, f"{channel} to wait for a retry")
        return worker.retry_at

    async def retry_due(self, channel: str, at: int, timeout: float = 10.0) -> None:
        """Wait (real time) until ``channel`` waits for a retry at ``at``, then move the clock there."""
        worker = self.node.workers[channel]
        await eventually(lambda: worker.retry_at == at, timeout, f"{channel} to wait for a retry at {at}")
        await self.at(at)

    def of(self, channel: str, status: str | None = None) -> list[dict[str, Any]]:
        return [r for _, r in self.rows if r["channel"] == channel and (status is None or r["status"] == status)]


@dataclass(frozen=True)
class Base:
    """The demo profile composed once for the module (composing takes seconds), moved to each test's data_dir."""

    loaded: Any
    data_dir: Path
    registry: Registry

    def topology_for(self, data_dir: Path, params: dict[str, Any]) -> Any:
        topology = self.loaded.topology
        stores = {
            name: store.model_copy(update={"url": store.url.replace(str(self.data_dir), str(data_dir))})
            for name, store in topology.stores.items()
        }
        services = dict(topology.services)
        services[HUB] = services[HUB].model_copy(update={"params": {"retry": FAST_RETRY, "digest_check": "1m", **params}})
        return topology.model_copy(update={"stores": stores, "services": services})


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Base:
    data_dir = tmp_path_factory.mktemp("composed")
    return Base(load(data_dir, "pairs=[EURUSD,XAUUSD]"), data_dir, Registry.discover())


_BASE: list[Base] = []


@pytest.fixture(autouse=True)
def _base(base: Base) -> Iterator[None]:
    _BASE.append(base)
    yield
    _BASE.clear()


@asynccontextmanager
async def hub(tmp_path: Path, params: dict[str, Any], start: int = T0) -> AsyncIterator[Hub]:
    composed = _BASE[0]
    bus, rows = await recording_bus("notifications.>")
    rt = Runtime(composed.topology_for(tmp_path, params), composed.registry, contracts(composed.loaded.project),
                 pairs=composed.loaded.config.pairs, only=[HUB], data_dir=tmp_path, pubsub=bus)  # fmt: skip
    await rt.start()
    running = Hub(rt, bus, rows)
    try:
        await running.at(start)
        yield running
    finally:
        await rt.stop()


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# ---------------------------------------------------------------- delivery on every channel


async def test_every_channel_delivers_in_its_providers_wire_format(tmp_path: Path, smtp_server: FakeSmtp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with fake_telegram() as tg, fake_twilio() as tw:
        params = {
            "channels": {"telegram": telegram(tg.url), "sms": sms(tw.url), "email": email(smtp_server), "log": {"kind": "log"},
                         "file": {"kind": "file", "path": "out/notes.log"}},  # fmt: skip
            "rules": [{"events": ["alert"], "min_severity": "critical", "channels": ["telegram", "sms", "email", "log", "file"]},
                      {"events": ["fill", "training", "backtest"], "channels": ["telegram"]}],  # fmt: skip
        }
        async with hub(tmp_path, params) as h:
            await h.publish("risk.alert.drawdown", alert(1))
            await h.publish("risk.alert.wide_spread", alert(2, type_="wide_spread", severity="warning"))  # below every rule
            fill = {"order_id": "ord-1", "client_order_id": "c-1", "signal_id": "s-1", "decision_id": "d-1", "symbol": "XAUUSD",
                    "side": "buy", "order_type": "market", "quantity": 0.5, "filled_quantity": 0.5, "avg_price": 4012.35,
                    "status": "filled", "ts": T0}  # fmt: skip
            await h.publish("orders.filled.XAUUSD", fill)
            await h.publish("training.completed.run-7", {"run_id": "run-7", "ts": T0, "kind": "supervised", "status": "completed",
                                                          "model_type": "lightgbm", "metrics": {"balanced_accuracy": 0.5412}})  # fmt: skip
            await h.publish("backtest.failed.bt-3", {"run_id": "bt-3", "ts": T0, "status": "failed", "message": "no bars"})
            await h.idle()
            rows = list(h.rows)
    by_channel = {c: [r for _, r in rows if r["channel"] == c] for c in ("telegram", "sms", "email", "log", "file")}
    assert all(r["status"] == "sent" and r["attempts"] == 1 for _, r in rows)
    assert len(by_channel["telegram"]) == 4 and all(len(by_channel[c]) == 1 for c in ("sms", "email", "log", "file"))
    # Telegram: JSON to /bot<token>/sendMessage; the message_id comes back as provider_id
    assert [r["token"] for r in tg.requests] == [BOT_TOKEN] * 4 and {r["content_type"] for r in tg.requests} == {"application/json"}
    texts = [r["body"]["text"] for r in tg.requests]
    assert texts[0] == "[CRITICAL] drawdown EURUSD: drawdown number 1 (risk-management)" and tg.requests[0]["body"]["chat_id"] == CHAT
    assert "Filled: buy 0.5 lots XAUUSD @ 4012.35" in texts[1] and tg.requests[1]["body"]["disable_notification"] is True
    assert "Training run-7 (supervised lightgbm) completed: balanced_accuracy 0.5412" in texts[2] and "Backtest bt-3 failed: no bars" in texts[3]
    assert by_channel["telegram"][0]["provider_id"] == "1" and by_channel["telegram"][0]["source_subject"] == "risk.alert.drawdown"
    # Twilio: form-encoded To/From/Body with HTTP Basic auth, 201 → the SM sid
    (twilio,) = tw.requests
    assert twilio["content_type"] == "application/x-www-form-urlencoded" and twilio["sid"] == TWILIO_SID
    assert twilio["form"] == {"To": PHONE, "From": "+15005550006", "Body": texts[0]}
    assert by_channel["sms"][0]["provider_id"].startswith("SM") and by_channel["sms"][0]["recipient"] == PHONE
    # SMTP: STARTTLS before AUTH (the server refuses anything else), one message to both recipients
    (mail,) = smtp_server.messages
    assert smtp_server.sessions_tls == [True] and mail["to"] == ["ops@example.org", "desk@example.org"]
    parsed = message_from_bytes(mail["content"])
    assert parsed["Subject"] == "[fxflow] CRITICAL drawdown EURUSD" and parsed["From"] == "fxflow@example.org"
    assert parsed.get_payload().strip() == texts[0] and by_channel["email"][0]["provider_id"] == parsed["Message-ID"]
    # the local channels
    assert "notification (log, critical): [CRITICAL] drawdown EURUSD" in caplog.text
    assert (tmp_path / "services" / HUB / "out/notes.log").read_text() == f"2026-11-02T10:00:00Z CRITICAL drawdown: {texts[0]}\n"
    assert_no_secret(caplog.text, json.dumps(rows))
    table = await query(tmp_path, "SELECT channel, status, kind FROM notifications ORDER BY channel")
    assert [(r["channel"], r["status"], r["kind"]) for r in table] == [
        ("email", "sent", "email"), ("file", "sent", "file"), ("log", "sent", "log"), ("sms", "sent", "sms"),
        ("telegram", "sent", "telegram"), ("telegram", "sent", "telegram"), ("telegram", "sent", "telegram"), ("telegram", "sent", "telegram"),
    ]  # fmt: skip


# ---------------------------------------------------------------- routing policy


async def test_quiet_hours_hold_notifications_for_a_digest_at_their_local_end(tmp_path: Path) -> None:
    """22:00-07:00 New York is 03:00-12:00 UTC in November (EST): held until then, critical ones go through."""
    night = ms("2026-11-02T04:00:00Z")  # 23:00 in New York
    async with fake_telegram() as tg:
        params = {"channels": {"telegram": telegram(tg.url, quiet_hours="22:00-07:00 America/New_York")},
                  "rules": [{"channels": ["telegram"]}]}  # fmt: skip
        async with hub(tmp_path, params, start=night) as h:
            await h.publish("risk.alert.exposure", alert(1, type_="exposure", severity="warning"))
            await h.publish("risk.alert.exposure", alert(2, type_="exposure", severity="warning", symbol="XAUUSD"))
            await h.publish("risk.alert.drawdown", alert(3))  # critical: quiet_bypass
            await h.idle()
            assert len(tg.requests) == 1 and "drawdown" in tg.requests[0]["body"]["text"]
            held = h.of("telegram", "suppressed")
            assert len(held) == 2 and held[0]["reason"] == "quiet hours 22:00-07:00 America/New_York"
            await h.at(ms("2026-11-02T11:59:00Z"))  # 06:59 local: still quiet
            await h.idle()
            assert len(tg.requests) == 1
            await h.at(ms("2026-11-02T12:00:00Z"))  # 07:00 local
            await h.idle()
            assert len(tg.requests) == 2
            digest = h.of("telegram", "sent")[-1]
    text = tg.requests[1]["body"]["text"]
    assert digest["event"] == "digest" and digest["digest"] == 2 and digest["ts"] == ms("2026-11-02T12:00:00Z")
    assert text.startswith("Digest for telegram: 2 notification(s) held back (quiet hours) between 2026-11-01 23:00 and 2026-11-01 23:00 America/New_York")
    assert "- 2x exposure (warning; EURUSD x1, XAUUSD x1); latest: [WARNING] exposure XAUUSD: exposure number 2" in text


async def test_rate_limit_per_type_then_a_digest_when_its_window_ends(tmp_path: Path) -> None:
    async with fake_telegram() as tg:
        params = {"channels": {"telegram": telegram(tg.url)}, "rules": [{"channels": ["telegram"]}],
                  "rate_limits": {"wide_spread": "2/10m"}, "dedup_window": "0s"}  # fmt: skip
        async with hub(tmp_path, params) as h:
            for n in range(5):
                await h.at(T0 + n * 1000)
                await h.publish("risk.alert.wide_spread", alert(n, type_="wide_spread", severity="warning"))
            await h.publish("risk.alert.drawdown", alert(9))  # another type has its own budget
            await h.idle()
            statuses = {r["notification_id"].split(":")[0]: r["status"] for r in h.of("telegram")}
            assert statuses == {"wide_spread-0": "sent", "wide_spread-1": "sent", "wide_spread-2": "suppressed", "wide_spread-3": "suppressed",
                                "wide_spread-4": "suppressed", "drawdown-9": "sent"}  # fmt: skip
            assert h.of("telegram", "suppressed")[0]["reason"] == "rate limit 2/10m for wide_spread"
            await h.at(T0 + 10 * 60_000 - 1)
            await h.idle()
            assert len(tg.requests) == 3
            await h.at(T0 + 11 * 60_000)  # the timer after the window's end (T0 + 10m) releases the digest
            await h.idle()
            assert len(tg.requests) == 4
            digest = h.of("telegram", "sent")[-1]
    assert digest["digest"] == 3 and digest["ts"] == T0 + 10 * 60_000
    assert "3 notification(s) held back (rate limit)" in tg.requests[3]["body"]["text"]
    assert "- 3x wide_spread (warning; EURUSD x3); latest: [WARNING] wide_spread EURUSD: wide_spread number 4" in tg.requests[3]["body"]["text"]


async def test_dedup_window_drops_the_same_condition_raised_again(tmp_path: Path) -> None:
    async with fake_telegram() as tg:
        params = {"channels": {"telegram": telegram(tg.url)}, "rules": [{"channels": ["telegram"]}], "dedup_window": "5m"}
        async with hub(tmp_path, params) as h:
            await h.publish("risk.alert.drawdown", alert(1))
            await h.at(T0 + 60_000)
            await h.publish("risk.alert.drawdown", alert(2))  # same source, type, symbol, severity: a duplicate
            await h.publish("risk.alert.drawdown", alert(3, symbol="XAUUSD"))  # another symbol: not one
            await h.at(T0 + 5 * 60_000)
            await h.publish("risk.alert.drawdown", alert(4))  # the window (from the last one sent) is over
            await h.idle()
            statuses = sorted((r["notification_id"], r["status"]) for r in h.of("telegram"))
    assert statuses == [("drawdown-1:telegram", "sent"), ("drawdown-2:telegram", "duplicate"), ("drawdown-3:telegram", "sent"),
                        ("drawdown-4:telegram", "sent")]  # fmt: skip
    assert [r["body"]["text"].split(": ")[1] for r in tg.requests] == [f"drawdown number {n} (risk-management)" for n in (1, 3, 4)]


# ---------------------------------------------------------------- retries and failures


async def test_telegram_429_is_retried_after_its_retry_after(tmp_path: Path) -> None:
    async with fake_telegram() as tg:
        tg.script.append(flood(30))
        params = {"channels": {"telegram": telegram(tg.url)}, "rules": [{"channels": ["telegram"]}]}
        async with hub(tmp_path, params) as h:
            await h.publish("risk.alert.drawdown", alert(1))
            assert await h.retrying_at("telegram") == T0 + 30_000  # the server's retry_after, not base_delay (2s)
            await h.at(T0 + 29_999)
            await asyncio.sleep(0.05)
            assert len(tg.requests) == 1
            await h.at(T0 + 30_000)
            await h.idle()
            (row,) = h.of("telegram")
    assert len(tg.requests) == 2 and tg.requests[0]["body"] == tg.requests[1]["body"]
    assert row["status"] == "sent" and row["attempts"] == 2 and row["delivered_ts"] == T0 + 30_000


async def test_twilio_5xx_backs_off_exponentially_then_delivers(tmp_path: Path) -> None:
    async with fake_twilio() as tw:
        tw.script.extend([(503, {"code": 20500, "message": "Service Unavailable", "status": 503})] * 2)
        params = {"channels": {"sms": sms(tw.url)}, "rules": [{"channels": ["sms"]}]}
        async with hub(tmp_path, params) as h:
            await h.publish("risk.alert.drawdown", alert(1))
            assert await h.retrying_at("sms") == T0 + 2_000  # base_delay
            await h.at(T0 + 1_999)
            await asyncio.sleep(0.05)
            assert len(tw.requests) == 1
            await h.at(T0 + 2_000)
            await h.retry_due("sms", T0 + 6_000)  # doubled
            await h.idle()
            (row,) = h.of("sms")
    assert len(tw.requests) == 3 and row["status"] == "sent" and row["attempts"] == 3 and row["delivered_ts"] == T0 + 6_000


async def test_a_channel_that_is_down_fails_with_its_reason_and_holds_up_no_other(
    tmp_path: Path, smtp_server: FakeSmtp, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    async with fake_twilio() as tw:
        params = {"channels": {"telegram": telegram(dead), "sms": sms(tw.url), "email": email(smtp_server),
                               "file": {"kind": "file", "path": "notes.log"}},
                  "rules": [{"channels": ["telegram", "sms", "email", "file"]}]}  # fmt: skip
        async with hub(tmp_path, params) as h:
            await h.publish("risk.alert.drawdown", alert(1))
            await h.publish("risk.alert.drawdown", alert(2, symbol="XAUUSD"))
            # the others deliver both while Telegram still waits for its first retry
            await eventually(lambda: len(h.of("sms", "sent")) == 2 and len(h.of("email", "sent")) == 2, what="sms and e-mail")
            assert len(h.of("file", "sent")) == 2 and await h.retrying_at("telegram") == T0 + 2_000 and h.of("telegram") == []
            await h.retry_due("telegram", T0 + 2_000)
            await h.retry_due("telegram", T0 + 6_000)
            await eventually(lambda: len(h.of("telegram")) == 1, what="the first telegram outcome")
            await h.retry_due("telegram", T0 + 8_000)  # the second one waited in the queue behind the first: its tries now
            await h.retry_due("telegram", T0 + 12_000)
            await h.idle()
            failed = h.of("telegram", "failed")
    assert [r["notification_id"] for r in failed] == ["drawdown-1:telegram", "drawdown-2:telegram"]
    reason = failed[0]["reason"]
    assert reason.startswith("Telegram unreachable: POST http://127.0.0.1:") and "/bot***/sendMessage" in reason
    assert "Cannot connect" in reason and reason.endswith("(after 3 attempts)") and failed[0]["attempts"] == 3
    assert "failed: Telegram unreachable" in caplog.text
    rows = await query(tmp_path, "SELECT status, reason FROM notifications WHERE channel = 'telegram'")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert_no_secret(caplog.text, json.dumps(rows), json.dumps(failed))


async def test_permanent_refusals_are_not_retried_and_no_secret_leaks(tmp_path: Path, smtp_server: FakeSmtp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with fake_telegram() as tg, fake_twilio() as tw:
        tg.script.append((403, {"ok": False, "error_code": 403, "description": "Forbidden: bot was blocked by the user"}))
        # Twilio names the resource (with the Account SID) in a 404: the reason must not carry it
        missing = f"The requested resource /2010-04-01/Accounts/{TWILIO_SID}/Messages.json was not found"
        tw.by_recipient["+15550000404"] = (404, {"code": 20404, "message": missing, "more_info": "https://www.twilio.com/docs/errors/20404", "status": 404})
        params = {
            "channels": {"telegram": telegram(tg.url), "sms": sms(tw.url, to="07700900123"), "sms_404": sms(tw.url, to="+15550000404"),
                         "email": email(smtp_server, password_env="TEST_SMTP_WRONG")},  # fmt: skip
            "rules": [{"channels": ["telegram", "sms", "sms_404", "email"]}],
        }
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("TEST_SMTP_WRONG", "not-the-password")
            async with hub(tmp_path, params) as h:
                await h.publish("risk.alert.drawdown", alert(1))
                await h.idle()
                reasons = {r["channel"]: r["reason"] for _, r in h.rows if r["status"] == "failed"}
                attempts = {r["channel"]: r["attempts"] for _, r in h.rows}
    assert reasons == {
        "telegram": "Telegram HTTP 403: Forbidden: bot was blocked by the user",
        "sms": "Twilio HTTP 400 (error 21211): The 'To' number 07700900123 is not a valid phone number.",
        "sms_404": "Twilio HTTP 404 (error 20404): The requested resource /2010-04-01/Accounts/***/Messages.json was not found",
        "email": "SMTP 535: 5.7.8 Authentication credentials invalid",
    }
    assert attempts == {"telegram": 1, "sms": 1, "sms_404": 1, "email": 1}
    assert_no_secret(caplog.text, json.dumps(reasons))
    assert "not-the-password" not in caplog.text + json.dumps(reasons)


# ---------------------------------------------------------------- configuration


async def test_auto_channels_without_their_variables_are_off_and_enabled_ones_refuse_to_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    params = {"channels": {"telegram": telegram("http://127.0.0.1:9", token_env="TEST_UNSET_TOKEN", enabled="auto"),
                           "file": {"kind": "file"}}, "rules": [{"channels": ["telegram", "file"]}]}  # fmt: skip
    async with hub(tmp_path / "auto", params) as h:
        await h.publish("risk.alert.drawdown", alert(1))
        assert [r["channel"] for _, r in h.rows] == ["file"]
    assert "notification channel telegram (telegram) is off: TEST_UNSET_TOKEN not set (enabled: auto)" in caplog.text
    params["channels"]["telegram"]["enabled"] = True
    with pytest.raises(UserError, match="channel telegram \\(telegram\\) is enabled but TEST_UNSET_TOKEN not set"):
        async with hub(tmp_path / "on", params):
            pass


@pytest.mark.parametrize(
    ("params", "loc", "message"),
    [
        ({"channels": {"telegram": {"kind": "telegram"}}, "rules": [{"channels": ["telegram", "telgram"]}]},
         ("rules", 0, "channels", 1), "rule names channel 'telgram', which is not declared under channels (declared: telegram); did you mean telegram?"),
        ({"channels": {"mail": {"kind": "email", "quiet_hours": "22h-7h"}}},
         ("channels", "mail", "quiet_hours"), "quiet hours '22h-7h': expected HH:MM-HH:MM"),
        ({"channels": {"mail": {"kind": "email", "quiet_hours": "22:00-07:00 Europe/Lundon"}}},
         ("channels", "mail", "quiet_hours"), "quiet hours '22:00-07:00 Europe/Lundon': unknown time zone 'Europe/Lundon'"),
        ({"channels": {"mail": {"kind": "email", "quiet_hours": "07:00-07:00"}}},
         ("channels", "mail", "quiet_hours"), "start and end are the same time"),
        ({"rate_limits": {"fill": "10 per hour"}}, ("rate_limits", "fill"), "rate limit '10 per hour': expected COUNT/DURATION"),
    ],
)  # fmt: skip
def test_bad_params_name_the_field(params: dict[str, Any], loc: tuple[Any, ...], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        NotificationHubParams.model_validate(params)
    (error,) = info.value.errors()
    assert error["loc"] == loc and message in error["msg"]


def test_a_field_error_and_a_bad_reference_are_reported_together() -> None:
    params = {"timezone": "Europe/Lundon", "retry": {"attempts": 0},
              "channels": {"mail": {"kind": "email", "quiet_hours": "22:00-31:00 Europe/London"}},
              "rules": [{"channels": ["mial"]}], "rate_limits": {"fill": "often"}}  # fmt: skip
    with pytest.raises(ValidationError) as info:
        NotificationHubParams.model_validate(params)
    got = {e["loc"]: e["msg"] for e in info.value.errors()}
    assert set(got) == {("timezone",), ("retry", "attempts"), ("channels", "mail", "quiet_hours"), ("rules", 0, "channels", 0), ("rate_limits", "fill")}
    assert "did you mean mail?" in got[("rules", 0, "channels", 0)]
    assert "unknown time zone 'Europe/Lundon'" in got[("timezone",)]


def test_lint_points_at_the_file_line_and_field(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    text = (ROOT / "topology" / "services.yaml").read_text()
    rule = "        - {events: [fill], channels: [telegram]}\n"
    quiet = '          quiet_hours: "22:00-07:00"  # below critical, held for the morning digest\n'
    assert rule in text and quiet in text
    broken = text.replace(rule, "        - {events: [fill], channels: [telegarm]}\n").replace(quiet, '          quiet_hours: "22:00-31:00"\n')
    copy = tmp_path / "services.yaml"
    copy.write_text(broken)
    lines = broken.splitlines()
    assert main(["lint", "--json", str(copy)]) == 1
    findings = [f for f in json.loads(capsys.readouterr().out) if f["service"] == HUB and f["code"] == "FX102"]
    got = {(f["line"], f["message"].split(":")[0]) for f in findings}
    assert got == {
        (lines.index("        - {events: [fill], channels: [telegarm]}") + 1, "params.rules.3.channels.0"),
        (lines.index('          quiet_hours: "22:00-31:00"') + 1, "params.channels.email.quiet_hours"),
    }
    assert all(f["file"] == str(copy) for f in findings)
    assert any("did you mean telegram?" in f["message"] for f in findings)


# ---------------------------------------------------------------- restart


async def test_held_notifications_and_queued_ones_survive_a_restart(tmp_path: Path) -> None:
    night = ms("2026-11-02T23:00:00Z")
    async with fake_telegram() as tg:
        params = {"channels": {"telegram": telegram(tg.url, quiet_hours="22:00-07:00 Europe/London")}, "rules": [{"channels": ["telegram"]}]}
        async with hub(tmp_path, params, start=night) as h:
            await h.publish("risk.alert.exposure", alert(1, type_="exposure", severity="warning"))
            assert [r["status"] for _, r in h.rows] == ["suppressed"]
        async with hub(tmp_path, params, start=night + 60_000) as h:
            await h.at(ms("2026-11-03T07:00:00Z"))
            await h.idle()
            (row,) = h.of("telegram", "sent")
    assert row["digest"] == 1 and "1 notification(s) held back (quiet hours)" in tg.requests[0]["body"]["text"]


# ---------------------------------------------------------------- pure policy


def test_quiet_hours_follow_the_zones_daylight_saving_rules() -> None:
    quiet = QuietHours.parse("22:00-07:00 Europe/London")
    assert quiet.active(ms("2026-07-01T21:30:00Z"))  # 22:30 BST
    assert not quiet.active(ms("2026-12-01T21:30:00Z"))  # 21:30 GMT
    assert quiet.active(ms("2026-12-01T06:59:00Z")) and not quiet.active(ms("2026-12-01T07:00:00Z"))
    day = QuietHours.parse("12:00-13:30", default_zone="Asia/Tokyo")
    assert day.zone == "Asia/Tokyo" and day.active(ms("2026-12-01T03:00:00Z")) and not day.active(ms("2026-12-01T04:30:00Z"))


def test_policy_state_round_trips_through_json() -> None:
    policy = ChannelPolicy(quiet=QuietHours.parse("22:00-07:00"), quiet_bypass="critical", limits={}, dedup_ms=60_000)
    night = ms("2026-11-02T23:00:00Z")
    assert policy.decide(key="k", type_="x", severity="info", text="t", symbol="EURUSD", now=night).status == "suppressed"
    again = ChannelPolicy(quiet=QuietHours.parse("22:00-07:00"), quiet_bypass="critical", limits={}, dedup_ms=60_000)
    again.restore(json.loads(json.dumps(policy.snapshot())))
    assert again.decide(key="k", type_="x", severity="info", text="t", symbol=None, now=night + 1).status == "duplicate"
    (part,) = again.release(ms("2026-11-03T07:00:00Z"))
    assert part.count == 1 and part.symbols == {"EURUSD": 1}



def test_a_servers_retry_after_is_honoured_up_to_an_hour() -> None:
    from nodes.notifications.delivery import RETRY_AFTER_CAP_S, Backoff

    backoff = Backoff(attempts=5, base_s=1.0, max_s=60.0)
    assert backoff.delay(1, 30.0) == 30.0 and backoff.delay(1, -5.0) == 0.0 and backoff.delay(3, None) == 4.0
    assert RETRY_AFTER_CAP_S == 3600.0
    for absurd in (1e9, 1e308, float("inf"), float("nan")):  # a broken server must not hold the channel for good
        assert backoff.delay(1, absurd) == RETRY_AFTER_CAP_S
