"""``fxrun deploy``: a valid, deterministic compose file with every enabled service and no secret value."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from framework.cli import main
from framework.deploy import NATS_NODES, compose, render
from framework.errors import UserError
from framework.topology.load import load_run
from framework.topology.model import Topology

ROOT = Path(__file__).resolve().parents[1]
SECRET_VARS = ("NATS_USER", "NATS_PASSWORD", "TIMESCALE_PASSWORD", "DRAGONFLY_PASSWORD", "CLICKHOUSE_PASSWORD", "POLYGON_API_KEY",
               "FRED_API_KEY", "FXFLOW_DASHBOARD_TOKEN")
OPTIONAL_VARS = ("SMTP_PASSWORD", "SMTP_USERNAME", "TELEGRAM_BOT_TOKEN", "TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN")
"""Secrets of notification channels that are on only when their variables are set (``enabled: auto``)."""

_X = {"^x-": {}}
_STRINGS = {"type": "array", "items": {"type": "string"}, "uniqueItems": True}
_LIST_OR_DICT = {
    "oneOf": [
        {
            "type": "object",
            "patternProperties": {".+": {"type": ["string", "number", "boolean", "null"]}},
            "additionalProperties": False,
        },
        _STRINGS,
    ]
}
_COMMAND = {"oneOf": [{"type": "null"}, {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
_DURATION = {"type": "string", "pattern": r"^(\d+(\.\d+)?(ns|us|ms|s|m|h))+$"}

COMPOSE_SUBSET_SCHEMA: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "The part of the Compose Specification (compose-spec/schema/compose-spec.json) fxrun deploy uses",
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]*$"},
        "services": {
            "type": "object",
            "patternProperties": {"^[a-zA-Z0-9._-]+$": {"$ref": "#/definitions/service"}},
            "additionalProperties": False,
        },
        "networks": {
            "type": "object",
            "patternProperties": {"^[a-zA-Z0-9._-]+$": {"$ref": "#/definitions/network"}},
        },
        "volumes": {
            "type": "object",
            "patternProperties": {"^[a-zA-Z0-9._-]+$": {"$ref": "#/definitions/volume"}},
            "additionalProperties": False,
        },
    },
    "required": ["services"],
    "patternProperties": _X,
    "additionalProperties": False,
    "definitions": {
        "service": {
            "type": "object",
            "properties": {
                "image": {"type": "string"},
                "build": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "properties": {
                                "context": {"type": "string"},
                                "dockerfile": {"type": "string"},
                                "args": _LIST_OR_DICT,
                                "target": {"type": "string"},
                            },
                            "additionalProperties": False,
                            "patternProperties": _X,
                        },
                    ]
                },
                "command": _COMMAND,
                "entrypoint": _COMMAND,
                "environment": _LIST_OR_DICT,
                "depends_on": {
                    "oneOf": [
                        _STRINGS,
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "patternProperties": {
                                "^[a-zA-Z0-9._-]+$": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "patternProperties": _X,
                                    "properties": {
                                        "restart": {"type": ["boolean", "string"]},
                                        "required": {"type": "boolean"},
                                        "condition": {
                                            "type": "string",
                                            "enum": [
                                                "service_started",
                                                "service_healthy",
                                                "service_completed_successfully",
                                            ],
                                        },
                                    },
                                    "required": ["condition"],
                                }
                            },
                        },
                    ]
                },
                "deploy": {
                    "type": ["object", "null"],
                    "properties": {
                        "mode": {"type": "string"},
                        "replicas": {"type": ["integer", "string"]},
                        "resources": {"type": "object"},
                        "restart_policy": {"type": "object"},
                    },
                    "additionalProperties": False,
                    "patternProperties": _X,
                },
                "healthcheck": {
                    "type": "object",
                    "properties": {
                        "disable": {"type": ["boolean", "string"]},
                        "interval": _DURATION,
                        "retries": {"type": ["number", "string"]},
                        "test": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                        "timeout": _DURATION,
                        "start_period": _DURATION,
                        "start_interval": _DURATION,
                    },
                    "additionalProperties": False,
                    "patternProperties": _X,
                },
                "networks": {
                    "oneOf": [
                        _STRINGS,
                        {
                            "type": "object",
                            "patternProperties": {"^[a-zA-Z0-9._-]+$": {"type": ["object", "null"]}},
                            "additionalProperties": False,
                        },
                    ]
                },
                "ports": {
                    "type": "array",
                    "items": {"oneOf": [{"type": "number"}, {"type": "string"}, {"type": "object"}]},
                },
                "restart": {"type": "string", "enum": ["no", "always", "on-failure", "unless-stopped"]},
                "ulimits": {
                    "type": "object",
                    "patternProperties": {
                        "^[a-z]+$": {
                            "oneOf": [
                                {"type": ["integer", "string"]},
                                {
                                    "type": "object",
                                    "properties": {
                                        "hard": {"type": ["integer", "string"]},
                                        "soft": {"type": ["integer", "string"]},
                                    },
                                    "required": ["soft", "hard"],
                                    "additionalProperties": False,
                                    "patternProperties": _X,
                                },
                            ]
                        }
                    },
                },
                "volumes": {
                    "type": "array",
                    "items": {"oneOf": [{"type": "string"}, {"type": "object", "required": ["type"]}]},
                    "uniqueItems": True,
                },
            },
            "patternProperties": _X,
            "additionalProperties": False,
        },
        "network": {
            "type": ["object", "null"],
            "properties": {
                "name": {"type": "string"},
                "driver": {"type": "string"},
                "external": {"type": ["boolean", "string", "object"]},
                "internal": {"type": ["boolean", "string"]},
            },
            "additionalProperties": False,
            "patternProperties": _X,
        },
        "volume": {
            "type": ["object", "null"],
            "properties": {
                "name": {"type": "string"},
                "driver": {"type": "string"},
                "driver_opts": {"type": "object"},
                "external": {"type": ["boolean", "string", "object"]},
                "labels": _LIST_OR_DICT,
            },
            "additionalProperties": False,
            "patternProperties": _X,
        },
    },
}


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("FXFLOW_PROJECT", raising=False)


@pytest.fixture(scope="module")
def compose_schema() -> dict[str, Any]:
    jsonschema.Draft7Validator.check_schema(COMPOSE_SUBSET_SCHEMA)
    return COMPOSE_SUBSET_SCHEMA


def _topology(*overrides: str) -> Topology:
    return load_run(["topology=live", *overrides], ROOT).topology


BIGGER = (
    "topology.services.data-bridge.enabled=true",
    "topology.services.polygon-live-collector.enabled=true",
    "topology.services.synthetic-ticks.enabled=true",
    "+topology.services.synthetic-ticks.replicas=3",
)


def _document(*overrides: str) -> tuple[Topology, dict[str, Any]]:
    topology = _topology(*overrides)
    return topology, yaml.safe_load(render(compose(topology)))


@pytest.mark.parametrize("overrides", [(), BIGGER], ids=["live", "more-services"])
def test_the_file_is_valid_compose(overrides: tuple[str, ...], compose_schema: dict[str, Any]) -> None:
    _, document = _document(*overrides)
    jsonschema.validate(document, compose_schema, cls=jsonschema.Draft7Validator)
    services = document["services"]
    for name, spec in services.items():
        assert set(spec.get("depends_on", {})) <= set(services) - {name}
        assert set(spec["networks"]) <= set(document["networks"])
        for volume in spec.get("volumes", []):
            assert volume.split(":")[0] in document["volumes"]


def test_every_enabled_service_has_a_container_with_its_replicas() -> None:
    topology, document = _document(*BIGGER)
    enabled = {name: s for name, s in topology.services.items() if s.enabled}
    assert {"spread-watch", "data-bridge", "polygon-live-collector", "synthetic-ticks"} <= set(enabled)
    for name, service in topology.services.items():
        if not service.enabled:
            assert name not in document["services"]
            continue
        spec = document["services"][name]
        assert spec["deploy"]["replicas"] == service.replicas
        assert spec["command"][:3] == ["fxrun", "topology=live", f"only=[{name}]"]
        assert spec["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        if name != "dashboard-service":  # the one server node (its own test below)
            assert len(spec["command"]) == 3 and "ports" not in spec
    assert document["services"]["data-bridge"]["deploy"]["replicas"] == 1
    assert document["services"]["synthetic-ticks"]["deploy"]["replicas"] == 3


def test_containers_get_the_urls_live_yaml_reads() -> None:
    _, document = _document()
    reads = set(re.findall(r"oc\.env:(FXFLOW_[A-Z_]+)", (ROOT / "topology" / "live.yaml").read_text()))
    env = document["services"]["spread-watch"]["environment"]
    given = {k for k in env if k.startswith("FXFLOW_")} - {"FXFLOW_METRICS_HOST"}
    assert {"FXFLOW_NATS_URL", "FXFLOW_KAFKA_BOOTSTRAP", "FXFLOW_POSTGRES_URL", "FXFLOW_REDIS_URL"} <= given
    assert given <= reads
    assert env["FXFLOW_KAFKA_BOOTSTRAP"] == "kafka:9092"


def test_every_container_is_given_every_nats_node() -> None:
    _, document = _document(*BIGGER)
    nodes = sorted(name for name, spec in document["services"].items() if spec["image"].startswith("nats:"))
    apps = {name: spec for name, spec in document["services"].items() if spec["image"] == "fxflow:latest"}
    assert len(nodes) == 3 and len(apps) >= 4
    for spec in apps.values():
        urls = spec["environment"]["FXFLOW_NATS_URL"].split(",")
        assert urls == [f"nats://{node}:4222" for node in nodes]
        assert set(nodes) <= set(spec["depends_on"])


@pytest.mark.parametrize(("overrides", "port"), [((), 8050), (("topology.services.dashboard-service.params.port=9000",), 9000)])
def test_a_server_node_is_reachable_from_the_host_behind_its_token(overrides: tuple[str, ...], port: int) -> None:
    """Inside its container the dashboard binds every interface (127.0.0.1 there is unreachable), the host
    publishes its port on loopback only, and binding beyond loopback makes its token required."""
    _, document = _document(*overrides)
    dashboard = document["services"]["dashboard-service"]
    assert "topology.services.dashboard-service.params.host=0.0.0.0" in dashboard["command"]
    assert dashboard["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert dashboard["environment"]["FXFLOW_DASHBOARD_TOKEN"] == "${FXFLOW_DASHBOARD_TOKEN:?set FXFLOW_DASHBOARD_TOKEN}"
    others = [name for name, spec in document["services"].items() if "ports" in spec and name != "dashboard-service"]
    assert all(not name.startswith(("execution", "risk", "mt5")) for name in others)  # no trading service is published


def test_the_nats_cluster_has_three_routed_nodes() -> None:
    _, document = _document()
    nodes = {name: spec for name, spec in document["services"].items() if spec["image"].startswith("nats:")}
    assert sorted(nodes) == sorted(NATS_NODES) and len(nodes) == 3

    def flag(command: list[str], name: str) -> str:
        return command[command.index(name) + 1]

    for name, spec in nodes.items():
        command = spec["command"]
        assert "--jetstream" in command
        assert flag(command, "--name") == name
        assert flag(command, "--cluster_name") == "fxflow"
        assert flag(command, "--cluster").endswith(":6222")
        routed = {url.removeprefix("nats://").split(":")[0] for url in flag(command, "--routes").split(",")}
        assert set(nodes) - {name} <= routed


def test_no_secret_value_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*SECRET_VARS, *OPTIONAL_VARS):
        monkeypatch.setenv(var, f"value-of-{var.lower()}-s3cret")
    text = render(compose(_topology(*BIGGER)))
    assert "s3cret" not in text
    references = set(re.findall(r"\$\{([A-Z_]+)(?::\?[^}]*)?\}", text))
    assert references == set(SECRET_VARS)
    assert set(re.findall(r"\$\{([A-Z_]+):-\}", text)) == set(OPTIONAL_VARS)
    assert "$" not in re.sub(r"\$\{[A-Z_]+(:\?set [A-Z_]+|:-)\}", "", text)
    polygon = yaml.safe_load(text)["services"]["polygon-live-collector"]["environment"]
    assert polygon["POLYGON_API_KEY"] == "${POLYGON_API_KEY:?set POLYGON_API_KEY}"


def test_the_output_is_deterministic(monkeypatch: pytest.MonkeyPatch) -> None:
    first = render(compose(_topology(*BIGGER)))
    monkeypatch.setenv("FXFLOW_NATS_URL", "nats://elsewhere:4222")
    monkeypatch.setenv("FXFLOW_KAFKA_AUTH", "{mechanism: PLAIN, username_env: KAFKA_USERNAME, password_env: KAFKA_PASSWORD}")
    monkeypatch.setenv("FXFLOW_POSTGRES_URL", "postgresql://u:p@elsewhere/db")
    assert render(compose(_topology(*BIGGER))) == first


def test_a_service_named_like_a_server_is_refused() -> None:
    topology = _topology()
    clash = topology.model_copy(update={"services": {"kafka": topology.services["spread-watch"]}})
    with pytest.raises(UserError, match="name of a server container"):
        compose(clash)


def test_the_committed_file_is_current() -> None:
    assert main(["deploy", "--check"]) == 0


def test_fxrun_deploy_writes_and_checks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compose.yml"
    assert main(["deploy", "--out", str(out)]) == 0
    document = yaml.safe_load(out.read_text())
    assert Path(out.parent, document["services"]["spread-watch"]["build"]["context"]).resolve() == ROOT
    assert main(["deploy", "--out", str(out), "--check"]) == 0
    out.write_text(out.read_text() + "# edited\n")
    assert main(["deploy", "--out", str(out), "--check"]) == 1
    assert "stale" in capsys.readouterr().err


def test_fxrun_deploy_refuses_a_topology_with_lint_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "compose.yml"
    assert main(["deploy", "--out", str(out), "topology.services.spread-watch.node=no_such_node"]) == 1
    assert "lint error" in capsys.readouterr().err and not out.exists()
