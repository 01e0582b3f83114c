"""What a broker said and was told, kept for ``broker_communication_log`` with secrets masked.

A broker appends entries as it talks (from a worker thread too); the connector drains them after
each call and publishes them. Masking happens here, on the way in, so no other code ever holds an
unmasked payload: a key that names a secret (``password``, ``token``…) is replaced, and so is any
occurrence of a registered secret value inside any string (an error text that echoes a request).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from decimal import Decimal
from typing import Any

MASK = "***"
SECRET_KEY = re.compile(r"pass(word|wd)?|secret|token|api[_-]?key|credential", re.IGNORECASE)


@lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    """Whether a payload key names a secret (payloads repeat a few keys: each is matched once)."""
    return SECRET_KEY.search(key) is not None


@dataclass(frozen=True, slots=True)
class Entry:
    direction: str
    """request, response or event (broker_log.v1)."""
    operation: str
    payload: dict[str, Any]
    order_id: str | None = None


class Journal:
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._entries: list[Entry] = []
        self._lock = threading.Lock()

    def add_secret(self, value: str | None) -> None:
        if value and value not in self._secrets:
            self._secrets = sorted({*self._secrets, value}, key=len, reverse=True)

    def mask(self, value: Any) -> Any:
        """``value`` as JSON-able data with every secret masked."""
        if isinstance(value, dict):
            return {str(k): MASK if _secret_key(str(k)) else self.mask(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.mask(v) for v in value]
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, MASK)
            return value
        if isinstance(value, Decimal):
            return float(value)
        if value is None or isinstance(value, (bool, int, float)):
            return value
        return self.mask(str(value))

    def record(self, direction: str, operation: str, payload: dict[str, Any], order_id: str | None = None) -> None:
        entry = Entry(direction, operation, self.mask(payload), order_id)
        with self._lock:
            self._entries.append(entry)

    def drain(self) -> list[Entry]:
        with self._lock:
            entries, self._entries = self._entries, []
        return entries
