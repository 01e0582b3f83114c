"""Dukascopy ``.bi5`` files: LZMA-alone streams of fixed-size big-endian records, decoded with numpy.

Tick file (one UTC hour), 20 bytes per record: int32 milliseconds since the start of the hour,
int32 **ask** points, int32 **bid** points, float32 ask volume, float32 bid volume (ask before
bid). Candle file, 24 bytes per record: int32 seconds since the start of the file's period,
int32 open, **close, low, high** points, float32 volume. ``price = points / decimal_factor``
(see :mod:`.instruments`). A 0-byte body is an hour without ticks.

What is wrong with a file is reported at the level it concerns:

- **The file** (corrupt or truncated LZMA stream, a decompressed size that is not a whole number
  of records): :class:`Bi5Error` is raised with the reason; nothing in it is used.
- **A record** that cannot be a quote (offset outside the hour, a non-positive price, a crossed
  quote ``ask < bid``, a negative or non-finite volume): it is returned in ``Ticks.bad`` with its
  reason and raw values, and **the other records of the file are kept**. One bad record in an
  hour of fifty thousand is a feed glitch, not a reason to lose the hour; the caller sends the
  bad ones to the dead-letter.

Volumes are float32 on the wire; they are returned as float64 holding the float32's shortest
decimal, so ``2.06`` reads back as ``2.06`` and not ``2.0599999427795410``.
"""

from __future__ import annotations

import lzma
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from nodes.dukascopy_historical.hours import HOUR_MS
from nodes.marketdata.quotes import quote_problem

TICK_RECORD = np.dtype([("ms", ">i4"), ("ask", ">i4"), ("bid", ">i4"), ("ask_volume", ">f4"), ("bid_volume", ">f4")])
CANDLE_RECORD = np.dtype(
    [("secs", ">i4"), ("open", ">i4"), ("close", ">i4"), ("low", ">i4"), ("high", ">i4"), ("volume", ">f4")]
)
TICK_DTYPE = np.dtype([("ts", "i8"), ("bid", "f8"), ("ask", "f8"), ("bid_volume", "f8"), ("ask_volume", "f8")])
"""Decoded ticks as one structured array (:meth:`Ticks.to_structured`)."""
CANDLE_DTYPE = np.dtype([("ts", "i8"), ("open", "f8"), ("high", "f8"), ("low", "f8"), ("close", "f8"), ("volume", "f8")])

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


class Bi5Error(ValueError):
    """A ``.bi5`` body that cannot be decoded at all; ``reason`` says why in one line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class BadRecord:
    """One tick record that was left out, with why and its raw wire values."""

    index: int
    reason: str
    ms: int
    ask_points: int
    bid_points: int
    ask_volume: float
    bid_volume: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "reason": self.reason,
            "ms": self.ms,
            "ask_points": self.ask_points,
            "bid_points": self.bid_points,
            "ask_volume": self.ask_volume,
            "bid_volume": self.bid_volume,
        }


@dataclass(slots=True)
class Ticks:
    """Decoded ticks of one file as parallel arrays (epoch ms, prices, volumes), plus the records left out."""

    ts: IntArray
    bid: FloatArray
    ask: FloatArray
    bid_volume: FloatArray
    ask_volume: FloatArray
    bad: list[BadRecord] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def empty(cls) -> Ticks:
        f = np.empty(0, np.float64)
        return cls(np.empty(0, np.int64), f, f.copy(), f.copy(), f.copy())

    def to_structured(self) -> np.ndarray:
        out = np.empty(len(self), TICK_DTYPE)
        for name in TICK_DTYPE.names or ():
            out[name] = getattr(self, name)
        return out


@dataclass(slots=True)
class Candles:
    ts: IntArray
    open: FloatArray
    high: FloatArray
    low: FloatArray
    close: FloatArray
    volume: FloatArray

    def __len__(self) -> int:
        return len(self.ts)

    def to_structured(self) -> np.ndarray:
        out = np.empty(len(self), CANDLE_DTYPE)
        for name in CANDLE_DTYPE.names or ():
            out[name] = getattr(self, name)
        return out


# --------------------------------------------------------------------------- container


def decompress(data: bytes) -> bytes:
    """The records inside a ``.bi5`` body (LZMA-alone; ``.xz`` is accepted too). ``b""`` stays ``b""``."""
    if not data:
        return b""
    try:
        return lzma.decompress(data)
    except lzma.LZMAError as exc:
        text = str(exc)
        if "ended before" in text:
            raise Bi5Error(f"truncated LZMA stream ({len(data)} bytes): {text}") from None
        raise Bi5Error(f"corrupt LZMA stream ({len(data)} bytes): {text}") from None


def compress(raw: bytes) -> bytes:
    """A ``.bi5`` body for ``raw`` records (what the simulator serves). ``b""`` stays ``b""``, as Dukascopy sends."""
    if not raw:
        return b""
    return lzma.compress(raw, format=lzma.FORMAT_ALONE)


def _records(raw: bytes, dtype: np.dtype, kind: str) -> np.ndarray:
    if len(raw) % dtype.itemsize:
        raise Bi5Error(
            f"decompressed size {len(raw)} is not a multiple of {dtype.itemsize} bytes ({kind} records): "
            f"{len(raw) % dtype.itemsize} trailing byte(s); truncated, or not a {kind} file"
        )
    return np.frombuffer(raw, dtype)


def tick_records(raw: bytes) -> np.ndarray:
    """Decompressed tick bytes as a (read-only) structured array of :data:`TICK_RECORD`."""
    return _records(raw, TICK_RECORD, "tick")


def candle_records(raw: bytes) -> np.ndarray:
    return _records(raw, CANDLE_RECORD, "candle")


# --------------------------------------------------------------------------- ticks


_POW10 = np.array([10.0**k for k in range(300)])


def f32_values(values: np.ndarray) -> FloatArray:
    """float32 values as float64 holding their shortest decimal (2.0599999427795 → 2.06), as ``str(np.float32)``.

    Rounding to 7 significant digits recovers any decimal of up to 7 digits that was stored as
    float32 (what Dukascopy's volumes are); the rare value that does not read back as the same
    float32 that way gets 8, then 9 digits. The result is always the same float32; between 1e-12
    and 1e12 (where the powers of ten used are exact) it is exactly ``float(str(np.float32(x)))``.
    """
    f32 = values.astype(np.float32)
    exact = f32.astype(np.float64)
    if not exact.size:  # a file whose every record was set aside
        return exact
    out = _round_significant(exact, 7)
    with np.errstate(invalid="ignore"):
        miss = (out.astype(np.float32) != f32) & ~np.isnan(f32)
    for digits in (8, 9):
        if not miss.any():
            return out
        idx = np.flatnonzero(miss)
        out[idx] = _round_significant(exact[idx], digits)
        miss[idx] = out[idx].astype(np.float32) != f32[idx]
    out[miss] = exact[miss]
    return out


def _round_significant(v: FloatArray, digits: int) -> FloatArray:
    """``v`` rounded to ``digits`` significant digits."""
    magnitude = np.abs(v)
    np.maximum(magnitude, 1e-300, out=magnitude)
    with np.errstate(invalid="ignore"):  # NaN/inf keep their value whatever scale they get
        places = (digits - 1) - np.floor(np.log10(magnitude)).astype(np.int64)
    np.clip(places, -len(_POW10) + 1, len(_POW10) - 1, out=places)
    if places.min() >= 0:
        scale = _POW10[places]
        out = v * scale
        np.round(out, out=out)
        out /= scale
        return out
    scale = _POW10[np.abs(places)]
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(places >= 0, np.round(v * scale) / scale, np.round(v / scale) * scale)


def decode_tick_records(records: np.ndarray, hour_start_ms: int, decimal_factor: int) -> Ticks:
    """Tick records (:data:`TICK_RECORD`) → :class:`Ticks`; bad records are set aside (see module doc)."""
    if hour_start_ms % HOUR_MS:
        raise ValueError(f"hour_start_ms {hour_start_ms} is not the start of a UTC hour")
    if decimal_factor <= 0:
        raise ValueError(f"decimal_factor must be positive, not {decimal_factor}")
    if len(records) == 0:
        return Ticks.empty()
    ms = records["ms"]
    ask_points = records["ask"]
    bid_points = records["bid"]
    ask_volume = records["ask_volume"]
    bid_volume = records["bid_volume"]
    bad_mask = (
        (ms < 0)
        | (ms >= HOUR_MS)
        | (bid_points <= 0)
        | (ask_points < bid_points)
        | ~(ask_volume >= 0)  # NaN fails >= too
        | ~(bid_volume >= 0)
        | ~np.isfinite(ask_volume)
        | ~np.isfinite(bid_volume)
    )
    bad: list[BadRecord] = []
    if bad_mask.any():
        bad = [_bad_record(records, int(i), decimal_factor) for i in np.flatnonzero(bad_mask)]
        keep = ~bad_mask
        ms, ask_points, bid_points = ms[keep], ask_points[keep], bid_points[keep]
        ask_volume, bid_volume = ask_volume[keep], bid_volume[keep]
    ts = ms.astype(np.int64)
    ts += hour_start_ms
    factor = float(decimal_factor)
    return Ticks(
        ts=ts,
        bid=bid_points / factor,
        ask=ask_points / factor,
        bid_volume=f32_values(bid_volume),
        ask_volume=f32_values(ask_volume),
        bad=bad,
    )


def _bad_record(records: np.ndarray, i: int, decimal_factor: int) -> BadRecord:
    r = records[i]
    ms, ask, bid = int(r["ms"]), int(r["ask"]), int(r["bid"])
    ask_volume, bid_volume = float(r["ask_volume"]), float(r["bid_volume"])
    if not 0 <= ms < HOUR_MS:
        reason = f"offset {ms} ms is outside the hour (0..{HOUR_MS - 1})"
    else:
        reason = quote_problem(bid / decimal_factor, ask / decimal_factor) or ""
        if not reason:
            for name, value in (("ask volume", ask_volume), ("bid volume", bid_volume)):
                if not 0 <= value < float("inf"):  # negative, NaN or infinite
                    reason = f"{name} is {value}"
                    break
    return BadRecord(i, f"record {i}: {reason}", ms, ask, bid, ask_volume, bid_volume)


def decode_ticks(data: bytes, hour_start_ms: int, decimal_factor: int) -> Ticks:
    """A tick file's body → :class:`Ticks` (empty for a 0-byte body).

    Raises :class:`Bi5Error` when the body cannot be decoded; records that cannot be quotes are
    in ``.bad`` and the rest is returned.
    """
    return decode_tick_records(tick_records(decompress(data)), hour_start_ms, decimal_factor)


def pack_ticks(
    ms: Sequence[int] | np.ndarray,
    ask_points: Sequence[int] | np.ndarray,
    bid_points: Sequence[int] | np.ndarray,
    ask_volume: Sequence[float] | np.ndarray,
    bid_volume: Sequence[float] | np.ndarray,
) -> bytes:
    """Raw (uncompressed) tick records, as given: nothing is checked, so tests can build bad ones."""
    out = np.empty(len(ms), TICK_RECORD)
    out["ms"], out["ask"], out["bid"] = ms, ask_points, bid_points
    out["ask_volume"], out["bid_volume"] = ask_volume, bid_volume
    return out.tobytes()


def encode_ticks(
    ts_ms: Sequence[int] | np.ndarray,
    bid: Sequence[float] | np.ndarray,
    ask: Sequence[float] | np.ndarray,
    bid_volume: Sequence[float] | np.ndarray | None = None,
    ask_volume: Sequence[float] | np.ndarray | None = None,
    *,
    hour_start_ms: int,
    decimal_factor: int,
) -> bytes:
    """A tick file's body for quotes of one hour (epoch ms, prices); volumes default to 1.0.

    Prices are rounded to whole points; an empty hour gives ``b""``.
    """
    ts = np.asarray(ts_ms, dtype=np.int64)
    if len(ts) == 0:
        return b""
    offsets = ts - hour_start_ms
    if hour_start_ms % HOUR_MS or offsets.min() < 0 or offsets.max() >= HOUR_MS:
        raise ValueError("every tick must fall inside the hour starting at hour_start_ms")
    ones = np.ones(len(ts))
    return compress(
        pack_ticks(
            offsets,
            np.rint(np.asarray(ask, np.float64) * decimal_factor),
            np.rint(np.asarray(bid, np.float64) * decimal_factor),
            ones if ask_volume is None else ask_volume,
            ones if bid_volume is None else bid_volume,
        )
    )


# --------------------------------------------------------------------------- candles


def decode_candles(data: bytes, period_start_ms: int, decimal_factor: int) -> Candles:
    """A candle file's body (minute file: its UTC day; hour file: its month; day file: its year).

    Flat candles (market breaks: O=H=L=C, volume 0) are kept; they are Dukascopy's data.
    """
    records = candle_records(decompress(data))
    factor = float(decimal_factor)
    ts = records["secs"].astype(np.int64) * 1000 + period_start_ms
    return Candles(
        ts=ts,
        open=records["open"] / factor,
        high=records["high"] / factor,
        low=records["low"] / factor,
        close=records["close"] / factor,
        volume=f32_values(records["volume"]),
    )


def encode_candles(
    ts_ms: Sequence[int] | np.ndarray,
    open: Sequence[float] | np.ndarray,
    high: Sequence[float] | np.ndarray,
    low: Sequence[float] | np.ndarray,
    close: Sequence[float] | np.ndarray,
    volume: Sequence[float] | np.ndarray,
    *,
    period_start_ms: int,
    decimal_factor: int,
) -> bytes:
    ts = np.asarray(ts_ms, dtype=np.int64)
    out = np.empty(len(ts), CANDLE_RECORD)
    out["secs"] = (ts - period_start_ms) // 1000
    for name, values in (("open", open), ("close", close), ("low", low), ("high", high)):
        out[name] = np.rint(np.asarray(values, np.float64) * decimal_factor)
    out["volume"] = volume
    return compress(out.tobytes())
