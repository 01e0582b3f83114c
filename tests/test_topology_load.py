"""Composing runs from ``topology/`` (Hydra profiles and overrides) and reporting mistakes with file:line.

Also covers the two small helpers the topology is written in: subject templates and durations.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from framework.durations import parse_ms, parse_seconds
from framework.errors import UserError
from framework.topology.load import load_file, load_run, load_topology_file
from framework.topology.source import MAX_NESTING, read_yaml
from framework.topology.templates import (
    as_pattern,
    compile_renderer,
    expand,
    is_template,
    placeholders,
)

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
        "external-data-collector", "data-bridge", "tick-aggregator", "feature-engineering-service",
        "supervised-training-service", "finrl-training-service", "inference-service", "risk-management",
        "execution-service", "performance-monitoring", "mt5-connector", "backtesting-engine", "dashboard-service",
        "notification-hub", "spread-watch",
    }  # fmt: skip  (all 17 seed services; backtesting-engine in service mode, backtest_runner)
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
    enabled = {name for name, s in topo.services.items() if s.enabled}
    # history in, the live decision path on it, nothing trained, nobody notified
    assert enabled == {
        "backtesting-engine", "feature-engineering-service", "inference-service", "risk-management",
        "execution-service", "mt5-connector", "performance-monitoring",
    }  # fmt: skip


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
    assert "FX402 duplicate service 'spread-watch'" in text


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


# --------------------------------------------------------------------------- interpolation and file mode


def test_a_single_file_resolves_its_interpolations_against_the_run_defaults(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FXFLOW_SIMULATE_FEEDS", raising=False)
    topology, _ = load_topology_file(project / "topology" / "services.yaml")
    assert topology.services["polygon-live-collector"].params["simulate"] is False
    assert topology.stores["clickhouse"].url == f"chdb://{project / '.fxrun'}/clickhouse"
    as_written, _ = load_topology_file(project / "topology" / "services.yaml", resolve=False)
    assert as_written.services["polygon-live-collector"].params["simulate"] == "${simulate_feeds}"


def test_a_single_file_applies_overrides(project: Path) -> None:
    loaded = load_file(project / "topology" / "services.yaml", ["simulate_feeds=true", "pairs=[EURUSD]"])
    assert loaded.topology.services["polygon-live-collector"].params["simulate"] is True
    assert loaded.config.pairs == ["EURUSD"]


def test_a_single_file_under_a_profile_choice_composes_the_profile(project: Path) -> None:
    """``fxrun lint FILE topology=demo``: the demo profile over FILE, in place of services.yaml."""
    mine = project / "mine.yaml"
    shutil.copy(project / "topology" / "services.yaml", mine)
    edit(mine, "  EURAUD: {pip: 0.0001, digits: 5}\n", "")
    loaded = load_file(mine, ["topology=demo"])
    assert loaded.profile == "demo" and "EURAUD" not in loaded.topology.instruments
    assert loaded.topology.runtime.clock == "simulated" and loaded.files[0] == mine


def test_unknown_interpolation_in_a_file_names_file_and_line(project: Path) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, 'simulate: "${simulate_feeds}"}', 'simulate: "${nope}"}')
    line = line_of(services, "    params: {api_key_env: POLYGON_API_KEY, url:")
    with pytest.raises(UserError) as info:
        load_topology_file(services)
    text = str(info.value)
    assert f"topology/services.yaml:{line}: services.polygon-live-collector.params.simulate: cannot resolve '${{nope}}'" in text
    with pytest.raises(UserError):
        load_topology_file(services, resolve=False)


def test_unknown_interpolation_in_a_profile_names_the_profile_line(project: Path) -> None:
    demo = project / "topology" / "demo.yaml"
    edit(demo, "  clock: simulated\n", "  clock: ${nope}\n")
    line = line_of(demo, "  clock:")
    text = str(user_error("topology=demo", project=project))
    assert f"topology/demo.yaml:{line}: runtime.clock: cannot resolve '${{nope}}'" in text


def test_unknown_interpolation_in_an_override_names_the_command_line() -> None:
    text = str(user_error("topology.stores.clickhouse.url=${nope}"))
    assert text.startswith("<command line>: stores.clickhouse.url: cannot resolve '${nope}'")


def test_a_bad_environment_default_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_SIMULATE_FEEDS", "maybe")
    text = str(user_error())
    assert "environment variable FXFLOW_SIMULATE_FEEDS" in text and "'maybe'" in text
    monkeypatch.setenv("FXFLOW_SIMULATE_FEEDS", "true")
    assert run().config.simulate_feeds is True


# --------------------------------------------------------------------------- misspelt services


def test_a_misspelt_service_in_an_override_is_blamed_on_the_command_line() -> None:
    text = str(user_error("+topology.services.tick-aggregatr.enabled=true"))
    assert text.startswith("<command line>: services.tick-aggregatr: ")
    assert "service 'tick-aggregatr' is not declared in topology/services.yaml; did you mean tick-aggregator" in text
    assert "demo.yaml" not in text and "missing required key" not in text


def test_a_misspelt_service_in_a_profile_is_blamed_on_the_profile(project: Path) -> None:
    demo = project / "topology" / "demo.yaml"
    edit(demo, "  data-bridge:\n", "  data-brigde:\n")
    line = line_of(demo, "  data-brigde:")
    text = str(user_error("topology=demo", project=project))
    assert text.startswith(f"topology/demo.yaml:{line}: services.data-brigde: ")
    assert "service 'data-brigde' is not declared in topology/services.yaml; did you mean data-bridge?" in text
    assert "missing required key" not in text


def test_a_profile_or_override_may_declare_a_whole_new_service() -> None:
    topo = run("+topology.services.extra-watch={node: template, phase: support, enabled: false}").topology
    assert topo.services["extra-watch"].node == "template"


# --------------------------------------------------------------------------- run options


def test_empty_data_dir_is_refused() -> None:
    for value in ("data_dir=", "data_dir=''", "data_dir=null"):
        text = str(user_error(value))
        assert text.startswith("<command line>: data_dir: must name a directory"), text


def test_relative_data_dir_is_made_absolute_before_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = run("data_dir=runs/a")
    assert loaded.config.data_dir == str(tmp_path / "runs" / "a")
    assert loaded.topology.stores["clickhouse"].url == f"chdb://{tmp_path}/runs/a/clickhouse"
    assert run().config.data_dir == str(tmp_path / ".fxrun")


@pytest.mark.parametrize("key", ["pairs", "only"])
def test_an_empty_selection_is_refused(key: str) -> None:
    text = str(user_error(f"{key}=[]"))
    assert text.startswith(f"<command line>: {key}: [] selects nothing; leave {key} out")


@pytest.mark.parametrize(
    ("timeframe", "problem"),
    [
        ("7m", "timeframe '7m' does not divide a day evenly"),
        ("2d", "timeframe '2d': only 1d and 1w are supported"),
        ("11m", "timeframe '11m' does not divide a day evenly"),
        ("30s", "timeframe '30s' must be at least one minute"),
        ("1y", "timeframe '1y' is not a timeframe"),
        ("5m", "timeframe '5m' listed more than once"),
    ],
)
def test_a_timeframe_bars_cannot_be_built_for_is_reported_with_file_and_line(project: Path, timeframe: str, problem: str) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, "timeframes: [1m, 5m,", f"timeframes: [1m, {timeframe}, 5m,")
    line = line_of(services, "timeframes:")
    text = str(user_error("topology=demo", project=project))
    assert f"topology/services.yaml:{line}: timeframes: {problem}" in text


@pytest.mark.parametrize("timeframes", ["[1m,10m,1w]", "[5m,1h,1d]"])
def test_timeframes_that_divide_a_day_or_are_calendar_days_load(timeframes: str) -> None:
    loaded = load_run(["topology=demo", f"topology.timeframes={timeframes}"], PROJECT)
    assert loaded.topology.timeframes == timeframes.strip("[]").split(",")


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("stores:\n", "stores: clickhouse\nunused_stores:\n", "stores: should be a mapping, not a string"),
        ("services:\n", "services: [data-bridge, tick-aggregator]\nunused_services:\n", "services: should be a mapping, not a list"),
        ("timeframes: [1m, 5m,", "timeframes: {a: 1m}\nunused: [1m, 5m,", "timeframes: should be a list, not a mapping"),
    ],
)
def test_a_section_of_the_wrong_shape_is_blamed_on_its_file_and_line(project: Path, old: str, new: str, message: str) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, old, new)
    line = line_of(services, new.split("\n")[0])
    text = str(user_error("topology=demo", project=project))
    assert text.startswith(f"topology/services.yaml:{line}: {message}"), text


def test_an_empty_nats_server_url_is_reported_where_it_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_NATS_URL", "")
    line = line_of(PROJECT / "topology" / "live.yaml", "    - ${oc.env:FXFLOW_NATS_URL")
    text = str(user_error("topology=live"))
    assert f"topology/live.yaml:{line}: nats.servers.0: empty address" in text


@pytest.mark.parametrize("url", ["redis://cache:6379/0", "rediss://cache:6380/0", "unix:///run/redis.sock"])
def test_a_redis_store_accepts_redis_urls(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_REDIS_URL", url)
    assert run("topology=live").topology.stores["dragonfly"].url == url


def test_a_redis_store_with_another_scheme_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_REDIS_URL", "http://cache:6379")
    line = line_of(PROJECT / "topology" / "live.yaml", "  dragonfly:")
    text = str(user_error("topology=live"))
    assert f"topology/live.yaml:{line}: stores.dragonfly.url: a redis store needs a redis://, rediss://, unix:// URL" in text


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("value: flaot", "unknown column type 'flaot' for ClickHouse; did you mean float?"),
        ("value: Float64; DROP TABLE x", "unknown column type 'Float64; DROP TABLE x'"),
    ],
)
def test_an_unknown_column_type_is_reported_with_file_and_line(project: Path, written: str, expected: str) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, "name: str, value: float, step: int}", f"name: str, {written}, step: int}}")
    line = line_of(services, "  training_metrics:")
    text = str(user_error("topology=demo", project=project))
    assert f"topology/services.yaml:{line}: tables.training_metrics.columns.value: {expected}" in text


def test_native_and_nullable_column_types_are_accepted(project: Path) -> None:
    services = project / "topology" / "services.yaml"
    edit(services, "name: str, value: float, step: int}", "name: LowCardinality(String), value: 'float?', step: int}")
    assert run("topology=demo", project=project).topology.tables["training_metrics"].columns == {
        "run_id": "str", "ts": "timestamp_ms", "name": "LowCardinality(String)", "value": "float?", "step": "int",
    }  # fmt: skip


# --------------------------------------------------------------------------- unreadable files


def test_a_file_that_is_not_utf8_is_one_error_with_line_and_offset(tmp_path: Path) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes(b"name: ok\nwho: caf\xe9\n")
    with pytest.raises(UserError) as info:
        read_yaml(path)
    assert info.value.line == 2
    assert "not UTF-8 text: byte 0xe9 at offset 17" in str(info.value)


def test_deeply_nested_yaml_is_one_error(tmp_path: Path) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text("name: x\na:" + " [" * 2000 + "\n")
    with pytest.raises(UserError) as info:
        read_yaml(path)
    assert info.value.line == 2
    assert f"nested more than {MAX_NESTING} levels" in str(info.value)
    shallow = tmp_path / "shallow.yaml"
    shallow.write_text("a: " + "[" * (MAX_NESTING + 5) + "]" * (MAX_NESTING + 5) + "\n")
    with pytest.raises(UserError, match="nested more than"):
        read_yaml(shallow)


def test_control_characters_are_one_error_with_the_line(tmp_path: Path) -> None:
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"a: 1\nb: \x00\x01\x02\n")
    with pytest.raises(UserError) as info:
        read_yaml(path)
    assert info.value.line == 2
    assert "U+0000" in str(info.value)


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


@pytest.mark.parametrize(
    ("override", "path", "from_file"),
    [
        ("topology.services.spread-watch.params={stats_every: 5m}", ("topology", "services", "spread-watch", "params", "stats_every"), False),
        ("topology.services.spread-watch.params={stats_every: 5m}", ("topology", "services", "spread-watch", "params", "max_spread_pips"), True),
        ("topology.services.spread-watch.params.max_spread_pips={default: 2.0}",
         ("topology", "services", "spread-watch", "params", "max_spread_pips", "default"), False),
        ("pairs=[EURUSD]", ("pairs", "0"), False),
    ],
)
def test_a_value_set_inside_an_overridden_mapping_is_located_on_the_command_line(override: str, path: tuple[str, ...],
                                                                                  from_file: bool) -> None:  # fmt: skip
    """``key={a: 1}`` merges into the file's mapping: the keys it names were written on the command line (a mistake there
    was reported at the YAML line of the value it replaced), the others stay where the file wrote them."""
    where = run(override).source.find(path)
    assert where is not None
    assert (where.file != "<command line>") is from_file, where
