"""The seed's wiring defects stay visible in its literal transcription, and the fixed topology is clean.

docs/decisions.md records each finding (D1…D13) and how topology/services.yaml fixes it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from framework.contracts import ContractRegistry
from framework.lint import lint
from framework.registry import Registry
from framework.topology.load import load_run, load_topology_file

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def contracts() -> ContractRegistry:
    return ContractRegistry.load(ROOT / "contracts")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.discover()


def _codes(findings, level="error"):
    return {(f.code, f.service) for f in findings if f.level == level}


def test_literal_seed_defects_are_found(contracts, registry):
    topology, source = load_topology_file(ROOT / "tests/fixtures/seed_literal/services.yaml")
    findings = lint(topology, source, registry, contracts)
    errors = _codes(findings)
    warnings = _codes(findings, "warning")
    assert ("FX201", "data-bridge") in errors  # D1: external.> is never published
    assert ("FX205", "data-bridge") in errors
    assert ("FX202", "external-data-collector") in warnings  # D2
    assert ("FX204", "risk-management") in errors  # D3: signals.> feeds back its own decisions
    assert ("FX202", "mt5-connector") in warnings  # D4: nobody consumes broker fills
    assert ("FX302", "feature-engineering-service") in errors  # D5: ClickHouse.aggregates
    assert ("FX401", "finrl-training-service") in errors  # D6: {episode_num}
    assert ("FX301", "external_data_archive") in errors  # D7: no retention, no partitions
    assert ("FX203", "risk-management") in errors  # D8: risk decisions into trading_signals
    assert ("FX202", "backtesting-engine") in warnings  # D9
    fx501 = [f for f in findings if f.code == "FX501"]
    assert [(f.level, f.service) for f in fx501] == [("error", "execution-service")]  # D10
    assert "reads table 'trading_signals'" in fx501[0].message and "inference-service" in fx501[0].message
    assert ("FX302", "dedup_cache") in errors  # D11: the DragonflyDB cache has no TTL
    shared = {"executions", "trading_signals", "live_aggregates", "historical_aggregates", "historical_ticks"}
    assert {name for name in shared if ("FX302", name) in errors} == shared  # D13: two writers, duplicates kept
    fx103 = sorted(f.service for f in findings if f.code == "FX103")
    assert fx103 == ["data-bridge"] * 3 + ["external-data-collector"]  # D12: the cards' port names
    catch_all = [f for f in findings if f.code == "FX202" and f.service == "mt5-connector"]
    assert catch_all and all("'*.>' of dashboard-service" in f.message for f in catch_all)  # the card's *.> hides nothing
    located = [f for f in findings if f.code == "FX201"]
    assert located[0].file.endswith("seed_literal/services.yaml") and located[0].line


def test_decisions_cite_exactly_the_codes_the_literal_lint_reports(contracts, registry):
    """Every finding row of docs/decisions.md names codes the lint reports, and every code reported has a row."""
    topology, source = load_topology_file(ROOT / "tests/fixtures/seed_literal/services.yaml")
    reported = {f.code for f in lint(topology, source, registry, contracts) if f.code != "FX100"}
    rows = re.findall(r"^\| D\d+ \| \*\*([A-Z0-9/]+)\*\*", (ROOT / "docs/decisions.md").read_text(), re.MULTILINE)
    cited = {code for row in rows for code in row.split("/")}
    assert len(rows) == 13
    assert cited == reported


@pytest.mark.parametrize("profile", ["demo", "live", "backtest"])
def test_fixed_topology_has_no_errors(profile, contracts, registry):
    loaded = load_run([f"topology={profile}"], ROOT)
    findings = lint(loaded.topology, loaded.source, registry, contracts, pairs=loaded.config.pairs)
    assert [f for f in findings if f.level == "error"] == []
    disabled = {f.service for f in findings if f.code == "FX100"}
    assert not {"execution-service", "risk-management", "inference-service"} & disabled
    assert ("spread-watch" in disabled) == (profile == "backtest")  # a backtest replays bars: no ticks to watch


def test_fixed_topology_declares_all_seventeen_seed_services():
    topology, _ = load_topology_file(ROOT / "topology/services.yaml")
    names = [
        "polygon-live-collector", "polygon-historical-downloader", "dukascopy-historical-downloader",
        "external-data-collector", "data-bridge", "tick-aggregator", "feature-engineering-service",
        "supervised-training-service", "finrl-training-service", "inference-service", "risk-management",
        "execution-service", "performance-monitoring", "mt5-connector", "backtesting-engine",
        "dashboard-service", "notification-hub",
    ]
    assert set(names) <= set(topology.services)
    assert {"live_ticks", "historical_aggregates", "ml_features", "live_aggregates", "historical_ticks"} <= set(topology.tables)
    assert len(topology.instruments) == 14 and "XAUUSD" in topology.instruments
    assert topology.timeframes == ["1m", "5m", "15m", "30m", "1h", "4h", "1d"]
