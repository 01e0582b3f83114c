"""The MT5 client (nodes.broker.mt5) against the fake MT5 bridge, over mt5linux's RPyC protocol in a real
server process: refusals with their return codes, requotes, deals from polling, a line that drops
mid-order (neither lost nor doubled), the password masked, the Windows module path."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from framework.topology.model import Instrument
from nodes.broker.base import AckStatus, BrokerUnavailable, OrderRequest
from nodes.broker.journal import Journal
from nodes.broker.mt5 import Mt5Broker, Mt5Params
from nodes.broker.terminal import ModuleTerminal, RpycTerminal, load_metatrader5
from tests.fake_mt5.server import FakeMt5

PASSWORD = "s3cr3t-Pa55word"
INSTRUMENTS = {
    "EURUSD": Instrument(pip=0.0001, digits=5),
    "USDJPY": Instrument(pip=0.01, digits=3),
    "XAUUSD": Instrument(kind="metal", pip=0.01, digits=2),
}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeMt5]:
    fake = FakeMt5()
    yield fake
    fake.stop()


@pytest.fixture
def mt5(server: FakeMt5) -> FakeMt5:
    server.fake.reset(password=PASSWORD)
    return server


def client(server: FakeMt5, **params: Any) -> Mt5Broker:
    p = Mt5Params.model_validate({"port": server.port, "login": 5001234, "password_env": None, "timeout": "10s", **params})
    return Mt5Broker(p, lambda: RpycTerminal(p.host, p.port, p.timeout_s), INSTRUMENTS, password=PASSWORD, journal=Journal())


def order(cid: str, quantity: float = 0.1, side: str = "buy", symbol: str = "EURUSD") -> OrderRequest:
    return OrderRequest(cid, f"order-{cid}", symbol, side, Decimal(str(quantity)), int(time.time() * 1000))


async def test_a_market_order_is_sent_with_mt5_request_fields_and_its_deal_polled(mt5: FakeMt5) -> None:
    b = client(mt5, magic=777, deviation=15)
    await b.connect()
    ack = await b.submit(order("o-1", 0.25))
    assert (ack.status, ack.retcode) == (AckStatus.ACCEPTED, 10009) and ack.broker_order_id
    sent = [kwargs or args for name, args, kwargs in mt5.fake.call_log() if name == "order_send"]
    (request,) = [args[0] for args in sent]
    assert {k: request[k] for k in ("action", "symbol", "volume", "type", "price", "deviation", "magic", "comment",
                                   "type_time", "type_filling")} == {  # fmt: skip
        "action": 1, "symbol": "EURUSD", "volume": 0.25, "type": 0, "price": 1.0851, "deviation": 15, "magic": 777,
        "comment": "o-1", "type_time": 0, "type_filling": 1,
    }
    assert mt5.fake.count("order_check") == 1  # checked before it was sent
    first = await b.poll(int(time.time() * 1000) - 1000)
    second = await b.poll(int(time.time() * 1000) - 1000)
    assert [d.ticket for d in first] == [d.ticket for d in second] and len(first) == 1  # polls overlap: dedup is by ticket
    deal = first[0]
    assert (deal.client_order_id, deal.side, deal.lots, deal.price, deal.entry) == ("o-1", "buy", Decimal("0.25"), Decimal("1.08510"), "in")
    assert deal.commission == Decimal("0.88")  # MT5's -0.875 → -0.88 charged, reported positive
    state = await b.state(None, ["o-1"])
    assert [(p.symbol, p.quantity, p.avg_price) for p in state.positions] == [("EURUSD", Decimal("0.25"), Decimal("1.0851"))]
    assert state.account.currency == "USD" and state.account.balance == Decimal("99999.12")
    assert [(o.client_order_id, o.status, o.filled) for o in state.orders] == [("o-1", "filled", Decimal("0.25"))]
    await b.close()


@pytest.mark.parametrize(
    ("setup", "quantity", "retcode"),
    [
        ({"retcode": 10006}, 0.1, 10006),  # reject
        ({"retcode": 10013}, 0.1, 10013),  # invalid
        ({}, 0.001, 10014),  # volume below the minimum (order_check)
        ({}, 0.015, 10014),  # volume off the step
        ({"retcode": 10015}, 0.1, 10015),  # invalid price
        ({"retcode": 10016}, 0.1, 10016),  # invalid stops
        ({"closed": True}, 0.1, 10018),  # market closed (order_check)
        ({}, 100, 10019),  # no money: 100 lots need 108,505 USD of margin at 1:100
        ({"retcode": 10031}, 0.1, 10031),  # the terminal has no connection to the trade server
        ({"requotes": 3}, 0.1, 10004),  # requoted on every try (2 retries)
    ],
)
async def test_refusals_come_back_with_their_return_code(mt5: FakeMt5, setup: dict[str, Any], quantity: float, retcode: int) -> None:
    if "retcode" in setup:
        mt5.fake.plan(("retcode", setup["retcode"]))
    if setup.get("closed"):
        mt5.fake.set_closed("EURUSD")
    mt5.fake.plan(*[("requote",)] * setup.get("requotes", 0))
    b = client(mt5)
    ack = await b.submit(order("o-r", quantity))
    assert (ack.status, ack.retcode) == (AckStatus.REJECTED, retcode), ack.message
    assert await b.poll(int(time.time() * 1000) - 60_000) == []
    assert (await b.state(None)).positions == []
    await b.close()


async def test_a_requote_is_retried_with_a_fresh_price(mt5: FakeMt5) -> None:
    mt5.fake.plan(("requote",))
    b = client(mt5)
    await b.connect()
    mt5.fake.set_tick("EURUSD", 1.08600, 1.08611)
    ack = await b.submit(order("o-q"))
    assert ack.status is AckStatus.ACCEPTED and mt5.fake.count("order_send") == 2
    assert mt5.fake.count("symbol_info_tick") == 2  # the retry asked for the price again
    await b.close()


async def test_a_partial_fill_reports_the_cancelled_rest(mt5: FakeMt5) -> None:
    mt5.fake.plan(("partial", 0.4))
    b = client(mt5)
    ack = await b.submit(order("o-p", 1.0))
    assert (ack.status, ack.retcode) == (AckStatus.ACCEPTED, 10010)
    (notice,) = b.take_notices()
    assert notice.code == "partial_fill" and notice.retcode == 10010 and "0.4 of 1.0" in notice.message
    (deal,) = await b.poll(int(time.time() * 1000) - 1000)
    assert deal.lots == Decimal("0.4")
    await b.close()


async def test_a_line_dropped_after_execution_is_in_doubt_then_found_never_sent_twice(mt5: FakeMt5) -> None:
    mt5.fake.plan(("drop_after",))
    b = client(mt5)
    ack = await b.submit(order("o-d"))
    assert (ack.status, ack.retcode) == (AckStatus.IN_DOUBT, 10012)  # MT5's "outcome unknown": not 10031, it may have been executed
    assert b.in_doubt() == ["o-d"] and not b.connected
    again = await b.submit(order("o-d"))  # execution tries again: the client looks first, finds it, sends nothing
    assert again.status is AckStatus.DUPLICATE and again.broker_order_id
    assert mt5.fake.count("order_send") == 1 and b.in_doubt() == []
    deals = await b.poll(int(time.time() * 1000) - 1000)
    assert [d.client_order_id for d in deals] == ["o-d"]
    assert len(mt5.fake.deals) == 1
    await b.close()


async def test_a_line_dropped_before_execution_is_sent_once_after_looking(mt5: FakeMt5) -> None:
    mt5.fake.plan(("drop_before",))
    b = client(mt5)
    assert (await b.submit(order("o-b"))).status is AckStatus.IN_DOUBT
    assert await b.poll(int(time.time() * 1000) - 1000) == []  # reconnected: nothing arrived
    assert b.in_doubt() == ["o-b"]  # still in doubt: execution decides
    ack = await b.submit(order("o-b"))
    assert ack.status is AckStatus.ACCEPTED and mt5.fake.count("order_send") == 2 and len(mt5.fake.deals) == 1
    assert (await b.submit(order("o-b"))).status is AckStatus.DUPLICATE
    assert mt5.fake.count("order_send") == 2
    await b.close()


async def test_an_error_raised_by_the_terminal_leaves_the_order_in_doubt_not_doubled(mt5: FakeMt5) -> None:
    mt5.fake.plan(("raise_after",))
    b = client(mt5)
    ack = await b.submit(order("o-e"))
    assert (ack.status, ack.retcode) == (AckStatus.IN_DOUBT, 10012) and "internal error" in ack.message
    assert (await b.submit(order("o-e"))).status is AckStatus.DUPLICATE
    assert mt5.fake.count("order_send") == 1 and len(mt5.fake.deals) == 1
    await b.close()


async def test_an_order_while_the_bridge_is_down_is_refused_with_10031_not_sent(mt5: FakeMt5) -> None:
    b = client(mt5, port=1)  # nothing listens there
    ack = await b.submit(order("o-x"))
    assert (ack.status, ack.retcode) == (AckStatus.REJECTED, 10031) and b.in_doubt() == []
    with pytest.raises(BrokerUnavailable):
        await b.poll(0)


async def test_the_password_is_masked_in_every_journal_entry_and_error(mt5: FakeMt5) -> None:
    b = client(mt5)
    await b.connect()
    await b.submit(order("o-m"))
    entries = b.journal.drain()
    init = [e for e in entries if e.operation == "initialize" and e.direction == "request"]
    assert init and init[0].payload["password"] == "***" and init[0].payload["login"] == 5001234
    assert PASSWORD not in repr(entries)
    await b.close()

    mt5.fake.reset(password="another-one")  # the terminal refuses ours: the error must not echo it
    b = client(mt5)
    with pytest.raises(BrokerUnavailable) as refused:
        await b.connect()
    assert "Authorization failed" in str(refused.value) and PASSWORD not in str(refused.value)
    assert PASSWORD not in repr(b.journal.drain())


async def test_server_time_is_converted_to_utc(mt5: FakeMt5) -> None:
    mt5.fake.reset(password=PASSWORD, offset_ms=2 * 3_600_000)  # the trade server runs on UTC+2
    b = client(mt5, server_time_offset=120)
    before = int(time.time() * 1000)
    await b.submit(order("o-t"))
    (deal,) = await b.poll(before - 1000)
    assert before - 1000 <= deal.ts <= int(time.time() * 1000) + 1000
    await b.close()


async def test_a_deal_fee_is_charged_with_the_commission_so_the_balance_is_the_brokers(mt5: FakeMt5) -> None:
    mt5.fake.reset(password=PASSWORD, fee=1.25)
    b = client(mt5)
    await b.connect()
    assert (await b.submit(order("o-1", 0.25))).status is AckStatus.ACCEPTED
    (deal,) = await b.poll(int(time.time() * 1000) - 1000)
    assert deal.commission == Decimal("0.88") + Decimal("1.25")  # MT5's commission -0.88 and fee -1.25, charged
    state = await b.state(None, ["o-1"])
    assert state.account.balance == Decimal("100000") - deal.commission  # what a ledger of the deals books
    await b.close()


async def test_deals_made_outside_fxflow_are_reported_as_such(mt5: FakeMt5) -> None:
    b = client(mt5)
    await b.connect()
    mt5.fake.add_deal("EURUSD", "sell", 0.5, comment="manual")
    mt5.fake.add_deal("EURUSD", "buy", 0.5, comment="so: 30%", reason=6)
    deals = await b.poll(int(time.time() * 1000) - 1000)
    assert [(d.reason, d.client_order_id) for d in deals] == [("other", None), ("stop_out", None)]
    await b.close()


# --------------------------------------------------------------------------- the Windows package


async def test_the_same_client_drives_the_metatrader5_module_in_process() -> None:
    module = importlib.import_module("tests.fake_mt5.terminal")
    module._fake.reset(password=PASSWORD)
    p = Mt5Params.model_validate({"login": 5001234, "password_env": None})
    b = Mt5Broker(p, lambda: ModuleTerminal(module), INSTRUMENTS, password=PASSWORD)
    module._fake.plan(("retcode", 10019))
    refused = await b.submit(order("o-w1"))
    ack = await b.submit(order("o-w2", 0.2, side="sell"))
    assert (refused.retcode, ack.status) == (10019, AckStatus.ACCEPTED)
    (deal,) = await b.poll(int(time.time() * 1000) - 1000)
    assert (deal.side, deal.lots, deal.price) == ("sell", Decimal("0.2"), Decimal("1.08500"))


def test_without_the_windows_package_the_error_is_one_line() -> None:
    try:
        importlib.import_module("MetaTrader5")
    except ImportError:
        pass
    else:
        pytest.skip("the MetaTrader5 package is installed here")
    with pytest.raises(BrokerUnavailable) as missing:
        load_metatrader5()
    assert "\n" not in str(missing.value) and "Windows" in str(missing.value) and "mt5linux" in str(missing.value)
