"""Settings: HOTSWAP_* environment variables, documented defaults, broker parsing."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from service.core.settings import Settings, unknown_variables


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No HOTSWAP_* variable of the developer's shell leaks into these tests."""
    for name in list(os.environ):
        if name.upper().startswith("HOTSWAP_"):
            monkeypatch.delenv(name)


def test_documented_defaults() -> None:
    settings = Settings()
    assert settings.broker == "kafka://localhost:9092"
    assert settings.model_topic == "models"
    assert settings.data_topic == "records"
    assert settings.scored_topic == "scored"
    assert settings.dead_letter_topic == "records.dlq"
    assert settings.http_port == 8000
    assert settings.http_host == "0.0.0.0"
    assert settings.app_id == "hotswap"
    assert settings.default_model == ""
    assert settings.batch_size == 2000
    assert settings.max_record_bytes == 1_000_000
    assert settings.max_model_bytes == 200_000_000
    assert settings.fetch_timeout == 15.0
    assert settings.security_protocol == "PLAINTEXT"
    assert settings.bootstrap_servers == ["localhost:9092"]


def test_env_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSWAP_MODEL_TOPIC", "m2")
    monkeypatch.setenv("HOTSWAP_DATA_TOPIC", "in")
    monkeypatch.setenv("HOTSWAP_HTTP_PORT", "9001")
    monkeypatch.setenv("HOTSWAP_BATCH_TIMEOUT", "0.5")
    monkeypatch.setenv("HOTSWAP_DEFAULT_MODEL", "wine")
    monkeypatch.setenv("MODEL_TOPIC", "unprefixed-is-ignored")
    settings = Settings()
    assert settings.model_topic == "m2"
    assert settings.data_topic == "in"
    assert settings.http_port == 9001
    assert settings.batch_timeout == 0.5
    assert settings.default_model == "wine"


def test_env_is_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("hotswap_app_id", "group-7")
    assert Settings().app_id == "group-7"


def test_password_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTSWAP_SASL_PASSWORD", "hunter2")
    settings = Settings()
    assert settings.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    ("broker", "servers"),
    [
        ("kafka://a:1;b:2", ["a:1", "b:2"]),
        ("kafka://a:1;kafka://b:2", ["a:1", "b:2"]),
        ("a:9092,b:9092", ["a:9092", "b:9092"]),
        (" a:1 , ; b:2 ", ["a:1", "b:2"]),
        ("host:9092", ["host:9092"]),
    ],
)
def test_bootstrap_servers(
    monkeypatch: pytest.MonkeyPatch, broker: str, servers: list[str]
) -> None:
    monkeypatch.setenv("HOTSWAP_BROKER", broker)
    settings = Settings()
    assert settings.bootstrap_servers == servers


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOTSWAP_BROKER", "  "),
        ("HOTSWAP_HTTP_PORT", "eighty"),
        ("HOTSWAP_BATCH_SIZE", "0"),
        ("HOTSWAP_BATCH_TIMEOUT", "0"),
        ("HOTSWAP_SECURITY_PROTOCOL", "TLS"),
        ("HOTSWAP_PRODUCER_COMPRESSION", "brotli"),
    ],
)
def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"HOTSWAP_DEAD_LETTER_TOPIC": "records"}, "HOTSWAP_DATA_TOPIC and HOTSWAP_DEAD_LETTER"),
        ({"HOTSWAP_SCORED_TOPIC": "models"}, "HOTSWAP_MODEL_TOPIC and HOTSWAP_SCORED_TOPIC"),
        ({"HOTSWAP_LABELS_TOPIC": "scored"}, "HOTSWAP_SCORED_TOPIC and HOTSWAP_LABELS_TOPIC"),
        ({"HOTSWAP_APP_ID": "x", "HOTSWAP_DATA_TOPIC": "x.labels-join"}, "HOTSWAP_LABEL_STATE"),
    ],
)
def test_one_topic_has_one_role(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    """A dead-letter topic that is the data topic re-reads every dead letter, forever."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError, match=named):
        Settings()


def test_the_worker_refuses_a_topic_in_two_roles_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    monkeypatch.setenv("HOTSWAP_DEAD_LETTER_TOPIC", "records")
    assert main(["worker"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad settings:")
    assert "\n" not in err


def test_a_misspelt_variable_is_named_with_the_setting_it_meant() -> None:
    environ = {
        "HOTSWAP_PROCESSING_GUARANTE": "exactly_once",
        "HOTSWAP_BROKER": "kafka://b:9092",
        "PATH": "/bin",
        "HOTSWAP_NOTHING_LIKE_IT_AT_ALL_XYZ": "1",
        "HOTSWAP_SERVICE_HOST": "10.0.0.1",  # Kubernetes' links to a Service named hotswap
        "HOTSWAP_PORT_8000_TCP": "tcp://10.0.0.1:8000",
    }
    assert unknown_variables(environ) == [
        "HOTSWAP_NOTHING_LIKE_IT_AT_ALL_XYZ",
        "HOTSWAP_PROCESSING_GUARANTE (did you mean HOTSWAP_PROCESSING_GUARANTEE?)",
    ]
