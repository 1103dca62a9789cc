"""One OIP v2 inference over HTTP, without the web framework: body bytes in, body bytes out.

:func:`decode_request` turns a request body (JSON, or JSON plus binary tensors)
into typed tensors; :func:`predict` runs them through a serving model (with the
checks of :mod:`service.core.inference`, shared with gRPC);
:func:`encode_response` writes the outputs as JSON or binary, as the request
asked. All three are pure and run in a worker thread, off the event loop.
Every defect of the request raises :class:`BadRequest` with a reason (HTTP 400).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy.typing as npt
import orjson
from pydantic import BaseModel, Field, StrictInt, ValidationError

from service.core import oip_binary as codec
from service.core.inference import (
    MAX_ROWS,
    BadRequest,
    check_input,
    model_batch,
    oip_datatype,
    wanted_outputs,
)
from service.core.registry import ServingModel
from service.core.runtime.base import Outputs

__all__ = [
    "MAX_ROWS",
    "BadRequest",
    "Decoded",
    "InferRequest",
    "decode_request",
    "encode_response",
    "oip_datatype",
    "predict",
]

logger = logging.getLogger(__name__)

_NO_HEADER = "binary tensors need the Inference-Header-Content-Length header"


class InferInput(BaseModel):
    name: str = Field(examples=["X"])
    shape: list[StrictInt] = Field(examples=[[1, 13]])  # not `true` or "13"
    datatype: str = Field(examples=["FP32"])
    data: list[Any] | None = Field(
        None,
        description="Row-major values; omitted when parameters.binary_data_size is given.",
        examples=[[13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050]],
    )
    parameters: dict[str, Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = None
    inputs: list[InferInput] = Field(min_length=1, max_length=1)
    outputs: list[RequestedOutput] | None = None
    parameters: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Decoded:
    request: InferRequest
    tensors: list[npt.NDArray[Any]]


def _param(params: dict[str, Any] | None, key: str) -> Any:
    return (params or {}).get(key)


def _binary_size(tensor: InferInput) -> int | None:
    size = _param(tensor.parameters, "binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise BadRequest(f"input {tensor.name!r}: binary_data_size {size!r} is not a size")
    return size


def decode_request(body: bytes, header_value: str | None) -> Decoded:
    """Split ``body`` at the header length (if any), parse the JSON, decode every tensor."""
    try:
        length = codec.header_length(header_value, len(body))
        head = body if length is None else body[:length]
        try:
            parsed = orjson.loads(head)
        except orjson.JSONDecodeError as exc:
            hint = "" if length is not None else f" ({_NO_HEADER})"
            raise BadRequest(f"request header is not valid JSON{hint}: {exc}") from None
        try:
            request = InferRequest.model_validate(parsed)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise BadRequest(f"invalid request at {where}: {first['msg']}") from None
        tensors: list[npt.NDArray[Any]] = []
        offset = 0 if length is None else length
        for tensor in request.inputs:
            check_input(tensor.datatype, tensor.shape)
            size = _binary_size(tensor)
            if size is None:
                if tensor.data is None:
                    raise BadRequest(f"input {tensor.name!r} has neither data nor binary_data_size")
                tensors.append(codec.from_json(tensor.datatype, tensor.shape, tensor.data))
                continue
            if length is None:
                raise BadRequest(
                    f"input {tensor.name!r} has binary_data_size but the request has no "
                    "Inference-Header-Content-Length header"
                )
            if tensor.data is not None:
                raise BadRequest(f"input {tensor.name!r} has both data and binary_data_size")
            if offset + size > len(body):
                raise BadRequest(
                    f"input {tensor.name!r}: binary_data_size {size} is beyond the body "
                    f"({len(body) - offset} bytes left)"
                )
            raw = memoryview(body)[offset : offset + size]
            tensors.append(codec.decode_tensor(tensor.datatype, tensor.shape, raw))
            offset += size
        if length is not None and offset != len(body):
            raise BadRequest(f"{len(body) - offset} bytes after the tensors belong to no input")
    except codec.BinaryFormatError as exc:
        raise BadRequest(str(exc)) from None
    return Decoded(request, tensors)


def _wanted(model: ServingModel, request: InferRequest) -> list[str]:
    names = None if request.outputs is None else [o.name for o in request.outputs]
    class_count = any(_param(o.parameters, "class_count") for o in request.outputs or ())
    return wanted_outputs(model, names, class_count=class_count)


def predict(model: ServingModel, decoded: Decoded) -> tuple[Outputs, int]:
    """Run the decoded input through ``model``: its outputs and the rows scored."""
    batch = model_batch(model, decoded.tensors[0])
    _wanted(model, decoded.request)  # refuse a bad output list before scoring
    return model.runtime.predict(batch), len(batch)


def _binary_wanted(request: InferRequest) -> dict[str, bool]:
    default = _param(request.parameters, "binary_data_output") is True
    if request.outputs is None:
        return {}
    chosen = {}
    for out in request.outputs:
        flag = _param(out.parameters, "binary_data")
        chosen[out.name] = default if flag is None else flag is True
    return chosen


def encode_response(
    model: ServingModel, request: InferRequest, outputs: Outputs
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary tensors follow it."""
    specs = {s.name: s for s in model.runtime.signature.outputs}
    binary = _binary_wanted(request)
    default = _param(request.parameters, "binary_data_output") is True
    described: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name in _wanted(model, request):
        value, datatype = outputs[name], oip_datatype(specs[name])
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(value.shape)}
        if binary.get(name, default):
            raw = codec.encode_tensor(value, datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = codec.to_json(value, datatype)
        described.append(entry)
    header = orjson.dumps(
        {
            "model_name": model.name,
            "model_version": model.version,
            "id": request.id or "",
            "outputs": described,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)
