"""OIP v2 gRPC messages to and from numpy tensors: pure functions, no server.

A request's input comes either in ``raw_input_contents`` (the same bytes as the HTTP
binary tensor extension: little-endian, row-major, ``BYTES`` length-prefixed) or in the
typed ``contents`` field of its datatype. Outputs always go back raw, as Triton answers
and as ``tritonclient.grpc`` reads them. Every defect of the request raises
:class:`~service.core.inference.BadRequest` (gRPC INVALID_ARGUMENT).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.core import oip_binary as codec
from service.core.inference import (
    BadRequest,
    check_input,
    model_batch,
    oip_datatype,
    oip_shape,
    wanted_outputs,
)
from service.core.registry import ServingModel
from service.core.runtime.base import Outputs
from service.grpc.generated import grpc_predict_v2_pb2 as pb

__all__ = ["DecodedInput", "decode_input", "encode_outputs", "predict", "tensor_metadata"]

logger = logging.getLogger(__name__)

# datatype -> the InferTensorContents field that carries it (FP16/BF16 have none: raw only)
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True, slots=True)
class DecodedInput:
    """The one input tensor of a request, and the outputs it asks for (``None``: all)."""

    datatype: str
    tensor: npt.NDArray[Any]
    outputs: list[str] | None
    class_count: bool


def _from_contents(datatype: str, shape: list[int], contents: pb.InferTensorContents) -> Any:
    field = _CONTENTS.get(datatype)
    if field is None:
        if datatype in codec.DATATYPES:  # FP16: no typed field in the protocol
            raise BadRequest(f"datatype {datatype} must be sent in raw_input_contents")
        known = ", ".join([*codec.DATATYPES, "BYTES"])  # the binary codec's own message
        raise BadRequest(f"datatype {datatype!r} is not supported ({known})")
    values = getattr(contents, field)
    count = codec.element_count(shape)
    if len(values) != count:
        raise BadRequest(f"data holds {len(values)} values; shape {shape} needs {count}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(tuple(shape))
    try:
        return np.asarray(values, dtype=codec.DATATYPES[datatype]).reshape(tuple(shape))
    except (ValueError, OverflowError):
        raise BadRequest(f"data does not hold {datatype} values") from None


def decode_input(request: pb.ModelInferRequest) -> DecodedInput:
    """The request's input tensor, checked against its shape and datatype."""
    if len(request.inputs) != 1:
        raise BadRequest(f"the model takes one input tensor; the request has {len(request.inputs)}")
    tensor = request.inputs[0]
    shape = list(tensor.shape)
    check_input(tensor.datatype, shape)
    try:
        if request.raw_input_contents:
            if len(request.raw_input_contents) != 1:
                raise BadRequest(
                    f"raw_input_contents holds {len(request.raw_input_contents)} tensors "
                    "for 1 input"
                )
            if tensor.HasField("contents"):
                raise BadRequest(f"input {tensor.name!r} has both contents and raw_input_contents")
            raw = request.raw_input_contents[0]
            array = codec.decode_tensor(tensor.datatype, shape, raw, "raw_input_contents size")
        else:
            array = _from_contents(tensor.datatype, shape, tensor.contents)
    except codec.BinaryFormatError as exc:
        raise BadRequest(str(exc)) from None
    names = [o.name for o in request.outputs] or None
    class_count = any(
        o.parameters["class_count"].int64_param
        for o in request.outputs
        if "class_count" in o.parameters
    )
    return DecodedInput(tensor.datatype, array, names, class_count)


def predict(model: ServingModel, decoded: DecodedInput) -> tuple[Outputs, int]:
    """Run the decoded input through ``model``: its outputs and the rows scored."""
    batch = model_batch(model, decoded.tensor)
    wanted_outputs(model, decoded.outputs, class_count=decoded.class_count)
    return model.runtime.predict(batch), len(batch)


def encode_outputs(
    model: ServingModel, decoded: DecodedInput, outputs: Outputs, request_id: str
) -> pb.ModelInferResponse:
    """The response: every wanted output described, its data in ``raw_output_contents``."""
    specs = {s.name: s for s in model.runtime.signature.outputs}
    response = pb.ModelInferResponse(
        model_name=model.name, model_version=model.version, id=request_id
    )
    for name in wanted_outputs(model, decoded.outputs, class_count=decoded.class_count):
        value, datatype = outputs[name], oip_datatype(specs[name])
        response.outputs.add(name=name, datatype=datatype, shape=list(value.shape))
        response.raw_output_contents.append(codec.encode_tensor(value, datatype))
    return response


def tensor_metadata(model: ServingModel) -> pb.ModelMetadataResponse:
    """The model's metadata: versions, platform, input and output tensors (-1: any size)."""
    sig = model.runtime.signature
    response = pb.ModelMetadataResponse(
        name=model.name, versions=[model.version], platform="onnxruntime_onnx"
    )
    for specs, target in ((sig.inputs, response.inputs), (sig.outputs, response.outputs)):
        for spec in specs:
            target.add(name=spec.name, datatype=oip_datatype(spec), shape=oip_shape(spec))
    return response
