"""What the transports of ``topology=live`` are given, from the environment `fxrun infra up` or a
deployment sets: every NATS node, and Kafka SASL only when ``FXFLOW_KAFKA_AUTH`` asks for it.

No SASL broker runs here (tansu speaks neither SASL nor TLS), so the Kafka tests check the
settings the aiokafka clients receive; tests/test_live_e2e.py runs the profile on real servers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from framework.errors import UserError
from framework.topology.load import load_run
from framework.topology.model import Topology
from framework.transport.factory import make_log, make_pubsub
from framework.transport.kafka import KafkaLog
from framework.transport.nats import NatsPubSub

ROOT = Path(__file__).resolve().parents[1]
SASL = "{mechanism: SCRAM-SHA-512, username_env: FX_TEST_KAFKA_USER, password_env: FX_TEST_KAFKA_PASSWORD}"
SASL_KEYS = {"sasl_mechanism", "sasl_plain_username", "sasl_plain_password"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    for var in ("FXFLOW_PROJECT", "FXFLOW_NATS_URL", "FXFLOW_KAFKA_BOOTSTRAP", "FXFLOW_KAFKA_AUTH"):
        monkeypatch.delenv(var, raising=False)


def _live() -> Topology:
    return load_run(["topology=live"], ROOT).topology


def _kafka(tmp_path: Path) -> KafkaLog:
    log = make_log(_live(), service="data-bridge", data_dir=tmp_path)
    assert isinstance(log, KafkaLog)
    return log


def test_a_comma_separated_nats_url_gives_the_client_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_NATS_URL", "nats://nats-1:4222, nats://nats-2:4222,nats://nats-3:4222")
    bus = make_pubsub(_live(), service="data-bridge")
    assert isinstance(bus, NatsPubSub)
    assert bus.servers == ["nats://nats-1:4222", "nats://nats-2:4222", "nats://nats-3:4222"]


def test_one_nats_url_as_fxrun_infra_up_exports_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_NATS_URL", "nats://127.0.0.1:14222")
    bus = make_pubsub(_live(), service="data-bridge")
    assert isinstance(bus, NatsPubSub) and bus.servers == ["nats://127.0.0.1:14222"]


def test_without_kafka_auth_the_clients_connect_in_plaintext(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FX_TEST_KAFKA_USER", "ignored")
    monkeypatch.setenv("FXFLOW_KAFKA_BOOTSTRAP", "k1:9092,k2:9092")
    log = _kafka(tmp_path)
    assert log.config.auth is None
    options = log.client_options()
    assert options["security_protocol"] == "PLAINTEXT"
    assert options["bootstrap_servers"] == ["k1:9092", "k2:9092"]
    assert not SASL_KEYS & set(options)


def test_with_kafka_auth_the_clients_get_sasl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_KAFKA_AUTH", SASL)
    monkeypatch.setenv("FX_TEST_KAFKA_USER", "svc-bridge")
    monkeypatch.setenv("FX_TEST_KAFKA_PASSWORD", "pw-123")
    options = _kafka(tmp_path).client_options()
    assert options["security_protocol"] == "SASL_PLAINTEXT"
    assert {key: options[key] for key in SASL_KEYS} == {
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc-bridge",
        "sasl_plain_password": "pw-123",
    }
    assert options["bootstrap_servers"] == ["127.0.0.1:9092"]


def test_kafka_auth_without_its_password_names_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FXFLOW_KAFKA_AUTH", SASL)
    monkeypatch.setenv("FX_TEST_KAFKA_USER", "svc-bridge")
    monkeypatch.delenv("FX_TEST_KAFKA_PASSWORD", raising=False)
    with pytest.raises(UserError, match="FX_TEST_KAFKA_PASSWORD is not set"):
        _kafka(tmp_path).client_options()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("SCRAM-SHA-512", "kafka.auth: Input should be a valid dictionary"),
        ("{mechanism: SCRAM, username_env: A, password_env: B}", "kafka.auth.mechanism"),
        ("{mechanism: PLAIN, username_env: A}", "kafka.auth.password_env"),
    ],
)
def test_a_malformed_kafka_auth_is_a_one_line_error_at_live_yaml(
    monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setenv("FXFLOW_KAFKA_AUTH", value)
    with pytest.raises(UserError) as caught:
        _live()
    text = str(caught.value)
    assert "topology/live.yaml:" in text and message in text and "\n" not in text
