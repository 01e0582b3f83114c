"""The Dukascopy .bi5 codec, price factors, datafeed paths and the ``fxrun bi5 decode`` command.

Files are built here, independently of the encoder where it matters (``struct`` + ``lzma``), so a
symmetric mistake in encode and decode (bid/ask swapped, one factor for all) cannot pass.
"""

from __future__ import annotations

import lzma
import math
import struct
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from framework.cli import main as fxrun
from nodes.dukascopy_historical.bi5 import (
    Bi5Error,
    decode_candles,
    decode_ticks,
    encode_candles,
    encode_ticks,
    f32_values,
    pack_ticks,
)
from nodes.dukascopy_historical.command import main as bi5_command
from nodes.dukascopy_historical.instruments import DECIMAL_FACTORS, UnknownInstrument, decimal_factor, price_digits
from nodes.dukascopy_historical.urls import candle_path, parse_tick_path, tick_path, tick_url
from nodes.marketdata.synthetic import SyntheticQuotes


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


H0 = ms("2019-02-04T00:00:00Z")  # the protocol's sample hour (EURUSD 2019-02-04 00h)
MON_8 = ms("2026-11-02T08:00:00Z")  # a busy Monday hour


def bi5(*records: tuple[int, int, int, float, float]) -> bytes:
    """A tick file as Dukascopy writes it: ">iiiff" records (ms, ASK, BID, ask vol, bid vol), LZMA-alone."""
    raw = b"".join(struct.pack(">iiiff", *r) for r in records)
    return lzma.compress(raw, format=lzma.FORMAT_ALONE) if raw else b""


# --------------------------------------------------------------------------- ticks


def test_protocol_sample_record() -> None:
    ticks = decode_ticks(bi5((994, 114545, 114543, 1.0, 2.06)), H0, 100_000)
    assert len(ticks) == 1 and not ticks.bad
    assert ticks.ts.tolist() == [ms("2019-02-04T00:00:00.994Z")]
    assert ticks.ask.tolist() == [1.14545]  # ask comes first on the wire
    assert ticks.bid.tolist() == [1.14543]
    assert ticks.ask_volume.tolist() == [1.0]
    assert ticks.bid_volume.tolist() == [2.06]  # float32 noise removed (2.0599999427795410 on the wire)


def test_structured_view_has_the_documented_fields() -> None:
    rows = decode_ticks(bi5((994, 114545, 114543, 1.0, 2.06), (1500, 114546, 114544, 3.0, 4.0)), H0, 100_000).to_structured()
    assert rows.dtype.names == ("ts", "bid", "ask", "bid_volume", "ask_volume")
    assert rows[1].tolist() == (H0 + 1500, 1.14544, 1.14546, 4.0, 3.0)


@pytest.mark.parametrize(
    ("symbol", "factor", "hour"),
    [("EURUSD", 100_000, MON_8), ("USDJPY", 1_000, MON_8), ("XAUUSD", 1_000, MON_8), ("GBPJPY", 1_000, MON_8 + 5 * 3_600_000)],
)
def test_round_trip_uses_each_instruments_factor(symbol: str, factor: int, hour: int) -> None:
    quotes = SyntheticQuotes([symbol], seed=3).hour(symbol, hour)
    assert len(quotes) > 100
    ts, bid, ask = [q.ts for q in quotes], [q.bid for q in quotes], [q.ask for q in quotes]
    volumes = np.round(np.linspace(0.1, 9.9, len(quotes)), 2)
    body = encode_ticks(ts, bid, ask, volumes, volumes[::-1], hour_start_ms=hour, decimal_factor=factor)

    first = struct.unpack(">iiiff", lzma.decompress(body)[:20])  # the wire, read without numpy
    assert first[:3] == (ts[0] - hour, round(ask[0] * factor), round(bid[0] * factor))

    ticks = decode_ticks(body, hour, decimal_factor(symbol))
    assert not ticks.bad
    assert ticks.ts.tolist() == ts
    assert ticks.bid.tolist() == bid and ticks.ask.tolist() == ask
    assert ticks.bid_volume.tolist() == volumes.tolist()
    assert ticks.ask_volume.tolist() == volumes[::-1].tolist()


def test_a_jpy_file_decoded_with_the_eurusd_factor_would_be_off_by_100() -> None:
    body = bi5((10, 149_503, 149_501, 1.0, 1.0))
    assert decode_ticks(body, H0, decimal_factor("USDJPY")).bid.tolist() == [149.501]
    assert decode_ticks(body, H0, 100_000).bid.tolist() == [1.49501]


tick_records = st.lists(
    st.tuples(
        st.integers(0, 3_599_999),
        st.integers(1, 2_000_000_000),
        st.integers(0, 50_000),
        st.floats(0, 1000, width=32),
        st.floats(0, 1000, width=32),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(tick_records, st.sampled_from([10, 1_000, 100_000]))
def test_any_valid_records_decode_to_their_values(records: list[tuple[int, int, int, float, float]], factor: int) -> None:
    wire = [(t, bid + spread, bid, av, bv) for t, bid, spread, av, bv in records]
    ticks = decode_ticks(bi5(*wire), H0, factor)
    assert not ticks.bad
    assert ticks.ts.tolist() == [H0 + t for t, *_ in wire]
    assert ticks.ask.tolist() == [a / factor for _, a, *_ in wire]
    assert ticks.bid.tolist() == [b / factor for _, _, b, *_ in wire]
    for got, sent in zip(ticks.ask_volume.tolist(), [r[3] for r in wire]):
        assert math.isclose(got, sent, rel_tol=1e-6, abs_tol=1e-30)
        assert np.float32(got) == np.float32(sent)  # the same float32: nothing but noise was removed


def test_f32_values_strip_only_float32_noise() -> None:
    values = np.array([2.06, 0.000226, 1.0, 0.75, 12345.67, 0.0, 1e-9, 3.3e9], np.float32)
    assert f32_values(values).tolist() == [float(str(v)) for v in values]


def test_empty_body_is_an_empty_hour() -> None:
    ticks = decode_ticks(b"", H0, 100_000)
    assert len(ticks) == 0 and not ticks.bad
    assert encode_ticks([], [], [], hour_start_ms=H0, decimal_factor=100_000) == b""


def test_truncated_stream_is_an_error_naming_the_cause() -> None:
    body = bi5(*[(i * 1000, 114_545 + i, 114_543 + i, 1.0, 1.0) for i in range(500)])
    with pytest.raises(Bi5Error, match="truncated LZMA stream"):
        decode_ticks(body[: len(body) // 2], H0, 100_000)


def test_garbage_is_a_corrupt_stream() -> None:
    with pytest.raises(Bi5Error, match="corrupt LZMA stream"):
        decode_ticks(b"<html>503 Service Unavailable</html>", H0, 100_000)


def test_a_partial_record_is_an_error() -> None:
    raw = struct.pack(">iiiff", 994, 114545, 114543, 1.0, 2.06) + b"\x00" * 7
    with pytest.raises(Bi5Error, match="not a multiple of 20 bytes"):
        decode_ticks(lzma.compress(raw, format=lzma.FORMAT_ALONE), H0, 100_000)


def test_bad_records_are_set_aside_and_the_rest_is_kept() -> None:
    body = bi5(
        (1_000, 114_545, 114_543, 1.0, 1.0),
        (3_600_000, 114_545, 114_543, 1.0, 1.0),  # one past the hour
        (2_000, 114_540, 114_543, 1.0, 1.0),  # ask < bid
        (3_000, 114_545, 0, 1.0, 1.0),  # bid 0
        (4_000, 114_545, 114_543, float("nan"), 1.0),
        (5_000, 114_545, 114_543, 1.0, -2.0),
        (-1, 114_545, 114_543, 1.0, 1.0),
        (6_000, 114_546, 114_546, 1.0, 1.0),  # locked (ask == bid) is a valid quote
    )
    ticks = decode_ticks(body, H0, 100_000)
    assert ticks.ts.tolist() == [H0 + 1_000, H0 + 6_000]
    reasons = [b.reason for b in ticks.bad]
    assert [b.index for b in ticks.bad] == [1, 2, 3, 4, 5, 6]
    assert "outside the hour" in reasons[0]
    assert "crossed quote" in reasons[1]
    assert "bid is not positive" in reasons[2]
    assert "ask volume is nan" in reasons[3]
    assert "bid volume is -2.0" in reasons[4]
    assert "offset -1 ms" in reasons[5]
    assert ticks.bad[1].as_dict()["ask_points"] == 114_540


ZEROS = lzma.compress(bytes(120), format=lzma.FORMAT_ALONE)  # six records of zeros: no price anywhere
CROSSED = bi5((994, 114540, 114543, 1.0, 1.0))  # one record, ask < bid


@pytest.mark.parametrize(
    ("body", "bad", "reason"), [(ZEROS, 6, "bid is not positive"), (CROSSED, 1, "crossed quote")], ids=["zeros", "crossed"]
)
def test_a_file_of_bad_records_only_is_no_ticks_and_every_record_set_aside(body: bytes, bad: int, reason: str) -> None:
    ticks = decode_ticks(body, H0, 100_000)
    assert len(ticks) == 0 and ticks.bid_volume.dtype == np.float64 and ticks.ask_volume.size == 0
    assert [b.index for b in ticks.bad] == list(range(bad))
    assert all(reason in b.reason for b in ticks.bad)


def test_pack_ticks_matches_struct() -> None:
    assert pack_ticks([994], [114545], [114543], [1.0], [2.06]) == struct.pack(">iiiff", 994, 114545, 114543, 1.0, 2.06)


def test_encode_refuses_ticks_outside_the_hour() -> None:
    with pytest.raises(ValueError, match="inside the hour"):
        encode_ticks([H0 + 3_600_000], [1.1], [1.2], hour_start_ms=H0, decimal_factor=100_000)


# --------------------------------------------------------------------------- candles


def test_candle_sample_record_in_o_c_l_h_order() -> None:
    raw = struct.pack(">iiiiif", 0, 230964, 231030, 230961, 231030, 0.000226)
    raw += struct.pack(">iiiiif", 60, 231030, 231010, 231000, 231050, 0.5)
    day = ms("2023-02-01T00:00:00Z")
    candles = decode_candles(lzma.compress(raw, format=lzma.FORMAT_ALONE), day, decimal_factor("BTCUSD"))
    assert candles.ts.tolist() == [day, day + 60_000]
    assert candles.open.tolist() == [23096.4, 23103.0]
    assert candles.close.tolist() == [23103.0, 23101.0]
    assert candles.low.tolist() == [23096.1, 23100.0]
    assert candles.high.tolist() == [23103.0, 23105.0]
    assert candles.volume.tolist() == [0.000226, 0.5]
    assert candles.to_structured().dtype.names == ("ts", "open", "high", "low", "close", "volume")


def test_candle_round_trip_and_size_check() -> None:
    day = ms("2024-03-05T00:00:00Z")
    ts = [day + i * 60_000 for i in range(1440)]
    opens = [2100.0 + i / 1000 for i in range(1440)]
    body = encode_candles(ts, opens, [o + 0.5 for o in opens], [o - 0.25 for o in opens], opens, [0.0] * 1440, period_start_ms=day, decimal_factor=1000)
    candles = decode_candles(body, day, 1000)
    assert candles.ts.tolist() == ts and candles.open.tolist() == opens and candles.high.tolist() == [o + 0.5 for o in opens]
    with pytest.raises(Bi5Error, match="multiple of 24"):
        decode_candles(bi5((994, 114545, 114543, 1.0, 2.06)), day, 1000)  # a 20-byte tick record is no candle


# --------------------------------------------------------------------------- factors and paths


def test_decimal_factors_per_instrument() -> None:
    assert [DECIMAL_FACTORS[s] for s in ("EURUSD", "GBPUSD", "AUDUSD", "USDCHF", "USDCAD", "NZDUSD", "EURGBP")] == [100_000] * 7
    assert [DECIMAL_FACTORS[s] for s in ("USDJPY", "EURJPY", "GBPJPY", "AUDJPY", "XAUUSD", "XAGUSD")] == [1_000] * 6
    assert DECIMAL_FACTORS["BTCUSD"] == 10 and DECIMAL_FACTORS["USDTHB"] == 10_000
    assert decimal_factor("EURUSD", {"EURUSD": 10_000}) == 10_000  # params override the table
    assert decimal_factor("USA500IDXUSD", {"USA500IDXUSD": 1_000}) == 1_000
    assert (price_digits(100_000), price_digits(1_000), price_digits(10)) == (5, 3, 1)


def test_unknown_instrument_is_a_clear_error() -> None:
    with pytest.raises(UnknownInstrument, match="no Dukascopy decimal factor for 'USA500IDXUSD'.*decimal_factors"):
        decimal_factor("USA500IDXUSD")


def test_tick_paths_use_a_zero_based_month() -> None:
    assert tick_path("EURUSD", ms("2019-02-04T07:00:00Z")) == "EURUSD/2019/01/04/07h_ticks.bi5"
    assert tick_path("xauusd", ms("2024-01-31T23:59:59Z")) == "XAUUSD/2024/00/31/23h_ticks.bi5"
    assert tick_path("USDJPY", ms("2023-12-01T00:00:00Z")) == "USDJPY/2023/11/01/00h_ticks.bi5"
    assert tick_url("https://datafeed.dukascopy.com/datafeed/", "EURUSD", ms("2019-02-04T07:00:00Z")) == (
        "https://datafeed.dukascopy.com/datafeed/EURUSD/2019/01/04/07h_ticks.bi5"
    )


def test_parse_tick_path_inverts_tick_path() -> None:
    for hour in (ms("2019-02-04T07:00:00Z"), ms("2020-12-31T23:00:00Z"), ms("2021-01-01T00:00:00Z")):
        assert parse_tick_path("/data/" + tick_path("GBPJPY", hour)) == ("GBPJPY", hour)
    with pytest.raises(ValueError, match="zero-based"):
        parse_tick_path("EURUSD/2019/12/04/07h_ticks.bi5")  # month 12 does not exist (00-11)
    with pytest.raises(ValueError, match="does not look like"):
        parse_tick_path("EURUSD/2019/01/04/ticks.bi5")


def test_candle_paths() -> None:
    day = ms("2023-02-01T00:00:00Z")
    assert candle_path("BTCUSD", "min_1", "BID", day) == "BTCUSD/2023/01/01/BID_candles_min_1.bi5"
    assert candle_path("EURUSD", "hour_1", "ASK", day) == "EURUSD/2023/01/ASK_candles_hour_1.bi5"
    assert candle_path("EURUSD", "day_1", "BID", day) == "EURUSD/2023/BID_candles_day_1.bi5"


# --------------------------------------------------------------------------- fxrun bi5 decode


@pytest.fixture
def sample_file(tmp_path: Path) -> Path:
    path = tmp_path / "EURUSD" / "2019" / "01" / "04" / "07h_ticks.bi5"
    path.parent.mkdir(parents=True)
    path.write_bytes(bi5((994, 114545, 114543, 1.0, 2.06), (61_000, 114550, 114547, 0.75, 1.5)))
    return path


def test_decode_command_takes_symbol_and_hour_from_the_path(sample_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert bi5_command(["decode", str(sample_file)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "time,ts,bid,ask,bid_volume,ask_volume",
        f"2019-02-04T07:00:00.994Z,{ms('2019-02-04T07:00:00.994Z')},1.14543,1.14545,2.06,1.0",
        f"2019-02-04T07:01:01.000Z,{ms('2019-02-04T07:01:01Z')},1.14547,1.14550,1.5,0.75",
    ]


def test_decode_command_with_explicit_symbol_hour_and_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gold.bi5"
    path.write_bytes(bi5((500, 2650370, 2650120, 1.0, 1.0)))
    out = tmp_path / "gold.csv"
    assert fxrun(["bi5", "decode", str(path), "--symbol", "XAUUSD", "--hour", "2026-11-02T08", "--out", str(out)]) == 0
    assert out.read_text().splitlines()[1] == f"2026-11-02T08:00:00.500Z,{MON_8 + 500},2650.120,2650.370,1.0,1.0"
    assert "1 ticks of XAUUSD 2026-11-02T08:00Z" in capsys.readouterr().err


def test_decode_command_reports_bad_records_and_keeps_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "x.bi5"
    path.write_bytes(bi5((994, 114545, 114543, 1.0, 2.06), (995, 114540, 114543, 1.0, 1.0)))
    assert bi5_command(["decode", str(path), "--symbol", "EURUSD", "--hour", "2019-02-04T00"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2
    assert captured.err.strip() == f"fxrun bi5: {path}: skipped record 1: crossed quote: ask 1.1454 < bid 1.14543"


@pytest.mark.parametrize(("body", "bad"), [(ZEROS, 6), (CROSSED, 1)], ids=["zeros", "crossed"])
def test_decode_command_of_a_file_of_bad_records_only_is_a_header_and_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: bytes, bad: int
) -> None:
    path = tmp_path / "EURUSD" / "2019" / "01" / "04" / "00h_ticks.bi5"
    path.parent.mkdir(parents=True)
    path.write_bytes(body)
    assert fxrun(["bi5", "decode", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == ["time,ts,bid,ask,bid_volume,ask_volume"]
    err = captured.err.splitlines()
    assert len(err) == bad + 1 and all(line.startswith(f"fxrun bi5: {path}: skipped record ") for line in err[:-1])
    assert err[-1] == f"fxrun bi5: {path}: 0 good ticks, {bad} bad: the CSV has only its header"
    assert "Traceback" not in captured.err


TRUNCATED = bi5(*[(i * 1000, 114_545 + i, 114_543 + i, 1.0, 1.0) for i in range(500)])[:600]


@pytest.mark.parametrize(
    ("content", "args", "code", "message"),
    [
        (b"not lzma at all", ["--symbol", "EURUSD", "--hour", "2019-02-04T07"], 1, "corrupt LZMA stream"),
        (TRUNCATED, ["--symbol", "EURUSD", "--hour", "2019-02-04T07"], 1, "truncated LZMA stream"),
        (None, ["--symbol", "EURUSD", "--hour", "2019-02-04T07"], 1, "cannot read"),
        (b"", ["--symbol", "NOSUCH", "--hour", "2019-02-04T07"], 2, "no Dukascopy decimal factor for 'NOSUCH'"),
        (b"", [], 2, "does not look like SYMBOL/YYYY/MM/DD/HHh_ticks.bi5: give --symbol and --hour"),
        (b"", ["--symbol", "EURUSD", "--hour", "yesterday"], 2, "not an ISO date"),
        (b"", ["--symbol", "EURUSD", "--hour", "2019-02-04T07:30"], 2, "not the start of an hour"),
    ],
)
def test_decode_command_errors_are_one_line_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, args: list[str], code: int, message: str
) -> None:
    path = tmp_path / "in.bi5"
    if content is not None:
        path.write_bytes(content)
    assert bi5_command(["decode", str(path), *args]) == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and message in err and "Traceback" not in err


def test_decode_command_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert bi5_command([]) == 2
    assert bi5_command(["encode", "x"]) == 2
    assert "fxrun bi5:" in capsys.readouterr().err
    assert bi5_command(["--help"]) == 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1, max_size=20))
def test_f32_values_give_the_shortest_decimal_of_each_float32(values: list[float]) -> None:
    arr = np.array(values, np.float32)
    got = f32_values(arr)
    assert (got.astype(np.float32) == arr).all()  # never another float32
    usual = [(g, float(str(v))) for g, v in zip(got.tolist(), arr) if v == 0 or 1e-12 < abs(v) < 1e12]
    assert [g for g, _ in usual] == [s for _, s in usual]  # exactly str(float32) where powers of ten are exact
