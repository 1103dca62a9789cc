"""The HTTP API over a real registry, in process (no broker): routes, OIP v2, schema fuzzing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.http.api import Readiness, create_api
from tests.models import BuiltModel, MessageFactory

ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


def _readiness(ready: bool) -> Readiness:
    return Readiness(
        ready=ready,
        broker_reachable=ready,
        models_replayed=ready,
        models=1,
        assigned_partitions=2,
    )


@pytest.fixture
def api(make_message: MessageFactory, wine_model: BuiltModel) -> FastAPI:
    registry = ModelRegistry()
    registry.install(registry.build(make_message(version="3")))
    return create_api(registry, Metrics(), lambda: _readiness(True))


@pytest.fixture
def client(api: FastAPI) -> Iterator[TestClient]:
    with TestClient(api) as c:
        yield c


def test_model_routes_describe_the_serving_version(client: TestClient) -> None:
    assert [m["name"] for m in client.get("/models").json()] == ["wine"]
    view = client.get("/models/wine").json()
    assert (view["version"], view["format"], view["signature"]["width"]) == ("3", "onnx", 13)
    assert set(view["latency_ms"]) == {"min", "mean", "max", "p99"}
    assert client.get("/models/nope").status_code == 404
    assert client.get("/models/wine/history").json()[0]["status"] == "accepted"
    assert client.get("/models/nope/history").status_code == 404
    assert client.get("/health").json() == {"status": "alive"}
    assert client.get("/ready").status_code == 200


def test_not_ready_is_503(make_message: MessageFactory) -> None:
    registry = ModelRegistry()
    registry.install(registry.build(make_message(version="3")))
    api = create_api(registry, Metrics(), lambda: _readiness(False))
    with TestClient(api) as c:
        assert c.get("/ready").status_code == 503
        assert c.get("/v2/health/ready").status_code == 503
        assert c.get("/v2/health/live").status_code == 200
        body = {"inputs": [{"name": "X", "shape": [1, 13], "datatype": "FP32", "data": ROW}]}
        refused = c.post("/v2/models/wine/infer", json=body)  # the same refusal as gRPC's
        assert refused.status_code == 503
        assert refused.json() == {"error": "hotswap is not ready to score; retry shortly"}
        # during start-up's replay no model serves yet: still 503, the retryable answer
        early = c.post("/v2/models/not-yet/infer", json=body)
        assert (early.status_code, early.json()) == (503, refused.json())


def test_oip_v2_metadata_and_infer(client: TestClient) -> None:
    meta = client.get("/v2/models/wine").json()
    assert meta["versions"] == ["3"]
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 13]}]
    assert client.get("/v2/models/wine/ready").status_code == 200
    assert client.get("/v2/models/wine/versions/2/ready").status_code == 404
    body = {"inputs": [{"name": "X", "shape": [2, 13], "datatype": "FP32", "data": ROW + ROW}]}
    answer = client.post("/v2/models/wine/infer", json=body).json()
    outputs = {o["name"]: o for o in answer["outputs"]}
    assert answer["model_version"] == "3"
    assert outputs["label"]["shape"] == [2]
    assert outputs["label"]["data"][0] == outputs["label"]["data"][1]
    assert outputs["probabilities"]["shape"] == [2, 3]
    assert abs(sum(outputs["probabilities"]["data"][:3]) - 1) < 1e-5
    assert client.post("/v2/models/wine/versions/3/infer", json=body).status_code == 200
    assert "hotswap_http_inference_rows_total" in client.get("/metrics").text


@pytest.mark.parametrize(
    ("tensor", "status"),
    [
        ({"name": "X", "shape": [1, 12], "datatype": "FP32", "data": ROW[:12]}, 400),
        ({"name": "X", "shape": [1, 13], "datatype": "BYTES", "data": ROW}, 400),
        ({"name": "X", "shape": [1, 13], "datatype": "FP32", "data": ["a"] * 13}, 400),
        ({"name": "X", "shape": [2, 13], "datatype": "FP32", "data": ROW}, 400),
    ],
)
def test_oip_v2_refuses_inputs_that_do_not_fit(
    client: TestClient, tensor: dict[str, object], status: int
) -> None:
    response = client.post("/v2/models/wine/infer", json={"inputs": [tensor]})
    assert response.status_code == status
    assert response.json()["error"]


def test_oip_v2_unknown_model_is_404(client: TestClient) -> None:
    body = {"inputs": [{"name": "X", "shape": [1, 13], "datatype": "FP32", "data": ROW}]}
    assert client.post("/v2/models/nope/infer", json=body).status_code == 404


def test_no_generated_request_gets_a_server_error(api: FastAPI) -> None:
    """schemathesis generates requests for every operation in the OpenAPI schema."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 12

    for operation in operations:

        @settings(
            max_examples=40,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:  # type: ignore[type-arg]
            response = case.call()
            assert response.status_code < 500, (
                f"{case.method} {case.formatted_path}: {response.text}"
            )

        check()
