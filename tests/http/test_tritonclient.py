"""The official OIP v2 client, unmodified and with its defaults, against real uvicorn over TCP."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from service.core.messages import ModelMessage
from tests.http.conftest import Server, ServerFactory
from tests.models import BuiltModel


@pytest.fixture(scope="module")
def server(serve: ServerFactory, wine_and_text: tuple[ModelMessage, ...]) -> Server:
    return serve(*wine_and_text)


@pytest.fixture(scope="module")
def client(server: Server) -> httpclient.InferenceServerClient:
    return httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")


def _input(rows: np.ndarray, datatype: str = "FP32") -> httpclient.InferInput:
    tensor = httpclient.InferInput("X", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)  # the default: binary_data=True
    return tensor


def test_defaults_binary_in_binary_out(
    client: httpclient.InferenceServerClient, wine_model: BuiltModel
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("wine")
    meta = client.get_model_metadata("wine")
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 13]}]
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]

    rows = np.asarray(wine_model.sample_inputs, dtype=np.float32)
    result = client.infer("wine", [_input(rows)])  # no outputs: every output, in binary
    response = result.get_response()
    assert {o["name"] for o in response["outputs"]} == {"label", "probabilities"}
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    assert result.as_numpy("label").tolist() == wine_model.sample_labels
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (9, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [(np.float64, "FP64"), (np.int32, "INT32"), (np.int64, "INT64"), (np.float16, "FP16")],
)
def test_other_input_types_agree_with_fp32(
    client: httpclient.InferenceServerClient, wine_model: BuiltModel, dtype: type, datatype: str
) -> None:
    rows = np.round(np.asarray(wine_model.sample_inputs))
    reference = client.infer("wine", [_input(rows.astype(np.float32))])
    result = client.infer("wine", [_input(rows.astype(dtype), datatype)])
    assert result.as_numpy("label").tolist() == reference.as_numpy("label").tolist()
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), reference.as_numpy("probabilities"), atol=1e-6
    )


def test_requested_outputs_json_and_binary(
    client: httpclient.InferenceServerClient, wine_model: BuiltModel
) -> None:
    rows = np.asarray(wine_model.sample_inputs[:3], dtype=np.float32)
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("probabilities"),  # default: binary
    ]
    result = client.infer("wine", [_input(rows)], outputs=outputs, request_id="q-1")
    response = result.get_response()
    assert response["id"] == "q-1"
    by_name = {o["name"]: o for o in response["outputs"]}
    assert by_name["label"]["data"] == wine_model.sample_labels[:3]
    assert "binary_data_size" in by_name["probabilities"]["parameters"]
    assert result.as_numpy("label").tolist() == wine_model.sample_labels[:3]
    assert result.as_numpy("probabilities").shape == (3, 3)


def test_json_only_client_still_works(
    client: httpclient.InferenceServerClient, wine_model: BuiltModel
) -> None:
    rows = np.asarray(wine_model.sample_inputs[:2], dtype=np.float32)
    tensor = httpclient.InferInput("X", [2, 13], "FP32")
    tensor.set_data_from_numpy(rows, binary_data=False)
    result = client.infer(
        "wine", [tensor], outputs=[httpclient.InferRequestedOutput("label", binary_data=False)]
    )
    assert result.as_numpy("label").tolist() == wine_model.sample_labels[:2]


def test_bytes_output(client: httpclient.InferenceServerClient, text_model: BuiltModel) -> None:
    rows = np.asarray(text_model.sample_inputs, dtype=np.float32)
    result = client.infer("cellar", [_input(rows)], model_version="7")
    labels = result.as_numpy("label")
    assert labels.dtype == np.object_
    assert [x.decode() for x in labels] == text_model.sample_labels
    as_json = client.infer(
        "cellar", [_input(rows)], outputs=[httpclient.InferRequestedOutput("label", False)]
    )
    assert list(as_json.as_numpy("label")) == text_model.sample_labels  # JSON BYTES come as str


def test_compression_options(
    client: httpclient.InferenceServerClient, wine_model: BuiltModel
) -> None:
    rows = np.tile(np.asarray(wine_model.sample_inputs, dtype=np.float32), (40, 1))
    for algorithm in ("gzip", "deflate"):
        result = client.infer(
            "wine",
            [_input(rows)],
            request_compression_algorithm=algorithm,
            response_compression_algorithm=algorithm,
        )
        assert result.as_numpy("label").tolist() == wine_model.sample_labels * 40


def test_client_errors_carry_the_reason(
    client: httpclient.InferenceServerClient, wine_model: BuiltModel
) -> None:
    rows = np.asarray(wine_model.sample_inputs, dtype=np.float32)
    with pytest.raises(InferenceServerException, match="does not fit"):
        client.infer("wine", [_input(rows[:, :12])])
    with pytest.raises(InferenceServerException, match="no model named 'nope'"):
        client.infer("nope", [_input(rows)])
    with pytest.raises(InferenceServerException, match="serves version 3, not 9"):
        client.infer("wine", [_input(rows)], model_version="9")
    tensor = httpclient.InferInput("X", [1, 13], "BYTES")
    tensor.set_data_from_numpy(np.array([[b"1"] * 13], dtype=object))
    with pytest.raises(InferenceServerException, match="BYTES is not numeric"):
        client.infer("wine", [tensor])


def _raw_post(server: Server, head: dict[str, str], body: bytes) -> tuple[int, bytes]:
    """POST over a plain socket, so nothing can tidy the headers up on the way."""
    lines = ["POST /v2/models/wine/infer HTTP/1.1", "Host: test", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in {**head, "Content-Length": str(len(body))}.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.split(b"\r\n\r\n", 1)[1]


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("99999", b"beyond the body"),
        ("-1", b"not a non-negative integer"),
        ("0x10", b"not a non-negative integer"),
        ("1" * 40, b"not a non-negative integer"),
        ("5", b"not valid JSON"),
    ],
)
def test_malformed_binary_over_tcp_is_400(server: Server, header: str, reason: bytes) -> None:
    body = b'{"inputs": [{"name": "X", "shape": [1, 13], "datatype": "FP32"}]}' + b"\0" * 52
    status, answer = _raw_post(server, {"Inference-Header-Content-Length": header}, body)
    assert status == 400
    assert reason in answer
    assert server.process.poll() is None
