"""NatsPubSub against a real nats-server: credentials, outages, JetStream durability, bad payloads.

The conformance suite (``tests/conformance -k nats``) covers the pub/sub semantics; these tests
cover what only a real server shows. Every wait has a generous timeout (a loaded 2-core
machine) and every subject starts with a per-test uid, so the shared server keeps no state
between tests.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from framework.errors import UserError
from framework.infra import NatsServer, free_port
from framework.subjects import SubjectError
from framework.topology.model import NatsAuth, NatsConfig, TLSConfig
from framework.transport.base import Headers, Message
from transport_helpers import Inbox
from transport_helpers import eventually as _eventually
from framework.transport.inprocess import TransportClosedError
from framework.transport.nats import (
    DurableStream,
    NatsPubSub,
    PublishBufferFullError,
    message_id,
    plan_streams,
    redact_url,
    server_urls,
    stream_name,
)

TIMEOUT = 30.0


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    await _eventually(predicate, what, timeout)



@pytest.fixture
def uid() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def transports() -> AsyncIterator[list[NatsPubSub]]:
    """Transports a test opened; closed after it, whatever happened."""
    opened: list[NatsPubSub] = []
    yield opened
    for transport in reversed(opened):
        await transport.close()


async def open_nats(opened: list[NatsPubSub], config: NatsConfig, **kwargs: Any) -> NatsPubSub:
    transport = NatsPubSub(config, **kwargs)
    await transport.connect()
    opened.append(transport)
    return transport


class AuthNatsServer(NatsServer):
    """nats-server requiring a user and password."""

    def __init__(self, data_dir: Path, *, user: str, password: str) -> None:
        super().__init__(data_dir)
        self.user = user
        self.password = password

    def command(self) -> list[str]:
        return [*super().command(), "--user", self.user, "--pass", self.password]


# --- basics ---------------------------------------------------------------------------------


async def test_round_trip_with_headers(nats_server: NatsServer, transports: list[NatsPubSub], uid: str) -> None:
    bus = await open_nats(transports, NatsConfig(servers=[nats_server.url]), name="fxflow-test", service="rt")
    inbox = Inbox()
    sub = await bus.subscribe(f"{uid}.ticks.*", inbox)
    payload = {"symbol": "EURUSD", "bid": 1.0842, "ask": 1.0843, "ts": 1_700_000_000_000, "xs": [1, None, "a"]}
    headers = {"trace-id": "4bf92f3577b34da6", "X-Mixed-Case": "Yes"}
    await bus.publish(f"{uid}.ticks.EURUSD", payload, headers=headers)
    await bus.publish(f"{uid}.ticks.XAUUSD", {"n": 2})
    await eventually(inbox.has(2), "both messages")
    assert inbox.received[0][0] == f"{uid}.ticks.EURUSD"
    assert inbox.received[0][1] == payload
    assert dict(inbox.received[0][2] or {}) == headers
    assert inbox.received[1][1:] == ({"n": 2}, None)
    assert bus.connected and bus.disconnects == 0 and bus.publish_errors == 0
    await sub.unsubscribe()
    await bus.close()
    assert not bus.connected
    with pytest.raises(TransportClosedError):
        await bus.publish(f"{uid}.ticks.EURUSD", payload)


async def test_invalid_subjects_are_rejected_before_sending(nats_server: NatsServer, transports: list[NatsPubSub]) -> None:
    bus = await open_nats(transports, NatsConfig(servers=[nats_server.url]))
    for subject in ("a.{symbol}", "a.*", "a\r\nPUB x 1", "a. b"):
        with pytest.raises(SubjectError):
            await bus.publish(subject, {})
    with pytest.raises(ValueError):
        await bus.subscribe("a.b", Inbox(), queue="two words")


async def test_close_lets_the_running_handler_finish(nats_server: NatsServer, transports: list[NatsPubSub], uid: str) -> None:
    bus = await open_nats(transports, NatsConfig(servers=[nats_server.url]))
    started, finished = asyncio.Event(), asyncio.Event()

    async def slow(subject: str, payload: Message, headers: Headers | None) -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.set()

    await bus.subscribe(f"{uid}.slow", slow)
    await bus.publish(f"{uid}.slow", {})
    await asyncio.wait_for(started.wait(), TIMEOUT)
    await bus.close()
    assert finished.is_set()


async def test_unsubscribe_drains_what_was_already_published(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    """Within one process nothing published before ``unsubscribe`` is lost (producers-first stop)."""
    bus = await open_nats(transports, NatsConfig(servers=[nats_server.url]))
    got: list[int] = []

    async def slowish(subject: str, payload: Message, headers: Headers | None) -> None:
        await asyncio.sleep(0.001)
        got.append(payload["i"])

    sub = await bus.subscribe(f"{uid}.q", slowish)
    for i in range(300):
        await bus.publish(f"{uid}.q", {"i": i})
    await sub.unsubscribe()
    assert got == list(range(300))
    await bus.publish(f"{uid}.q", {"i": 300})
    await bus.flush()
    await asyncio.sleep(0.2)
    assert len(got) == 300


async def test_unsubscribe_from_inside_the_handler(nats_server: NatsServer, transports: list[NatsPubSub], uid: str) -> None:
    bus = await open_nats(transports, NatsConfig(servers=[nats_server.url]))
    got: list[int] = []
    subs: list[Any] = []

    async def once(subject: str, payload: Message, headers: Headers | None) -> None:
        got.append(payload["i"])
        await subs[0].unsubscribe()

    subs.append(await bus.subscribe(f"{uid}.once", once))
    marker = Inbox()
    await bus.subscribe(f"{uid}.once", marker)
    await bus.publish(f"{uid}.once", {"i": 0})
    await eventually(marker.has(1), "the first message")
    await eventually(lambda: bool(got), "the handler")
    for i in range(1, 4):
        await bus.publish(f"{uid}.once", {"i": i})
    await eventually(marker.has(4), "the later messages on the other subscriber")
    await bus.publish(f"{uid}.once", {"i": 4})
    await eventually(marker.has(5), "the last message on the other subscriber")
    await asyncio.sleep(0.2)
    assert got[0] == 0 and 4 not in got


# --- connection errors ----------------------------------------------------------------------


async def test_unreachable_server_is_one_line_user_error() -> None:
    port = free_port()
    config = NatsConfig(servers=[f"nats://bob:s3cr3t-pw@127.0.0.1:{port}"])
    bus = NatsPubSub(config, service="risk-management", connect_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(UserError) as caught:
        await bus.connect()
    message = str(caught.value)
    assert "\n" not in message
    assert "risk-management" in message
    assert f"nats://127.0.0.1:{port}" in message
    assert "fxrun infra up" in message
    assert "s3cr3t-pw" not in message and "bob" not in message
    assert time.monotonic() - started < TIMEOUT
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_one_servers_entry_may_list_several_urls() -> None:
    assert server_urls(["nats://a:4222, nats://b:4222,,nats://c:4222", "nats://d:4222", "nats://a:4222"]) == [
        "nats://a:4222",
        "nats://b:4222",
        "nats://c:4222",
        "nats://d:4222",
    ]
    for empty in ([","], [" , "]):
        with pytest.raises(UserError, match="FXFLOW_NATS_URL"):
            NatsPubSub(NatsConfig(servers=empty))


@pytest.mark.parametrize("form", ["one entry, commas", "list"])
async def test_a_dead_first_server_is_skipped_for_a_live_one(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str, form: str
) -> None:
    dead = f"nats://127.0.0.1:{free_port()}"
    servers = [f"{dead},{nats_server.url}"] if form == "one entry, commas" else [dead, nats_server.url]
    bus = await open_nats(transports, NatsConfig(servers=servers), service="cluster-client")
    assert bus.servers == [dead, nats_server.url]
    assert bus.connected
    inbox = Inbox()
    await bus.subscribe(f"{uid}.x", inbox)
    await bus.publish(f"{uid}.x", {"ok": True})
    await eventually(inbox.has(1), "a message through the live server of the list")


async def test_credentials_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transports: list[NatsPubSub], uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    password = "pw-" + uuid.uuid4().hex
    server = AuthNatsServer(tmp_path / "nats-auth", user="fx", password=password).start()
    try:
        auth = NatsAuth(user_env="FX_TEST_NATS_USER", password_env="FX_TEST_NATS_PASS")
        config = NatsConfig(servers=[server.url], auth=auth)

        monkeypatch.delenv("FX_TEST_NATS_PASS", raising=False)
        monkeypatch.setenv("FX_TEST_NATS_USER", "fx")
        with pytest.raises(UserError, match="FX_TEST_NATS_PASS is not set"):
            await NatsPubSub(config).connect()

        monkeypatch.setenv("FX_TEST_NATS_PASS", "wrong-" + password)
        caplog.set_level(logging.DEBUG, logger="framework.transport.nats")
        with pytest.raises(UserError) as caught:
            await NatsPubSub(config, service="execution-service").connect()
        message = str(caught.value)
        assert "\n" not in message
        assert "authorization violation" in message.lower()
        assert "execution-service" in message and server.url in message
        assert "FX_TEST_NATS_USER" in message and "FX_TEST_NATS_PASS" in message
        assert password not in message
        assert password not in caplog.text

        with pytest.raises(UserError, match="authorization violation"):
            await NatsPubSub(NatsConfig(servers=[server.url])).connect()

        monkeypatch.setenv("FX_TEST_NATS_PASS", password)
        bus = await open_nats(transports, config)
        inbox = Inbox()
        await bus.subscribe(f"{uid}.x", inbox)
        await bus.publish(f"{uid}.x", {"ok": True})
        await eventually(inbox.has(1), "a message through the authenticated connection")
        assert password not in caplog.text
    finally:
        for transport in transports:
            await transport.close()
        server.stop()


class TokenNatsServer(NatsServer):
    def __init__(self, data_dir: Path, *, token: str) -> None:
        super().__init__(data_dir)
        self.token = token

    def command(self) -> list[str]:
        return [*super().command(), "--auth", self.token]


class TlsNatsServer(NatsServer):
    def __init__(self, data_dir: Path, *, cert: Path, key: Path) -> None:
        super().__init__(data_dir)
        self.cert, self.key = cert, key

    def command(self) -> list[str]:
        return [*super().command(), "--tls", "--tlscert", str(self.cert), "--tlskey", str(self.key)]


async def test_token_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transports: list[NatsPubSub], uid: str
) -> None:
    token = "tok-" + uuid.uuid4().hex
    server = TokenNatsServer(tmp_path / "nats-token", token=token).start()
    try:
        config = NatsConfig(servers=[server.url], auth=NatsAuth(token_env="FX_TEST_NATS_TOKEN"))
        monkeypatch.setenv("FX_TEST_NATS_TOKEN", "wrong")
        with pytest.raises(UserError) as caught:
            await NatsPubSub(config).connect()
        assert "authorization violation" in str(caught.value).lower() and token not in str(caught.value)
        monkeypatch.setenv("FX_TEST_NATS_TOKEN", token)
        bus = await open_nats(transports, config)
        inbox = Inbox()
        await bus.subscribe(f"{uid}.t", inbox)
        await bus.publish(f"{uid}.t", {"ok": True})
        await eventually(inbox.has(1), "a message over a token-authenticated connection")
    finally:
        for transport in transports:
            await transport.close()
        server.stop()


async def test_tls_with_the_servers_certificate_as_ca(tmp_path: Path, transports: list[NatsPubSub], uid: str) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = TlsNatsServer(tmp_path / "nats-tls", cert=cert, key=key).start()
    try:
        with pytest.raises(UserError, match="TLS failed"):  # a client that does not trust the certificate: at once
            await NatsPubSub(NatsConfig(servers=[server.url.replace("nats://", "tls://")])).connect()
        config = NatsConfig(servers=[server.url.replace("nats://", "tls://")], tls=TLSConfig(ca=str(cert)))
        bus = await open_nats(transports, config)
        inbox = Inbox()
        await bus.subscribe(f"{uid}.s", inbox)
        await bus.publish(f"{uid}.s", {"secure": True})
        await eventually(inbox.has(1), "a message over TLS")
        assert inbox.payloads == [{"secure": True}]
    finally:
        for transport in transports:
            await transport.close()
        server.stop()


# --- outages --------------------------------------------------------------------------------


async def test_kill_and_restart_mid_stream(nats_server_fn: NatsServer, transports: list[NatsPubSub], uid: str) -> None:
    """Publishing carries on through an outage: buffered messages arrive, the overflow is refused."""
    buffer = 16 * 1024
    config = NatsConfig(servers=[nats_server_fn.url], reconnect_buffer_bytes=buffer)
    bus = await open_nats(transports, config, service="kill-test")
    other = await open_nats(transports, NatsConfig(servers=[nats_server_fn.url]), service="observer")
    mine, theirs = Inbox(), Inbox()
    await bus.subscribe(f"{uid}.s.>", mine)
    await other.subscribe(f"{uid}.s.>", theirs)

    buffered: list[int] = []
    refused: list[int] = []
    sent: list[int] = []
    stop = asyncio.Event()

    async def publish_forever() -> None:
        seq = 0
        while not stop.is_set():
            down = not bus.connected
            try:
                await bus.publish(f"{uid}.s.{seq % 3}", {"seq": seq, "pad": "x" * 40})
            except PublishBufferFullError as exc:
                assert "reconnect buffer" in str(exc) and "\n" not in str(exc)
                refused.append(seq)
            else:
                (buffered if down else sent).append(seq)
            seq += 1
            await asyncio.sleep(0.002)

    publisher = asyncio.create_task(publish_forever())
    try:
        await eventually(lambda: len(mine.received) >= 20 and len(theirs.received) >= 20, "messages before the kill")
        await asyncio.to_thread(nats_server_fn.kill)
        await eventually(lambda: bus.disconnects == 1, "the disconnect to be noticed")
        await eventually(lambda: len(refused) >= 5, "the reconnect buffer to fill up")
        assert buffered, "some publishes should have been buffered"
        assert not publisher.done()
        await asyncio.to_thread(nats_server_fn.start)
        await eventually(lambda: bus.reconnects == 1 and other.reconnects == 1, "both clients to reconnect")
        resumed = len(sent)
        await eventually(lambda: len(sent) >= resumed + 50, "publishing to resume")
    finally:
        stop.set()
        await publisher
    await bus.flush()
    after = [s for s in sent if s > max(refused)]
    await eventually(lambda: set(after) <= {p["seq"] for p in mine.payloads}, "messages published after the reconnect")
    await eventually(lambda: set(after[-20:]) <= {p["seq"] for p in theirs.payloads}, "the observer to get new messages")
    got = {p["seq"] for p in mine.payloads}
    assert set(buffered) <= got, f"lost {sorted(set(buffered) - got)[:10]} of {len(buffered)} buffered messages"
    assert not set(refused) & got
    assert buffer // 200 < len(buffered) <= buffer // 60, "the buffer holds what fits in reconnect_buffer_bytes"
    assert bus.publish_errors == len(refused)
    assert (bus.disconnects, bus.reconnects) == (1, 1)
    assert len(bus.gaps) == 1
    down, up = bus.gaps[0]
    assert 0 < up - down < TIMEOUT
    assert bus.stats()["last_gap_s"] == pytest.approx(up - down, abs=0.01)
    assert bus.connected and other.connected


async def test_publish_without_buffer_while_disconnected_is_refused(
    nats_server_fn: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    bus = await open_nats(transports, NatsConfig(servers=[nats_server_fn.url], reconnect_buffer_bytes=0))
    await asyncio.to_thread(nats_server_fn.kill)
    await eventually(lambda: not bus.connected, "the disconnect")
    with pytest.raises(PublishBufferFullError, match=r"reconnect_buffer_bytes=0"):
        await bus.publish(f"{uid}.x", {"n": 1})
    assert bus.publish_errors == 1
    await asyncio.to_thread(nats_server_fn.start)
    await eventually(lambda: bus.connected, "the reconnect")
    await bus.publish(f"{uid}.x", {"n": 2})


# --- JetStream ------------------------------------------------------------------------------


def durable_config(url: str, uid: str) -> NatsConfig:
    return NatsConfig(servers=[url], durable=[f"{uid}.sig.>", f"{uid}.sig.raw.>", f"{uid}.orders.>"])


async def test_durable_subscriber_gets_what_was_published_while_it_was_down(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    config = durable_config(nats_server.url, uid)
    publisher = await open_nats(transports, config, service="inference")
    assert [s.name for s in publisher.streams] == [f"FXFLOW_{uid.upper()}_SIG", f"FXFLOW_{uid.upper()}_ORDERS"]

    first, live = Inbox(), Inbox()
    risk = NatsPubSub(config, service="risk")
    await risk.connect()
    await risk.subscribe(f"{uid}.sig.raw.*", first)
    plain = await open_nats(transports, NatsConfig(servers=[nats_server.url]), service="dashboard")
    await plain.subscribe(f"{uid}.sig.>", live)
    # In about one CI run in ten the core subscriber missed the first signal although subscribe()
    # had flushed; until that is understood, the test waits until the subscription is seen live.
    while not any(s.endswith(".probe") for s in live.subjects):
        await publisher.publish(f"{uid}.sig.probe", {"probe": True})
        await asyncio.sleep(0.01)
    live.received.clear()
    for i in range(3):
        await publisher.publish(f"{uid}.sig.raw.EURUSD", {"signal_id": f"s{i}", "ts": i})
    await eventually(first.has(3), "the first signals")
    await risk.close()

    for i in range(3, 8):
        await publisher.publish(f"{uid}.sig.raw.EURUSD", {"signal_id": f"s{i}", "ts": i}, headers={"trace-id": f"tr{i}"})
    try:
        signals = lambda: [p["signal_id"] for p in live.payloads if "signal_id" in p]  # noqa: E731
        await eventually(lambda: len(signals()) >= 8, "live delivery of durable subjects to a core subscriber")
        assert sorted(signals()) == [f"s{i}" for i in range(8)]
    except AssertionError as exc:
        got = [p.get("signal_id") for p in live.payloads]
        raise AssertionError(f"{exc}; the core subscriber got {got}, publisher stats {publisher.stats()}") from None

    again = Inbox()
    risk2 = await open_nats(transports, config, service="risk")
    await risk2.subscribe(f"{uid}.sig.raw.*", again)
    await eventually(again.has(5), "the signals published while risk was down")
    await asyncio.sleep(0.3)
    assert [p["signal_id"] for p in again.payloads] == [f"s{i}" for i in range(3, 8)]
    assert [dict(h or {}) for _, _, h in again.received] == [{"trace-id": f"tr{i}"} for i in range(3, 8)]

    newcomer = Inbox()
    await (await open_nats(transports, config, service="newcomer")).subscribe(f"{uid}.sig.raw.*", newcomer)
    await publisher.publish(f"{uid}.sig.raw.EURUSD", {"signal_id": "s8", "ts": 8})
    await eventually(newcomer.has(1), "a new consumer's first message")
    assert newcomer.payloads == [{"signal_id": "s8", "ts": 8}]


async def test_durable_consumer_is_named_by_its_owner_not_by_the_process(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    config = durable_config(nats_server.url, uid)
    publisher = await open_nats(transports, config, service="inference")
    combined = NatsPubSub(config, service="risk+dashboard")  # risk ran in a process with another service
    await combined.connect()
    first = Inbox()
    await combined.subscribe(f"{uid}.sig.raw.*", first, owner="risk")
    await publisher.publish(f"{uid}.sig.raw.EURUSD", {"signal_id": "s0", "ts": 0})
    await eventually(first.has(1), "the first signal")
    await combined.close()
    await publisher.publish(f"{uid}.sig.raw.EURUSD", {"signal_id": "s1", "ts": 1})

    alone, again = await open_nats(transports, config, service="risk"), Inbox()  # now risk runs on its own
    await alone.subscribe(f"{uid}.sig.raw.*", again)
    await eventually(again.has(1), "the signal published while risk was regrouped")
    assert again.payloads == [{"signal_id": "s1", "ts": 1}]


async def test_duplicate_msg_id_is_stored_once(nats_server: NatsServer, transports: list[NatsPubSub], uid: str) -> None:
    config = durable_config(nats_server.url, uid)
    publisher = await open_nats(transports, config, service="execution")
    inbox = Inbox()
    await (await open_nats(transports, config, service="audit")).subscribe(f"{uid}.orders.>", inbox)
    order = {"order_id": "o1", "status": "submitted", "ts": 100}
    await publisher.publish(f"{uid}.orders.submitted.EURUSD", order)
    await publisher.publish(f"{uid}.orders.submitted.EURUSD", order)
    await publisher.publish(f"{uid}.orders.filled.EURUSD", {**order, "status": "filled"})
    await publisher.publish(f"{uid}.orders.x", {"n": 1}, headers={"Nats-Msg-Id": "explicit-1"})
    await publisher.publish(f"{uid}.orders.x", {"n": 2}, headers={"Nats-Msg-Id": "explicit-1"})
    await publisher.publish(f"{uid}.orders.end", {"end": True})
    await eventually(lambda: {"end": True} in inbox.payloads, "the end marker")
    assert [s for s, _, _ in inbox.received] == [
        f"{uid}.orders.submitted.EURUSD",
        f"{uid}.orders.filled.EURUSD",
        f"{uid}.orders.x",
        f"{uid}.orders.end",
    ]
    assert inbox.payloads[2] == {"n": 1}
    assert publisher.duplicates == 2


async def test_durable_delivery_is_acked_after_the_handler(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    config = durable_config(nats_server.url, uid)
    publisher = await open_nats(transports, config, service="p")
    calls: list[int] = []

    async def flaky(subject: str, payload: Message, headers: Headers | None) -> None:
        calls.append(payload["i"])
        if len(calls) == 1:
            raise RuntimeError("transient")

    await (await open_nats(transports, config, service="c")).subscribe(f"{uid}.sig.x", flaky)
    await publisher.publish(f"{uid}.sig.x", {"i": 1})
    await eventually(lambda: len(calls) >= 2, "the redelivery after the failed handler")
    assert calls[:2] == [1, 1]


async def test_durable_queue_group_shares_one_consumer(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    config = durable_config(nats_server.url, uid)
    publisher = await open_nats(transports, config, service="p")
    replicas = [Inbox(), Inbox()]
    for inbox in replicas:
        await (await open_nats(transports, config, service="risk")).subscribe(f"{uid}.sig.>", inbox, queue="risk")
    for i in range(40):
        await publisher.publish(f"{uid}.sig.raw.EURUSD", {"i": i})
    await eventually(lambda: sum(len(r.received) for r in replicas) >= 40, "every message in the group")
    await asyncio.sleep(0.3)
    assert sorted(p["i"] for r in replicas for p in r.payloads) == list(range(40))
    assert all(r.received for r in replicas)


async def test_second_unqueued_instance_of_a_durable_service_is_refused(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    config = durable_config(nats_server.url, uid)
    await (await open_nats(transports, config, service="risk")).subscribe(f"{uid}.sig.>", Inbox())
    second = await open_nats(transports, config, service="risk")
    with pytest.raises(Exception, match="already bound"):
        await second.subscribe(f"{uid}.sig.>", Inbox())


async def test_durable_publish_waits_out_a_restart(
    nats_server_fn: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    """A durable publish during an outage completes once the server is back; nothing is lost."""
    config = NatsConfig(servers=[nats_server_fn.url], durable=[f"{uid}.sig.>"])
    publisher = await open_nats(transports, config, service="p")
    consumer = await open_nats(transports, config, service="c")
    inbox = Inbox()
    await consumer.subscribe(f"{uid}.sig.>", inbox)
    await publisher.publish(f"{uid}.sig.a", {"i": 0})
    await eventually(inbox.has(1), "the first message")

    await asyncio.to_thread(nats_server_fn.kill)
    await eventually(lambda: publisher.disconnects == 1 and consumer.disconnects == 1, "both disconnects")
    pending = asyncio.create_task(publisher.publish(f"{uid}.sig.a", {"i": 1}))
    await asyncio.sleep(0.5)
    assert not pending.done(), "a durable publish waits for its PubAck"
    await asyncio.to_thread(nats_server_fn.start)
    await asyncio.wait_for(pending, TIMEOUT)
    await publisher.publish(f"{uid}.sig.a", {"i": 2})
    await eventually(inbox.has(3), "the messages published during and after the outage")
    await asyncio.sleep(0.3)
    assert [p["i"] for p in inbox.payloads] == [0, 1, 2]
    assert publisher.publish_errors == 0


async def test_jetstream_state_lost_by_the_server_is_recreated(
    nats_server_fn: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    config = NatsConfig(servers=[nats_server_fn.url], durable=[f"{uid}.sig.>"])
    publisher = await open_nats(transports, config, service="p")
    consumer = await open_nats(transports, config, service="c")
    inbox = Inbox()
    await consumer.subscribe(f"{uid}.sig.>", inbox)
    await asyncio.to_thread(nats_server_fn.kill)
    shutil.rmtree(nats_server_fn.data_dir / "jetstream")
    await asyncio.to_thread(nats_server_fn.start)
    await eventually(lambda: publisher.reconnects == 1 and consumer.reconnects == 1, "both reconnects")

    async def delivered() -> bool:
        await publisher.publish(f"{uid}.sig.a", {"after": True})
        await asyncio.sleep(0.2)
        return bool(inbox.received)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while not await delivered():
        assert loop.time() < deadline, "the stream and consumer were not recreated"
    assert inbox.payloads[0] == {"after": True}


class PlainNatsServer(NatsServer):
    """nats-server without JetStream."""

    def command(self) -> list[str]:
        cmd = super().command()
        at = cmd.index("-js")
        return cmd[:at] + cmd[at + 3 :]


async def test_missing_jetstream_or_overlapping_patterns_are_user_errors(
    nats_server: NatsServer, tmp_path: Path, uid: str
) -> None:
    with PlainNatsServer(tmp_path / "plain") as plain:
        bus = NatsPubSub(NatsConfig(servers=[plain.url], durable=[f"{uid}.sig.>"]), service="risk")
        with pytest.raises(UserError, match=r"has no JetStream.*-js") as caught:
            await bus.connect()
        assert "\n" not in str(caught.value) and not bus.connected
        core_only = NatsPubSub(NatsConfig(servers=[plain.url]))
        await core_only.connect()
        await core_only.close()

    with pytest.raises(UserError, match="overlap but neither contains the other"):
        NatsPubSub(NatsConfig(servers=[nats_server.url], durable=[f"{uid}.*.c", f"{uid}.b.>"]))
    outer = NatsPubSub(NatsConfig(servers=[nats_server.url], durable=[f"{uid}.a.>"]), stream_prefix="FXA")
    await outer.connect()
    try:
        clash = NatsPubSub(NatsConfig(servers=[nats_server.url], durable=[f"{uid}.a.b"]), stream_prefix="FXB")
        with pytest.raises(UserError, match="overlaps a stream already on the server"):
            await clash.connect()
        assert not clash.connected
    finally:
        await outer.close()


# --- undecodable payloads -------------------------------------------------------------------


async def test_undecodable_payloads_go_to_the_callback(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str
) -> None:
    bad: list[tuple[str, bytes, str]] = []
    config = NatsConfig(servers=[nats_server.url], durable=[f"{uid}.d.>"])
    bus = await open_nats(transports, config, service="dlq", on_undecodable=lambda s, raw, why: bad.append((s, raw, why)))
    core, durable = Inbox(), Inbox()
    await bus.subscribe(f"{uid}.c.>", core)
    await bus.subscribe(f"{uid}.d.>", durable)

    raw = await nats.connect(nats_server.url)
    try:
        await raw.publish(f"{uid}.c.x", b"{not json")
        await raw.publish(f"{uid}.c.y", b"[1, 2]")
        await raw.jetstream().publish(f"{uid}.d.z", b"\xff\xfe")
        await raw.flush()
    finally:
        await raw.close()
    await bus.publish(f"{uid}.c.ok", {"fine": True})
    await bus.publish(f"{uid}.d.ok", {"fine": True})
    await eventually(lambda: len(bad) >= 3 and core.has(1)() and durable.has(1)(), "bad and good messages")
    by_subject = {s: (payload, why) for s, payload, why in bad}
    assert by_subject[f"{uid}.c.x"][0] == b"{not json" and "not valid JSON" in by_subject[f"{uid}.c.x"][1]
    assert "JSON list, not an object" in by_subject[f"{uid}.c.y"][1]
    assert by_subject[f"{uid}.d.z"][0] == b"\xff\xfe"
    assert core.payloads == [{"fine": True}] and durable.payloads == [{"fine": True}]
    assert bus.undecodable == 3
    await asyncio.sleep(1.5)
    assert len(bad) == 3, "a terminated durable message must not be redelivered"


async def test_default_undecodable_handler_logs(
    nats_server: NatsServer, transports: list[NatsPubSub], uid: str, caplog: pytest.LogCaptureFixture
) -> None:
    bus = await open_nats(transports, NatsConfig(servers=[nats_server.url]))
    inbox = Inbox()
    await bus.subscribe(f"{uid}.>", inbox)
    raw = await nats.connect(nats_server.url)
    try:
        await raw.publish(f"{uid}.bad", b"nope")
    finally:
        await raw.close()
    await bus.publish(f"{uid}.good", {})
    await eventually(inbox.has(1), "the good message")
    await eventually(lambda: "undecodable message on" in caplog.text, "the error line")


# --- pure helpers ---------------------------------------------------------------------------


def test_stream_plan() -> None:
    assert stream_name("signals.>") == "FXFLOW_SIGNALS"
    assert stream_name("a.*.b-c") == "FXFLOW_A_STAR_B-C"
    assert stream_name(">") == "FXFLOW_ALL"
    assert plan_streams(["signals.>", "signals.raw.*", "orders.>", "signals.>"]) == [
        DurableStream("FXFLOW_SIGNALS", "signals.>"),
        DurableStream("FXFLOW_ORDERS", "orders.>"),
    ]
    with pytest.raises(UserError, match="both map to stream FXFLOW_A"):
        plan_streams(["a", "a.>"])
    with pytest.raises(UserError, match="nats.durable"):
        plan_streams(["a..b"])


def test_message_id_and_redaction() -> None:
    assert message_id("orders.filled.EURUSD", {"order_id": "o1", "ts": 5}) == "orders.filled.EURUSD|order_id=o1|ts=5"
    assert message_id("signals.approved.X", {"signal_id": "s", "decision_id": "d"}) == "signals.approved.X|decision_id=d"
    assert message_id("ticks.X", {"bid": 1.0}) is None
    assert len(message_id("a", {"id": "x" * 500}) or "") == 32
    assert redact_url("nats://user:secret@h:4222") == "nats://h:4222"
    assert redact_url("tls://tok@h") == "tls://h"
    assert redact_url("h:4222") == "nats://h:4222"


async def test_a_subscription_whose_flush_meets_a_dropped_connection_returns_at_once(
    nats_server_fn: Any, transports: list[NatsPubSub]
) -> None:
    """subscribe() flushes so the server has the SUB before it returns; when the connection drops during that flush
    (a TCP proxy cuts it at the PING that follows the SUB), it returns instead of waiting for a PONG that never comes
    (the client sends its subscriptions again on reconnect). Before: a service's start stalled the whole flush timeout."""
    upstream = nats_server_fn.url.removeprefix("nats://")
    host, port = upstream.rsplit(":", 1)
    cut = asyncio.Event()
    arm = asyncio.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, watch: bool) -> None:
        try:
            while data := await reader.read(65536):
                if watch and arm.is_set() and b"SUB " in data or watch and cut.is_set():
                    cut.set()
                if cut.is_set():
                    writer.close()
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    proxy = await asyncio.start_server(client, "127.0.0.1", 0)
    proxy_port = proxy.sockets[0].getsockname()[1]
    try:
        bus = await open_nats(transports, NatsConfig(servers=[f"nats://127.0.0.1:{proxy_port}"]), name="t", service="t")
        arm.set()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await bus.subscribe("flush.cut.>", lambda *_: None)
        waited = loop.time() - began
        assert cut.is_set()
        assert waited < 5.0, f"subscribe waited {waited:.1f}s for a flush on a dropped connection"
    finally:
        proxy.close()


async def test_a_subscribe_cancelled_during_its_flush_leaves_the_connection_reading(nats_server: Any) -> None:
    """A subscribe() cancelled while its flush waits for the PONG: the flush goes on (a cancelled future left in
    nats-py's PONG queue made the PONG raise in its read loop, and the connection stopped delivering)."""
    uid = f"t{uuid.uuid4().hex[:12]}"
    sub_side = NatsPubSub(NatsConfig(servers=[nats_server.url]), name="rev-sub", service="rev-sub")
    pub_side = NatsPubSub(NatsConfig(servers=[nats_server.url]), name="rev-pub", service="rev-pub")
    await sub_side.connect()
    await pub_side.connect()
    got: list[Any] = []

    async def handler(*args: Any) -> None:
        got.append(args)

    try:
        await sub_side.subscribe(f"{uid}.live", handler)
        nc = sub_side._nc
        assert nc is not None
        task = asyncio.ensure_future(sub_side.subscribe(f"{uid}.other", handler))
        for _ in range(10_000):  # until its flush's PING is out and its PONG future waits in nats-py
            await asyncio.sleep(0)
            if nc._pongs:
                break
        assert nc._pongs, "the flush never started"
        task.cancel()  # e.g. the service's start is cancelled (a stop during start)
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.5)  # the PONG arrives
        await pub_side.publish(f"{uid}.live", {"n": 1})
        for _ in range(50):
            if got:
                break
            await asyncio.sleep(0.1)
        assert nc._reading_task is not None and not nc._reading_task.done(), "nats-py's read loop died"
        assert got, "the connection stopped delivering after a cancelled subscribe"
    finally:
        await pub_side.close()
        await sub_side.close()
