"""OIP v2 over gRPC: the official client with its defaults, typed contents, and every refusal.

The server is the worker's own ``GrpcServer`` service on a real TCP port; the HTTP
answers to the same bad requests come from the worker's FastAPI app over the same
registry, so "the same refusals" is checked message for message.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from fastapi.testclient import TestClient
from tritonclient.utils import InferenceServerException

from service.core.messages import ModelMessage
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as rpc
from service.http.api import Readiness, create_api
from tests.grpc.conftest import GrpcFactory, Served
from tests.models import BuiltModel


@pytest.fixture(scope="module")
def served(grpc_serve: GrpcFactory, wine_and_text: tuple[ModelMessage, ...]) -> Served:
    return grpc_serve(*wine_and_text)


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(served.target) as c:
        yield c


@pytest.fixture(scope="module")
def stub(served: Served) -> Iterator[rpc.GRPCInferenceServiceStub]:
    """The generated client stub, for what tritonclient does not send (typed contents)."""
    with grpc.insecure_channel(served.target) as channel:
        yield rpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def http(served: Served) -> Iterator[TestClient]:
    """The HTTP /v2 routes over the same registry (for comparing refusals)."""
    ready = Readiness(
        ready=True, broker_reachable=True, models_replayed=True, models=2, assigned_partitions=1
    )
    with TestClient(create_api(served.registry, served.metrics, lambda: ready)) as c:
        yield c


def _input(rows: np.ndarray, datatype: str = "FP32") -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("X", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows)  # tritonclient.grpc sends raw_input_contents
    return tensor


def _refusal(call: object) -> tuple[str, str]:
    assert isinstance(call, InferenceServerException)
    return str(call.status()), str(call.message())


def test_defaults_score_with_the_serving_model(
    client: grpcclient.InferenceServerClient, served: Served, wine_model: BuiltModel
) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("wine")
    assert client.is_model_ready("wine", "3")
    assert not client.is_model_ready("wine", "2")
    assert not client.is_model_ready("nope")
    assert client.get_server_metadata().name == "hotswap"
    meta = client.get_model_metadata("wine", as_json=True)
    assert meta["versions"] == ["3"]
    assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": ["-1", "13"]}]

    before = served.rows(served.metrics.grpc_inferences, "wine", "3")
    rows = np.asarray(wine_model.sample_inputs, dtype=np.float32)
    result = client.infer("wine", [_input(rows)], request_id="q-1")  # no outputs named: all
    response = result.get_response()
    assert (response.model_name, response.model_version, response.id) == ("wine", "3", "q-1")
    assert {o.name for o in response.outputs} == {"label", "probabilities"}
    assert result.as_numpy("label").tolist() == wine_model.sample_labels
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32
    assert probabilities.shape == (9, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert served.rows(served.metrics.grpc_inferences, "wine", "3") == before + 9
    assert served.registry.get("wine").stats.records >= 9  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("dtype", "datatype"),
    [(np.float64, "FP64"), (np.int32, "INT32"), (np.int64, "INT64"), (np.float16, "FP16")],
)
def test_other_raw_input_types_agree_with_fp32(
    client: grpcclient.InferenceServerClient, wine_model: BuiltModel, dtype: type, datatype: str
) -> None:
    rows = np.round(np.asarray(wine_model.sample_inputs))
    reference = client.infer("wine", [_input(rows.astype(np.float32))])
    result = client.infer("wine", [_input(rows.astype(dtype), datatype)])
    assert result.as_numpy("label").tolist() == reference.as_numpy("label").tolist()
    np.testing.assert_allclose(
        result.as_numpy("probabilities"), reference.as_numpy("probabilities"), atol=1e-6
    )


def test_requested_outputs_and_bytes_labels(
    client: grpcclient.InferenceServerClient, text_model: BuiltModel
) -> None:
    rows = np.asarray(text_model.sample_inputs, dtype=np.float32)
    only = [grpcclient.InferRequestedOutput("label")]
    result = client.infer("cellar", [_input(rows)], model_version="7", outputs=only)
    assert [o.name for o in result.get_response().outputs] == ["label"]
    labels = result.as_numpy("label")
    assert labels.dtype == np.object_
    assert [x.decode() for x in labels] == text_model.sample_labels


def _typed_request(rows: list[list[float]], datatype: str, field: str) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="wine", id="typed")
    tensor = request.inputs.add(name="X", datatype=datatype, shape=[len(rows), len(rows[0])])
    getattr(tensor.contents, field).extend(v for row in rows for v in row)
    return request


@pytest.mark.parametrize(
    ("datatype", "field", "cast"),
    [
        ("FP32", "fp32_contents", float),
        ("FP64", "fp64_contents", float),
        ("INT64", "int64_contents", int),
        ("INT32", "int_contents", int),
    ],
)
def test_typed_contents_score_like_raw(
    stub: rpc.GRPCInferenceServiceStub,
    client: grpcclient.InferenceServerClient,
    wine_model: BuiltModel,
    datatype: str,
    field: str,
    cast: type,
) -> None:
    rows = [[cast(round(v)) for v in row] for row in wine_model.sample_inputs]
    response = stub.ModelInfer(_typed_request(rows, datatype, field), timeout=30)
    assert (response.model_version, response.id) == ("3", "typed")
    by_name = {o.name: i for i, o in enumerate(response.outputs)}
    labels = np.frombuffer(response.raw_output_contents[by_name["label"]], dtype="<i8")
    reference = client.infer("wine", [_input(np.asarray(rows, dtype=np.float32))])
    assert labels.tolist() == reference.as_numpy("label").tolist()


ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


def _http_error(http: TestClient, tensor: dict[str, object], name: str = "wine") -> str:
    response = http.post(f"/v2/models/{name}/infer", json={"inputs": [tensor]})
    assert response.status_code in (400, 404), response.text
    return str(response.json()["error"])


@pytest.mark.parametrize(
    ("name", "shape", "datatype", "data", "status"),
    [
        ("nope", [1, 13], "FP32", ROW, "NOT_FOUND"),  # unknown model
        ("wine", [1, 12], "FP32", ROW[:12], "INVALID_ARGUMENT"),  # bad shape
        ("wine", [13], "FP32", ROW, "INVALID_ARGUMENT"),  # not [rows, width]
        ("wine", [1, 13], "BYTES", [str(v) for v in ROW], "INVALID_ARGUMENT"),  # not numeric
        ("wine", [1, 13], "FP8", ROW, "INVALID_ARGUMENT"),  # no such datatype
        ("wine", [2, 13], "FP32", ROW, "INVALID_ARGUMENT"),  # data short of the shape
        ("wine", [1, 13], "FP64", [float("nan"), *ROW[1:]], "INVALID_ARGUMENT"),
        ("wine", [1] * 65, "FP32", ROW[:1], "INVALID_ARGUMENT"),  # beyond numpy's 64 dims
        ("x" * 20_000, [1, 13], "FP32", ROW, "NOT_FOUND"),  # its name not echoed whole
    ],
)
def test_refusals_match_the_http_path(
    stub: rpc.GRPCInferenceServiceStub,
    http: TestClient,
    name: str,
    shape: list[int],
    datatype: str,
    data: list[object],
    status: str,
) -> None:
    request = pb.ModelInferRequest(model_name=name)
    tensor = request.inputs.add(name="X", datatype=datatype, shape=shape)
    if datatype == "BYTES":
        tensor.contents.bytes_contents.extend(str(v).encode() for v in data)
    elif datatype == "FP64":
        tensor.contents.fp64_contents.extend(float(v) for v in data)  # type: ignore[arg-type]
    else:
        tensor.contents.fp32_contents.extend(float(v) for v in data)  # type: ignore[arg-type]
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    error = caught.value
    assert isinstance(error, grpc.Call)
    assert error.code().name == status
    json_data = [None if v != v else v for v in data] if datatype == "FP64" else data
    if datatype != "FP64":  # JSON has no NaN: the HTTP side of that refusal needs binary
        tensor_json = {"name": "X", "shape": shape, "datatype": datatype, "data": json_data}
        assert error.details() == _http_error(http, tensor_json, name)
    else:
        assert error.details() == "data holds NaN or infinity"


def test_raw_refusals(
    client: grpcclient.InferenceServerClient,
    stub: rpc.GRPCInferenceServiceStub,
    wine_model: BuiltModel,
) -> None:
    rows = np.asarray(wine_model.sample_inputs[:1], dtype=np.float32)
    with pytest.raises(InferenceServerException) as caught:
        client.infer("wine", [_input(rows)], model_version="2")
    assert _refusal(caught.value) == ("StatusCode.NOT_FOUND", "wine serves version 3, not 2")
    wrong = pb.ModelInferRequest(model_name="wine", raw_input_contents=[rows.tobytes()])
    wrong.inputs.add(name="X", datatype="FP32", shape=[1, 14])  # the bytes hold 13 values
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(wrong, timeout=30)
    assert isinstance(raised.value, grpc.Call)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.details() == (
        "raw_input_contents size 52 does not match shape [1, 14] of FP32 (56 bytes)"
    )
    both = pb.ModelInferRequest(model_name="wine", raw_input_contents=[rows.tobytes()])
    both.inputs.add(name="X", datatype="FP32", shape=[1, 13]).contents.fp32_contents.append(1)
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(both, timeout=30)
    assert "has both contents and raw_input_contents" in str(raised.value.details())  # type: ignore[attr-defined]
    with pytest.raises(InferenceServerException) as caught:
        client.infer("wine", [_input(rows)], outputs=[grpcclient.InferRequestedOutput("nope")])
    assert _refusal(caught.value) == (
        "StatusCode.INVALID_ARGUMENT",
        "unknown outputs ['nope']; model has ['label', 'probabilities']",
    )
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_metadata("nope")
    assert _refusal(caught.value) == ("StatusCode.NOT_FOUND", "no model named 'nope' is serving")
    with pytest.raises(InferenceServerException) as caught:
        client.get_model_config("wine")  # Triton's, not the protocol's
    assert _refusal(caught.value)[0] == "StatusCode.UNIMPLEMENTED"


def test_not_ready_is_unavailable(
    grpc_serve: GrpcFactory, wine_and_text: tuple[ModelMessage, ...], wine_model: BuiltModel
) -> None:
    served = grpc_serve(*wine_and_text)
    served.ready[0] = False
    rows = np.asarray(wine_model.sample_inputs[:1], dtype=np.float32)
    with grpcclient.InferenceServerClient(served.target) as client:
        assert client.is_server_live()
        assert not client.is_server_ready()
        with pytest.raises(InferenceServerException) as caught:
            client.infer("wine", [_input(rows)])
        status, message = _refusal(caught.value)
        assert status == "StatusCode.UNAVAILABLE"
        assert message == "hotswap is not ready to score; retry shortly"
        served.ready[0] = True
        assert client.infer("wine", [_input(rows)]).as_numpy("label").tolist() == [
            wine_model.sample_labels[0]
        ]


def test_oversize_request_is_resource_exhausted(
    grpc_serve: GrpcFactory, wine_and_text: tuple[ModelMessage, ...], wine_model: BuiltModel
) -> None:
    served = grpc_serve(*wine_and_text, max_request_bytes=64 * 1024)
    with grpcclient.InferenceServerClient(served.target) as client:
        small = np.asarray(wine_model.sample_inputs[:2], dtype=np.float32)
        assert client.infer("wine", [_input(small)]).as_numpy("label").shape == (2,)
        big = np.tile(small, (1000, 1))  # 2000 x 13 x 4 bytes = 104 KB
        with pytest.raises(InferenceServerException) as caught:
            client.infer("wine", [_input(big)])
        status, message = _refusal(caught.value)
        assert status == "StatusCode.RESOURCE_EXHAUSTED"
        assert "larger than max" in message
        # Compressed, the same 104 KB of zeros is a few hundred bytes: the limit is on what
        # it inflates to, so a small bomb is refused too, and a small gzip request is fine.
        zeros = np.zeros_like(big)
        with pytest.raises(InferenceServerException) as caught:
            client.infer("wine", [_input(zeros)], compression_algorithm="gzip")
        assert _refusal(caught.value)[0] == "StatusCode.RESOURCE_EXHAUSTED"
        gz = client.infer("wine", [_input(small)], compression_algorithm="gzip")
        assert gz.as_numpy("label").shape == (2,)
        assert served.rows(served.metrics.grpc_inferences, "wine", "3") == 4
