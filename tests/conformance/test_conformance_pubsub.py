"""Pub/sub conformance: NATS semantics every PubSubTransport must show.

Delivery may be asynchronous (real NATS), so tests wait for conditions with a timeout
instead of asserting right after ``publish``. To prove that something was *not*
delivered, a test publishes a final marker that the subscriber does match: delivery is
ordered per publisher and subscription, so once the marker is in, anything sent before
it would be too.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from framework.transport.base import Headers, Message, PubSubTransport
from transport_helpers import Inbox, eventually


async def test_publish_subscribe_round_trip(pubsub: PubSubTransport, uid: str) -> None:
    inbox = Inbox()
    sub = await pubsub.subscribe(f"{uid}.md.EURUSD.tick", inbox)
    payload: dict[str, Any] = {"bid": 1.0842, "ask": 1.0843, "n": 3, "ok": True, "none": None, "xs": [1, "a"]}
    await pubsub.publish(f"{uid}.md.EURUSD.tick", payload)
    await eventually(inbox.has(1), "the message")
    subject, got, headers = inbox.received[0]
    assert subject == f"{uid}.md.EURUSD.tick"
    assert got == payload
    assert not headers
    assert sub.pattern == f"{uid}.md.EURUSD.tick"
    assert sub.queue is None


async def test_wildcards(pubsub: PubSubTransport, uid: str) -> None:
    star, tail = Inbox(), Inbox()
    await pubsub.subscribe(f"{uid}.*.x", star)
    await pubsub.subscribe(f"{uid}.>", tail)
    for subject in (f"{uid}.a.x", f"{uid}.a.b.x", f"{uid}.a.y", uid, f"{uid}x.a.x", f"{uid}.end.x"):
        await pubsub.publish(subject, {"s": subject})
    await eventually(star.got_subject(f"{uid}.end.x"), "the marker on '*'")
    await eventually(tail.got_subject(f"{uid}.end.x"), "the marker on '>'")
    assert star.subjects == [f"{uid}.a.x", f"{uid}.end.x"]
    assert tail.subjects == [f"{uid}.a.x", f"{uid}.a.b.x", f"{uid}.a.y", f"{uid}.end.x"]


async def test_no_delivery_after_unsubscribe(pubsub: PubSubTransport, uid: str) -> None:
    gone, marker = Inbox(), Inbox()
    sub = await pubsub.subscribe(f"{uid}.s", gone)
    await pubsub.subscribe(f"{uid}.s", marker)
    await pubsub.publish(f"{uid}.s", {"n": 1})
    await eventually(gone.has(1), "the first message")
    await sub.unsubscribe()
    await pubsub.publish(f"{uid}.s", {"n": 2})
    await eventually(marker.has(2), "the second message on the remaining subscriber")
    assert gone.payloads == [{"n": 1}]


async def test_queue_group_delivers_each_message_to_one_member(pubsub: PubSubTransport, uid: str) -> None:
    subject, n = f"{uid}.work", 90
    members = [Inbox() for _ in range(3)]
    for member in members:
        await pubsub.subscribe(subject, member, queue="workers")
    plain = Inbox()
    await pubsub.subscribe(subject, plain)
    for i in range(n):
        await pubsub.publish(subject, {"i": i})

    def delivered() -> list[int]:
        return sorted(p["i"] for m in members for p in m.payloads)

    await eventually(plain.has(n), "every message on the plain subscriber")
    await eventually(lambda: len(delivered()) >= n, "every message in the queue group")
    assert delivered() == list(range(n))
    assert all(m.received for m in members), [len(m.received) for m in members]
    assert [p["i"] for p in plain.payloads] == list(range(n))


async def test_queue_group_spans_patterns_by_queue_name(pubsub: PubSubTransport, uid: str) -> None:
    """NATS groups queue subscribers by queue name, whatever pattern each member used."""
    n = 40
    star, tail = Inbox(), Inbox()
    await pubsub.subscribe(f"{uid}.qg.*", star, queue="q")
    await pubsub.subscribe(f"{uid}.qg.>", tail, queue="q")
    marker = Inbox()
    await pubsub.subscribe(f"{uid}.qg.*", marker)
    for i in range(n):
        await pubsub.publish(f"{uid}.qg.x", {"i": i})
    await eventually(marker.has(n), "every message on the plain subscriber")
    await eventually(lambda: len(star.received) + len(tail.received) >= n, "every message in the group")
    await pubsub.publish(f"{uid}.qg.end", {"i": -1})
    await eventually(marker.got_subject(f"{uid}.qg.end"), "the marker")
    await eventually(lambda: len(star.received) + len(tail.received) >= n + 1, "the marker in the group")
    got = sorted(p["i"] for inbox in (star, tail) for p in inbox.payloads)
    assert got == [-1, *range(n)], "each message reaches exactly one member of queue 'q'"


async def test_each_queue_name_gets_every_message(pubsub: PubSubTransport, uid: str) -> None:
    n = 30
    a1, a2, b1 = Inbox(), Inbox(), Inbox()
    await pubsub.subscribe(f"{uid}.jobs", a1, queue="a")
    await pubsub.subscribe(f"{uid}.jobs", a2, queue="a")
    await pubsub.subscribe(f"{uid}.>", b1, queue="b")
    for i in range(n):
        await pubsub.publish(f"{uid}.jobs", {"i": i})
    await eventually(b1.has(n), "every message in queue 'b'")
    await eventually(lambda: len(a1.received) + len(a2.received) >= n, "every message in queue 'a'")
    assert sorted(p["i"] for m in (a1, a2) for p in m.payloads) == list(range(n))
    assert [p["i"] for p in b1.payloads] == list(range(n))


async def test_order_per_subject_from_one_publisher(pubsub: PubSubTransport, uid: str) -> None:
    inbox = Inbox()
    await pubsub.subscribe(f"{uid}.>", inbox)
    for i in range(300):
        await pubsub.publish(f"{uid}.{'a' if i % 2 else 'b'}", {"i": i})
    await eventually(inbox.has(300), "all messages")
    for token in ("a", "b"):
        seq = [p["i"] for s, p, _ in inbox.received if s == f"{uid}.{token}"]
        assert seq == sorted(seq) and len(seq) == 150


async def test_headers_round_trip(pubsub: PubSubTransport, uid: str) -> None:
    inbox = Inbox()
    await pubsub.subscribe(f"{uid}.h", inbox)
    headers = {"trace-id": "4bf92f3577b34da6", "content-type": "application/json", "X-Mixed-Case": "Yes"}
    await pubsub.publish(f"{uid}.h", {"v": 1}, headers=headers)
    await eventually(inbox.has(1), "the message")
    got = inbox.received[0][2]
    assert got is not None and dict(got) == headers


async def test_failing_handler_does_not_affect_publisher_or_others(pubsub: PubSubTransport, uid: str) -> None:
    calls = 0

    async def broken(subject: str, payload: Message, headers: Headers | None) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("handler bug")

    after = Inbox()
    await pubsub.subscribe(f"{uid}.e", broken)
    await pubsub.subscribe(f"{uid}.e", after)
    await pubsub.publish(f"{uid}.e", {"n": 1})
    await pubsub.publish(f"{uid}.e", {"n": 2})
    await eventually(after.has(2), "both messages on the healthy subscriber")
    await eventually(lambda: calls == 2, "the failing handler to keep receiving")


@pytest.mark.parametrize("subject", ["a.*", "a.>", "a..b", "", "a b"])
async def test_publish_rejects_invalid_subjects(pubsub: PubSubTransport, subject: str) -> None:
    with pytest.raises(ValueError):
        await pubsub.publish(subject, {})


@pytest.mark.parametrize("pattern", ["a..b", "a.>.b", "a*", ""])
async def test_subscribe_rejects_invalid_patterns(pubsub: PubSubTransport, pattern: str) -> None:
    with pytest.raises(ValueError):
        await pubsub.subscribe(pattern, Inbox())


async def test_request_gets_the_reply_of_one_responder(pubsub: PubSubTransport, uid: str) -> None:
    from framework.transport.base import NoResponders

    asked: list[Message] = []

    async def double(subject: str, payload: Message, headers: Headers | None) -> Message:
        asked.append(payload)
        return {"x": payload["x"] * 2, "who": "plain"}

    async def unused(subject: str, payload: Message, headers: Headers | None) -> None:
        raise AssertionError("a mailbox responder answers through its request attribute")

    async def through_mailbox(subject: str, payload: Message, headers: Headers | None) -> Message:
        return {"x": payload["x"] + 1, "who": "mailbox", "cause": (headers or {}).get("fxflow-id")}

    unused.request = through_mailbox  # type: ignore[attr-defined]
    await pubsub.subscribe(f"{uid}.ask", double)
    await pubsub.subscribe(f"{uid}.ask2", unused)
    assert await pubsub.request(f"{uid}.ask", {"x": 21}, timeout=5) == {"x": 42, "who": "plain"}
    assert asked == [{"x": 21}]
    reply = await pubsub.request(f"{uid}.ask2", {"x": 1}, {"fxflow-id": "a-1"}, timeout=5)
    assert reply == {"x": 2, "who": "mailbox", "cause": "a-1"}
    with pytest.raises(NoResponders):
        await pubsub.request(f"{uid}.nobody", {"x": 1}, timeout=5)


async def test_a_subscriber_that_does_not_answer_does_not_take_the_request(pubsub: PubSubTransport, uid: str) -> None:
    """An observer of the request's subject (a dashboard on ``broker.>``) sees it; the responder answers it."""
    seen: list[Message] = []

    async def observer(subject: str, payload: Message, headers: Headers | None) -> None:
        seen.append(payload)

    async def responder(subject: str, payload: Message, headers: Headers | None) -> Message:
        return {"state": "ok", "x": payload["x"]}

    await pubsub.subscribe(f"{uid}.>", observer)
    await pubsub.subscribe(f"{uid}.query", responder)
    for x in range(3):
        assert await pubsub.request(f"{uid}.query", {"x": x}, timeout=5) == {"state": "ok", "x": x}
    for _ in range(100):
        if len(seen) == 3:
            break
        await asyncio.sleep(0.01)
    assert seen == [{"x": 0}, {"x": 1}, {"x": 2}]
