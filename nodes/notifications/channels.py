"""The channels' clients: Telegram Bot API, SMTP with STARTTLS, Twilio Messages, the process log, a file.

Each sender makes one attempt per :meth:`send` and raises :class:`DeliveryError` saying whether a
retry may help (429, 5xx, a refused or dropped connection, a timeout, SMTP 4xx) and, when the
server said so, after how long (Telegram's ``parameters.retry_after``); the delivery loop
(:mod:`nodes.notifications.delivery`) owns retries and back-off.

Secrets come from the environment and go through :class:`Secrets`: every reason a sender
raises is masked before it is logged or recorded (a Telegram URL holds the bot token).
"""

from __future__ import annotations

import base64
import logging
import smtplib
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol

import orjson

from nodes.marketdata.http import HttpClient, HttpError, RetryPolicy, redact

ANY_STATUS = tuple(range(100, 600))
TELEGRAM_MAX = 4096
TWILIO_MAX = 1600


class DeliveryError(Exception):
    """One attempt failed: ``reason`` (already masked by the caller's :class:`Secrets`), whether to retry, when."""

    def __init__(self, reason: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class Receipt:
    provider_id: str | None = None
    """The provider's id of what it accepted: Telegram message_id, Twilio SM… sid, the e-mail's Message-ID."""
    detail: str | None = None
    """Something a person should know although it was sent (recipients an SMTP server refused)."""


class Secrets:
    """The secret values of the enabled channels, masked (``***``) out of any text before it is logged or stored."""

    def __init__(self) -> None:
        self._values: set[str] = set()

    def add(self, value: str | None) -> str | None:
        if value and len(value) >= 4:
            self._values.add(value)
        return value

    def mask(self, text: str) -> str:
        text = redact(text) if "://" in text else text
        for value in sorted(self._values, key=len, reverse=True):
            text = text.replace(value, "***")
        return text


@dataclass(frozen=True, slots=True)
class Message:
    """What a sender sends: ``title`` is the e-mail subject, ``text`` the body."""

    title: str
    text: str
    severity: str
    type: str
    ts: int


class Sender(Protocol):
    kind: str
    inline: bool
    """True for local channels (log, file): delivered in the handler, no queue, no retry."""
    recipient: str | None

    async def send(self, message: Message) -> Receipt: ...

    async def close(self) -> None: ...


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _excerpt(body: bytes, limit: int = 200) -> str:
    return " ".join(body.decode("utf-8", "replace").split())[:limit] or "(empty body)"


def _retryable_status(status: int) -> bool:
    return status in (408, 425, 429) or status >= 500


class TelegramSender:
    """``POST {base_url}/bot<token>/sendMessage`` with a JSON body; plain text (no parse_mode, so nothing to escape)."""

    kind = "telegram"
    inline = False

    def __init__(self, *, base_url: str, token: str, chat_id: str, timeout: float) -> None:
        self.recipient = chat_id
        self._url = f"{base_url.rstrip('/')}/bot{token}/sendMessage"
        self._client = HttpClient(timeout=timeout, retry=RetryPolicy(attempts=1))

    async def send(self, message: Message) -> Receipt:
        body = {"chat_id": self.recipient, "text": _truncate(message.text, TELEGRAM_MAX), "disable_notification": message.severity == "info"}
        try:
            status, raw = await self._client.request("POST", self._url, json=body, ok=ANY_STATUS)
        except HttpError as exc:
            raise DeliveryError(f"Telegram unreachable: {exc}", retryable=True) from None
        data = _json(raw)
        if 200 <= status < 300 and data is not None and data.get("ok"):
            result = data.get("result") or {}
            return Receipt(str(result["message_id"]) if "message_id" in result else None)
        description = (data or {}).get("description") or _excerpt(raw)
        params = (data or {}).get("parameters") or {}
        retry_after = params.get("retry_after") if isinstance(params, dict) else None
        retry_after = float(retry_after) if isinstance(retry_after, (int, float)) else None
        raise DeliveryError(f"Telegram HTTP {status}: {description}", retryable=_retryable_status(status), retry_after=retry_after)

    async def close(self) -> None:
        await self._client.close()


class SmsSender:
    """Twilio ``POST {base_url}/2010-04-01/Accounts/{AccountSid}/Messages.json``, form-encoded, HTTP Basic auth."""

    kind = "sms"
    inline = False

    def __init__(
        self, *, base_url: str, account_sid: str, auth_token: str, to: str, sender: str | None, messaging_service_sid: str | None, timeout: float
    ) -> None:
        self.recipient = to
        self._url = f"{base_url.rstrip('/')}/2010-04-01/Accounts/{account_sid}/Messages.json"
        credentials = base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
        self._headers = {"Authorization": f"Basic {credentials}"}
        self._origin = {"MessagingServiceSid": messaging_service_sid} if messaging_service_sid else {"From": sender or ""}
        self._client = HttpClient(timeout=timeout, retry=RetryPolicy(attempts=1))

    async def send(self, message: Message) -> Receipt:
        form = {"To": self.recipient, **self._origin, "Body": _truncate(message.text, TWILIO_MAX)}
        try:
            status, raw = await self._client.request("POST", self._url, data=form, headers=self._headers, ok=ANY_STATUS)
        except HttpError as exc:
            raise DeliveryError(f"Twilio unreachable: {exc}", retryable=True) from None
        data = _json(raw)
        if 200 <= status < 300:
            return Receipt(str(data["sid"]) if data and data.get("sid") else None)
        code = (data or {}).get("code")
        text = (data or {}).get("message") or _excerpt(raw)
        retryable = _retryable_status(status) or code == 20429
        raise DeliveryError(f"Twilio HTTP {status}" + (f" (error {code})" if code else "") + f": {text}", retryable=retryable)

    async def close(self) -> None:
        await self._client.close()


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    host: str
    port: int
    security: str
    username: str | None
    password: str | None
    ca_file: str | None
    timeout: float


def send_mail(settings: SmtpSettings, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
    """One SMTP session (blocking; run in a worker thread): connect, STARTTLS, AUTH, send. Returns refused recipients."""
    context = ssl.create_default_context(cafile=settings.ca_file)
    smtp: smtplib.SMTP
    if settings.security == "ssl":
        smtp = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    else:
        smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    with smtp:
        smtp.ehlo()
        if settings.security == "starttls":
            if not smtp.has_extn("starttls"):
                raise smtplib.SMTPNotSupportedError("the server does not offer STARTTLS; credentials are never sent in clear")
            smtp.starttls(context=context)
            smtp.ehlo()
        if settings.username:
            smtp.login(settings.username, settings.password or "")
        return smtp.send_message(message)


def _smtp_reason(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"SMTP {code}: {' '.join(text.split())}"


def smtp_failure(exc: BaseException) -> DeliveryError:
    """An SMTP exception as a delivery failure: 4xx replies and lost connections are worth a retry, 5xx are not."""
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{rcpt}: {_smtp_reason(code, text)}" for rcpt, (code, text) in exc.recipients.items())
        return DeliveryError(f"every recipient refused: {detail}", retryable=bool(codes) and all(400 <= c < 500 for c in codes))
    if isinstance(exc, smtplib.SMTPResponseException):
        return DeliveryError(_smtp_reason(exc.smtp_code, exc.smtp_error), retryable=400 <= exc.smtp_code < 500)
    if isinstance(exc, smtplib.SMTPNotSupportedError):
        return DeliveryError(f"SMTP: {exc}", retryable=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return DeliveryError(f"SMTP TLS: the server's certificate was refused: {exc.verify_message or exc}", retryable=False)
    if isinstance(exc, (smtplib.SMTPServerDisconnected, OSError)):
        return DeliveryError(f"SMTP server unreachable: {type(exc).__name__}: {exc}", retryable=True)
    return DeliveryError(f"SMTP: {type(exc).__name__}: {exc}", retryable=False)


class EmailSender:
    """SMTP (STARTTLS on 587 by default) through :mod:`smtplib` in a worker thread (``ctx.offload``)."""

    kind = "email"
    inline = False

    def __init__(
        self,
        *,
        settings: SmtpSettings,
        sender: str,
        to: list[str],
        subject_prefix: str,
        offload: Callable[..., Awaitable[Any]],
    ) -> None:
        self.recipient = ", ".join(to)
        self._settings = settings
        self._sender = sender
        self._to = to
        self._prefix = subject_prefix
        self._offload = offload

    def build(self, message: Message) -> EmailMessage:
        mail = EmailMessage()
        mail["From"] = self._sender
        mail["To"] = ", ".join(self._to)
        mail["Subject"] = f"{self._prefix} {message.title}".strip()
        mail["Date"] = formatdate(message.ts / 1000.0, usegmt=True)
        mail["Message-ID"] = make_msgid(domain=self._sender.rpartition("@")[2] or None)
        mail.set_content(message.text)
        return mail

    async def send(self, message: Message) -> Receipt:
        mail = self.build(message)
        try:
            refused = await self._offload(send_mail, self._settings, mail)
        except Exception as exc:
            raise smtp_failure(exc) from None
        detail = None
        if refused:
            detail = "refused by the server for " + "; ".join(f"{r}: {_smtp_reason(c, t)}" for r, (c, t) in refused.items())
        return Receipt(str(mail["Message-ID"]), detail)

    async def close(self) -> None:
        return None


class LogSender:
    """A line in the process log (logger ``fxflow.<service>``): INFO for info, WARNING for warning and critical."""

    kind = "log"
    inline = True
    recipient = None

    def __init__(self, logger: logging.Logger, channel: str) -> None:
        self._log = logger
        self._channel = channel

    async def send(self, message: Message) -> Receipt:
        level = logging.INFO if message.severity == "info" else logging.WARNING
        self._log.log(level, "notification (%s, %s): %s", self._channel, message.severity, message.text.replace("\n", " | "))
        return Receipt()

    async def close(self) -> None:
        return None


class FileSender:
    """Lines appended to a file: ``<UTC time> <SEVERITY> <type>: <text>`` (a digest's further lines indented)."""

    kind = "file"
    inline = True

    def __init__(self, path: Path, shown: str) -> None:
        self.recipient = shown
        """The path as configured (relative to the service's folder): the same in every data_dir."""
        self._path = path
        self._file: Any = None

    async def send(self, message: Message) -> Receipt:
        when = datetime.fromtimestamp(message.ts / 1000.0, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = message.text.replace("\n", "\n    ")
        try:
            if self._file is None:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self._path.open("a", encoding="utf-8")
            self._file.write(f"{when} {message.severity.upper()} {message.type}: {text}\n")
            self._file.flush()
        except OSError as exc:
            raise DeliveryError(f"cannot write {self._path}: {exc.strerror or exc}", retryable=False) from None
        return Receipt()

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
