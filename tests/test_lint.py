"""The topology lint: one test that triggers each rule and one that does not, plus the output API."""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from framework.contracts import ContractRegistry
from framework.lint import RULES, Finding, exit_code, findings_json, format_finding, lint
from framework.registry import NodeSpec, Port, Registry
from framework.topology.load import load_topology_file
from framework.topology.source import Location, SourceMap

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ContractRegistry.load(ROOT / "contracts")
DELETE = object()


# ---------------------------------------------------------------- test nodes


class CollectorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    pairs: list[str] | None = None
    batch: int = 100


class AggregatorParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeframes: list[str] | None = None
    window: int = Field(default=1, ge=1)


def _spec(name: str, role: str = "transform", params: type[BaseModel] | None = None, **ports: Any) -> NodeSpec:
    extra = {"params": params} if params else {}
    return NodeSpec(
        name=name,
        factory=f"tests.nodes:{name}",
        role=role,  # type: ignore[arg-type]
        inputs=ports.get("inputs", {}),
        outputs=ports.get("outputs", {}),
        **extra,
    )


SPECS = [
    _spec("tick_source", "source", CollectorParams, outputs={"ticks": Port("tick.v1")}),
    _spec("bar_aggregator", params=AggregatorParams, inputs={"ticks": Port("tick.v1")}, outputs={"bars": Port("bar.v1")}),
    _spec("feature_calc", inputs={"bars": Port("bar.v1")}, outputs={"features": Port("features.v1")}),
    _spec("predictor", inputs={"features": Port("features.v1")}, outputs={"signals": Port("signal.v1")}),
    _spec(
        "risk_gate",
        "risk_gate",
        inputs={"signals": Port("signal.v1")},
        outputs={"approved": Port("approved_signal.v1"), "decisions": Port("risk_decision.v1", required=False)},
    ),
    _spec("executor", "execution", inputs={"approved": Port("approved_signal.v1")}, outputs={"orders": Port("order_event.v1")}),
    _spec("monitor", "sink", inputs={"events": Port("any")}),
    _spec("archiver", "sink", inputs={"records": Port("any")}),
]


def make_registry(*extra: NodeSpec, load_errors: dict[str, str] | None = None) -> Registry:
    registry = Registry(load_errors=dict(load_errors or {}))
    for spec in (*SPECS, *extra):
        registry.register(spec)
    return registry


REGISTRY = make_registry()

CLEAN: dict[str, Any] = {
    "instruments": {
        "EURUSD": {"pip": 0.0001, "digits": 5},
        "XAUUSD": {"kind": "metal", "pip": 0.01, "digits": 2},
    },
    "timeframes": ["5m", "1h"],
    "variables": {"status": ["pending", "filled"]},
    "domains": ["ticks", "bars", "features", "signals", "orders", "risk", "market.external"],
    "kafka": {"bootstrap": ["localhost:9092"]},
    "stores": {
        "timescale": {"kind": "postgres", "url": "postgresql://localhost/fx", "options": {"retention_required": True}},
        "clickhouse": {"kind": "clickhouse", "url": "http://localhost:8123"},
    },
    "topics": {
        "tick_archive": {"partitions": 14, "retention": "1y", "key": "symbol", "contract": "tick.v1"},
        "risk_events_archive": {"partitions": 14, "retention": "7y", "contract": "risk_decision.v1"},
        "order_execution_archive": {"partitions": 14, "retention": "7y", "contract": "order_event.v1"},
    },
    "tables": {
        "live_ticks": {"store": "timescale", "contract": "tick.v1", "retention": "3d"},
        "historical_ticks": {"store": "clickhouse", "contract": "tick.v1"},
    },
    "services": {
        "collector": {
            "node": "tick_source",
            "phase": "data",
            "outputs": {"ticks": {"nats": "ticks.{symbol}", "kafka": "tick_archive", "tables": "live_ticks"}},
        },
        "bridge": {
            "node": "archiver",
            "phase": "data",
            "inputs": {"records": {"kafka": "tick_archive"}},
            "reads": ["live_ticks"],
        },
        "aggregator": {
            "node": "bar_aggregator",
            "phase": "data",
            "inputs": {"ticks": {"nats": "ticks.>"}},
            "outputs": {"bars": {"nats": "bars.{symbol}.{timeframe}"}},
        },
        "features": {
            "node": "feature_calc",
            "phase": "data",
            "inputs": {"bars": {"nats": "bars.>"}},
            "outputs": {"features": {"nats": "features.{symbol}.{timeframe}"}},
        },
        "inference": {
            "node": "predictor",
            "phase": "trading",
            "inputs": {"features": {"nats": "features.>"}},
            "outputs": {"signals": {"nats": "signals.{symbol}"}},
        },
        "risk": {
            "node": "risk_gate",
            "phase": "trading",
            "inputs": {"signals": {"nats": "signals.*"}},
            "outputs": {
                "approved": {"nats": "signals.approved.{symbol}"},
                "decisions": {"kafka": "risk_events_archive"},
            },
        },
        "execution": {
            "node": "executor",
            "phase": "trading",
            "inputs": {"approved": {"nats": "signals.approved.>"}},
            "outputs": {"orders": {"nats": "orders.{status}.{symbol}", "kafka": "order_execution_archive"}},
        },
        "monitor": {"node": "monitor", "phase": "support", "inputs": {"events": {"nats": "orders.>"}}},
    },
}


# ---------------------------------------------------------------- helpers


def merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Deep merge; a ``DELETE`` value removes the key."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if value is DELETE:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def write(tmp_path: Path, doc: dict[str, Any]) -> Path:
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def run(
    tmp_path: Path,
    patch: dict[str, Any] | None = None,
    *,
    registry: Registry = REGISTRY,
    pairs: Sequence[str] | None = None,
    base: dict[str, Any] = CLEAN,
) -> list[Finding]:
    path = write(tmp_path, merge(base, patch or {}))
    topology, source = load_topology_file(path)
    return lint(topology, source, registry, CONTRACTS, pairs)


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def line_of(tmp_path: Path, fragment: str, after: str | None = None) -> int:
    """1-based line of the first line containing ``fragment`` (after the line containing ``after``)."""
    lines = (tmp_path / "services.yaml").read_text().splitlines()
    start = next(i for i, text in enumerate(lines) if after in text) if after else 0
    return next(i for i, text in enumerate(lines[start:], start) if fragment in text) + 1


def services(**patch: Any) -> dict[str, Any]:
    return {"services": patch}


# ---------------------------------------------------------------- clean topology and API


def test_clean_topology_has_no_findings(tmp_path: Path) -> None:
    assert run(tmp_path) == []


def test_rules_cover_every_code() -> None:
    assert len(RULES) == 16


def test_format_finding() -> None:
    f = Finding("error", "FX201", "data-bridge", "message", "topology/services.yaml", 123)
    assert format_finding(f) == "ERROR FX201 data-bridge: message (topology/services.yaml:123)"
    assert format_finding(Finding("warning", "FX100", "x", "m")) == "WARNING FX100 x: m"


def test_findings_json_and_exit_code() -> None:
    warn = Finding("warning", "FX202", "a", "m", "f.yaml", 3)
    err = Finding("error", "FX201", "b", "n")
    data = json.loads(findings_json([warn, err]))
    assert data[0] == {"level": "warning", "code": "FX202", "service": "a", "message": "m", "file": "f.yaml", "line": 3}
    assert data[1]["file"] is None and data[1]["line"] is None
    assert exit_code([warn]) == 0
    assert exit_code([warn, err]) == 1
    assert exit_code([]) == 0


def test_findings_sorted_by_line_then_code_and_deterministic(tmp_path: Path) -> None:
    patch = services(
        aggregator={"node": "bar_agregator"},
        risk={"inputs": {"signals": {"nats": "signals.>"}}},
        monitor={"inputs": {"events": {"nats": "order.>"}}},
    )
    first = run(tmp_path, patch)
    assert first == run(tmp_path, patch)
    keys = [(f.file or "", f.line or 0, f.code) for f in first]
    assert keys == sorted(keys)


# ---------------------------------------------------------------- FX100 / FX101


def test_fx100_disabled_unknown_plugin_is_only_a_warning(tmp_path: Path) -> None:
    found = run(tmp_path, services(finrl={"node": "finrl_agent", "phase": "training", "enabled": False}))
    assert [f.code for f in found] == ["FX100"]
    assert found[0].level == "warning"
    assert "node 'finrl_agent' is not built yet" in found[0].message
    assert found[0].line == line_of(tmp_path, "enabled: false")


def test_fx100_disabled_known_plugin(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(monitor={"enabled": False})), "FX100")
    assert len(found) == 1 and found[0].service == "monitor"
    assert "not built" not in found[0].message and "enabled: false" in found[0].message


def test_fx101_unknown_plugin_with_suggestion(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(aggregator={"node": "bar_agregator"})), "FX101")
    assert len(found) == 1
    assert found[0].level == "error" and found[0].service == "aggregator"
    assert "did you mean 'bar_aggregator'?" in found[0].message
    assert found[0].line == line_of(tmp_path, "node: bar_agregator")
    assert found[0].file is not None and found[0].file.endswith("services.yaml")


def test_fx101_plugin_that_failed_to_load(tmp_path: Path) -> None:
    registry = make_registry(load_errors={"broken": "ImportError: no module named xgboost"})
    found = only(run(tmp_path, services(monitor={"node": "broken"}), registry=registry), "FX101")
    assert len(found) == 1 and "failed to load" in found[0].message and "xgboost" in found[0].message


def test_fx101_a_node_name_two_installed_plugins_claim(tmp_path: Path) -> None:
    shadowed = "two plugins declare node 'monitor': entry point monitor = a:SPEC (a 1.0) is used, entry point monitor = b:SPEC (b 2.0) is ignored"
    registry = make_registry(load_errors={"monitor": shadowed})
    found = only(run(tmp_path, registry=registry), "FX101")
    assert [f.service for f in found] == ["monitor"]
    assert found[0].level == "error" and "ambiguous" in found[0].message and "(b 2.0) is ignored" in found[0].message


def test_fx101_not_for_known_plugins(tmp_path: Path) -> None:
    assert not only(run(tmp_path), "FX101")


def test_fx101_misspelt_node_of_a_disabled_service(tmp_path: Path) -> None:
    found = run(tmp_path, services(monitor={"node": "monitr", "enabled": False}))
    fx101 = only(found, "FX101")
    assert len(fx101) == 1 and fx101[0].level == "error" and fx101[0].service == "monitor"
    assert "did you mean 'monitor'?" in fx101[0].message
    assert fx101[0].line == line_of(tmp_path, "node: monitr")
    fx100 = only(found, "FX100")
    assert len(fx100) == 1 and "not built" not in fx100[0].message


def test_fx101_not_for_a_disabled_service_whose_node_is_not_built(tmp_path: Path) -> None:
    """``rl_trainer`` is close to nothing registered (``bar_aggregator`` is far): only FX100."""
    found = run(tmp_path, services(finrl={"node": "rl_trainer", "phase": "training", "enabled": False}))
    assert [f.code for f in found] == ["FX100"]
    assert "not built yet" in found[0].message


# ---------------------------------------------------------------- FX102


def test_fx102_params_rejected_by_schema(tmp_path: Path) -> None:
    patch = services(
        collector={"params": {"batch": "many", "pairz": ["EURUSD"]}},
        aggregator={"params": {"window": 0}},
    )
    found = only(run(tmp_path, patch), "FX102")
    by_service = {(f.service, f.line) for f in found}
    assert ("collector", line_of(tmp_path, "batch: many")) in by_service
    assert ("collector", line_of(tmp_path, "pairz:")) in by_service
    assert ("aggregator", line_of(tmp_path, "window: 0")) in by_service
    unknown = next(f for f in found if "pairz" in f.message)
    assert "did you mean 'pairs'" in unknown.message


def test_fx102_warns_when_a_params_model_ignores_unknown_keys(tmp_path: Path) -> None:
    class Loose(BaseModel):
        window: int = 5

    registry = make_registry(_spec("loose", "sink", params=Loose, inputs={"events": Port("any")}))
    patch = services(loose={"node": "loose", "phase": "support", "params": {"windw": 3}, "inputs": {"events": {"nats": "orders.>"}}})
    found = only(run(tmp_path, patch, registry=registry), "FX102")
    assert [(f.level, f.service) for f in found] == [("warning", "loose")]
    assert "extra='forbid'" in found[0].message


def test_fx102_valid_params(tmp_path: Path) -> None:
    patch = services(collector={"params": {"batch": 10, "pairs": ["EURUSD"]}}, aggregator={"params": {"window": 3}})
    assert not only(run(tmp_path, patch), "FX102")


# ---------------------------------------------------------------- FX103


def test_fx103_unknown_port_and_required_port_unbound(tmp_path: Path) -> None:
    doc = merge(CLEAN, {})
    doc["services"]["aggregator"]["outputs"] = {"barz": {"nats": "bars.{symbol}.{timeframe}"}}
    found = only(run(tmp_path, base=doc), "FX103")
    messages = " | ".join(f.message for f in found)
    assert "no output port 'barz'" in messages and "did you mean 'bars'" in messages
    assert "required output port 'bars'" in messages
    assert any(f.line == line_of(tmp_path, "barz:") for f in found)


def test_fx103_input_bound_under_outputs(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(risk={"outputs": {"signals": {"nats": "signals.checked.{symbol}"}}})), "FX103")
    assert len(found) == 1
    assert "'signals' is an input port" in found[0].message and "move it under inputs" in found[0].message


def test_fx103_required_input_unbound(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(execution={"inputs": DELETE})), "FX103")
    assert len(found) == 1 and "required input port 'approved'" in found[0].message
    assert found[0].service == "execution"


def test_fx103_not_for_disabled_services_or_optional_ports(tmp_path: Path) -> None:
    patch = services(execution={"inputs": DELETE, "enabled": False}, risk={"outputs": {"decisions": DELETE}})
    assert not only(run(tmp_path, patch), "FX103")


# ---------------------------------------------------------------- FX104


def test_fx104_unknown_contract_refs_everywhere(tmp_path: Path) -> None:
    bad = _spec("bad_node", "sink", inputs={"events": Port("bogus_event.v1")})
    patch = {
        "topics": {"tick_archive": {"contract": "tick.v2"}},
        "tables": {"historical_ticks": {"contract": "tcks.v1"}},
        "services": {
            "relay": {
                "node": "not_built",
                "phase": "trading",
                "enabled": False,
                "inputs": {"x": {"nats": "signals.*", "contract": "sigal.v1"}},
            },
            "monitor": {"node": "bad_node"},
        },
    }
    found = only(run(tmp_path, patch, registry=make_registry(bad)), "FX104")
    by_owner = {f.service: f.message for f in found}
    assert "tick.v1" in by_owner["tick_archive"]
    assert "historical_ticks" in by_owner
    assert "did you mean 'signal.v1'" in by_owner["relay"]
    assert "bogus_event.v1" in by_owner["monitor"] and "NodeSpec" in by_owner["monitor"]
    relay = next(f for f in found if f.service == "relay")
    assert relay.line == line_of(tmp_path, "contract: sigal.v1")


def test_fx104_known_refs_names_and_any(tmp_path: Path) -> None:
    patch = {
        "topics": {"tick_archive": {"contract": ["tick", "tick.v1"]}},
        "services": {"bridge": {"inputs": {"records": {"contract": "any"}}}},
    }
    assert not only(run(tmp_path, patch), "FX104")


# ---------------------------------------------------------------- FX201


def test_fx201_unreachable_nats_subscription(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(monitor={"inputs": {"events": {"nats": "orders.filed.>"}}})), "FX201")
    assert len(found) == 1 and found[0].service == "monitor"
    assert "'orders.filed.>'" in found[0].message
    assert found[0].line == line_of(tmp_path, "orders.filed.>")


def test_fx201_unreachable_kafka_topic(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(bridge={"inputs": {"records": {"kafka": "tick_archiv"}}})), "FX201")
    assert len(found) == 1 and "did you mean 'tick_archive'" in found[0].message


def test_fx201_disabled_publishers_count(tmp_path: Path) -> None:
    patch = {
        "variables": {"kind": ["economic_calendar", "fred_indicators"]},
        "services": {
            "external": {
                "node": "not_built",
                "phase": "data",
                "enabled": False,
                "outputs": {"events": {"nats": "market.external.{kind}", "contract": "external_event.v1"}},
            },
            "monitor": {"inputs": {"events": {"nats": ["orders.>", "market.external.>"]}}},
        },
    }
    found = run(tmp_path, patch)
    assert not only(found, "FX201")
    assert codes(found) == {"FX100"}


def test_fx201_list_subjects_point_at_the_item(tmp_path: Path) -> None:
    patch = services(monitor={"inputs": {"events": {"nats": ["orders.>", "bars.EURUSD.*", "features.nope.5m.x"]}}})
    found = only(run(tmp_path, patch), "FX201")
    assert [f.line for f in found] == [line_of(tmp_path, "features.nope.5m.x")]


def test_fx201_runtime_publishes_dead_letters(tmp_path: Path) -> None:
    domains = {"domains": [*CLEAN["domains"], "deadletter"]}
    reached = services(monitor={"inputs": {"events": {"nats": ["orders.>", "deadletter.>", "deadletter.risk"]}}})
    assert not only(run(tmp_path, {**domains, **reached}), "FX201")
    unknown = services(monitor={"inputs": {"events": {"nats": ["orders.>", "deadletter.nobody"]}}})
    assert len(only(run(tmp_path, {**domains, **unknown}), "FX201")) == 1


# ---------------------------------------------------------------- FX202


def test_fx202_publication_nobody_consumes(tmp_path: Path) -> None:
    patch = services(risk={"outputs": {"decisions": {"nats": "risk.alert.limit_exceeded"}}})
    found = only(run(tmp_path, patch), "FX202")
    assert len(found) == 1 and found[0].level == "warning" and found[0].service == "risk"
    assert "risk.alert.limit_exceeded" in found[0].message


def test_fx202_ignores_deadletters_and_kafka_archives(tmp_path: Path) -> None:
    patch = {
        "domains": [*CLEAN["domains"], "deadletter"],
        "services": {"risk": {"outputs": {"decisions": {"nats": "deadletter.risk", "kafka": "risk_events_archive"}}}},
    }
    assert not only(run(tmp_path, patch), "FX202")


def test_fx202_a_catch_all_subscription_is_no_consumer(tmp_path: Path) -> None:
    patch = services(monitor={"inputs": {"events": {"nats": ["*.>", "orders.>"]}}})
    found = run(tmp_path, patch)
    assert not only(found, "FX202")
    patch = services(monitor={"inputs": {"events": {"nats": "*.>"}}})
    found = only(run(tmp_path, patch), "FX202")
    assert [f.service for f in found] == ["execution"]
    assert "only the catch-all subscription '*.>' of monitor matches 'orders.{status}.{symbol}'" in found[0].message


# ---------------------------------------------------------------- FX203


def test_fx203_publisher_subscriber_contract_mismatch(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(inference={"inputs": {"features": {"nats": "bars.>"}}})), "FX203")
    assert len(found) == 1 and found[0].service == "inference"
    assert "bar.v1" in found[0].message and "features.v1" in found[0].message and "aggregator" in found[0].message


def test_fx203_port_against_topic_and_table(tmp_path: Path) -> None:
    patch = {"topics": {"tick_archive": {"contract": "bar.v1"}}, "tables": {"live_ticks": {"contract": "bar.v1"}}}
    found = only(run(tmp_path, patch), "FX203")
    assert {f.line for f in found} == {
        line_of(tmp_path, "kafka: tick_archive", after="collector:"),
        line_of(tmp_path, "tables: live_ticks"),
    }


def test_fx203_through_a_topic_without_contract(tmp_path: Path) -> None:
    patch = {
        "topics": {"order_execution_archive": {"contract": DELETE}},
        "services": {"bridge": {"node": "feature_calc"}},
    }
    doc = merge(CLEAN, patch)
    doc["services"]["bridge"]["inputs"] = {"bars": {"kafka": "order_execution_archive"}}
    doc["services"]["bridge"]["outputs"] = {"features": {"nats": "features.{symbol}.{timeframe}"}}
    found = only(run(tmp_path, base=doc), "FX203")
    assert len(found) == 1 and "order_event.v1" in found[0].message and found[0].service == "bridge"


def test_fx203_any_and_equal_contracts_pass(tmp_path: Path) -> None:
    patch = services(monitor={"inputs": {"events": {"nats": ["orders.>", "signals.>", "bars.>"]}}})
    assert not only(run(tmp_path, patch), "FX203")


def test_fx203_binding_contract_contradicting_the_plugin(tmp_path: Path) -> None:
    """The node's declaration is what runs; a binding claiming another contract would be ignored silently."""
    found = only(run(tmp_path, services(aggregator={"outputs": {"bars": {"contract": "tick.v1"}}})), "FX203")
    assert [f.service for f in found] == ["aggregator"]
    assert "`contract: tick.v1` contradicts node 'bar_aggregator', whose port carries bar.v1" in found[0].message
    assert found[0].line == line_of(tmp_path, "contract: tick.v1", after="aggregator:")


def test_fx203_binding_contract_agreeing_with_the_plugin(tmp_path: Path) -> None:
    patch = services(
        aggregator={"outputs": {"bars": {"contract": "bar"}}, "inputs": {"ticks": {"contract": ["tick.v1"]}}},
        monitor={"inputs": {"events": {"contract": "order_event.v1"}}},
    )
    assert not only(run(tmp_path, patch), "FX203")


# ---------------------------------------------------------------- FX204


def test_fx204_subscribes_own_output(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(risk={"inputs": {"signals": {"nats": "signals.>"}}})), "FX204")
    assert len(found) == 1 and found[0].service == "risk"
    assert "signals.approved.{symbol}" in found[0].message and "'signals.*'" in found[0].message
    assert not only(run(tmp_path, services(risk={"inputs": {"signals": {"nats": "signals.>"}}})), "FX203")


def test_fx204_consumes_own_kafka_topic(tmp_path: Path) -> None:
    patch = services(
        relay={
            "node": "not_built",
            "phase": "data",
            "enabled": False,
            "inputs": {"x": {"kafka": "tick_archive"}},
            "outputs": {"y": {"kafka": "tick_archive"}},
        }
    )
    found = only(run(tmp_path, patch), "FX204")
    assert len(found) == 1 and found[0].service == "relay" and "tick_archive" in found[0].message


def test_fx204_not_when_pattern_excludes_own_output(tmp_path: Path) -> None:
    assert not only(run(tmp_path), "FX204")


# ---------------------------------------------------------------- FX205


@pytest.mark.parametrize(
    ("service", "section", "port", "subject", "fragment"),
    [
        ("collector", "outputs", "ticks", "ticks..{symbol}", "empty token"),
        ("collector", "outputs", "ticks", "ticks.{symbol", "unexpanded template placeholder"),
        ("aggregator", "inputs", "ticks", "ticks.>.x", "'>' must be the last token"),
        ("collector", "outputs", "ticks", "ticks.*", "publish to a concrete subject"),
        ("collector", "outputs", "ticks", "tick.{symbol}", "use 'ticks.{symbol}'"),
        ("features", "inputs", "bars", "external.>", "use 'market.external.>'"),
        ("collector", "outputs", "ticks", "ticks", "only a domain"),
    ],
)
def test_fx205_malformed_or_off_convention(
    tmp_path: Path, service: str, section: str, port: str, subject: str, fragment: str
) -> None:
    found = only(run(tmp_path, services(**{service: {section: {port: {"nats": subject}}}})), "FX205")
    assert len(found) == 1, found
    assert found[0].service == service and fragment in found[0].message
    assert found[0].line == line_of(tmp_path, "nats:", after=f"{service}:")


def test_fx205_wildcard_leading_subscription_and_multi_token_domain(tmp_path: Path) -> None:
    patch = {
        "variables": {"kind": ["economic_calendar"]},
        "services": {
            "monitor": {"inputs": {"events": {"nats": ["orders.>", "*.approved.*", "market.external.>"]}}},
            "external": {
                "node": "not_built",
                "phase": "data",
                "enabled": False,
                "outputs": {"events": {"nats": "market.external.{kind}"}},
            },
        },
    }
    assert not only(run(tmp_path, patch), "FX205")


def test_fx205_run_time_variable_is_fine(tmp_path: Path) -> None:
    patch = {
        "domains": [*CLEAN["domains"], "training"],
        "variables": {"run_id": {"identifier": True}},
        "services": {
            "trainer": {
                "node": "not_built",
                "phase": "training",
                "enabled": False,
                "outputs": {"status": {"nats": "training.completed.{run_id}"}},
            },
            "monitor": {"inputs": {"events": {"nats": ["orders.>", "training.>"]}}},
        },
    }
    found = run(tmp_path, patch)
    assert codes(found) == {"FX100"}


# ---------------------------------------------------------------- FX301


def test_fx301_undeclared_topic_with_suggestion(tmp_path: Path) -> None:
    patch = {
        "topics": {"external_data_archive": {"partitions": 1, "retention": "1y"}},
        "services": {"risk": {"outputs": {"decisions": {"kafka": "external_archive"}}}},
    }
    found = only(run(tmp_path, patch), "FX301")
    assert len(found) == 1 and found[0].service == "risk"
    assert "did you mean 'external_data_archive'" in found[0].message


def test_fx301_topic_configuration_and_name(tmp_path: Path) -> None:
    patch = {
        "topics": {"ticks-archive": {"partitions": 1}, "risk_events_archive": {"retention": DELETE, "partitions": DELETE}},
        "services": {"risk": {"outputs": {"decisions": {"kafka": ["risk_events_archive", "ticks-archive"]}}}},
    }
    found = only(run(tmp_path, patch), "FX301")
    messages = sorted(f.message for f in found)
    assert any("'risk_events_archive' has no retention" in m for m in messages)
    assert any("'risk_events_archive' has no partitions" in m for m in messages)
    assert any("'ticks-archive' has no retention" in m for m in messages)
    assert any("rename it, e.g. 'ticks_archive'" in m for m in messages)
    assert len(found) == 4


def test_fx301_kafka_used_without_kafka_section(tmp_path: Path) -> None:
    found = only(run(tmp_path, {"kafka": DELETE}), "FX301")
    assert len(found) == 1 and found[0].level == "warning" and found[0].service == "topology"


def test_fx301_clean(tmp_path: Path) -> None:
    assert not only(run(tmp_path), "FX301")


# ---------------------------------------------------------------- FX302


def test_fx302_undeclared_table(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(bridge={"reads": ["live_tick"]})), "FX302")
    assert len(found) == 1 and "did you mean 'live_ticks'" in found[0].message
    assert found[0].line == line_of(tmp_path, "- live_tick")


def test_fx302_declared_table_problems(tmp_path: Path) -> None:
    patch = {
        "tables": {
            "historical_ticks": {"store": "clickhose"},
            "positions": {"store": "clickhouse"},
            "orders_live": {"store": "timescale", "columns": {"order_id": "String"}},
            "live_bars": {"store": "clickhouse", "contract": "bar.v1"},
        }
    }
    found = only(run(tmp_path, patch), "FX302")
    by_table = {f.service: f.message for f in found}
    assert "did you mean 'clickhouse'" in by_table["historical_ticks"]
    assert "neither `contract:` nor `columns:`" in by_table["positions"]
    assert "retention_required" in by_table["orders_live"]
    assert "live_*" in by_table["live_bars"]
    assert len(found) == 4


def test_fx302_columns_without_contract_are_fine(tmp_path: Path) -> None:
    patch = {"tables": {"positions": {"store": "clickhouse", "columns": {"symbol": "String"}}}}
    assert not only(run(tmp_path, patch), "FX302")


KV_STORES = {
    "dragonfly": {"kind": "redis", "url": "redis://localhost:6379/0"},
    "local": {"kind": "memory", "url": "memory://"},
}


def test_fx302_key_value_tables_need_a_finite_retention(tmp_path: Path) -> None:
    patch = {
        "stores": KV_STORES,
        "tables": {
            "dedup_keys": {"store": "dragonfly", "engine": "kv", "columns": {"key": "str"}},
            "latest_quotes": {"store": "local", "engine": "kv", "columns": {"key": "str"}, "retention": "forever"},
            "live_bars": {"store": "clickhouse", "contract": "bar.v1", "retention": "forever"},
        },
    }
    found = only(run(tmp_path, patch), "FX302")
    by_table = {f.service: f for f in found}
    assert set(by_table) == {"dedup_keys", "latest_quotes", "live_bars"} and len(found) == 3
    assert "no retention" in by_table["dedup_keys"].message and "(redis)" in by_table["dedup_keys"].message
    assert "keeps its data forever" in by_table["latest_quotes"].message and "(memory)" in by_table["latest_quotes"].message
    assert "live_*" in by_table["live_bars"].message
    assert all(f.level == "error" for f in found)
    assert by_table["latest_quotes"].line == line_of(tmp_path, "retention: forever", after="latest_quotes:")


def test_fx302_table_engine_must_fit_the_store(tmp_path: Path) -> None:
    patch = {
        "stores": KV_STORES,
        "tables": {
            "quotes": {"store": "dragonfly", "contract": "tick.v1", "retention": "1d"},
            "claims": {"store": "clickhouse", "engine": "kv", "columns": {"key": "str"}, "retention": "1d"},
        },
    }
    found = only(run(tmp_path, patch), "FX302")
    by_table = {f.service: f.message for f in found}
    assert "holds only `engine: kv` tables" in by_table["quotes"]
    assert "cannot provide" in by_table["claims"]
    assert len(found) == 2


def test_fx302_key_value_tables_with_a_ttl_are_fine(tmp_path: Path) -> None:
    patch = {
        "stores": KV_STORES,
        "tables": {
            "dedup_keys": {"store": "dragonfly", "engine": "kv", "columns": {"key": "str"}, "retention": "2d"},
            "latest_quotes": {"store": "local", "engine": "kv", "columns": {"key": "str"}, "retention": "1h"},
        },
    }
    assert not only(run(tmp_path, patch), "FX302")


def _second_tick_writer(table: dict[str, Any]) -> dict[str, Any]:
    """``historical_ticks`` written by the collector and a second tick source."""
    return {
        "tables": {"historical_ticks": table},
        "services": {
            "collector": {"outputs": {"ticks": {"tables": ["live_ticks", "historical_ticks"]}}},
            "backfill": {"node": "tick_source", "phase": "data", "outputs": {"ticks": {"tables": "historical_ticks"}}},
        },
    }


@pytest.mark.parametrize(
    "table",
    [
        {},
        {"engine": "AggregatingMergeTree"},
        {"store": "timescale", "engine": "ReplacingMergeTree", "retention": "1d"},  # the engine of another store
    ],
)
def test_fx302_two_writers_of_a_table_that_keeps_duplicates(tmp_path: Path, table: dict[str, Any]) -> None:
    found = only(run(tmp_path, _second_tick_writer(table)), "FX302")
    assert [f.service for f in found] == ["historical_ticks"]
    assert "written by 2 services (collector, backfill)" in found[0].message and "writers: shared" in found[0].message
    assert found[0].line == line_of(tmp_path, "historical_ticks:", after="tables:")


@pytest.mark.parametrize(
    "table",
    [
        {"engine": "ReplacingMergeTree", "order_by": ["symbol", "ts"]},
        {"store": "timescale", "key": ["symbol", "ts"], "retention": "1d"},
        {"key": ["symbol", "ts", "source"]},  # in clickhouse the key is the ReplacingMergeTree ordering key
        {"writers": "shared"},
    ],
)
def test_fx302_two_writers_of_a_deduplicating_or_shared_table(tmp_path: Path, table: dict[str, Any]) -> None:
    assert not only(run(tmp_path, _second_tick_writer(table)), "FX302")


def test_fx302_one_writer_and_readers_are_fine(tmp_path: Path) -> None:
    assert not only(run(tmp_path, services(aggregator={"reads": ["live_ticks"]})), "FX302")


REPLACING_BARS = {"store": "clickhouse", "contract": "bar.v1", "engine": "ReplacingMergeTree", "version": "revision"}


def test_fx302_version_column_that_does_not_fit(tmp_path: Path) -> None:
    patch = {
        "tables": {
            "misspelt": {**REPLACING_BARS, "version": "revison"},
            "in_postgres": {**REPLACING_BARS, "store": "timescale", "retention": "1d"},
            "merge_tree": {**REPLACING_BARS, "engine": "MergeTree"},
            "textual": {"store": "clickhouse", "engine": "ReplacingMergeTree", "columns": {"ts": "timestamp_ms", "v": "str"}, "version": "v"},
        }
    }
    found = only(run(tmp_path, patch), "FX302")
    by_table = {f.service: f for f in found}
    assert set(by_table) == {"misspelt", "in_postgres", "merge_tree", "textual"} and len(found) == 4
    assert "version column 'revison' is not one of its columns (did you mean 'revision'?)" in by_table["misspelt"].message
    assert by_table["misspelt"].line == line_of(tmp_path, "version: revison")
    assert "(postgres) ignores" in by_table["in_postgres"].message
    assert by_table["in_postgres"].line == line_of(tmp_path, "version: revision", after="in_postgres:")
    assert "works only with `engine: ReplacingMergeTree`" in by_table["merge_tree"].message
    assert by_table["merge_tree"].line == line_of(tmp_path, "engine: MergeTree")
    assert "'v' is str, not an integer" in by_table["textual"].message


def test_fx302_version_column_of_a_replacing_table(tmp_path: Path) -> None:
    patch = {
        "tables": {
            "bars": REPLACING_BARS,
            "counted": {"store": "clickhouse", "engine": "ReplacingMergeTree", "columns": {"ts": "timestamp_ms", "n": "UInt32"}, "version": "n"},
        }
    }
    assert not only(run(tmp_path, patch), "FX302")


def test_fx302_key_that_does_not_fit(tmp_path: Path) -> None:
    patch = {
        "tables": {
            "misspelt": {"store": "clickhouse", "contract": "tick.v1", "key": ["symbol", "ts", "sorce"]},
            "untimed": {"store": "timescale", "contract": "tick.v1", "key": ["symbol", "source"], "retention": "1d"},
        }
    }
    found = only(run(tmp_path, patch), "FX302")
    by_table = {f.service: f for f in found}
    assert set(by_table) == {"misspelt", "untimed"} and len(found) == 2
    assert "key column 'sorce' is not one of its columns (did you mean 'source'?)" in by_table["misspelt"].message
    assert by_table["misspelt"].line == line_of(tmp_path, "- sorce")
    assert "must include the time column 'ts'" in by_table["untimed"].message
    assert by_table["untimed"].line == line_of(tmp_path, "key:", after="untimed:")


def test_fx302_key_of_existing_columns_with_the_time_column(tmp_path: Path) -> None:
    patch = {
        "tables": {
            "keyed": {"store": "timescale", "contract": "tick.v1", "key": ["symbol", "ts", "source"], "retention": "1d"},
            "untimed_elsewhere": {"store": "clickhouse", "contract": "tick.v1", "key": ["symbol", "source"]},
            "no_time_column": {"store": "timescale", "columns": {"id": "str", "n": "int"}, "key": ["id"], "retention": "1d"},
        }
    }
    assert not only(run(tmp_path, patch), "FX302")


# ---------------------------------------------------------------- FX401


def test_fx401_undeclared_and_empty_variables(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(execution={"outputs": {"orders": {"nats": "orders.{state}.{symbol}"}}})), "FX401")
    assert len(found) == 1 and "{state}" in found[0].message and "did you mean 'status'" in found[0].message
    found = only(run(tmp_path, {"variables": {"status": []}}), "FX401")
    assert len(found) == 1 and "empty" in found[0].message


def test_fx401_literal_pair_and_timeframe(tmp_path: Path) -> None:
    patch = services(monitor={"inputs": {"events": {"nats": ["orders.>", "ticks.GBPUSD", "bars.EURUSD.4h"]}}})
    found = only(run(tmp_path, patch), "FX401")
    messages = " | ".join(f.message for f in found)
    assert "'GBPUSD'" in messages and "timeframe '4h'" in messages and len(found) == 2


def test_fx401_params_and_pairs_argument(tmp_path: Path) -> None:
    patch = services(
        collector={"params": {"pairs": ["EURUSD", "GBPUSD"]}},
        aggregator={"params": {"timeframes": ["5m", "4h"]}},
    )
    found = only(run(tmp_path, patch, pairs=["EURUSD", "GBPJPY"]), "FX401")
    lines = {f.line for f in found}
    assert line_of(tmp_path, "- GBPUSD") in lines and line_of(tmp_path, "- 4h") in lines
    pairs = [f for f in found if f.service == "topology"]
    assert len(pairs) == 1 and "GBPJPY" in pairs[0].message and pairs[0].line is None
    assert len(found) == 3


def test_fx401_declared_literals_and_run_time_variables(tmp_path: Path) -> None:
    patch = {
        "variables": {"run_id": "*"},
        "services": {
            "collector": {"params": {"pairs": ["EURUSD"]}},
            "monitor": {"inputs": {"events": {"nats": ["orders.>", "ticks.EURUSD", "bars.XAUUSD.1h", "orders.*.{run_id}"]}}},
        },
    }
    assert not only(run(tmp_path, patch, pairs=["XAUUSD"]), "FX401")


@pytest.mark.parametrize("declared", ["*", {}, {"identifier": False, "description": "step"}])
def test_fx401_publication_over_a_run_time_value_that_is_no_identifier(tmp_path: Path, declared: Any) -> None:
    patch = {
        "variables": {"seq": declared},
        **services(execution={"outputs": {"orders": {"nats": "orders.{status}.{symbol}.{seq}"}}}),
    }
    found = only(run(tmp_path, patch), "FX401")
    assert [f.service for f in found] == ["execution"]
    assert "one subject per value of {seq}" in found[0].message and "unbounded subject cardinality" in found[0].message
    assert "`variables.seq: {identifier: true}`" in found[0].message
    assert found[0].line == line_of(tmp_path, "orders.{status}.{symbol}.{seq}")


def test_fx401_binding_values_widened_to_any(tmp_path: Path) -> None:
    patch = services(
        execution={"outputs": {"orders": {"values": {"status": "*"}}}},
        monitor={"inputs": {"events": {"nats": ["orders.>", "orders.{status}.EURUSD"], "values": {"status": "*"}}}},
    )
    found = only(run(tmp_path, patch), "FX401")
    assert sorted(f.service for f in found) == ["execution", "monitor"]
    assert all("bindings may only narrow a variable to a list" in f.message for f in found)
    assert {f.line for f in found} == {
        line_of(tmp_path, "status: '*'", after="execution:"),
        line_of(tmp_path, "status: '*'", after="monitor:"),
    }


def test_fx401_publication_over_a_run_time_identifier(tmp_path: Path) -> None:
    patch = {
        "variables": {"run_id": {"identifier": True, "description": "one backtest run"}},
        **services(execution={"outputs": {"orders": {"nats": "orders.{status}.{symbol}.{run_id}", "values": {"status": ["filled"]}}}}),
    }
    assert not only(run(tmp_path, patch), "FX401")


# ---------------------------------------------------------------- FX402


def test_fx402_names_equal_after_normalising(tmp_path: Path) -> None:
    doc = merge(CLEAN, {})
    doc["services"]["Bridge"] = copy.deepcopy(doc["services"]["bridge"])
    doc["tables"]["live-ticks"] = {"store": "clickhouse", "contract": "tick.v1", "retention": "1d"}
    found = only(run(tmp_path, base=doc), "FX402")
    assert {f.service for f in found} == {"Bridge", "live-ticks"}
    assert all("collides with" in f.message for f in found)


def test_fx402_yaml_duplicate_keys(tmp_path: Path) -> None:
    topology, source = load_topology_file(write(tmp_path, CLEAN))
    file = next(iter(source.locations.values())).file
    source.duplicates.append((("services", "risk"), Location(file, 10), Location(file, 40)))
    found = only(lint(topology, source, REGISTRY, CONTRACTS), "FX402")
    assert len(found) == 1
    assert found[0].service == "risk" and found[0].line == 40 and "line 10" in found[0].message


def test_fx402_composed_run_prefix(tmp_path: Path) -> None:
    """A composed run keeps every key under ``topology``; locations must still resolve."""
    topology, flat = load_topology_file(write(tmp_path, merge(CLEAN, services(aggregator={"node": "bar_agregator"}))))
    prefixed = SourceMap()
    prefixed.merge(flat, ("topology",))
    prefixed.duplicates.append((("topology", "topics", "tick_archive"), Location("a.yaml", 1), Location("b.yaml", 2)))
    found = lint(topology, prefixed, REGISTRY, CONTRACTS)
    fx101 = only(found, "FX101")[0]
    assert fx101.line == line_of(tmp_path, "node: bar_agregator")
    fx402 = only(found, "FX402")[0]
    assert fx402.service == "tick_archive" and "a.yaml:1" in fx402.message


def test_fx402_clean(tmp_path: Path) -> None:
    assert not only(run(tmp_path), "FX402")


# ---------------------------------------------------------------- FX501


def test_fx501_execution_subscribes_raw_signals(tmp_path: Path) -> None:
    found = only(run(tmp_path, services(execution={"inputs": {"approved": {"nats": "signals.>"}}})), "FX501")
    assert len(found) == 1 and found[0].service == "execution"
    assert "inference → execution" in found[0].message
    assert found[0].line == line_of(tmp_path, "nats: signals.>", after="execution:")


def _relay(contract: str) -> dict[str, Any]:
    return {
        "node": "not_built",
        "phase": "trading",
        "enabled": False,
        "inputs": {"signals": {"nats": "signals.*", "contract": "signal.v1"}},
        "outputs": {"out": {"nats": "signals.relayed.{symbol}", "contract": contract}},
    }


def test_fx501_path_through_a_relay(tmp_path: Path) -> None:
    patch = services(relay=_relay("signal.v1"), execution={"inputs": {"approved": {"nats": "signals.relayed.*"}}})
    found = only(run(tmp_path, patch), "FX501")
    assert len(found) == 1 and "inference → relay → execution" in found[0].message


def test_fx501_a_relay_that_approves_is_no_gate(tmp_path: Path) -> None:
    """A disabled service whose node is not built, turning signals into approved_signal beside the real gate."""
    patch = services(
        relay=_relay("approved_signal.v1"),
        execution={"inputs": {"approved": {"nats": "signals.relayed.*"}}},
        monitor={"inputs": {"events": {"nats": ["orders.>", "signals.approved.>"]}}},
    )
    found = only(run(tmp_path, patch), "FX501")
    by_service = {f.service: f for f in found}
    assert set(by_service) == {"relay", "execution"} and len(found) == 2
    assert "inference → relay → execution" in by_service["execution"].message
    relay = by_service["relay"]
    assert "and so do risk on signals.approved.{symbol}" in relay.message and "only one" in relay.message
    assert relay.line == line_of(tmp_path, "signals.relayed.{symbol}")


def test_fx501_an_enabled_service_whose_node_is_unknown_is_no_gate(tmp_path: Path) -> None:
    patch = services(
        risk={
            "node": "position_guard",
            "inputs": {"signals": {"contract": "signal.v1"}},
            "outputs": {"approved": {"contract": "approved_signal.v1"}, "decisions": {"contract": "risk_decision.v1"}},
        }
    )
    found = run(tmp_path, patch)
    assert [f.service for f in only(found, "FX101")] == ["risk"]
    messages = sorted(f.message for f in only(found, "FX501"))
    assert len(messages) == 2
    assert "inference → risk → execution" in messages[1]
    assert "node 'position_guard' is not installed, so nothing shows it is a risk gate" in messages[0]


def _planned_risk(**changes: Any) -> dict[str, Any]:
    """The risk service on a node not built yet, disabled, its contracts stated on the bindings."""
    return {
        "node": "position_guard",
        "enabled": False,
        "inputs": {"signals": {"contract": "signal.v1"}},
        "outputs": {"approved": {"contract": "approved_signal.v1"}, "decisions": {"contract": "risk_decision.v1"}},
        **changes,
    }


def test_fx501_a_disabled_unbuilt_gate_that_is_the_only_approver_is_the_planned_gate(tmp_path: Path) -> None:
    found = run(tmp_path, services(risk=_planned_risk()))
    assert not only(found, "FX501") and codes(found) == {"FX100"}


def test_fx501_an_unbuilt_gate_that_consumes_no_signals_is_no_gate(tmp_path: Path) -> None:
    patch = services(
        risk=_planned_risk(inputs={"signals": {"nats": "features.>", "contract": "features.v1"}}),
        inference={"outputs": {"signals": {"nats": "risk.raw.{symbol}"}}},
        execution={"inputs": {"approved": {"nats": "signals.approved.>"}}},
        monitor={"inputs": {"events": {"nats": ["orders.>", "risk.>"]}}},
    )
    found = only(run(tmp_path, patch), "FX501")
    assert [f.service for f in found] == ["risk"]
    assert "is not built and the service does not consume raw signals" in found[0].message


def test_fx501_two_gates_cannot_both_approve(tmp_path: Path) -> None:
    doc = merge(CLEAN, {})
    doc["services"]["risk2"] = {**copy.deepcopy(doc["services"]["risk"]), "outputs": {"approved": {"nats": "signals.approved.{symbol}"}}}
    found = only(run(tmp_path, base=doc), "FX501")
    assert sorted(f.service for f in found) == ["risk", "risk2"]
    assert all("only one service, the risk gate, may publish on the approved subjects" in f.message for f in found)


def test_fx501_another_contract_on_the_approved_subjects(tmp_path: Path) -> None:
    """A publisher on ``signals.approved.*`` is an approver whatever contract it declares."""
    patch = services(
        echo={
            "node": "not_built",
            "phase": "trading",
            "enabled": False,
            "outputs": {"out": {"nats": "signals.approved.{symbol}", "contract": "any"}},
        }
    )
    found = only(run(tmp_path, patch), "FX501")
    assert [f.service for f in found] == ["echo"] and "and so do risk" in found[0].message


def test_fx501_spec_less_execution_target(tmp_path: Path) -> None:
    patch = services(
        broker={
            "node": "not_built",
            "phase": "trading",
            "enabled": False,
            "inputs": {"signals": {"nats": "signals.*", "contract": "signal.v1"}},
            "outputs": {"orders": {"nats": "orders.sent.{symbol}", "contract": "order_event.v1"}},
        }
    )
    found = only(run(tmp_path, patch), "FX501")
    assert len(found) == 1 and "inference → broker" in found[0].message


def test_fx501_only_risk_gates_publish_approved_signals(tmp_path: Path) -> None:
    approver = _spec("approver", inputs={"signals": Port("signal.v1")}, outputs={"approved": Port("approved_signal.v1")})
    patch = services(risk={"node": "approver", "outputs": {"decisions": DELETE}})
    found = only(run(tmp_path, patch, registry=make_registry(approver)), "FX501")
    messages = " | ".join(f.message for f in found)
    assert "node 'approver' has role 'transform'; only an installed risk_gate plugin may approve" in messages
    assert "inference → risk → execution" in messages


def test_fx501_gated_pipeline_is_fine(tmp_path: Path) -> None:
    assert not only(run(tmp_path), "FX501")


SIGNAL_TABLES = {
    "trading_signals": {"store": "clickhouse", "contract": "signal.v1"},
    "risk_decisions": {"store": "clickhouse", "contract": "risk_decision.v1"},
}


def test_fx501_execution_reads_a_table_the_signal_source_writes(tmp_path: Path) -> None:
    patch = {
        "tables": SIGNAL_TABLES,
        **services(
            inference={"outputs": {"signals": {"nats": "signals.{symbol}", "tables": "trading_signals"}}},
            execution={"reads": ["trading_signals"]},
        ),
    }
    found = only(run(tmp_path, patch), "FX501")
    assert len(found) == 1 and found[0].level == "error" and found[0].service == "execution"
    assert "inference → execution" in found[0].message
    assert "reads table 'trading_signals', which inference's output 'signals' writes" in found[0].message
    assert found[0].line == line_of(tmp_path, "- trading_signals", after="execution:")


def test_fx501_tables_behind_the_gate_are_fine(tmp_path: Path) -> None:
    """The gate reads the raw signals' table; execution reads only what the gate writes."""
    patch = {
        "tables": SIGNAL_TABLES,
        **services(
            inference={"outputs": {"signals": {"nats": "signals.{symbol}", "tables": "trading_signals"}}},
            risk={"reads": ["trading_signals"], "outputs": {"decisions": {"tables": "risk_decisions"}}},
            execution={"reads": ["risk_decisions"]},
            monitor={"reads": ["trading_signals"]},
        ),
    }
    assert not only(run(tmp_path, patch), "FX501")


# ---------------------------------------------------------------- a seed-sized topology

SEED_SPECS = [
    _spec("bar_feature_calc", inputs={"bars": Port("bar.v1")}, outputs={"features": Port("features.v1")}),
    _spec("hub", "sink", inputs={"events": Port("any", required=False), "archives": Port("any", required=False)}),
    _spec("trainer", "batch", outputs={"status": Port("training_status.v1")}),
    _spec("backtester", "batch", outputs={"status": Port("backtest_status.v1")}),
    _spec("perf", inputs={"fills": Port("order_event.v1")}, outputs={"alerts": Port("alert.v1")}),
    _spec("notifier", "sink", inputs={"alerts": Port("alert.v1")}),
    _spec("broker", inputs={"orders": Port("order_event.v1")}, outputs={"fills": Port("fill.v1"), "log": Port("broker_log.v1")}),
]

SEED = Path(__file__).parent / "fixtures" / "lint" / "seed.yaml"


def seed_topology() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(SEED.read_text(encoding="utf-8"))
    return doc


def test_seed_sized_topology_lints_clean_and_fast(tmp_path: Path) -> None:
    """14 pairs x 7 timeframes, 17 services: no errors; warnings for the disabled services, and
    for the publications only the dashboard's catch-all ``*.>`` matches (it consumes nothing in particular)."""
    registry = make_registry(*SEED_SPECS)
    found = run(tmp_path, base=seed_topology(), registry=registry)
    assert [f for f in found if f.level == "error"] == []
    assert codes(found) == {"FX100", "FX202"}
    assert {f.service for f in only(found, "FX100")} == {
        "polygon-historical-downloader",
        "dukascopy-historical-downloader",
        "external-data-collector",
        "finrl-training-service",
    }
    fx202 = only(found, "FX202")
    assert {f.service for f in fx202} == {
        "supervised-training-service",
        "finrl-training-service",
        "mt5-connector",
        "backtesting-engine",
    }
    assert all("only the catch-all subscription '*.>' of dashboard-service" in f.message for f in fx202)



def test_seed_sized_topology_finds_the_seed_mistakes(tmp_path: Path) -> None:
    """The seed's own slips: risk-management on ``signals.>``, ``external.>``, ``external_archive``."""
    doc = seed_topology()
    doc["services"]["risk-management"]["inputs"]["signals"]["nats"] = "signals.>"
    doc["services"]["data-bridge"]["inputs"]["events"]["nats"] = ["ticks.>", "bars.>", "external.>"]
    doc["topics"]["external_data_archive"] = {"partitions": 1, "retention": "1y", "contract": "external_event.v1"}
    doc["services"]["external-data-collector"]["outputs"]["events"]["kafka"] = "external_archive"
    found = run(tmp_path, base=doc, registry=make_registry(*SEED_SPECS))
    assert {"FX204", "FX205", "FX201", "FX301"} <= codes(found)
    fx204 = only(found, "FX204")[0]
    assert fx204.service == "risk-management" and "'signals.*'" in fx204.message
