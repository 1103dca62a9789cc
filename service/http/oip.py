"""Open Inference Protocol v2 (KServe / Triton) over HTTP: direct, low-latency scoring.

The "call it directly" side of the Kafka-versus-direct trade-off, answered by
the same in-memory model that scores the stream. JSON tensors only (the
binary-data extension is not implemented; clients send ``binary_data=False``).
Inference runs on the event loop, like the stream's batches, so a swap never
happens in the middle of a call; requests are capped in rows to keep the loop
responsive.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from service import __version__
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.runtime import TensorSpec

__all__ = ["InferRequest", "JsonByDefault", "create_oip_router"]

logger = logging.getLogger(__name__)

MAX_ROWS = 10_000
_ONNX_TO_OIP = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(string)": "BYTES",
}
_NUMERIC = {"FP16", "FP32", "FP64"} | {f"{s}INT{n}" for s in ("", "U") for n in (8, 16, 32, 64)}


class InferInput(BaseModel):
    name: str = Field(examples=["X"])
    shape: list[int] = Field(examples=[[1, 13]])
    datatype: str = Field(examples=["FP32"])
    data: list[Any] = Field(
        examples=[[13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050]]
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


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _tensor_meta(spec: TensorSpec) -> dict[str, Any]:
    shape = [d if d is not None else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": _ONNX_TO_OIP.get(spec.dtype, "BYTES"), "shape": shape}


def _batch(model: ServingModel, tensor: InferInput) -> np.ndarray | str:
    """The request's input as a float32 ``(rows, width)`` array, or why it cannot be."""
    width = model.runtime.signature.width
    if tensor.datatype not in _NUMERIC:
        return f"datatype {tensor.datatype} is not numeric"
    if len(tensor.shape) != 2 or tensor.shape[1] != width or tensor.shape[0] < 1:
        return f"shape {tensor.shape} does not fit [rows, {width}]"
    if tensor.shape[0] > MAX_ROWS:
        return f"{tensor.shape[0]} rows is over the limit of {MAX_ROWS}"
    try:
        array = np.asarray(tensor.data, dtype=np.float32).reshape(tensor.shape)
    except (ValueError, TypeError):
        return f"data does not hold {tensor.shape[0] * tensor.shape[1]} numbers"
    if not np.isfinite(array).all():
        return "data holds NaN or infinity"
    return array


class JsonByDefault:
    """ASGI middleware: an ``/infer`` POST without a content type is JSON.

    Triton's HTTP client sends its JSON body with no ``Content-Type``; FastAPI
    would then refuse it. Requests that use the binary-data extension (not
    supported) are told so instead of failing obscurely.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/infer"):
            headers = dict(scope["headers"])
            if b"inference-header-content-length" in headers:
                response = _error(400, "the binary-data extension is not supported; send JSON")
                await response(scope, receive, send)
                return
            if b"content-type" not in headers:
                scope = {
                    **scope,
                    "headers": [*scope["headers"], (b"content-type", b"application/json")],
                }
        await self.app(scope, receive, send)


def create_oip_router(
    registry: ModelRegistry, metrics: Metrics, is_ready: Callable[[], bool]
) -> APIRouter:
    """The ``/v2`` routes over ``registry``."""
    router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])

    def serving(name: str, version: str | None) -> ServingModel | JSONResponse:
        model = registry.get(name)
        if model is None:
            return _error(404, f"no model named {name!r} is serving")
        if version is not None and version != model.version:
            return _error(404, f"{name} serves version {model.version}, not {version}")
        return model

    @router.get("")
    async def server_metadata() -> dict[str, Any]:
        """Server name, version and protocol extensions (none)."""
        return {"name": "hotswap", "version": __version__, "extensions": []}

    @router.get("/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/health/ready", responses={503: {"description": "Not ready"}})
    async def ready() -> JSONResponse:
        state = is_ready()
        return JSONResponse({"ready": state}, status_code=200 if state else 503)

    async def metadata(name: str, version: str | None = None) -> JSONResponse:
        model = serving(name, version)
        if isinstance(model, JSONResponse):
            return model
        sig = model.runtime.signature
        return JSONResponse(
            {
                "name": model.name,
                "versions": [model.version],
                "platform": "onnxruntime_onnx",
                "inputs": [_tensor_meta(s) for s in sig.inputs],
                "outputs": [_tensor_meta(s) for s in sig.outputs],
            }
        )

    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        model = serving(name, version)
        if isinstance(model, JSONResponse):
            return model
        return JSONResponse({"name": name, "ready": True})

    async def infer(name: str, request: InferRequest, version: str | None = None) -> JSONResponse:
        model = serving(name, version)
        if isinstance(model, JSONResponse):
            return model
        batch = _batch(model, request.inputs[0])
        if isinstance(batch, str):
            return _error(400, batch)
        wanted = {o.name for o in request.outputs} if request.outputs else None
        known = {s.name for s in model.runtime.signature.outputs}
        if wanted is not None and not wanted <= known:
            return _error(
                400, f"unknown outputs {sorted(wanted - known)}; model has {sorted(known)}"
            )
        started = time.perf_counter()
        outputs = model.runtime.predict(batch)
        seconds = time.perf_counter() - started
        model.stats.observe(seconds * 1000, len(batch))
        metrics.http_inferences.labels(model.name, model.version).inc(len(batch))
        specs = {s.name: s for s in model.runtime.signature.outputs}
        body = {
            "model_name": model.name,
            "model_version": model.version,
            "id": request.id or "",
            "outputs": [
                {
                    "name": out,
                    "datatype": _ONNX_TO_OIP.get(specs[out].dtype, "BYTES"),
                    "shape": list(value.shape),
                    "data": value.reshape(-1).tolist(),
                }
                for out, value in outputs.items()
                if wanted is None or out in wanted
            ],
        }
        return JSONResponse(body)

    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "No such model/version"}}
    bad: dict[int | str, dict[str, Any]] = {400: {"description": "Input does not fit"}, **not_found}
    router.add_api_route("/models/{name}", metadata, methods=["GET"], responses=not_found)
    router.add_api_route(
        "/models/{name}/versions/{version}", metadata, methods=["GET"], responses=not_found
    )
    router.add_api_route("/models/{name}/ready", model_ready, methods=["GET"], responses=not_found)
    router.add_api_route(
        "/models/{name}/versions/{version}/ready",
        model_ready,
        methods=["GET"],
        responses=not_found,
    )
    router.add_api_route("/models/{name}/infer", infer, methods=["POST"], responses=bad)
    router.add_api_route(
        "/models/{name}/versions/{version}/infer", infer, methods=["POST"], responses=bad
    )
    return router
