"""notification-hub: alerts, training and backtest outcomes and fills, routed to people by the topology's rules.

Each event is matched against ``params.rules``; for every channel it reaches, that channel's
:class:`~nodes.notifications.policy.ChannelPolicy` decides on the clock's time: ``duplicate``
(within the dedup window), ``suppressed`` (quiet hours, rate limit: held for the digest) or send.
Local channels (log, file) are written in the handler; each network channel (Telegram, e-mail,
SMS) has its own queue and task (:class:`~nodes.notifications.delivery.ChannelWorker`), run by
``run()``, so a channel that is down delays nothing else. Every decision and every outcome is one
``notification_delivery.v1`` on port ``deliveries`` (table ``notifications``): a failure with its
reason, secrets masked.

Held notifications are released as one digest per channel by the ``digest_check`` timer (and
before each event), once the channel's quiet hours are over and the rate windows that held them
have ended. Dedup keys, rate windows, held notifications and undelivered queues are kept in the
node's snapshot, so a restart neither forgets a digest nor drops what was queued.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path
from typing import Any

from framework.durations import parse_ms, parse_seconds
from framework.errors import UserError
from framework.node import Node, every, handles
from nodes.notifications import events
from nodes.notifications.channels import (
    EmailSender,
    FileSender,
    LogSender,
    Secrets,
    Sender,
    SmsSender,
    SmtpSettings,
    TelegramSender,
)
from nodes.notifications.delivery import Alarm, Backoff, ChannelWorker, Note, Outcome, deliver
from nodes.notifications.policy import RANK, ChannelPolicy, QuietHours, RateLimit, digest_text
from nodes.notifications.spec import NETWORK_KINDS, EmailChannel, NotificationHubParams, SmsChannel, TelegramChannel

MAX_ID = 128


def _id(text: str) -> str:
    if len(text) <= MAX_ID:
        return text
    return text[: MAX_ID - 17] + "~" + hashlib.sha256(text.encode()).hexdigest()[:16]


class NotificationHub(Node[NotificationHubParams]):
    state_version = 1

    def restore(self, state: Any) -> None:
        self._restored = state if isinstance(state, dict) else None

    async def on_start(self) -> None:
        params = self.params
        self.secrets = Secrets()
        self.senders: dict[str, Sender] = {}
        self.kinds: dict[str, str] = {}
        for name, channel in params.channels.items():
            sender = self._sender(name, channel)
            if sender is not None:
                self.senders[name] = sender
                self.kinds[name] = channel.kind
        limits = {t: RateLimit.parse(text) for t, text in params.rate_limits.items()}
        dedup_ms = parse_ms(params.dedup_window) or 0
        self.policies = {
            name: ChannelPolicy(
                quiet=QuietHours.parse(params.channels[name].quiet_hours, params.timezone) if params.channels[name].quiet_hours else None,
                quiet_bypass=params.channels[name].quiet_bypass,
                limits=limits,
                dedup_ms=dedup_ms,
            )
            for name in self.senders
        }
        retry = params.retry
        self.backoff = Backoff(retry.attempts, parse_seconds(retry.base_delay), parse_seconds(retry.max_delay))
        self.alarm = Alarm(self.ctx.clock)
        self.workers = {
            name: ChannelWorker(name, sender, self.backoff, self.alarm, self.secrets, self._delivered, params.channels[name].max_queue)
            for name, sender in self.senders.items()
            if not sender.inline
        }
        self._digests = 0
        self._stopped = asyncio.Event()
        state, self._restored = getattr(self, "_restored", None), None
        if state:
            self._take_back(state)
        on = ", ".join(f"{n} ({self.kinds[n]})" for n in self.senders) or "none"
        self.ctx.log.info("notification channels on: %s", on)

    # --- channels ------------------------------------------------------------------------

    def _secret(self, variable: str | None) -> str | None:
        """The value of ``variable`` (checked set before), registered to be masked wherever it could show."""
        return self.secrets.add(os.environ.get(variable, "").strip() or None) if variable else None

    def _sender(self, name: str, channel: Any) -> Sender | None:
        """The channel's sender, or None when it is off (``enabled: false``, or ``auto`` without its settings)."""
        if channel.enabled is False:
            return None
        auto = channel.enabled == "auto"
        timeout = parse_seconds(self.params.retry.timeout)
        if isinstance(channel, TelegramChannel):
            needs = {"chat_id": channel.chat_id}
            secrets = [channel.token_env]
        elif isinstance(channel, EmailChannel):
            needs = {"host": channel.host, "sender": channel.sender, "to": channel.to}
            secrets = [v for v in (channel.username_env, channel.password_env) if v]
        elif isinstance(channel, SmsChannel):
            needs = {"to": channel.to, "sender or messaging_service_sid": channel.sender or channel.messaging_service_sid}
            secrets = [channel.account_sid_env, channel.auth_token_env]
        elif channel.kind == "log":
            return LogSender(self.ctx.log, name)
        else:
            path = Path(channel.path)
            return FileSender(path if path.is_absolute() else Path(self.ctx.data_dir) / path, channel.path)
        missing = [f"params {field}" for field, value in needs.items() if not value]
        missing += [variable for variable in secrets if not os.environ.get(variable, "").strip()]
        if missing:
            if auto:
                self.ctx.log.info("notification channel %s (%s) is off: %s not set (enabled: auto)", name, channel.kind, ", ".join(missing))
                return None
            raise UserError(f"service {self.ctx.service}: channel {name} ({channel.kind}) is enabled but {', '.join(missing)} not set")
        if isinstance(channel, TelegramChannel):
            token = self._secret(channel.token_env)
            assert token is not None and channel.chat_id is not None
            return TelegramSender(base_url=channel.base_url, token=token, chat_id=channel.chat_id, timeout=timeout)
        if isinstance(channel, EmailChannel):
            settings = SmtpSettings(
                host=str(channel.host),
                port=channel.port,
                security=channel.security,
                username=self._secret(channel.username_env),
                password=self._secret(channel.password_env),
                ca_file=channel.ca_file,
                timeout=timeout,
            )
            return EmailSender(settings=settings, sender=str(channel.sender), to=list(channel.to), subject_prefix=channel.subject_prefix,
                               offload=self.ctx.offload)  # fmt: skip
        sid = self._secret(channel.account_sid_env)
        token = self._secret(channel.auth_token_env)
        assert sid is not None and token is not None and channel.to is not None
        return SmsSender(base_url=channel.base_url, account_sid=sid, auth_token=token, to=channel.to, sender=channel.sender,
                         messaging_service_sid=channel.messaging_service_sid, timeout=timeout)  # fmt: skip

    async def run(self) -> None:
        """The network channels' queues, each delivered by its own task until the node stops."""
        tasks = [asyncio.create_task(w.run(), name=f"{self.ctx.service}.{n}") for n, w in self.workers.items()]
        try:
            if tasks:
                await asyncio.gather(*tasks)
            else:
                await self._stopped.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def idle(self) -> None:
        """Return once every channel's queue is empty (tests; a person waiting for the last message)."""
        for worker in self.workers.values():
            await worker.idle()

    async def on_stop(self) -> None:
        self._stopped.set()
        for sender in self.senders.values():
            await sender.close()

    # --- inputs --------------------------------------------------------------------------

    @handles("alerts")
    async def on_alert(self, msg: dict, origin: str) -> None:
        await self._route(events.from_alert(msg, origin))

    @handles("training")
    async def on_training(self, msg: dict, origin: str) -> None:
        if msg["status"] in ("completed", "failed"):
            await self._route(events.from_training(msg, origin))

    @handles("backtests")
    async def on_backtest(self, msg: dict, origin: str) -> None:
        if msg["status"] in ("completed", "failed"):
            await self._route(events.from_backtest(msg, origin))

    @handles("fills")
    async def on_fill(self, msg: dict, origin: str) -> None:
        if msg["status"] == "filled":
            await self._route(events.from_fill(msg, origin))

    def channels_for(self, event: events.Event) -> list[str]:
        """The channels (on) of every rule ``event`` matches, in the order the rules name them."""
        out: list[str] = []
        for rule in self.params.rules:
            if rule.events is not None and event.kind not in rule.events:
                continue
            if rule.types is not None and event.type not in rule.types:
                continue
            if rule.symbols is not None and event.symbol not in rule.symbols:
                continue
            if RANK[event.severity] < RANK[rule.min_severity]:
                continue
            out.extend(c for c in rule.channels if c in self.senders and c not in out)
        return out

    async def _route(self, event: events.Event) -> None:
        now = self.ctx.clock.now_ms()
        await self._release(now)
        for channel in self.channels_for(event):
            note = Note(_id(f"{event.id}:{channel}"), now, channel, event.kind, event.type, event.severity, event.title, event.text,
                        event.symbol, event.source_subject)  # fmt: skip
            decision = self.policies[channel].decide(
                key=event.key, type_=event.type, severity=event.severity, text=event.text, symbol=event.symbol, now=now
            )
            if decision.status == "send":
                await self._send(note)
            else:
                await self._publish(note, decision.status, reason=decision.reason)

    async def _send(self, note: Note) -> None:
        sender = self.senders[note.channel]
        if sender.inline:
            await self._delivered(note, await deliver(sender, note, self.backoff, self.alarm, self.secrets))
        elif not self.workers[note.channel].put(note):
            limit = self.workers[note.channel].max_queue
            await self._delivered(note, Outcome(False, 0, f"not sent: {limit} notifications already wait for this channel (max_queue)"))

    async def _delivered(self, note: Note, outcome: Outcome) -> None:
        if not outcome.sent:
            self.ctx.log.warning("notification %s on %s failed: %s", note.notification_id, note.channel, outcome.reason)
        now = self.ctx.clock.now_ms()
        await self._publish(note, "sent" if outcome.sent else "failed", reason=outcome.reason, attempts=outcome.attempts,
                            delivered_ts=max(now, note.ts), provider_id=outcome.provider_id)  # fmt: skip

    async def _publish(self, note: Note, status: str, **extra: Any) -> None:
        row: dict[str, Any] = {
            "notification_id": note.notification_id,
            "ts": note.ts,
            "channel": note.channel,
            "kind": self.kinds[note.channel],
            "status": status,
            "event": note.event,
            "type": note.type,
            "severity": note.severity,
            "text": note.text,
        }
        recipient = self.senders[note.channel].recipient
        optional = {"recipient": recipient, "symbol": note.symbol, "source_subject": note.source_subject, "digest": note.digest, **extra}
        row.update((k, v) for k, v in optional.items() if v is not None)
        await self.ctx.publish("deliveries", row)

    @every("retry_check")
    async def ring(self) -> None:
        """Deliveries waiting to retry whose time has come go on."""
        self.alarm.ring()

    # --- digests -------------------------------------------------------------------------

    @every("digest_check")
    async def release_digests(self) -> None:
        await self._release(self.ctx.clock.now_ms())

    async def _release(self, now: int) -> None:
        for channel, policy in self.policies.items():
            parts = policy.release(now)
            if not parts:
                continue
            zone_name = policy.quiet.zone if policy.quiet is not None else self.params.timezone
            severity, text = digest_text(channel, parts, zone_name)
            count = sum(p.count for p in parts)
            self._digests += 1
            note = Note(_id(f"digest:{channel}:{now}:{self._digests}"), now, channel, "digest", "digest", severity,
                        f"digest: {count} held back", text, digest=count)  # fmt: skip
            await self._send(note)

    # --- state ---------------------------------------------------------------------------

    def snapshot(self) -> Any:
        return {
            "policies": {name: policy.snapshot() for name, policy in self.policies.items()},
            "queued": {name: [n.to_json() for n in worker.queue] for name, worker in self.workers.items() if worker.queue},
            "digests": self._digests,
        }

    def _take_back(self, state: dict[str, Any]) -> None:
        """Policies and queues of the last run, for the channels that are still on (others are dropped, logged)."""
        self._digests = int(state.get("digests", 0))
        for name, policy_state in state.get("policies", {}).items():
            if name in self.policies:
                self.policies[name].restore(policy_state)
        for name, notes in state.get("queued", {}).items():
            worker = self.workers.get(name)
            if worker is None:
                self.ctx.log.warning("%d queued notification(s) for channel %s dropped: the channel is off now", len(notes), name)
                continue
            for raw in notes:
                worker.put(Note(**raw))
