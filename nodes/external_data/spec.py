"""Declaration of the external-data collector: FRED series, commodity prices, the economic calendar.

Three output ports, one per kind of data, so each kind is wired to its own subject and table
(``calendar`` → ``external_economic_calendar``, ``fred`` → ``external_fred_indicators``,
``commodities`` → ``external_commodity_prices``). Kept light: pydantic and framework only.
"""

from __future__ import annotations

import re
from datetime import date

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from framework.durations import parse_ms
from framework.registry import NodeSpec, Port

SERIES_ID = re.compile(r"^[A-Z0-9_]{1,64}$")
UNIT = re.compile(r"^[A-Za-z0-9_./%-]{1,64}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

DEFAULT_FRED_SERIES: dict[str, str] = {
    "DFF": "percent",  # effective federal funds rate, daily
    "DGS2": "percent",  # 2-year Treasury yield, business days
    "DGS10": "percent",  # 10-year Treasury yield, business days
    "CPIAUCSL": "index",  # CPI, all urban consumers, monthly
    "UNRATE": "percent",  # unemployment rate, monthly
    "DEXUSEU": "usd_per_eur",
    "DEXJPUS": "jpy_per_usd",
    "DEXUSUK": "usd_per_gbp",
}
DEFAULT_COMMODITY_SERIES: dict[str, str] = {
    "DCOILWTICO": "usd_per_barrel",  # WTI crude, Cushing
    "DCOILBRENTEU": "usd_per_barrel",  # Brent crude, Europe
    "DHHNGSP": "usd_per_mmbtu",  # Henry Hub natural gas spot
}


class ExternalDataParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    simulate: bool = Field(
        default=False, description="serve FRED and the calendar from the built-in simulator (offline demo); any key works"
    )
    seed: int = Field(default=7, description="seed of the simulator's generated series and calendar")
    fred_api_key_env: str = Field(default="FRED_API_KEY", description="environment variable holding the FRED API key")
    fred_base_url: str = Field(default="https://api.stlouisfed.org", description="FRED API root")
    calendar_url: str | None = Field(
        default="https://nfs.faireconomy.media/ff_calendar_thisweek.json",
        description="ForexFactory weekly JSON export; null: no calendar",
    )
    fred_series: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_FRED_SERIES),
        description="FRED series id → unit, published on port `fred` (type fred_indicators)",
    )
    commodity_series: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_COMMODITY_SERIES),
        description="FRED series id → unit, published on port `commodities` (type commodity_prices)",
    )
    observation_start: str | None = Field(
        default=None, description="first observation date (YYYY-MM-DD) when a series has nothing stored; default: now - lookback"
    )
    lookback: str = Field(default="730d", description="history fetched for a series with nothing stored (without observation_start)")
    fred_every: str = Field(default="1h", description="poll interval of the FRED and commodity series (node clock)")
    calendar_every: str = Field(default="30m", description="poll interval of the calendar (node clock)")
    polls: int | None = Field(
        default=None,
        ge=1,
        description="polls of each source before the node finishes (bounded runs: the demo sets 1, since on a simulated "
        "clock later polls wait for event time to pass); null: until stopped"
    )
    fred_requests_per_minute: int = Field(default=120, ge=1, description="client-side rate limit of FRED requests")
    fred_page_size: int = Field(default=100_000, ge=1, le=100_000, description="FRED `limit`: observations per page")
    fred_table: str | None = Field(
        default="external_fred_indicators", description="table read at start to resume FRED series after the newest stored row"
    )
    commodity_table: str | None = Field(
        default="external_commodity_prices", description="table read at start to resume commodity series"
    )

    @field_validator("fred_series", "commodity_series")
    @classmethod
    def _series(cls, value: dict[str, str]) -> dict[str, str]:
        bad_ids = [k for k in value if not SERIES_ID.match(k)]
        if bad_ids:
            raise ValueError(f"series ids are upper-case FRED ids (A-Z, 0-9, _): {', '.join(map(repr, bad_ids))}")
        bad_units = [k for k, unit in value.items() if not isinstance(unit, str) or not UNIT.match(unit)]
        if bad_units:
            raise ValueError(f"units must be short names (letters, digits, _ . / % -): {', '.join(bad_units)}")
        return value

    @field_validator("fred_every", "calendar_every", "lookback")
    @classmethod
    def _duration(cls, value: str) -> str:
        ms = parse_ms(value)
        if ms is None or ms <= 0:
            raise ValueError("must be a positive duration (e.g. 30m, 1h, 730d)")
        return value

    @field_validator("observation_start")
    @classmethod
    def _date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)") from None
            if len(value) != 10:
                raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)")
        return value

    @field_validator("fred_api_key_env")
    @classmethod
    def _env(cls, value: str) -> str:
        if not ENV_NAME.match(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    @field_validator("fred_base_url", "calendar_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value

    @field_validator("fred_table", "commodity_table")
    @classmethod
    def _table(cls, value: str | None) -> str | None:
        if value is not None and not TABLE_NAME.match(value):
            raise ValueError(f"{value!r} is not a table name")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> ExternalDataParams:
        both = sorted(set(self.fred_series) & set(self.commodity_series))
        if both:
            raise ValueError(f"series in both fred_series and commodity_series (each belongs to one table): {', '.join(both)}")
        return self


SPEC = NodeSpec(
    name="external_data",
    factory="nodes.external_data.node:ExternalDataCollector",
    description=(
        "Polls FRED series (indicators and commodity prices, incrementally after the newest stored row) "
        "and the ForexFactory weekly calendar; publishes each kind on its own port."
    ),
    params=ExternalDataParams,
    outputs={
        "calendar": Port("external_event.v1", "economic calendar events (type economic_calendar), re-published only when changed"),
        "fred": Port("external_event.v1", "FRED indicator observations (type fred_indicators)"),
        "commodities": Port("external_event.v1", "commodity prices from FRED (type commodity_prices)"),
    },
    role="source",
)
