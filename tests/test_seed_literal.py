"""The seed's wiring defects stay visible in its literal transcription, and the fixed topology is clean.

docs/decisions.md records each finding (D1…D9) and how topology/services.yaml fixes it.
"""

from __future__ import annotations

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
    located = [f for f in findings if f.code == "FX201"]
    assert located[0].file.endswith("seed_literal/services.yaml") and located[0].line


@pytest.mark.parametrize("profile", ["demo", "live", "backtest"])
def test_fixed_topology_has_no_errors(profile, contracts, registry):
    loaded = load_run([f"topology={profile}"], ROOT)
    findings = lint(loaded.topology, loaded.source, registry, contracts, pairs=loaded.config.pairs)
    assert [f for f in findings if f.level == "error"] == []
    disabled = {f.service for f in findings if f.code == "FX100"}
    assert "execution-service" in disabled and "spread-watch" not in disabled


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
