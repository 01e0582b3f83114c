"""Composing runs from ``topology/`` (Hydra profiles and overrides) and reporting mistakes with file:line.

Also covers the two small helpers the topology is written in: subject templates and durations.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from framework.durations import parse_ms, parse_seconds
from framework.errors import UserError
from framework.topology.load import load_run, load_topology_file
from framework.topology.templates import as_pattern, compile_renderer, expand, is_template, placeholders

PROJECT = Path(__file__).resolve().parents[1]


def run(*overrides: str, project: Path = PROJECT):
    return load_run(list(overrides), project)


def user_error(*overrides: str, project: Path = PROJECT) -> UserError:
    with pytest.raises(UserError) as info:
        run(*overrides, project=project)
    return info.value


def line_of(path: Path, needle: str, occurrence: int = 1) -> int:
    """1-based line number of the ``occurrence``-th line that starts with ``needle``."""
    seen = 0
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith(needle):
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not found in {path}")


# --------------------------------------------------------------------------- profiles


def test_demo_profile_runs_everything_in_process_on_a_simulated_clock() -> None:
    loaded = run("topology=demo")
    topo = loaded.topology
    assert loaded.profile == "demo"
    assert [f.name for f in loaded.files] == ["services.yaml", "demo.yaml"]
    assert (topo.runtime.pubsub, topo.runtime.log, topo.runtime.clock) == ("inprocess", "inprocess", "simulated")
    assert topo.runtime.validation == "strict"
    enabled = {name for name, s in topo.services.items() if s.enabled}
    assert enabled == {
        "polygon-live-collector", "polygon-historical-downloader", "dukascopy-historical-downloader",
        "external-data-collector", "data-bridge", "tick-aggregator", "spread-watch",
    }  # fmt: skip
    # the profile overrides the store kind (postgres in services.yaml) with the embedded ClickHouse
    assert topo.stores["timescale"].kind == "clickhouse"
    assert topo.services["polygon-live-collector"].params["simulate"] is True
    # and what it does not mention still comes from services.yaml
    assert "XAUUSD" in topo.instruments and len(topo.services) == 20


def test_demo_is_the_default_profile() -> None:
    assert run().profile == "demo"


def test_live_profile_uses_real_servers_with_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_NATS_URL", "nats://nats.example:4222")
    monkeypatch.delenv("FXFLOW_KAFKA_BOOTSTRAP", raising=False)
    topo = run("topology=live").topology
    assert (topo.runtime.pubsub, topo.runtime.log, topo.runtime.clock) == ("nats", "kafka", "wall")
    assert topo.nats is not None and topo.nats.servers == ["nats://nats.example:4222"]
    assert topo.kafka is not None and topo.kafka.bootstrap == ["127.0.0.1:9092"]  # the default
    assert topo.stores["timescale"].kind == "postgres"  # kind kept from services.yaml, url overridden
    assert not topo.services["synthetic-ticks"].enabled


def test_backtest_profile_keeps_nothing_between_runs() -> None:
    topo = run("topology=backtest").topology
    assert topo.runtime.clock == "simulated"
    assert topo.runtime.persist_log is False
    assert topo.runtime.validation == "sampled"
    assert topo.services["synthetic-ticks"].enabled
    assert topo.services["synthetic-ticks"].params["seed"] == 11


def test_data_dir_override_reaches_interpolated_store_urls(tmp_path: Path) -> None:
    loaded = run("topology=demo", f"data_dir={tmp_path}")
    assert loaded.config.data_dir == str(tmp_path)
    assert loaded.topology.stores["timescale"].url == f"chdb://{tmp_path}/clickhouse"


# --------------------------------------------------------------------------- overrides


def test_pairs_and_only_overrides() -> None:
    config = run("pairs=[EURUSD,XAUUSD]", "only=[spread-watch]").config
    assert config.pairs == ["EURUSD", "XAUUSD"]
    assert config.only == ["spread-watch"]


def test_override_of_a_topology_value() -> None:
    topo = run("topology.services.data-bridge.replicas=3", "topology.services.synthetic-ticks.params.duration=10m").topology
    assert topo.services["data-bridge"].replicas == 3
    assert topo.services["synthetic-ticks"].params["duration"] == "10m"
    assert topo.services["synthetic-ticks"].params["seed"] == 7  # the rest of the params block stays


def test_adding_a_key_the_yaml_leaves_to_its_default_uses_plus() -> None:
    assert run("+topology.services.spread-watch.replicas=3").topology.services["spread-watch"].replicas == 3


def test_override_of_an_absent_key_without_plus_says_how_to_fix_it() -> None:
    err = user_error("topology.services.spread-watch.replicas=3")
    assert "+topology.services.spread-watch.replicas=3" in str(err)


def test_override_value_is_validated_with_its_path() -> None:
    err = user_error("topology.services.data-bridge.replicas=0")
    assert "services.data-bridge.replicas" in str(err)
    assert "<command line>" in str(err)


def test_unknown_profile_lists_the_available_ones() -> None:
    err = user_error("topology=nope")
    text = str(err)
    assert "topology=nope" in text
    for name in ("demo", "live", "backtest"):
        assert name in text


def test_unknown_pair_suggests_the_closest() -> None:
    err = user_error("pairs=[EURUSD,XAUUDS]")
    text = str(err)
    assert "'XAUUDS' is not declared" in text
    assert "did you mean XAUUSD" in text
    assert "EURUSD" not in text.split("did you mean")[0]  # the valid pair is not reported


def test_unknown_service_in_only_suggests_the_closest() -> None:
    assert "did you mean spread-watch" in str(user_error("only=[spread-wach]"))


@pytest.mark.parametrize("override", ["pairs=[EURUSD", "=bad", "topology.services..x=1"])
def test_bad_override_syntax_is_a_user_error(override: str) -> None:
    err = user_error(override)
    assert "<command line>" in str(err)
    assert "Traceback" not in str(err)


def test_unknown_key_added_by_override_names_its_path() -> None:
    err = user_error("+topology.services.spread-watch.bogus=1")
    assert "services.spread-watch.bogus" in str(err)
    assert "unknown key 'bogus'" in str(err)


# --------------------------------------------------------------------------- errors in the YAML


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the repo's topology/ to edit; cwd is the copy so errors show relative paths."""
    shutil.copytree(PROJECT / "topology", tmp_path / "topology")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, count))


def test_copied_project_composes(project: Path) -> None:
    assert run("topology=demo", project=project).project == project


def test_malformed_yaml_reports_file_and_line(project: Path) -> None:
    services = project / "topology" / "services.yaml"
    line = line_of(services, "timeframes:")
    edit(services, "timeframes: [1m, 5m,", "timeframes: [1m, 5m: {,")
    err = user_error("topology=demo", project=project)
    assert err.file == "topology/services.yaml"
    assert err.line == line
    assert str(err).startswith(f"topology/services.yaml:{line}: YAML syntax error")


def test_malformed_profile_is_reported_in_the_profile(project: Path) -> None:
    demo = project / "topology" / "demo.yaml"
    edit(demo, "  clock: simulated\n", "  clock: [simulated\n")
    err = user_error("topology=demo", project=project)
    assert err.file == "topology/demo.yaml"
    assert err.line is not None


def test_unknown_key_names_file_line_and_dotted_path(project: Path) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, "    node: template\n", "    node: template\n    replica: 2\n")
    line = line_of(services, "    replica: 2")
    text = str(user_error("topology=demo", project=project))
    assert f"topology/services.yaml:{line}:" in text
    assert "services.spread-watch.replica" in text
    assert "unknown key 'replica'" in text


def test_unknown_key_in_a_profile_points_at_the_profile(project: Path) -> None:
    demo = project / "topology" / "demo.yaml"
    edit(demo, "  validation: strict\n", "  validation: strict\n  validaton: strict\n")
    line = line_of(demo, "  validaton:")
    text = str(user_error("topology=demo", project=project))
    assert f"topology/demo.yaml:{line}:" in text
    assert "runtime.validaton" in text


def test_wrong_type_reports_file_line(project: Path) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, "    node: template\n", '    node: template\n    replicas: "two"\n')
    line = line_of(services, '    replicas: "two"')
    text = str(user_error("topology=demo", project=project))
    assert f"topology/services.yaml:{line}:" in text
    assert "services.spread-watch.replicas" in text
    assert "'two'" in text


def test_several_mistakes_are_all_reported(project: Path) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, "    node: template\n", '    node: template\n    replicas: "two"\n    bogus: 1\n')
    text = str(user_error("topology=demo", project=project))
    assert "services.spread-watch.replicas" in text
    assert "services.spread-watch.bogus" in text


def test_duplicate_service_key_names_both_lines(project: Path) -> None:
    services = project / "topology" / "services.yaml"
    first = line_of(services, "  spread-watch:")
    with services.open("a") as f:
        f.write("\n  spread-watch:\n    node: template\n    phase: support\n")
    second = line_of(services, "  spread-watch:", occurrence=2)
    text = str(user_error("topology=demo", project=project))
    assert f"topology/services.yaml:{second}:" in text
    assert f"line {first}" in text
    assert "duplicate key 'spread-watch'" in text


def test_load_topology_file_validates_a_self_contained_file(project: Path) -> None:
    topology, source = load_topology_file(project / "topology" / "services.yaml")
    assert "spread-watch" in topology.services
    loc = source.find(["services", "spread-watch", "node"])
    assert loc is not None and loc.line == line_of(project / "topology" / "services.yaml", "    node: template")


def test_load_topology_file_reports_errors_with_file_line(project: Path) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, "    node: template\n", '    node: template\n    replicas: "two"\n')
    line = line_of(services, '    replicas: "two"')
    with pytest.raises(UserError) as info:
        load_topology_file(services)
    assert f"topology/services.yaml:{line}: services.spread-watch.replicas" in str(info.value)


def test_load_topology_file_on_a_profile_says_to_use_topology_name(project: Path) -> None:
    demo = project / "topology" / "demo.yaml"
    with pytest.raises(UserError) as info:
        load_topology_file(demo)
    err = info.value
    assert "topology=<name>" in str(err)
    assert err.file == "topology/demo.yaml"
    assert err.line == line_of(demo, "defaults:")


# --------------------------------------------------------------------------- templates


def test_expand_is_the_product_of_the_value_lists_in_order() -> None:
    values = {"symbol": ["EURUSD", "XAUUSD"], "timeframe": ["1m", "1h"]}
    assert expand("bars.{symbol}.{timeframe}", values) == [
        "bars.EURUSD.1m",
        "bars.EURUSD.1h",
        "bars.XAUUSD.1m",
        "bars.XAUUSD.1h",
    ]


def test_expand_handles_runtime_variables_repeats_and_literals() -> None:
    assert expand("training.{status}.{run_id}", {"status": ["started"], "run_id": "*"}) == ["training.started.*"]
    assert expand("x.{a}.{a}", {"a": ["1", "2"]}) == ["x.1.1", "x.2.2"]
    assert expand("x.{a}", {"a": ["1", "1"]}) == ["x.1"]
    assert expand("ticks.>", {}) == ["ticks.>"]


def test_expand_names_a_variable_without_values() -> None:
    with pytest.raises(KeyError) as info:
        expand("orders.{status}.{symbol}", {"symbol": ["EURUSD"]})
    assert info.value.args[0] == "status"


def test_as_pattern_and_placeholders() -> None:
    assert as_pattern("bars.{symbol}.{timeframe}") == "bars.*.*"
    assert as_pattern("ticks.>") == "ticks.>"
    assert placeholders("a.{x}.{y}.{x}") == ["x", "y"]
    assert is_template("a.{x}") and not is_template("a.b")


def test_compile_renderer_fills_from_message_fields() -> None:
    render = compile_renderer("orders.{status}.{symbol}")
    assert render({"symbol": "EURUSD", "status": "filled", "qty": 1}) == "orders.filled.EURUSD"
    assert compile_renderer("ticks.all")({}) == "ticks.all"


def test_compile_renderer_missing_field_names_template_and_field() -> None:
    render = compile_renderer("risk.alert.{type}")
    with pytest.raises(KeyError) as info:
        render({"symbol": "EURUSD"})
    message = str(info.value.args[0])
    assert "'risk.alert.{type}'" in message
    assert "'type'" in message


# --------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("30s", 30_000),
        ("1.5s", 1_500),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("3d", 3 * 86_400_000),
        ("2w", 14 * 86_400_000),
        ("7y", 7 * 365 * 86_400_000),
        (" 5m ", 300_000),
        ("forever", None),
        ("Forever", None),
    ],
)
def test_parse_ms(text: str, ms: int | None) -> None:
    assert parse_ms(text) == ms


@pytest.mark.parametrize("text", ["5", "5 minutes", "", "-1s", "1x", "m", "1.s"])
def test_parse_ms_rejects_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration.*500ms"):
        parse_ms(text)


def test_parse_seconds() -> None:
    assert parse_seconds("1.5s") == 1.5
    assert parse_seconds("250ms") == 0.25
    assert parse_seconds(2) == 2.0
    assert parse_seconds(0.5) == 0.5
    with pytest.raises(ValueError, match="forever"):
        parse_seconds("forever")
