"""The declaration of notification-hub: channels, routing rules and delivery policy, checked by the lint (FX102).

A channel is one destination (a Telegram chat, a list of e-mail recipients, one phone number, the
process log, a file). Rules route events to channels by kind, type, symbol and least severity.
Secrets (bot token, SMTP password, Twilio credentials) are never params: a channel names the
environment variables that hold them (``token_env``), and ``enabled: auto`` turns a channel on
only when those variables and its recipients are set.

A rule naming an undeclared channel, malformed quiet hours or a malformed rate limit is a lint
error at the line of the offending field.
"""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from framework.params import Duration, PositiveDuration
from framework.registry import NodeSpec, Port
from nodes.notifications.policy import QuietHours, RateLimit, zone

Severity = Literal["info", "warning", "critical"]
EventKind = Literal["alert", "training", "backtest", "fill"]
Enabled = bool | Literal["auto"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Retry(_Strict):
    attempts: int = Field(default=5, ge=1, le=20, description="tries per notification, the first included")
    base_delay: PositiveDuration = Field(default="2s", description="back-off before the second try; doubled each time (429 and 5xx, timeouts, refused connections)")
    max_delay: PositiveDuration = Field(default="5m", description="longest back-off; a server's retry_after is honoured as given")
    timeout: PositiveDuration = Field(default="15s", description="one request's time limit")


class _Channel(_Strict):
    enabled: Enabled = Field(default=True, description="true, false, or auto: on when the variables it names and its recipients are set")
    quiet_hours: str | None = Field(default=None, description="HH:MM-HH:MM [zone], e.g. '22:00-07:00 Europe/London' (zone: the hub's timezone when omitted)")
    quiet_bypass: Severity | None = Field(default="critical", description="this severity and above are sent during quiet hours (null: nothing is)")
    max_queue: int = Field(default=1000, ge=1, description="notifications waiting for this channel; past it new ones are recorded failed")


class TelegramChannel(_Channel):
    kind: Literal["telegram"]
    token_env: str = Field(default="TELEGRAM_BOT_TOKEN", description="variable holding the bot token")
    chat_id: str | None = Field(default=None, description="chat id (-100… for a group) or @channelname")
    base_url: str = Field(default="https://api.telegram.org", description="Bot API root")

    @field_validator("chat_id", mode="before")
    @classmethod
    def _chat(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value


class EmailChannel(_Channel):
    kind: Literal["email"]
    host: str | None = Field(default=None, description="SMTP server")
    port: int = Field(default=587, ge=1, le=65535)
    security: Literal["starttls", "ssl", "none"] = Field(default="starttls", description="starttls (587), ssl (implicit TLS, 465) or none (a local relay)")
    username_env: str | None = Field(default="SMTP_USERNAME", description="variable holding the SMTP user (null: no AUTH)")
    password_env: str | None = Field(default="SMTP_PASSWORD", description="variable holding the SMTP password")
    sender: str | None = Field(default=None, description="From: address")
    to: list[str] = Field(default_factory=list, description="recipients (a list, or one comma-separated string)")
    ca_file: str | None = Field(default=None, description="CA bundle to verify the server's certificate (default: the system's)")
    subject_prefix: str = "[fxflow]"

    @field_validator("to", mode="before")
    @classmethod
    def _to(cls, value: Any) -> Any:
        if value is None:
            return []
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value


class SmsChannel(_Channel):
    kind: Literal["sms"]
    account_sid_env: str = Field(default="TWILIO_ACCOUNT_SID", description="variable holding the Account SID (AC…)")
    auth_token_env: str = Field(default="TWILIO_AUTH_TOKEN", description="variable holding the Auth Token")
    sender: str | None = Field(default=None, description="From: a Twilio number (E.164) or sender id")
    messaging_service_sid: str | None = Field(default=None, description="MG…: send through a Messaging Service instead of From")
    to: str | None = Field(default=None, description="recipient phone number (E.164)")
    base_url: str = Field(default="https://api.twilio.com", description="REST API root")


class LogChannel(_Channel):
    """Lines in the process log (logger ``fxflow.<service>``): INFO for info, WARNING for warning and critical."""

    kind: Literal["log"]


class FileChannel(_Channel):
    kind: Literal["file"]
    path: str = Field(default="notifications.log", description="file the lines are appended to (relative: in the service's folder, <data_dir>/services/<service>/)")


Channel = Annotated[TelegramChannel | EmailChannel | SmsChannel | LogChannel | FileChannel, Field(discriminator="kind")]
NETWORK_KINDS = ("telegram", "email", "sms")


class Rule(_Strict):
    events: list[EventKind] | None = Field(default=None, description="alert, training, backtest, fill (null: all)")
    types: list[str] | None = Field(default=None, description="event types: alert types, training_completed, training_failed, backtest_completed, backtest_failed, fill (null: all)")
    symbols: list[str] | None = Field(default=None, description="only events about these symbols (null: all)")
    min_severity: Severity = "info"
    channels: list[str] = Field(min_length=1, description="channels (names under `channels`) the matching events go to")


class NotificationHubParams(_Strict):
    timezone: str = Field(default="UTC", description="zone of quiet hours that name none, and of digest times")
    channels: dict[str, Channel] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list, description="every matching rule adds its channels; an event no rule matches is not sent")
    rate_limits: dict[str, str] = Field(default_factory=dict, description="per event type, COUNT/DURATION per channel (`default` for the others), e.g. {default: 20/1h, fill: 10/10m}")
    dedup_window: Duration = Field(default="10m", description="the same event (type, source, symbol or run, severity) again within this is dropped (0s: off)")
    digest_check: PositiveDuration = Field(default="1m", description="how often held notifications are checked for release (event time)")
    retry_check: PositiveDuration = Field(default="1s", description="how often deliveries waiting to retry are checked (a retry is at most this late)")
    retry: Retry = Field(default_factory=Retry)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        zone(value)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _references(cls, data: Any, handler: Any) -> NotificationHubParams:
        """Rules name declared channels, quiet hours and rate limits parse: each error points at its very field. These
        checks read the raw mapping too, so a declaration with a field error and a bad reference shows both at once."""
        try:
            params = handler(data)
        except ValidationError as exc:
            found = [InitErrorDetails(type=PydanticCustomError(e["type"], _escaped(e["msg"])), loc=e["loc"], input=e["input"])
                     for e in exc.errors()]  # fmt: skip
            seen = {e["loc"] for e in exc.errors()}
            found += [e for e in _reference_errors(data) if e["loc"] not in seen]
            raise ValidationError.from_exception_data(cls.__name__, found) from None
        errors = _reference_errors(params.model_dump())
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return params


def _escaped(message: str) -> str:
    return message.replace("{", "{{").replace("}", "}}")


def _reference_errors(data: Any) -> list[InitErrorDetails]:
    """The cross-field errors of a declaration (validated, or raw: whatever of it can be read)."""
    errors: list[InitErrorDetails] = []
    if not isinstance(data, dict):
        return errors

    def error(kind: str, message: str, loc: tuple[str | int, ...], got: Any) -> None:
        errors.append(InitErrorDetails(type=PydanticCustomError(kind, _escaped(message)), loc=loc, input=got))

    channels = data.get("channels")
    channels = channels if isinstance(channels, dict) else {}
    declared = sorted(str(name) for name in channels)
    rules = data.get("rules")
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        names = rule.get("channels") if isinstance(rule, dict) else None
        for j, name in enumerate(names if isinstance(names, list) else []):
            if isinstance(name, str) and name not in channels:
                close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                message = f"rule names channel {name!r}, which is not declared under channels (declared: {', '.join(declared) or 'none'}){hint}"
                error("unknown_channel", message, ("rules", i, "channels", j), name)
    timezone = data.get("timezone", "UTC")
    try:
        zone(timezone)
    except (ValueError, TypeError):
        timezone = None  # its own field error says so; quiet hours that name no zone cannot be checked
    for name, channel in channels.items():
        quiet = channel.get("quiet_hours") if isinstance(channel, dict) else None
        if isinstance(quiet, str) and (timezone is not None or len(quiet.split()) > 1):
            try:
                QuietHours.parse(quiet, timezone or "UTC")
            except ValueError as exc:
                error("quiet_hours", str(exc), ("channels", name, "quiet_hours"), quiet)
    limits = data.get("rate_limits")
    for type_, text in (limits.items() if isinstance(limits, dict) else ()):
        if isinstance(text, str):
            try:
                RateLimit.parse(text)
            except ValueError as exc:
                error("rate_limit", str(exc), ("rate_limits", type_), text)
    return errors


SPEC = NodeSpec(
    name="notification_hub",
    factory="nodes.notifications.node:NotificationHub",
    description=(
        "Routes alerts, training and backtest outcomes and fills to Telegram, e-mail, SMS, the log or a file by rules "
        "(severity, quiet hours, rate limits, dedup, digests); retries with back-off, one queue per channel; every "
        "outcome recorded."
    ),
    params=NotificationHubParams,
    inputs={
        "alerts": Port("alert.v1", "alerts of any service", required=False),
        "training": Port("training_status.v1", "training runs that completed or failed", required=False),
        "backtests": Port("backtest_status.v1", "backtests that completed or failed", required=False),
        "fills": Port("order_event.v1", "filled orders", required=False),
    },
    outputs={
        "deliveries": Port("notification_delivery.v1", "each notification per channel: sent, failed (with the reason), suppressed, duplicate"),
    },
    role="server",
)
"""``role: server``: ``run()`` holds the channels' delivery queues, which never keep a bounded run alive."""
