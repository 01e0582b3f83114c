"""MetaTrader 5 trade server return codes (``TRADE_RETCODE_*``), and the short names fxflow publishes.

Values as the MetaTrader5 package defines them (there is no 10037). The paper broker rejects with
the same codes, so execution handles one vocabulary whichever broker runs.
"""

from __future__ import annotations

REQUOTE = 10004
REJECT = 10006
CANCEL = 10007
PLACED = 10008
DONE = 10009
DONE_PARTIAL = 10010
ERROR = 10011
TIMEOUT = 10012
INVALID = 10013
INVALID_VOLUME = 10014
INVALID_PRICE = 10015
INVALID_STOPS = 10016
TRADE_DISABLED = 10017
MARKET_CLOSED = 10018
NO_MONEY = 10019
PRICE_CHANGED = 10020
PRICE_OFF = 10021
INVALID_FILL = 10030
CONNECTION = 10031
INVALID_ORDER = 10035

NAMES: dict[int, str] = {
    10004: "REQUOTE", 10006: "REJECT", 10007: "CANCEL", 10008: "PLACED", 10009: "DONE", 10010: "DONE_PARTIAL",
    10011: "ERROR", 10012: "TIMEOUT", 10013: "INVALID", 10014: "INVALID_VOLUME", 10015: "INVALID_PRICE",
    10016: "INVALID_STOPS", 10017: "TRADE_DISABLED", 10018: "MARKET_CLOSED", 10019: "NO_MONEY",
    10020: "PRICE_CHANGED", 10021: "PRICE_OFF", 10022: "INVALID_EXPIRATION", 10023: "ORDER_CHANGED",
    10024: "TOO_MANY_REQUESTS", 10025: "NO_CHANGES", 10026: "SERVER_DISABLES_AT", 10027: "CLIENT_DISABLES_AT",
    10028: "LOCKED", 10029: "FROZEN", 10030: "INVALID_FILL", 10031: "CONNECTION", 10032: "ONLY_REAL",
    10033: "LIMIT_ORDERS", 10034: "LIMIT_VOLUME", 10035: "INVALID_ORDER", 10036: "POSITION_CLOSED",
    10038: "INVALID_CLOSE_VOLUME", 10039: "CLOSE_ORDER_EXIST", 10040: "LIMIT_POSITIONS", 10041: "REJECT_CANCEL",
    10042: "LONG_ONLY", 10043: "SHORT_ONLY", 10044: "CLOSE_ONLY", 10045: "FIFO_CLOSE",
}  # fmt: skip

SUCCESS = frozenset({PLACED, DONE, DONE_PARTIAL})
RETRY = frozenset({REQUOTE, PRICE_CHANGED, PRICE_OFF})
"""Worth a fresh price and another try (MT5's advice for these codes)."""


def name(retcode: int) -> str:
    return NAMES.get(retcode, f"RETCODE_{retcode}")


def code(retcode: int) -> str:
    """The ``broker_error.v1`` code: the MT5 name in lower case (``no_money``, ``market_closed``)."""
    return name(retcode).lower()
