"""When a notification goes out: quiet hours, rate limits, the dedup window and the digest of what was held back.

Pure logic on event time (Unix ms read from ``ctx.clock`` by the caller), one :class:`ChannelPolicy`
per channel, so the demo and a backtest decide exactly alike on every run. The policy holds no I/O
and no task: the node asks it what to do with each notification and, on its timer, which digest
is due.

- **dedup**: the same event key (type, source, symbol or run, severity) within ``dedup_window`` of
  the last one this channel accepted is a ``duplicate`` and goes nowhere.
- **quiet hours** (``22:00-07:00 Europe/London``, across midnight, in the zone's local time with its
  daylight-saving rules): notifications below ``quiet_bypass`` severity are held for the digest.
- **rate limit per type** (``5/1h``): fixed windows opened by the first notification of a type; past
  the count the rest of the window is held for the digest.
- **digest**: what was held is summed up by type and severity and released as one message once
  the channel is out of its quiet hours and the window that held each part has ended.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from framework.durations import parse_ms

SEVERITIES = ("info", "warning", "critical")
RANK = {name: i for i, name in enumerate(SEVERITIES)}

_QUIET = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})(?:\s+(\S+))?\s*$")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\S+)\s*$")


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; ValueError naming it when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name such as UTC, Europe/London, America/New_York)") from None


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily span of local time, ``start`` included, ``end`` excluded (minutes of the day); may cross midnight."""

    start: int
    end: int
    zone: str
    text: str

    @classmethod
    def parse(cls, text: str, default_zone: str = "UTC") -> QuietHours:
        match = _QUIET.match(text)
        if not match:
            raise ValueError(f"quiet hours {text!r}: expected HH:MM-HH:MM with an optional time zone, e.g. '22:00-07:00 Europe/London'")
        h1, m1, h2, m2, name = match.groups()
        bounds = []
        for h, m in ((h1, m1), (h2, m2)):
            hour, minute = int(h), int(m)
            if hour > 24 or minute > 59 or (hour == 24 and minute):
                raise ValueError(f"quiet hours {text!r}: {h}:{m} is not a time of day")
            bounds.append(hour * 60 + minute)
        start, end = bounds[0], bounds[1] % 1440
        if start % 1440 == end:
            raise ValueError(f"quiet hours {text!r}: start and end are the same time (a span of nothing or of the whole day)")
        name = name or default_zone
        try:
            zone(name)
        except ValueError as exc:
            raise ValueError(f"quiet hours {text!r}: {exc}") from None
        return cls(start % 1440, end, name, f"{h1}:{m1}-{h2}:{m2} {name}")

    def active(self, ts_ms: int) -> bool:
        local = datetime.fromtimestamp(ts_ms / 1000.0, timezone.utc).astimezone(zone(self.zone))
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end


@dataclass(frozen=True, slots=True)
class RateLimit:
    count: int
    window_ms: int
    text: str

    @classmethod
    def parse(cls, text: str) -> RateLimit:
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"rate limit {text!r}: expected COUNT/DURATION, e.g. '5/1h'")
        count = int(match.group(1))
        try:
            window = parse_ms(match.group(2))
        except ValueError as exc:
            raise ValueError(f"rate limit {text!r}: {exc}") from None
        if count < 1 or window is None or window <= 0:
            raise ValueError(f"rate limit {text!r}: needs a count of at least 1 per positive duration")
        return cls(count, window, f"{count}/{match.group(2)}")


@dataclass(slots=True)
class Held:
    """Notifications of one type and severity held back for one reason: a part of the next digest."""

    type: str
    severity: str
    reason: str
    count: int
    first_ts: int
    last_ts: int
    last_text: str
    until: int | None = None
    """When the rate-limit window that held them ends (None: held by quiet hours)."""
    symbols: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Decision:
    status: str
    """``send``, ``duplicate`` or ``suppressed``."""
    reason: str | None = None


SEND = Decision("send")


class ChannelPolicy:
    """What one channel does with each notification, and when its digest is due."""

    def __init__(
        self,
        *,
        quiet: QuietHours | None,
        quiet_bypass: str | None,
        limits: dict[str, RateLimit],
        dedup_ms: int,
    ) -> None:
        self.quiet = quiet
        self.bypass_rank = RANK[quiet_bypass] if quiet_bypass else None
        self.limits = limits
        self.dedup_ms = dedup_ms
        self.seen: dict[str, int] = {}
        self.windows: dict[str, list[int]] = {}
        self.held: dict[str, Held] = {}

    def limit(self, type_: str) -> RateLimit | None:
        return self.limits.get(type_, self.limits.get("default"))

    def decide(self, *, key: str, type_: str, severity: str, text: str, symbol: str | None, now: int) -> Decision:
        last = self.seen.get(key)
        if self.dedup_ms and last is not None and now - last < self.dedup_ms:
            return Decision("duplicate", f"repeat within the dedup window ({(now - last) // 1000}s after the last)")
        self.seen[key] = now
        if self.quiet is not None and self.quiet.active(now) and (self.bypass_rank is None or RANK[severity] < self.bypass_rank):
            self._hold("quiet_hours", None, type_, severity, text, symbol, now)
            return Decision("suppressed", f"quiet hours {self.quiet.text}")
        limit = self.limit(type_)
        if limit is not None:
            window = self.windows.get(type_)
            if window is None or now >= window[0] + limit.window_ms:
                window = self.windows[type_] = [now, 0]
            if window[1] >= limit.count:
                self._hold("rate_limit", window[0] + limit.window_ms, type_, severity, text, symbol, now)
                return Decision("suppressed", f"rate limit {limit.text} for {type_}")
            window[1] += 1
        return SEND

    def _hold(self, reason: str, until: int | None, type_: str, severity: str, text: str, symbol: str | None, now: int) -> None:
        bucket_key = f"{reason}|{type_}|{severity}"
        held = self.held.get(bucket_key)
        if held is None:
            held = self.held[bucket_key] = Held(type_, severity, reason, 0, now, now, text, until)
        held.count += 1
        held.last_ts = now
        held.last_text = text
        if until is not None:
            held.until = max(held.until or until, until)
        if symbol:
            held.symbols[symbol] = held.symbols.get(symbol, 0) + 1

    def release(self, now: int) -> list[Held]:
        """The held parts whose time came (out of quiet hours, their window over), taken out; [] when none.

        Also forgets dedup keys and rate windows too old to matter, so the state stays small."""
        if self.dedup_ms:
            self.seen = {k: ts for k, ts in self.seen.items() if now - ts < self.dedup_ms}
        else:
            self.seen.clear()
        for type_, (start, _) in list(self.windows.items()):
            limit = self.limit(type_)
            if limit is None or now >= start + limit.window_ms:
                del self.windows[type_]
        if not self.held or (self.quiet is not None and self.quiet.active(now)):
            return []
        due = [k for k, h in self.held.items() if h.until is None or now >= h.until]
        return [self.held.pop(k) for k in due]

    def snapshot(self) -> dict[str, Any]:
        return {"seen": self.seen, "windows": self.windows, "held": [asdict(h) for h in self.held.values()]}

    def restore(self, state: dict[str, Any]) -> None:
        self.seen = {str(k): int(v) for k, v in state.get("seen", {}).items()}
        self.windows = {str(k): [int(v[0]), int(v[1])] for k, v in state.get("windows", {}).items()}
        self.held = {}
        for raw in state.get("held", []):
            held = Held(**raw)
            self.held[f"{held.reason}|{held.type}|{held.severity}"] = held


def digest_text(channel: str, parts: list[Held], zone_name: str) -> tuple[str, str]:
    """The digest's severity (the highest held) and its text: one line per type and severity, most severe first."""
    tz = zone(zone_name)

    def when(ts: int) -> str:
        return datetime.fromtimestamp(ts / 1000.0, timezone.utc).astimezone(tz).strftime("%Y-%m-%d %H:%M")

    total = sum(p.count for p in parts)
    first = min(p.first_ts for p in parts)
    last = max(p.last_ts for p in parts)
    reasons = sorted({p.reason.replace("_", " ") for p in parts})
    severity = max((p.severity for p in parts), key=RANK.__getitem__)
    merged: dict[tuple[str, str], Held] = {}  # one line per type and severity, whatever held them
    for part in sorted(parts, key=lambda p: p.last_ts):
        into = merged.get((part.type, part.severity))
        if into is None:
            merged[(part.type, part.severity)] = Held(part.type, part.severity, part.reason, part.count, part.first_ts, part.last_ts,
                                                      part.last_text, part.until, dict(part.symbols))  # fmt: skip
            continue
        into.count += part.count
        into.first_ts, into.last_ts, into.last_text = min(into.first_ts, part.first_ts), part.last_ts, part.last_text
        for symbol, n in part.symbols.items():
            into.symbols[symbol] = into.symbols.get(symbol, 0) + n
    lines = [f"Digest for {channel}: {total} notification(s) held back ({', '.join(reasons)}) between {when(first)} and {when(last)} {zone_name}"]
    for p in sorted(merged.values(), key=lambda p: (-RANK[p.severity], -p.count, p.type)):
        symbols = ", ".join(f"{s} x{n}" for s, n in sorted(p.symbols.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"- {p.count}x {p.type} ({p.severity}{'; ' + symbols if symbols else ''}); latest: {p.last_text}")
    return severity, "\n".join(lines)
