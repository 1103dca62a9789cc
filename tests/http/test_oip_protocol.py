"""OIP v2 binary tensor extension over HTTP (in process): requests, responses, refusals."""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from service.core.messages import ModelMessage
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.http.api import Readiness, create_api
from service.http.oip_infer import MAX_ROWS
from tests.models import BuiltModel, MessageFactory

LIMIT = 1 << 20
READY = Readiness(
    ready=True, broker_reachable=True, models_replayed=True, models=2, assigned_partitions=1
)


@pytest.fixture
def client(wine_and_text: tuple[ModelMessage, ...]) -> Iterator[TestClient]:
    registry = ModelRegistry()
    for message in wine_and_text:
        registry.install(registry.build(message))
    with TestClient(create_api(registry, Metrics(), lambda: READY, max_request_bytes=LIMIT)) as c:
        yield c


def _rows(model: BuiltModel, n: int = 4) -> np.ndarray:
    return np.asarray(model.sample_inputs[:n], dtype=np.float64)


def binary_request(array: np.ndarray, datatype: str, **extra: Any) -> tuple[bytes, dict[str, str]]:
    """A request whose one input is sent in binary; ``extra`` goes into the JSON header."""
    raw = array.astype(array.dtype.newbyteorder("<")).tobytes()
    tensor = {
        "name": "X",
        "shape": list(array.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    header = orjson.dumps({"inputs": [tensor], **extra})
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def split_response(response: Any) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The JSON header and each binary output's bytes of an OIP v2 response."""
    length = response.headers.get("inference-header-content-length")
    if length is None:
        return response.json(), {}
    body = response.content
    header = orjson.loads(body[: int(length)])
    offset, tensors = int(length), {}
    for out in header["outputs"]:
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            tensors[out["name"]] = body[offset : offset + size]
            offset += size
    assert offset == len(body)
    return header, tensors


def _json_reference(client: TestClient, rows: np.ndarray, name: str = "wine") -> dict[str, Any]:
    body = {
        "inputs": [
            {
                "name": "X",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ]
    }
    response = client.post(f"/v2/models/{name}/infer", json=body)
    assert response.status_code == 200, response.text
    return {o["name"]: o for o in response.json()["outputs"]}


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [
        (np.float32, "FP32"),
        (np.float64, "FP64"),
        (np.float16, "FP16"),
        (np.int32, "INT32"),
        (np.int64, "INT64"),
        (np.uint16, "UINT16"),
    ],
)
def test_binary_inputs_of_every_numeric_type_score_like_json(
    client: TestClient, wine_model: BuiltModel, dtype: type, datatype: str
) -> None:
    rows: np.ndarray = np.round(_rows(wine_model)).astype(dtype)  # integral: exact in all
    body, headers = binary_request(rows, datatype)
    response = client.post("/v2/models/wine/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert "inference-header-content-length" not in response.headers  # outputs in JSON
    got = {o["name"]: o for o in response.json()["outputs"]}
    want = _json_reference(client, rows.astype(np.float64))
    assert got["label"]["data"] == want["label"]["data"]
    np.testing.assert_allclose(
        got["probabilities"]["data"], want["probabilities"]["data"], atol=1e-6
    )


def test_bool_input_is_numeric(client: TestClient) -> None:
    rows = np.zeros((2, 13), dtype=bool)
    rows[1, ::2] = True
    body, headers = binary_request(rows, "BOOL")
    response = client.post("/v2/models/wine/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    want = _json_reference(client, rows.astype(np.float32))
    assert {o["name"]: o for o in response.json()["outputs"]}["label"] == want["label"]


def test_binary_data_output_returns_every_output_in_binary(
    client: TestClient, wine_model: BuiltModel
) -> None:
    rows = _rows(wine_model).astype(np.float32)
    body, headers = binary_request(rows, "FP32", parameters={"binary_data_output": True}, id="r1")
    response = client.post("/v2/models/wine/infer", content=body, headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    header, tensors = split_response(response)
    assert (header["id"], header["model_version"]) == ("r1", "3")
    outs = {o["name"]: o for o in header["outputs"]}
    assert set(tensors) == {"label", "probabilities"}
    assert all("data" not in o for o in outs.values())
    assert (outs["label"]["datatype"], outs["label"]["shape"]) == ("INT64", [4])
    assert (outs["probabilities"]["datatype"], outs["probabilities"]["shape"]) == ("FP32", [4, 3])
    labels = np.frombuffer(tensors["label"], dtype="<i8")
    probabilities = np.frombuffer(tensors["probabilities"], dtype="<f4").reshape(4, 3)
    want = _json_reference(client, rows)
    assert labels.tolist() == want["label"]["data"] == wine_model.sample_labels[:4]
    np.testing.assert_allclose(probabilities.ravel(), want["probabilities"]["data"], atol=1e-7)


def test_per_output_binary_flag_mixes_json_and_binary(
    client: TestClient, wine_model: BuiltModel
) -> None:
    rows = _rows(wine_model).astype(np.float32)
    outputs = [
        {"name": "probabilities", "parameters": {"binary_data": True}},
        {"name": "label", "parameters": {"binary_data": False}},
    ]
    body, headers = binary_request(
        rows, "FP32", outputs=outputs, parameters={"binary_data_output": True}
    )
    header, tensors = split_response(
        client.post("/v2/models/wine/infer", content=body, headers=headers)
    )
    assert [o["name"] for o in header["outputs"]] == ["probabilities", "label"]
    assert set(tensors) == {"probabilities"}
    assert header["outputs"][1]["data"] == wine_model.sample_labels[:4]
    # Only the outputs asked for; binary_data_output is their default.
    body, headers = binary_request(
        rows, "FP32", outputs=[{"name": "label"}], parameters={"binary_data_output": True}
    )
    header, tensors = split_response(
        client.post("/v2/models/wine/infer", content=body, headers=headers)
    )
    assert [o["name"] for o in header["outputs"]] == ["label"]
    assert np.frombuffer(tensors["label"], "<i8").tolist() == wine_model.sample_labels[:4]


def test_json_request_may_ask_for_binary_output(client: TestClient, wine_model: BuiltModel) -> None:
    rows = _rows(wine_model, 2)
    body = {
        "inputs": [{"name": "X", "shape": [2, 13], "datatype": "FP64", "data": rows.tolist()}],
        "outputs": [{"name": "label", "parameters": {"binary_data": True}}],
    }
    _, tensors = split_response(client.post("/v2/models/wine/infer", json=body))
    assert np.frombuffer(tensors["label"], "<i8").tolist() == wine_model.sample_labels[:2]


def test_bytes_output_in_binary_and_json(client: TestClient, text_model: BuiltModel) -> None:
    rows = _rows(text_model, 9).astype(np.float32)
    body, headers = binary_request(rows, "FP32", parameters={"binary_data_output": True})
    header, tensors = split_response(
        client.post("/v2/models/cellar/infer", content=body, headers=headers)
    )
    label = next(o for o in header["outputs"] if o["name"] == "label")
    assert (label["datatype"], label["shape"]) == ("BYTES", [9])
    raw, decoded, offset = tensors["label"], [], 0
    while offset < len(raw):
        (n,) = struct.unpack_from("<I", raw, offset)
        decoded.append(raw[offset + 4 : offset + 4 + n].decode())
        offset += 4 + n
    assert (
        decoded == text_model.sample_labels == ["barolo"] * 3 + ["grignolino"] * 3 + ["barbera"] * 3
    )
    as_json = _json_reference(client, rows, "cellar")
    assert as_json["label"]["data"] == decoded


def test_gzip_request_and_response(client: TestClient, wine_model: BuiltModel) -> None:
    rows = np.repeat(_rows(wine_model).astype(np.float32), 50, axis=0)
    body, headers = binary_request(rows, "FP32", parameters={"binary_data_output": True})
    response = client.post(
        "/v2/models/wine/infer",
        content=gzip.compress(body),
        headers={**headers, "Content-Encoding": "gzip", "Accept-Encoding": "gzip"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-encoding"] == "gzip"  # httpx has decompressed it
    _, tensors = split_response(response)
    assert len(np.frombuffer(tensors["label"], "<i8")) == 200


def _post(client: TestClient, body: bytes, header: str | None, **headers: str) -> Any:
    if header is not None:
        headers["Inference-Header-Content-Length"] = header
    return client.post("/v2/models/wine/infer", content=body, headers=headers)


def test_malformed_binary_requests_are_400_with_a_reason(client: TestClient) -> None:
    rows = np.zeros((1, 13), dtype=np.float32)
    body, headers = binary_request(rows, "FP32")
    length = int(headers["Inference-Header-Content-Length"])
    cases = {
        "beyond the body": _post(client, body, str(len(body) + 1)),
        "not a non-negative integer": _post(client, body, "-3"),
        "is not a non-negative integer": _post(client, body, "lots"),
        "request header is not valid JSON": _post(client, body, str(length - 2)),
        "binary_data_size 52 is beyond the body (48 bytes left)": _post(
            client, body[:-4], str(length)
        ),
        "does not match shape [1, 13] of FP32 (52 bytes)": _post(
            client, *_typed(b"\x00" * 51, "FP32")
        ),
        "bytes after the tensors belong to no input": _post(client, body + b"\x00", str(length)),
        "BYTES is not numeric": _post(client, *_typed(_BYTES_ROW, "BYTES")),
        # refused before its data is decoded: a lying length prefix is never read
        "datatype BYTES is not numeric": _post(client, *_typed(b"\xff\xff\xff\x7f", "BYTES")),
        "has 65 dimensions": _post(client, *_typed(b"\x00" * 4, "FP32", [1] * 65)),
        "not valid gzip": _post(client, body, str(length), **{"Content-Encoding": "gzip"}),
        "datatype 'BF16' is not supported": _post(client, *_typed(b"\x00" * 26, "BF16")),
        "binary tensors need the Inference-Header-Content-Length": _post(client, body, None),
    }
    for reason, response in cases.items():
        assert response.status_code == 400, (reason, response.text)
        assert reason.strip() in response.json()["error"], (reason, response.text)
    assert client.get("/health").status_code == 200


def _typed(raw: bytes, datatype: str, shape: list[int] | None = None) -> tuple[bytes, str]:
    tensor = {
        "name": "X",
        "shape": shape or [1, 13],
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    header = orjson.dumps({"inputs": [tensor]})
    return header + raw, str(len(header))


_BYTES_ROW = b"".join(struct.pack("<I", 1) + b"1" for _ in range(13))


def test_rows_are_capped(client: TestClient) -> None:
    body, headers = binary_request(np.zeros((MAX_ROWS + 1, 1), dtype=np.float32), "FP32")
    response = client.post("/v2/models/wine/infer", content=body, headers=headers)
    assert response.status_code == 400


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    body, headers = binary_request(np.zeros((LIMIT // 52 + 1, 13), dtype=np.float32), "FP32")
    response = client.post("/v2/models/wine/infer", content=body, headers=headers)
    assert response.status_code == 413
    assert f"limit of {LIMIT} bytes" in response.json()["error"]
    bomb = gzip.compress(body)
    assert len(bomb) < LIMIT
    response = client.post(
        "/v2/models/wine/infer", content=bomb, headers={**headers, "Content-Encoding": "gzip"}
    )
    assert response.status_code == 413
    assert "decompressed body" in response.json()["error"]


def test_server_metadata_lists_the_binary_extension(client: TestClient) -> None:
    assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
    meta = client.get("/v2/models/cellar").json()
    assert {o["name"]: o["datatype"] for o in meta["outputs"]}["label"] == "BYTES"


def test_a_swap_during_the_call_is_answered_by_the_new_version(
    make_message: MessageFactory, wine_model: BuiltModel
) -> None:
    """Inference runs in a thread, so a swap can release the runtime mid-call: score again."""
    registry = ModelRegistry()
    registry.install(registry.build(make_message(version="1")))
    old = registry.get("wine")
    assert old is not None
    newer = registry.build(make_message(version="2"))
    real_predict = old.runtime.predict

    def swapped_mid_call(batch: np.ndarray) -> Any:
        registry.install(newer)  # releases the old session, as a swap does
        return real_predict(batch)  # a released session fails

    old.runtime.predict = swapped_mid_call  # type: ignore[method-assign]
    rows = _rows(wine_model).astype(np.float32)
    body, headers = binary_request(rows, "FP32", parameters={"binary_data_output": True})
    with TestClient(create_api(registry, Metrics(), lambda: READY)) as client:
        response = client.post("/v2/models/wine/infer", content=body, headers=headers)
        assert response.status_code == 200, response.text
        header, tensors = split_response(response)
        assert header["model_version"] == "2"
        assert np.frombuffer(tensors["label"], "<i8").tolist() == wine_model.sample_labels[:4]
        pinned = client.post("/v2/models/wine/versions/1/infer", content=body, headers=headers)
        assert pinned.status_code == 404


def test_a_zipmap_classifier_answers_json_maps_not_python_reprs(
    make_message: MessageFactory,
) -> None:
    """skl2onnx's default classifier output is one {class: probability} map per row; over
    OIP it is a BYTES tensor whose elements a JSON parser reads (keys as strings)."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 2)).astype(np.float32)
    for classes in (np.array([0, 1]), np.array(["no", "yes"])):
        estimator = LogisticRegression().fit(x, classes[(x[:, 0] > 0).astype(int)])
        artifact = to_onnx(estimator, x[:1]).SerializeToString()
        registry = ModelRegistry()
        registry.install(registry.build(make_message(artifact=artifact, metadata={})))
        api = create_api(registry, Metrics(), lambda: READY, max_request_bytes=LIMIT)
        with TestClient(api) as client:
            meta = client.get("/v2/models/wine").json()
            tensor = {"name": "X", "shape": [2, 2], "datatype": "FP32", "data": [2, 0, -2, 0]}
            response = client.post("/v2/models/wine/infer", json={"inputs": [tensor]})
        assert response.status_code == 200, response.text
        (maps,) = [o for o in response.json()["outputs"] if o["name"] == "output_probability"]
        assert maps["datatype"] == "BYTES"
        assert maps["shape"] == [2]
        rows = [orjson.loads(element) for element in maps["data"]]
        assert [set(row) for row in rows] == [{str(c) for c in classes}] * 2
        assert rows[0][str(classes[1])] > 0.5 > rows[1][str(classes[1])]
        (spec,) = [o for o in meta["outputs"] if o["name"] == "output_probability"]
        assert spec["shape"] == [-1]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/v2/models/wine/config", 404),  # Triton's model config: not served here
        ("GET", "/v2/models/wine/stats", 404),
        ("GET", "/v2/models/wine/infer", 405),
        ("DELETE", "/v2/models/wine", 405),
    ],
)
def test_refusals_outside_the_oip_routes_are_in_the_oip_form(
    client: TestClient, method: str, path: str, status: int
) -> None:
    """OIP clients read ``{"error": ...}``; FastAPI's own refusals said ``{"detail": ...}``."""
    response = client.request(method, path)
    assert response.status_code == status
    assert set(response.json()) == {"error"}
    assert set(client.get("/models/nope").json()) == {"detail"}  # hotswap's own API: as it was


def test_gzip_that_is_not_acceptable_is_not_sent_and_trailing_bytes_are_refused(
    client: TestClient, wine_model: BuiltModel
) -> None:
    rows = np.repeat(_rows(wine_model).astype(np.float32), 50, axis=0)
    body, headers = binary_request(rows, "FP32", parameters={"binary_data_output": True})
    refused = client.post(
        "/v2/models/wine/infer",
        content=body,
        headers={**headers, "Accept-Encoding": "gzip;q=0, identity"},
    )
    assert refused.status_code == 200
    assert "content-encoding" not in refused.headers  # q=0: not acceptable (RFC 9110)
    assert refused.headers["vary"] == "Accept-Encoding"
    for extra in (b"junk", gzip.compress(b"a second member")):
        response = client.post(
            "/v2/models/wine/infer",
            content=gzip.compress(body) + extra,
            headers={**headers, "Content-Encoding": "gzip"},
        )
        assert response.status_code == 400
        assert "bytes after the gzip" in response.json()["error"]


@pytest.mark.parametrize(
    ("datatype", "shape", "data", "reason"),
    [
        ("FP32", [1, 13], ["13.2"] * 13, "str values, not FP32"),
        ("INT64", [1, 13], [14.1] * 13, "not integers for INT64"),
        ("FP32", [True, 13], [1.0] * 13, "inputs.0.shape.0"),
        ("FP32", ["1", 13], [1.0] * 13, "inputs.0.shape.0"),
        ("FP64", [1, 13], [[1.0] * 12 + [True]], "bool values, not FP64"),
        ("BOOL", [1, 13], [1] * 13, "int values, not BOOL"),
    ],
)
def test_json_values_of_another_kind_are_refused_not_converted(
    client: TestClient, datatype: str, shape: list[Any], data: list[Any], reason: str
) -> None:
    """numpy would read "13.2" as 13.2 and cut 14.1 to 14: a client's mistake scored."""
    tensor = {"name": "X", "shape": shape, "datatype": datatype, "data": data}
    response = client.post("/v2/models/wine/infer", json={"inputs": [tensor]})
    assert response.status_code == 400, response.text
    assert reason in response.json()["error"]


def test_integral_json_values_still_serve_integer_datatypes(
    client: TestClient, wine_model: BuiltModel
) -> None:
    row = [round(v) for v in wine_model.sample_inputs[0]]
    for data in (row, [float(v) for v in row]):
        tensor = {"name": "X", "shape": [1, 13], "datatype": "INT64", "data": data}
        assert client.post("/v2/models/wine/infer", json={"inputs": [tensor]}).status_code == 200
