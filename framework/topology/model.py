"""Pydantic model of the topology document (strict: unknown keys and wrong types are errors).

The model checks *shape*. Whether the wiring makes sense (a subscription someone can reach,
a topic that exists, a risk gate on every path to execution) is the lint's job
(:mod:`framework.lint`), because those findings need the registry and the contracts.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from framework.durations import parse_ms
from framework.topology.templates import ANY_TOKEN

Phase = Literal["data", "training", "trading", "support"]
PHASES: tuple[Phase, ...] = ("data", "training", "trading", "support")
PHASE_TITLES: dict[str, str] = {
    "data": "Phase 1: Data foundation",
    "training": "Phase 2: ML training",
    "trading": "Phase 3: Live trading",
    "support": "Phase 4: Supporting services",
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_duration(value: str | None) -> str | None:
    if value is not None:
        parse_ms(value)
    return value


def _as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _non_empty(value: str) -> str:
    if not value.strip():
        raise ValueError("empty address")
    return value


Address = Annotated[str, AfterValidator(_non_empty)]

PORTABLE_TYPES = ("bool", "float", "int", "json", "str", "timestamp_ms")
_NATIVE_TYPE = re.compile(r"^[A-Za-z][\w (),'.]*$")


def _column_type(value: str) -> str:
    """A portable type (``str``, ``int?``…) or a store's own type name, as the stores accept them."""
    if value.rstrip("?") in PORTABLE_TYPES:
        return value
    if not _NATIVE_TYPE.match(value) or "--" in value:
        raise ValueError(
            f"unknown column type {value!r}: use {', '.join(PORTABLE_TYPES)} (add ? for nullable) "
            "or a type name of the table's store"
        )
    return value


ColumnType = Annotated[str, AfterValidator(_column_type)]
REDIS_SCHEMES = ("redis", "rediss", "unix")


CONTRACT_SIZES = {"fx": 100_000, "metal": 100}
"""Units per lot when the instrument does not say (FX: 100,000 of the base currency; gold: 100 oz)."""


class Instrument(Strict):
    """A tradable symbol. ``pip`` is the pip size, ``digits`` the quote precision (point = 10**-digits).

    The trading rules (a lot's size, the volume step and bounds, the base and quote currencies)
    default from the kind and a six-letter symbol (EURUSD: 100,000 EUR per lot, P&L in USD);
    brokers differ, so each can be set."""

    kind: Literal["fx", "metal", "index", "commodity", "crypto"] = "fx"
    pip: float = Field(gt=0)
    digits: int = Field(ge=0, le=10)
    description: str | None = None
    contract_size: float | None = Field(default=None, gt=0, description="units per lot (default: 100,000 for fx, 100 for metal)")
    lot_step: float = Field(default=0.01, gt=0, description="volume granularity in lots")
    min_lot: float = Field(default=0.01, gt=0)
    max_lot: float = Field(default=100.0, gt=0)
    base: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="default: the symbol's first three letters")
    quote: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="P&L currency; default: the symbol's last three letters")

    @property
    def point(self) -> float:
        return 10.0 ** -self.digits

    def lot_units(self) -> float:
        size = self.contract_size or CONTRACT_SIZES.get(self.kind)
        if size is None:
            raise ValueError(f"an instrument of kind {self.kind!r} needs contract_size")
        return size

    def currencies(self, symbol: str) -> tuple[str, str]:
        """(base, quote) of ``symbol`` under this instrument's rules."""
        base = self.base or (symbol[:3] if len(symbol) == 6 else None)
        quote = self.quote or (symbol[3:] if len(symbol) == 6 else None)
        if base is None or quote is None:
            raise ValueError(f"instrument {symbol!r}: set base and quote (not a six-letter pair)")
        return base, quote


class TLSConfig(Strict):
    ca: str | None = None
    cert: str | None = None
    key: str | None = None


class NatsAuth(Strict):
    """Credentials come from environment variables named here, never from the YAML itself."""

    user_env: str | None = None
    password_env: str | None = None
    token_env: str | None = None


class NatsConfig(Strict):
    servers: list[Address] = Field(min_length=1)
    auth: NatsAuth | None = None
    tls: TLSConfig | None = None
    reconnect_buffer_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    durable: list[str] = Field(default_factory=list, description="subject patterns kept in JetStream")


class KafkaAuth(Strict):
    mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    username_env: str
    password_env: str


class KafkaConfig(Strict):
    bootstrap: list[Address] = Field(min_length=1)
    auth: KafkaAuth | None = None
    tls: TLSConfig | None = None
    client_id: str = "fxflow"


class StoreConfig(Strict):
    kind: Literal["postgres", "clickhouse", "redis", "memory", "files"]
    url: str
    password_env: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("empty URL")
        if info.data.get("kind") == "redis" and urlsplit(value).scheme not in REDIS_SCHEMES:
            schemes = ", ".join(f"{s}://" for s in REDIS_SCHEMES)
            raise ValueError(f"a redis store needs a {schemes} URL (got {value!r})")
        return value


class Topic(Strict):
    """A Kafka topic. ``key`` names the message field used as the record key (partitioning)."""

    partitions: int | None = Field(default=None, ge=1)
    key: str | None = None
    retention: str | None = None
    cleanup: Literal["delete", "compact", "compact,delete"] = "delete"
    replication: int = Field(default=1, ge=1)
    contract: str | list[str] | None = None
    description: str | None = None

    _retention = field_validator("retention")(_check_duration)

    @property
    def retention_ms(self) -> int | None:
        return parse_ms(self.retention) if self.retention else None

    @property
    def contracts(self) -> list[str]:
        return _as_list(self.contract)


class Table(Strict):
    """A table in a named store; columns come from ``contract`` or are listed in ``columns``."""

    store: str
    contract: str | None = None
    columns: dict[str, ColumnType] | None = None
    order_by: list[str] = Field(default_factory=list)
    key: list[str] | None = Field(
        default=None,
        min_length=1,
        description="the columns that identify a row; a row written again (a batch retried after a lost acknowledgement, "
        "a refill after a crash) is kept once. postgres: a unique index (with the time column), repeats skipped; "
        "clickhouse: the ReplacingMergeTree ordering key, repeats collapse (read with FINAL). None: every row is kept",
    )
    retention: str | None = None
    engine: Literal["MergeTree", "ReplacingMergeTree", "AggregatingMergeTree", "hypertable", "kv"] | None = None
    version: str | None = Field(
        default=None,
        description="ReplacingMergeTree: of the rows with the same ordering key, the one with the highest value of this "
        "integer column is kept (a bar's revision), whatever order they were written in",
    )
    trace: bool = Field(
        default=False,
        description="keep each row's message id and the id of the message that caused it (columns msg_id, cause_id): "
        "`fxrun trace ID` follows the chain through such tables",
    )
    writers: Literal["shared"] | None = Field(
        default=None,
        description="shared: several services write this table on purpose and their rows never repeat each other "
        "(lint FX302 otherwise refuses two writers of a table whose engine keeps duplicates)",
    )
    description: str | None = None

    _retention = field_validator("retention")(_check_duration)

    @property
    def retention_ms(self) -> int | None:
        return parse_ms(self.retention) if self.retention else None


class RuntimeVariable(Strict):
    """A template variable whose values are known only at run time, declared as a mapping.

    ``identifier: true`` says each value names a long-lived entity (a training or backtest
    run), so one subject per value stays few. Any other run-time value in a published subject
    (an episode or sequence number) is unbounded subject cardinality: lint FX401.
    """

    identifier: bool = False
    description: str | None = None


class BufferSpec(Strict):
    """A slow consumer's input buffer: ``block`` (the publisher waits: nothing lost), ``drop_oldest``
    (the oldest message goes), ``conflate`` (only the newest message per ``key`` value is kept)."""

    size: int = Field(ge=1)
    policy: Literal["block", "drop_oldest", "conflate"] = "block"
    key: str | None = Field(default=None, description="conflate: the message field whose latest value per key is kept")

    @model_validator(mode="after")
    def _key(self) -> BufferSpec:
        if self.policy == "conflate" and not self.key:
            raise ValueError("policy conflate needs `key`: the field whose newest message per value is kept")
        return self


class Binding(Strict):
    """Where one port of a node is wired: NATS subjects, Kafka topics and tables.

    Subjects are templates over ``{symbol}``, ``{timeframe}`` and the topology's
    ``variables``; for inputs they may be wildcard patterns. ``contract`` may state the
    contract of a port whose node is not built yet (the node's own declaration wins).
    """

    nats: str | list[str] | None = None
    kafka: str | list[str] | None = None
    tables: str | list[str] | None = None
    contract: str | list[str] | None = None
    values: dict[str, list[str] | Literal["*"]] = Field(
        default_factory=dict, description="values of template variables for this binding only (e.g. alert types)"
    )
    group: str | None = Field(default=None, description="Kafka consumer group (inputs)")
    queue: str | None = Field(default=None, description="NATS queue group (inputs); default: the service name when replicas > 1")
    replay: bool = Field(
        default=False,
        description="inputs: the Kafka topics are not consumed continuously; the node reads them on demand "
        "with ctx.replay(port, start_ms, end_ms) (gap filling), and the runtime refills gaps of numbered streams",
    )
    buffer: BufferSpec | None = Field(
        default=None,
        description="inputs: a bounded buffer between the transport and the node, so a slow node (a dashboard, a "
        "notifier) never slows its publishers; what happens when it is full is the policy",
    )
    description: str | None = None

    @property
    def subjects(self) -> list[str]:
        return _as_list(self.nats)

    @property
    def topics(self) -> list[str]:
        return _as_list(self.kafka)

    @property
    def table_names(self) -> list[str]:
        return _as_list(self.tables)

    @property
    def contracts(self) -> list[str]:
        return _as_list(self.contract)


class Service(Strict):
    node: str
    phase: Phase
    enabled: bool = True
    description: str | None = None
    replicas: int = Field(default=1, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Binding] = Field(default_factory=dict)
    outputs: dict[str, Binding] = Field(default_factory=dict)
    reads: list[str] = Field(default_factory=list, description="tables the service queries")

    @field_validator("inputs", "outputs", mode="before")
    @classmethod
    def _unbind(cls, value: Any) -> Any:
        """A port bound to null is not bound: a profile that gives a service another node drops the
        bindings of services.yaml that node has no port for (profiles merge, they cannot delete a key)."""
        return {port: b for port, b in value.items() if b is not None} if isinstance(value, dict) else value


class RestartPolicy(Strict):
    max_restarts: int = Field(default=5, ge=0)
    backoff_initial: float = Field(default=0.5, gt=0)
    backoff_max: float = Field(default=30.0, gt=0)
    failures_before_restart: int = Field(default=20, ge=1)
    reset_after_s: float = Field(default=600.0, gt=0, description="a node running this long without failing gets its restart budget back")


class RuntimeConfig(Strict):
    """How this profile runs: which transports, which validation mode, which clock."""

    pubsub: Literal["inprocess", "nats"] = "inprocess"
    log: Literal["inprocess", "kafka"] = "inprocess"
    validation: Literal["strict", "sampled", "off"] = "strict"
    sample_every: int = Field(default=100, ge=1)
    clock: Literal["wall", "simulated"] = "wall"
    clock_speed: float = Field(default=1.0, gt=0, description="wall clock only: time runs this many times faster (a paced replay)")
    clock_origin: str | None = Field(
        default=None, description="wall clock only: ISO-8601 UTC time the clock reads at start (a replay of the past); null: now"
    )

    @field_validator("clock_origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is not None:
            from framework.params import utc_ms

            utc_ms(value)
        return value
    persist_log: bool = True
    workers: int = Field(
        default=1, ge=1, description="worker processes for nodes' CPU-heavy work (ctx.offload(..., process=True): training)"
    )
    archive: bool = Field(
        default=True,
        description="false: ports do not send to their Kafka topics, except topics a service of the run reads "
        "(a backtest has no use for an archive nothing replays)",
    )
    log_max_records: int | None = Field(
        default=None, ge=1, description="the in-process log keeps at most this many records per partition (the oldest go)"
    )
    wire_codec: bool = Field(
        default=True,
        description="in-process pub/sub only: every subscriber gets its own copy decoded from the JSON NATS would "
        "carry, so a message the wire cannot carry (a numpy number, a datetime, a set) fails at publish as on NATS "
        "(false: the published objects themselves, faster; for backtests)",
    )
    archive_wait: str = Field(
        default="2s",
        description="a message on a port with a Kafka archive waits this long at most for the archive's acknowledgement "
        "before it goes to its subjects and tables anyway (0s: never waits)",
    )
    restart: RestartPolicy = Field(default_factory=RestartPolicy)
    batch_size: int = Field(default=1000, ge=1)
    batch_interval: str = "1s"
    metrics_interval: str = "5s"
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="serve /metrics and /health here (0: a free port; null: off)"
    )
    retention: Literal["enforce", "off"] = Field(
        default="enforce",
        description="off: tables keep everything (TTLs and partition drops are wall-clock based, so a run on "
        "simulated or historical time would otherwise lose its data as it writes it)",
    )


class Account(Strict):
    """The trading account every money-handling service shares (risk, execution, the broker, performance)."""

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="the account currency: balances and P&L")
    balance: float = Field(default=100_000.0, gt=0, description="the starting balance of a paper or backtest account")
    leverage: float = Field(default=30.0, gt=0, description="margin required = notional / leverage")
    stop_out: float = Field(default=0.5, gt=0, description="positions are closed when equity / margin falls below this")


class Topology(Strict):
    name: str = "fxflow"
    instruments: dict[str, Instrument] = Field(min_length=1)
    account: Account = Field(default_factory=Account)
    timeframes: list[str] = Field(min_length=1)
    variables: dict[str, list[str] | Literal["*"] | RuntimeVariable] = Field(
        default_factory=dict,
        description='values of template variables: a list, "*" (any run-time value) or {identifier: true}',
    )
    domains: list[str] = Field(min_length=1)
    nats: NatsConfig | None = None
    kafka: KafkaConfig | None = None
    stores: dict[str, StoreConfig] = Field(default_factory=dict)
    topics: dict[str, Topic] = Field(default_factory=dict)
    tables: dict[str, Table] = Field(default_factory=dict)
    services: dict[str, Service] = Field(default_factory=dict)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)

    @property
    def variable_values(self) -> dict[str, list[str] | str]:
        """Each variable's values to expand templates over: its list, or ``"*"`` for a run-time value."""
        return {name: ANY_TOKEN if isinstance(v, RuntimeVariable) else v for name, v in self.variables.items()}

    @field_validator("timeframes")
    @classmethod
    def _timeframes(cls, value: list[str]) -> list[str]:
        repeated = sorted({tf for tf in value if value.count(tf) > 1}, key=value.index)
        if repeated:
            raise ValueError(f"timeframe {', '.join(map(repr, repeated))} listed more than once")
        from framework.timeframes import MINUTE_MS, parse_timeframe

        for tf in value:
            try:
                spec = parse_timeframe(tf)
            except ValueError as exc:
                raise ValueError(f"timeframe {exc}") from None
            if spec.ms < MINUTE_MS:
                raise ValueError(f"timeframe {tf!r} must be at least one minute (1m, 5m, 1h, 1d…)")
        return value


class RunConfig(Strict):
    """The composed run: the topology plus what this invocation selects."""

    topology: Topology
    pairs: list[str] | None = None
    only: list[str] | None = None
    data_dir: str = ".fxrun"
    duration: str | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    simulate_feeds: bool = Field(
        default=False,
        description="run the external-feed collectors against their local simulators (no API keys, no internet); "
        "services read it as ${simulate_feeds}; default from FXFLOW_SIMULATE_FEEDS",
    )
    serve_after: bool | None = Field(
        default=None,
        description="when a bounded run ends (its sources finished), keep its servers (the dashboard) serving until Ctrl-C; "
        "null: only when run from a terminal (serve_after=false for CI)",
    )
    progress: str | bool | None = Field(
        default=None,
        description="how often a run shows its progress (simulated time, messages, the services' headlines): a duration; "
        "null: every second on a terminal (a status block under the log), else a log line every 10s; false: never",
    )

    _duration = field_validator("duration")(_check_duration)

    @field_validator("progress")
    @classmethod
    def _progress(cls, value: str | bool | None) -> str | bool | None:
        if isinstance(value, str):
            if value.lower() in ("off", "false", "no"):
                return False
            if (parse_ms(value) or 0) <= 0:
                raise ValueError(f"progress {value!r}: a positive duration (5s), or false")
        return None if value is True else value
