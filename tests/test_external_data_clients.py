"""The external-data clients against the simulator over real HTTP: FRED paging, missing values,
errors and retries; the ForexFactory export parsed into external_event.v1; params validation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from framework.contracts import ContractRegistry
from nodes.external_data.calendar import CalendarClient, CalendarError, parse_display_number, parse_event, parse_time, series_id
from nodes.external_data.fred import FredClient, FredError, date_ms, ms_date
from nodes.marketdata.ratelimit import RateLimiter
from nodes.external_data.simulator import CATALOGUE, ExternalDataSimulator, FredSeriesGenerator, calendar_week, week_start
from nodes.external_data.spec import ExternalDataParams
from nodes.marketdata.http import HttpClient, RetryPolicy

PROJECT = Path(__file__).resolve().parents[1]
CONTRACT = ContractRegistry.load(PROJECT / "contracts").resolve("external_event.v1")
KEY = "abcdefghijklmnopqrstuvwxyz012345"
NOW = int(datetime(2026, 11, 2, tzinfo=timezone.utc).timestamp() * 1000)  # a Monday


@pytest.fixture
async def sim() -> AsyncIterator[ExternalDataSimulator]:
    async with ExternalDataSimulator(seed=3, now_ms=lambda: NOW) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[HttpClient]:
    retries: list[float] = []

    async def no_wait(seconds: float) -> None:
        retries.append(seconds)

    async with HttpClient(retry=RetryPolicy(attempts=4, base_delay=0.01), sleep=no_wait) as client:
        client.slept = retries  # type: ignore[attr-defined]
        yield client


def fred(http: HttpClient, sim: ExternalDataSimulator, page_size: int = 100_000) -> FredClient:
    return FredClient(http, KEY, base_url=sim.url, page_size=page_size)


# --------------------------------------------------------------------------- FRED


async def test_fred_pages_with_offset_until_count_is_read(sim: ExternalDataSimulator, http: HttpClient) -> None:
    whole = await fred(http, sim).observations("DFF", "2026-08-01")
    paged = await fred(http, sim, page_size=7).observations("DFF", "2026-08-01")
    assert whole.requests == 1
    assert len(whole.observations) == (date(2026, 11, 1) - date(2026, 8, 1)).days + 1  # daily, up to yesterday
    assert paged.observations == whole.observations
    assert paged.requests == -(-len(whole.observations) // 7)
    requests = sim.fred_requests()[-paged.requests :]
    assert [int(q["offset"]) for q in requests] == [7 * i for i in range(paged.requests)]
    assert all(q["limit"] == "7" and q["file_type"] == "json" and q["api_key"] == KEY for q in requests)
    assert all(q["observation_start"] == "2026-08-01" and q["series_id"] == "DFF" for q in requests)
    times = [o.ts for o in whole.observations]
    assert times == sorted(times) and len(set(times)) == len(times)
    assert times[0] == date_ms("2026-08-01")


async def test_fred_missing_values_are_none_not_numbers(sim: ExternalDataSimulator, http: HttpClient) -> None:
    page = await fred(http, sim).observations("DGS10", "2025-12-01")
    by_date = {o.date: o for o in page.observations}
    assert by_date["2025-12-25"].value is None and by_date["2026-01-01"].value is None  # holidays are "."
    assert page.missing >= 2
    assert all(isinstance(o.value, float) for o in page.observations if o.value is not None)
    assert all(date.fromisoformat(o.date).weekday() < 5 for o in page.observations)  # business days only
    raw = sim.generator.observations("DGS10", date(2025, 12, 1), date(2026, 12, 31), date(2026, 11, 2))
    assert [o.date for o in page.observations if o.value is None] == [r["date"] for r in raw if r["value"] == "."]


async def test_fred_bad_key_is_a_clear_error_without_the_key(sim: ExternalDataSimulator, http: HttpClient) -> None:
    sim.faults.reject_key = True
    with pytest.raises(FredError) as info:
        await fred(http, sim).observations("DFF")
    text = str(info.value)
    assert "api_key is not registered" in text and "DFF" in text and "400" in text
    assert KEY not in text and KEY not in repr(info.value.args)
    assert info.value.status == 400 and info.value.series_id == "DFF"
    assert len(sim.fred_requests()) == 1  # a 400 is not retried


async def test_fred_unknown_series_and_missing_key_errors(sim: ExternalDataSimulator, http: HttpClient) -> None:
    sim.faults.unknown_series = {"NOPE"}
    with pytest.raises(FredError, match=r"NOPE: HTTP 400: Bad Request\. The series does not exist"):
        await fred(http, sim).observations("NOPE")
    with pytest.raises(FredError, match="api_key has not been set"):
        await FredClient(http, "", base_url=sim.url).observations("DFF")


async def test_fred_429_is_retried(sim: ExternalDataSimulator, http: HttpClient) -> None:
    sim.faults.rate_limited = 2
    page = await fred(http, sim).observations("UNRATE", "2026-01-01")
    assert [o.date for o in page.observations] == [f"2026-{m:02d}-01" for m in range(1, 10)]  # monthly, published with a lag
    assert len(sim.fred_requests()) == 3 and http.retries == 2
    assert sim.faults.rate_limited == 0


async def test_fred_retries_exhausted_and_malformed_json(sim: ExternalDataSimulator, http: HttpClient) -> None:
    sim.faults.server_errors = 10
    with pytest.raises(FredError, match="HTTP 500") as info:
        await fred(http, sim).observations("DFF")
    assert KEY not in str(info.value)
    sim.faults.server_errors = 0
    sim.faults.malformed = 1
    with pytest.raises(FredError, match="not JSON"):
        await fred(http, sim).observations("DFF")
    assert len((await fred(http, sim).observations("DFF", "2026-10-01")).observations) == 32  # the server recovered


async def test_fred_unreadable_rows_are_returned_with_their_reason(http: HttpClient) -> None:
    from aiohttp import web

    async def answer(request: web.Request) -> web.Response:
        rows = [
            {"date": "2026-01-02", "value": "1.5"},
            {"date": "2026-01-03", "value": "abc"},
            {"date": "02/01/2026", "value": "1.0"},
            "junk",
            {"date": "2026-01-05", "value": "."},
        ]
        return web.json_response({"count": len(rows), "offset": 0, "limit": 100000, "observations": rows})

    app = web.Application()
    app.router.add_get("/fred/series/observations", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        page = await FredClient(http, KEY, base_url=f"http://127.0.0.1:{runner.addresses[0][1]}").observations("X")
    finally:
        await runner.cleanup()
    assert [(o.date, o.value) for o in page.observations] == [("2026-01-02", 1.5), ("2026-01-05", None)]
    reasons = [reason for _, reason in page.bad]
    assert len(reasons) == 3
    assert "'abc' on 2026-01-03 is not a number" in reasons[0]
    assert "'02/01/2026' is not YYYY-MM-DD" in reasons[1]
    assert "str, not an object" in reasons[2]


async def test_rate_limiter_spaces_requests_over_the_window() -> None:
    now = [0.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(3, monotonic=lambda: now[0], sleep=sleep)
    stamps = []
    for _ in range(7):
        await limiter.acquire()
        stamps.append(now[0])
        now[0] += 1.0
    assert stamps == [0.0, 1.0, 2.0, 60.0, 61.0, 62.0, 120.0]
    assert all(sum(1 for s in stamps if t <= s < t + 60.0) <= 3 for t in stamps)


def test_date_conversions() -> None:
    assert date_ms("1970-01-02") == 86_400_000
    assert ms_date(date_ms("2024-02-29")) == "2024-02-29"
    assert ms_date(date_ms("2024-02-29") + 86_399_999) == "2024-02-29"
    with pytest.raises(ValueError):
        date_ms("2024-2-9")


def test_generated_series_are_deterministic_and_published_up_to_yesterday() -> None:
    a, b, other = FredSeriesGenerator(1), FredSeriesGenerator(1), FredSeriesGenerator(2)
    today = date(2026, 11, 4)
    for series in ("DFF", "DEXUSEU", "DCOILWTICO", "CPIAUCSL", "SOMETHING"):
        rows = a.observations(series, date(2026, 1, 1), date(9999, 12, 31), today)
        assert rows == b.observations(series, date(2026, 1, 1), date(9999, 12, 31), today)
        assert rows != other.observations(series, date(2026, 1, 1), date(9999, 12, 31), today)
        assert rows[-1]["date"] < today.isoformat()
    assert a.observations("DFF", date(2026, 1, 1), date(2026, 12, 31), today)[-1]["date"] == "2026-11-03"
    assert a.observations("CPIAUCSL", date(2026, 1, 1), date(2026, 12, 31), today)[-1]["date"] == "2026-09-01"
    assert {CATALOGUE[s].frequency for s in ("DFF", "DGS10", "UNRATE")} == {"d", "b", "m"}


# --------------------------------------------------------------------------- calendar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.2%", (0.2, True)),
        ("-0.3%", (-0.3, True)),
        ("175K", (175_000.0, False)),
        ("-1.2M", (-1_200_000.0, False)),
        ("4.9B", (4_900_000_000.0, False)),
        ("1.1T", (1_100_000_000_000.0, False)),
        ("52.3", (52.3, False)),
        ("1,234.5", (1234.5, False)),
        ("", (None, False)),
        ("  ", (None, False)),
        (None, (None, False)),
    ],
)
def test_display_numbers(text: str | None, expected: tuple[float | None, bool]) -> None:
    assert parse_display_number(text) == expected


@pytest.mark.parametrize("text", ["n/a", "1.2X", "%", "K", "1.2.3", "--1"])
def test_unreadable_display_numbers_raise(text: str) -> None:
    with pytest.raises(ValueError, match="forecast .* is not a number"):
        parse_display_number(text, "forecast")


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2025-03-31T09:45:00-04:00", "2025-03-31T13:45:00"),  # New York, daylight time
        ("2025-01-10T08:30:00-05:00", "2025-01-10T13:30:00"),  # New York, standard time
        ("2025-01-09T19:00:00-05:00", "2025-01-10T00:00:00"),  # crosses midnight UTC
        ("2025-01-10T13:30:00Z", "2025-01-10T13:30:00"),
        ("2025-01-10T22:30:00+09:00", "2025-01-10T13:30:00"),
    ],
)
def test_event_times_become_utc_ms(text: str, utc: str) -> None:
    assert parse_time(text) == int(datetime.fromisoformat(utc).replace(tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize("text", ["2025-01-10T08:30:00", "2025-01-10", "Monday 8:30am", "", None])
def test_event_times_without_offset_or_unreadable_raise(text: Any) -> None:
    with pytest.raises(ValueError, match="date"):
        parse_time(text)


def row(**fields: str) -> dict[str, str]:
    base = {"title": "Chicago PMI", "country": "USD", "date": "2025-03-31T09:45:00-04:00", "impact": "Low", "forecast": "45.5", "previous": "45.5"}
    return {**base, **fields}


def test_calendar_row_becomes_a_valid_event() -> None:
    event = parse_event(row())
    assert event == {
        "type": "economic_calendar",
        "ts": parse_time("2025-03-31T13:45:00Z"),
        "source": "forexfactory",
        "series": "USD.chicago_pmi",
        "value": None,
        "title": "Chicago PMI",
        "forecast": 45.5,
        "previous": 45.5,
        "country": "USD",
        "impact": "low",
    }
    assert CONTRACT.validate(event) is None


@pytest.mark.parametrize(
    ("impact", "mapped"), [("High", "high"), ("Medium", "medium"), ("Low", "low"), ("Holiday", None), ("Non-Economic", None), ("", None)]
)
def test_impact_mapping_keeps_events_with_unknown_impact(impact: str, mapped: str | None) -> None:
    event = parse_event(row(impact=impact))
    assert event.get("impact") == mapped
    assert CONTRACT.validate(event) is None


def test_all_country_is_left_out_and_percent_sets_the_unit() -> None:
    event = parse_event(row(title="G7 Meetings", country="All", forecast="", previous=""))
    assert "country" not in event and event["series"] == "ALL.g7_meetings"
    assert event["forecast"] is None and event["previous"] is None and "unit" not in event
    assert CONTRACT.validate(event) is None
    cpi = parse_event(row(title="CPI m/m", forecast="0.2%", previous="-0.1%"))
    assert (cpi["forecast"], cpi["previous"], cpi["unit"], cpi["series"]) == (0.2, -0.1, "percent", "USD.cpi_m_m")
    nfp = parse_event(row(title="Non-Farm Employment Change", forecast="175K", previous="4.9B"))
    assert (nfp["forecast"], nfp["previous"]) == (175_000.0, 4_900_000_000.0) and "unit" not in nfp


def test_series_ids_are_stable_per_title_and_currency() -> None:
    assert series_id("CPI m/m", "USD") == series_id(" CPI  m/m ", "USD") == "USD.cpi_m_m"
    assert series_id("CPI m/m", "EUR") != series_id("CPI m/m", "USD")
    assert len(series_id("x" * 300, "USD")) == 128
    assert parse_event(row(title="Core  CPI m/m"))["series"] == parse_event(row(title="Core CPI m/m"))["series"]


def test_an_actual_field_fills_value() -> None:
    event = parse_event(row(actual="0.4%"))
    assert event["value"] == event["actual"] == 0.4
    assert CONTRACT.validate(event) is None


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (["a", "list"], "not an object"),
        (row(title=""), "title"),
        ({k: v for k, v in row().items() if k != "title"}, "title"),
        (row(country="US Dollar"), "not a currency code"),
        (row(country=""), "country"),
        (row(date="2025-03-31 9:45am"), "date"),
        (row(date="2025-03-31T09:45:00"), "no UTC offset"),
        (row(forecast="n/a"), "forecast 'n/a'"),
        (row(previous="high"), "previous 'high'"),
        (row(title="???"), "no letters or digits"),
    ],
)
def test_bad_calendar_rows_raise_with_a_reason(bad: Any, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_event(bad)


async def test_calendar_client_reads_the_simulated_export(sim: ExternalDataSimulator, http: HttpClient) -> None:
    rows = await CalendarClient(http, sim.calendar_url).fetch()
    assert rows == calendar_week(3, week_start(NOW))
    events = [parse_event(r) for r in rows]
    assert all(CONTRACT.validate(e) is None for e in events)
    start = week_start(NOW)
    assert all(start.timestamp() * 1000 <= e["ts"] < (start + timedelta(days=7)).timestamp() * 1000 for e in events)
    sim.faults.malformed = 1
    with pytest.raises(CalendarError, match="not JSON"):
        await CalendarClient(http, sim.calendar_url).fetch()
    sim.faults.bad_calendar_rows = 4
    rows = await CalendarClient(http, sim.calendar_url).fetch()
    bad = 0
    for r in rows:
        try:
            parse_event(r)
        except ValueError:
            bad += 1
    assert bad == 4


async def test_calendar_that_is_not_an_array_is_an_error(http: HttpClient) -> None:
    from aiohttp import web

    async def moved(request: web.Request) -> web.Response:
        return web.json_response({"error": "moved"})

    app = web.Application()
    app.router.add_get("/cal.json", moved)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        with pytest.raises(CalendarError, match="expected a JSON array of events, got a dict"):
            await CalendarClient(http, f"http://127.0.0.1:{runner.addresses[0][1]}/cal.json").fetch()
    finally:
        await runner.cleanup()


def test_simulated_calendar_covers_every_display_format_and_both_offsets() -> None:
    weeks = [week_start(NOW + i * 7 * 86_400_000) for i in range(-30, 8)]  # spans a DST change
    rows = [r for start in weeks for r in calendar_week(7, start)]
    values = [r[k] for r in rows for k in ("forecast", "previous")]
    for suffix in ("%", "K", "M", "B"):
        assert any(v.endswith(suffix) for v in values), suffix
    assert "" in values and any(v and v[-1].isdigit() for v in values) and any(v.startswith("-") for v in values)
    assert {r["impact"] for r in rows} == {"High", "Medium", "Low", "Holiday"}
    assert any(r["country"] == "All" for r in rows)
    assert {r["date"][-6:] for r in rows} == {"-04:00", "-05:00"}
    assert calendar_week(7, weeks[0]) == calendar_week(7, weeks[0]) != calendar_week(8, weeks[0])
    assert all(CONTRACT.validate(parse_event(r)) is None for r in rows)


# --------------------------------------------------------------------------- params


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"fred_series": {"dff": "percent"}}, "upper-case FRED ids"),
        ({"fred_series": {"DFF": ""}}, "units must be short names"),
        ({"fred_series": {"DFF": "percent"}, "commodity_series": {"DFF": "percent"}}, "in both fred_series and commodity_series .*: DFF"),
        ({"fred_every": "0s"}, "positive duration"),
        ({"calendar_every": "soon"}, "not a duration"),
        ({"observation_start": "2024-13-01"}, "not a date"),
        ({"fred_api_key_env": "FRED KEY"}, "not an environment variable name"),
        ({"calendar_url": "nfs.faireconomy.media/x.json"}, "not an http"),
        ({"polls": 0}, "greater than or equal to 1"),
        ({"fred_page_size": 200_000}, "less than or equal to 100000"),
        ({"fred_key": "x"}, "Extra inputs"),
    ],
)
def test_bad_params_are_rejected_with_a_clear_message(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ExternalDataParams.model_validate(params)


def test_default_params_are_valid() -> None:
    params = ExternalDataParams()
    assert params.fred_api_key_env == "FRED_API_KEY" and not params.simulate
    assert set(params.fred_series).isdisjoint(params.commodity_series)
