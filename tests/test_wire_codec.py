"""Wire fidelity: the in-process bus can deliver through the NATS codec, failing and copying as NATS does."""

from __future__ import annotations

import datetime
import math
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from framework.testing import load
from framework.topology.model import NatsConfig, RuntimeConfig
from framework.transport.base import PubSubTransport
from framework.transport.codec import DecodeError, EncodeError, decode, encode
from framework.transport.factory import make_pubsub
from framework.transport.inprocess import InProcessPubSub
from transport_helpers import Inbox, eventually

NOT_JSON = {
    "numpy float32": (np.float32(1.1), "numpy.float32"),
    "datetime": (datetime.datetime(2026, 11, 2, tzinfo=datetime.timezone.utc), "datetime.datetime"),
    "set": ({"a"}, "set"),
}


@pytest.fixture(params=["inprocess", "nats"])
async def wire_bus(request: pytest.FixtureRequest) -> AsyncIterator[PubSubTransport]:
    """The in-process bus with the codec on, and a real NATS connection: they must agree."""
    bus: PubSubTransport
    if request.param == "nats":
        from framework.transport.nats import NatsPubSub

        bus = NatsPubSub(NatsConfig(servers=[request.getfixturevalue("nats_server").url]), name="fxflow-test-wire")
    else:
        bus = InProcessPubSub(wire=True)
    await bus.connect()
    yield bus
    await bus.close()


def subject() -> str:
    return f"t{uuid.uuid4().hex[:12]}.ticks.EURUSD"


@pytest.mark.parametrize("value, type_name", NOT_JSON.values(), ids=NOT_JSON.keys())
async def test_a_value_the_wire_cannot_carry_fails_at_publish_naming_subject_and_field(
    wire_bus: PubSubTransport, value: Any, type_name: str
) -> None:
    inbox = Inbox()
    where = subject()
    await wire_bus.subscribe(where, inbox)
    with pytest.raises(EncodeError) as raised:
        await wire_bus.publish(where, {"symbol": "EURUSD", "quote": {"bid": value}})
    assert str(raised.value) == f"message on {where!r} is not JSON at quote.bid: Type is not JSON serializable: {type_name}"
    assert isinstance(raised.value, TypeError)  # what orjson raised before: callers catching TypeError still do
    await wire_bus.publish(where, {"symbol": "EURUSD", "n": 1})
    await eventually(inbox.has(1), "the next message")
    assert inbox.payloads == [{"symbol": "EURUSD", "n": 1}]  # nothing of the refused one arrived


@pytest.mark.parametrize("value, type_name", NOT_JSON.values(), ids=NOT_JSON.keys())
async def test_without_the_codec_the_same_value_passes_in_process(value: Any, type_name: str) -> None:
    bus = InProcessPubSub(wire=False)
    await bus.connect()
    inbox = Inbox()
    await bus.subscribe("ticks.>", inbox)
    await bus.publish("ticks.EURUSD", {"quote": {"bid": value}})
    assert inbox.payloads[0]["quote"]["bid"] is value
    await bus.close()


async def test_a_value_is_refused_even_with_no_subscriber() -> None:
    bus = InProcessPubSub(wire=True)
    await bus.connect()
    with pytest.raises(EncodeError):
        await bus.publish("nobody.listens", {"bid": np.float64(1.0)})


@pytest.mark.parametrize("wire", [True, False])
async def test_a_subscriber_mutating_its_payload_does_not_affect_another_with_the_codec(wire: bool) -> None:
    bus = InProcessPubSub(wire=wire)
    await bus.connect()
    seen: list[tuple[dict[str, Any], dict[str, str] | None]] = []

    async def vandal(subject: str, payload: dict[str, Any], headers: Any) -> None:
        payload["bid"] = 0.0
        payload["levels"].append(99)
        headers["producer"] = "vandal"

    async def reader(subject: str, payload: dict[str, Any], headers: Any) -> None:
        seen.append((payload, headers))

    await bus.subscribe("ticks.*", vandal)
    await bus.subscribe("ticks.EURUSD", reader)
    published = {"bid": 1.1, "levels": [1, 2]}
    await bus.publish("ticks.EURUSD", published, {"producer": "feed"})
    untouched = (({"bid": 1.1, "levels": [1, 2]}, {"producer": "feed"}))
    assert (seen[0] == untouched) is wire
    assert (published == {"bid": 1.1, "levels": [1, 2]}) is wire  # nor the publisher's own object


async def test_subscribers_get_what_nats_would_deliver(wire_bus: PubSubTransport) -> None:
    inbox = Inbox()
    where = subject()
    await wire_bus.subscribe(where, inbox)
    await wire_bus.publish(where, {"pair": ("EUR", "USD"), "spread": math.nan, "n": 2**53 + 1})
    await wire_bus.publish(where, {"n": 1}, {})
    await eventually(inbox.has(2), "both messages")
    (_, first, _), (_, second, headers) = inbox.received
    assert first == {"pair": ["EUR", "USD"], "spread": None, "n": 2**53 + 1}
    assert second == {"n": 1} and not headers


def test_decode_names_what_is_wrong() -> None:
    assert decode(encode({"a": [1, "x"]})) == {"a": [1, "x"]}
    with pytest.raises(DecodeError, match="not valid JSON"):
        decode(b"{nope")
    with pytest.raises(DecodeError, match="a JSON list, not an object"):
        decode(b"[1]")
    with pytest.raises(EncodeError, match=r"at \$: key 1 is not a string"):
        encode({1: "x"})  # type: ignore[dict-item]


def test_the_profiles_choose_the_codec_and_it_is_on_when_unset(tmp_path: Path) -> None:
    assert RuntimeConfig().wire_codec is True
    demo = load(tmp_path / "demo").topology
    backtest = load(tmp_path / "bt", profile="backtest").topology
    assert demo.runtime.wire_codec is True and backtest.runtime.wire_codec is False
    assert make_pubsub(demo, service="s").wire is True  # type: ignore[attr-defined]
    assert make_pubsub(backtest, service="s").wire is False  # type: ignore[attr-defined]


async def test_a_dead_letter_of_a_message_the_wire_refused_is_still_published() -> None:
    from framework.deadletter import DeadLetters

    bus = InProcessPubSub(wire=True)
    await bus.connect()
    inbox = Inbox()
    await bus.subscribe("deadletter.>", inbox)
    message = {"ts": datetime.datetime(2026, 11, 2, tzinfo=datetime.timezone.utc), "bid": 1.1}
    with pytest.raises(EncodeError) as raised:
        await bus.publish("ticks.EURUSD", message)
    await DeadLetters(None, publish=bus.publish).put("feed", str(raised.value), message, "publish:ticks", 0)
    [(subject, letter, _)] = inbox.received
    assert subject == "deadletter.feed" and letter["payload"] == repr(message)
