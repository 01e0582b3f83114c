"""FX201, FX202, FX204, FX205: NATS subjects and Kafka topics as seen by publishers and subscribers."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Sequence

from framework.control import subject as control_subject
from framework.deadletter_subjects import SUBJECT_PREFIX as DEADLETTER
from framework.lint.context import Link, LintContext, Wire, did_you_mean
from framework.lint.findings import Finding
from framework.subjects import check_pattern, check_subject, covers
from framework.topology.templates import as_pattern
from framework.wiring import Endpoint

CONVENTION = "{domain}.{entity}[.{detail}]"


def _published_names(ctx: LintContext) -> list[str]:
    return sorted({w.endpoint.name for w in ctx.wires if w.endpoint.direction == "out"})


def _produced_topics(ctx: LintContext) -> list[str]:
    return sorted({e.name for e in ctx.wiring.endpoints if e.kind == "kafka" and e.direction == "out"})


def _nearby(name: str, published: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, published, n=3, cutoff=0.5)
    return f"; published nearby: {', '.join(close)}" if close else ""


def _runtime_subjects(ctx: LintContext) -> list[str]:
    """What the runtime itself publishes: ``deadletter.<service>`` for every service; and what an operator's
    ``fxrun`` verb sends a service: ``control.<service>`` (:mod:`framework.control`)."""
    subjects = (s for name in ctx.topology.services for s in (f"{DEADLETTER}.{name}", control_subject(name)))
    return [s for s in subjects if check_subject(s) is None]


def unreachable(ctx: LintContext) -> Iterator[Finding]:
    """FX201: a subscription or consumed topic that no declared service (enabled or not) publishes."""
    published = _published_names(ctx)
    runtime = _runtime_subjects(ctx)
    for wire in ctx.wires:
        ep = wire.endpoint
        if ep.direction != "in" or not wire.patterns or ep.missing_variables or ctx.reached(ep):
            continue
        if any(ctx.intersects(p, s) for p in wire.patterns for s in runtime):
            continue
        message = (
            f"subscription {ep.name!r} (input {ep.port!r}) matches no subject any service publishes"
            f"{_nearby(ep.name, published)}; fix the pattern or add a service that publishes it"
        )
        yield ctx.error("FX201", ep.service, message, ctx.where(ep))
    produced = _produced_topics(ctx)
    for ep in ctx.wiring.select(direction="in", kind="kafka"):
        if ctx.reached(ep):
            continue
        message = (
            f"input {ep.port!r} consumes Kafka topic {ep.name!r}, which no service produces"
            f"{did_you_mean(ep.name, produced)}; fix the topic name or add a producer"
        )
        yield ctx.error("FX201", ep.service, message, ctx.where(ep))


def _is_deadletter(wire: Wire) -> bool:
    return all(p.split(".", 1)[0] == DEADLETTER for p in wire.patterns)


def _catch_all(ctx: LintContext, wire: Wire) -> bool:
    """A subscription that starts with a wildcard and matches every declared domain (``*.>``, ``>``)."""
    roots = _domain_patterns(ctx)
    return bool(roots) and any(
        p.split(".", 1)[0] in ("*", ">") and all(covers(p, r) for r in roots) for p in wire.patterns
    )


def _consumers(ctx: LintContext) -> dict[int, list[Wire]]:
    """Subscriber wires per publishing endpoint (by identity)."""
    wire_of = {id(w.endpoint): w for w in ctx.wires}
    out: dict[int, list[Wire]] = {}
    for link in ctx.nats_links:
        out.setdefault(id(link.publisher), []).append(wire_of[id(link.subscriber)])
    return out


def unconsumed(ctx: LintContext) -> Iterator[Finding]:
    """FX202: a NATS publication nobody subscribes to (dead letters and Kafka archives are exempt).

    A catch-all subscription (``*.>``) does not count as a consumer: it matches every
    publication, so counting it would silence this rule for the whole topology.
    """
    consumers = _consumers(ctx)
    for wire in ctx.wires:
        ep = wire.endpoint
        if ep.direction != "out" or not wire.patterns or _is_deadletter(wire):
            continue
        subs = consumers.get(id(ep), [])
        wide = [s for s in subs if _catch_all(ctx, s)]
        if len(wide) < len(subs):
            continue
        if wide:
            names = ", ".join(sorted({f"{s.endpoint.name!r} of {s.endpoint.service}" for s in wide}))
            message = (
                f"only the catch-all subscription {names} matches {ep.name!r} (output {ep.port!r}), and a "
                "catch-all consumes nothing in particular; add a subscriber that needs it, fix the subject, "
                "or remove the binding"
            )
        else:
            message = (
                f"nobody subscribes to {ep.name!r} (output {ep.port!r}); add a subscriber, "
                "fix the subject, or remove the binding"
            )
        yield ctx.warning("FX202", ep.service, message, ctx.where(ep))


def _narrower(ctx: LintContext, sub: Endpoint, own: Sequence[Wire]) -> str | None:
    """``x.>`` → ``x.*`` when that stops matching the service's own outputs but keeps the others."""
    if not sub.name.endswith(".>"):
        return None
    candidate = sub.name[:-1] + "*"
    wide = as_pattern(candidate)
    if check_pattern(wide) is not None:
        return None
    if any(ctx.intersects(wide, p) for w in own for p in w.patterns):
        return None
    others = [w for w in ctx.wires if w.endpoint.direction == "out" and w.endpoint.service != sub.service]
    if not any(ctx.intersects(wide, p) for w in others for p in w.patterns):
        return None
    return candidate


def _self_nats(ctx: LintContext, link: Link) -> Finding:
    pub, sub = link.publisher, link.subscriber
    own = [w for w in ctx.wires if w.endpoint.service == sub.service and w.endpoint.direction == "out"]
    better = _narrower(ctx, sub, own)
    fix = f"narrow it to {better!r}" if better else "narrow the subscription or publish under another subject"
    message = (
        f"subscription {sub.name!r} (input {sub.port!r}) also matches its own output {pub.name!r} "
        f"(port {pub.port!r}), so the service would consume what it publishes; {fix}"
    )
    return ctx.error("FX204", sub.service, message, ctx.where(sub))


def self_loops(ctx: LintContext) -> Iterator[Finding]:
    """FX204: a service receiving its own output (a NATS self-match or a topic it both writes and reads)."""
    for link in ctx.links:
        pub, sub = link.publisher, link.subscriber
        if pub.service != sub.service:
            continue
        if sub.kind == "nats":
            yield _self_nats(ctx, link)
        else:
            message = (
                f"input {sub.port!r} consumes Kafka topic {sub.name!r}, which the service itself produces "
                f"(port {pub.port!r}); consume another topic or split the service"
            )
            yield ctx.error("FX204", sub.service, message, ctx.where(sub))


# ---------------------------------------------------------------- FX205


def _literal_wildcard(ep: Endpoint) -> str | None:
    for pos, tok in enumerate(ep.name.split("."), 1):
        if tok in ("*", ">"):
            return (
                f"publication {ep.name!r} has wildcard {tok!r} at position {pos}; publish to a concrete "
                "subject (use a {variable} for the varying part) and let subscribers use wildcards"
            )
    return None


def _malformed(ep: Endpoint) -> str | None:
    candidates = ep.subjects or (as_pattern(ep.name),)
    for subject in candidates:
        reason = check_pattern(subject)
        if reason is not None:
            return f"malformed subject {ep.name!r}: {reason}; fix the template"
    return None


def _domain_patterns(ctx: LintContext) -> list[str]:
    return [f"{d}.>" for d in ctx.topology.domains if check_pattern(f"{d}.>") is None]


def _suggest(subject: str, domains: Sequence[str]) -> str:
    """``"use 'market.external.>' or "`` for ``external.>``; empty when nothing is close."""
    head, _, rest = subject.partition(".")
    fixed = None
    for d in domains:
        if d.endswith(f".{head}"):
            fixed = d
            break
    else:
        close = difflib.get_close_matches(head, domains, n=1, cutoff=0.6)
        fixed = close[0] if close else None
    if fixed is None:
        return ""
    return f"use {fixed + '.' + rest if rest else fixed!r} or "


def _convention(ep: Endpoint, subject: str, domains: Sequence[str]) -> str:
    listed = ", ".join(domains)
    if subject in domains:
        return f"subject {ep.name!r} is only a domain; add an entity: {CONVENTION}"
    head = subject.split(".", 1)[0]
    if head in ("*", ">") and ep.direction == "out":
        return f"publication {ep.name!r} must start with a declared domain ({listed}), not a run-time value"
    expands = "" if ep.name.split(".", 1)[0] == head else f" (it expands to {subject!r})"
    return (
        f"subject {ep.name!r}{expands} does not start with a declared domain ({listed}); "
        f"{_suggest(ep.name, domains)}add the domain to `domains:` (format: {CONVENTION})"
    )


def _off_convention(ctx: LintContext, wire: Wire, roots: Sequence[str]) -> str | None:
    ep = wire.endpoint
    domains = list(ctx.topology.domains)
    if ep.direction == "out":
        if wire.wide is not None and any(covers(r, wire.wide) for r in roots):
            return None
        for p in wire.patterns or ((wire.wide,) if wire.wide else ()):
            if not any(covers(r, p) for r in roots):
                return _convention(ep, p, domains)
        return None
    for p in wire.patterns or ((wire.wide,) if wire.wide else ()):
        if not any(ctx.intersects(r, p) for r in roots):
            return _convention(ep, p, domains)
    return None


def malformed(ctx: LintContext) -> Iterator[Finding]:
    """FX205: malformed subjects and patterns, and subjects outside ``{domain}.{entity}[.{detail}]``.

    A subscription may start with a wildcard (``*.alert.*``) as long as it can match some
    domain; a publication must be concrete apart from run-time variables.
    """
    roots = _domain_patterns(ctx)
    for wire in ctx.wires:
        ep = wire.endpoint
        problem = (_literal_wildcard(ep) if ep.direction == "out" else None) or _malformed(ep)
        problem = problem or _off_convention(ctx, wire, roots)
        if problem:
            yield ctx.error("FX205", ep.service, problem, ctx.where(ep))
