"""What of `publish models:/` and `follow` needs no server: URIs, signatures, errors."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import pytest

from scripts.localkafka import free_port
from service.tools.errors import ToolError
from service.tools.follow import verify_signature
from service.tools.mlflow_source import parse_uri
from tests.tools.test_cli_errors import hotswap, one_error_line

SECRET = "s3cr3t"
BODY = b'{"entity": "model_version_alias", "action": "created", "data": {}}'


def _headers(secret: str = SECRET, body: bytes = BODY, stamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if stamp is None else stamp
    signed = f"d-1.{stamp}.".encode() + body
    digest = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    return {
        "X-MLflow-Signature": "v1," + digest.decode(),
        "X-MLflow-Delivery-Id": "d-1",
        "X-MLflow-Timestamp": str(stamp),
    }


def test_a_delivery_signed_with_the_secret_verifies() -> None:
    assert verify_signature(SECRET, _headers(), BODY)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (_headers(secret="other"), BODY),  # another secret
        (_headers(), BODY + b" "),  # the body changed
        (_headers(stamp=int(time.time()) - 3600), BODY),  # replayed an hour later
        ({**_headers(), "X-MLflow-Delivery-Id": "d-2"}, BODY),  # another delivery's signature
        ({}, BODY),  # unsigned
    ],
)
def test_anything_else_is_refused(headers: dict[str, str], body: bytes) -> None:
    assert not verify_signature(SECRET, headers, body)


def test_registry_uris() -> None:
    assert parse_uri("models:/wine@champion") == ("wine", "champion", None)
    assert parse_uri("models:/wine/12") == ("wine", None, "12")
    for bad in ("models:/wine", "models:/wine/latest", "runs:/abc/model", "models:/@x"):
        with pytest.raises(ToolError):
            parse_uri(bad)


def test_an_unreachable_mlflow_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    line = one_error_line(hotswap("publish", "models:/wine@champion"))
    assert line.startswith("error: cannot reach MLflow at http://127.0.0.1:"), line
    assert "MLFLOW_TRACKING_URI" in line
    follow = one_error_line(hotswap("follow", "models:/wine/3"))
    assert "follow needs an alias" in follow
