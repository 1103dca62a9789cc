"""Open Inference Protocol v2 (KServe / Triton) over HTTP: direct, low-latency scoring.

The "call it directly" side of the Kafka-versus-direct trade-off, answered by
the same in-memory model that scores the stream. Tensors come as JSON or with
the binary tensor extension (see :mod:`service.http.oip_binary`), so
``tritonclient.http`` works with its defaults. Decoding, scoring and encoding
run in a bounded thread pool, off the event loop, so ``/health`` and the stream
keep their pace while a large request is handled; at most ``max_pending``
inference requests are held at once (the rest get 503), which with the body
limit bounds the memory they can take.
"""

from __future__ import annotations

import gzip
import logging
import time
import zlib
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service import __version__
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.runtime import TensorSpec
from service.core.runtime.base import Outputs
from service.http import oip_binary as codec
from service.http.oip_infer import (
    BadRequest,
    Decoded,
    InferRequest,
    decode_request,
    encode_response,
    oip_datatype,
    predict,
)

__all__ = ["EXTENSIONS", "create_oip_router"]

logger = logging.getLogger(__name__)

EXTENSIONS = ["binary_tensor_data"]
_COMPRESS_FROM = 1024  # bytes: smaller responses are not worth compressing


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _tensor_meta(spec: TensorSpec) -> dict[str, Any]:
    shape = [d if d is not None else -1 for d in spec.shape]
    return {"name": spec.name, "datatype": oip_datatype(spec), "shape": shape}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` references inlined (OpenAPI cannot resolve them)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    return dict(resolve(schema))


_INFER_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": _inline(InferRequest.model_json_schema())},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "JSON header of Inference-Header-Content-Length bytes, then "
                "the tensors whose inputs carry parameters.binary_data_size.",
            },
        },
    }
}


def _compress(body: bytes, accept: str) -> tuple[bytes, str | None]:
    """``body`` compressed as the client accepts (gzip, deflate), or as is."""
    if len(body) < _COMPRESS_FROM:
        return body, None
    offered = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if "gzip" in offered:
        return gzip.compress(body, compresslevel=1), "gzip"
    if "deflate" in offered:
        return zlib.compress(body, 1), "deflate"
    return body, None


def create_oip_router(
    registry: ModelRegistry,
    metrics: Metrics,
    is_ready: Callable[[], bool],
    *,
    max_request_bytes: int,
    threads: int = 2,
    max_pending: int = 8,
) -> APIRouter:
    """The ``/v2`` routes over ``registry``; inference uses at most ``threads`` threads."""
    router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
    limiter = anyio.CapacityLimiter(threads)
    pending = 0

    def serving(name: str, version: str | None) -> ServingModel | JSONResponse:
        model = registry.get(name)
        if model is None:
            return _error(404, f"no model named {name!r} is serving")
        if version is not None and version != model.version:
            return _error(404, f"{name} serves version {model.version}, not {version}")
        return model

    @router.get("")
    async def server_metadata() -> dict[str, Any]:
        """Server name, version and protocol extensions."""
        return {"name": "hotswap", "version": __version__, "extensions": EXTENSIONS}

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

    def decode(request: Request, body: bytes) -> Decoded:
        encoding = request.headers.get("content-encoding", "")
        plain = codec.decompress(body, encoding, max_request_bytes)
        return decode_request(plain, request.headers.get("inference-header-content-length"))

    def encode(
        model: ServingModel, decoded: Decoded, outputs: Outputs, accept: str
    ) -> tuple[bytes, int | None, str | None]:
        body, header = encode_response(model, decoded.request, outputs)
        content, encoding = _compress(body, accept)
        return content, header, encoding

    async def score(
        name: str, version: str | None, decoded: Decoded
    ) -> tuple[ServingModel, Outputs, int] | JSONResponse:
        for _ in range(2):  # once more if the model was swapped out during the call
            model = serving(name, version)
            if isinstance(model, JSONResponse):
                return model
            started = time.perf_counter()
            try:
                outputs, rows = await anyio.to_thread.run_sync(
                    predict, model, decoded, limiter=limiter
                )
            except BadRequest as exc:
                return _error(400, str(exc))
            except Exception as exc:
                if registry.get(name) is not model:
                    continue  # released by a swap while it ran: score with the new version
                logger.exception("OIP inference on %s %s failed", model.name, model.version)
                return _error(500, f"scoring failed: {type(exc).__name__}: {exc}")
            model.stats.observe((time.perf_counter() - started) * 1000, rows)
            metrics.http_inferences.labels(
                metrics.model_label(model.name), metrics.version_label(model.name, model.version)
            ).inc(rows)
            return model, outputs, rows
        return _error(503, f"model {name!r} was swapped twice during the call; retry")

    async def run_inference(request: Request, name: str, version: str | None) -> Response:
        body = await request.body()
        try:
            decoded = await anyio.to_thread.run_sync(decode, request, body, limiter=limiter)
        except (BadRequest, codec.BinaryFormatError) as exc:
            return _error(400, str(exc))
        except codec.BodyTooLarge as exc:
            return _error(413, str(exc))
        scored = await score(name, version, decoded)
        if isinstance(scored, JSONResponse):
            return scored
        model, outputs, _ = scored
        accept = request.headers.get("accept-encoding", "")
        content, header, encoding = await anyio.to_thread.run_sync(
            encode, model, decoded, outputs, accept, limiter=limiter
        )
        headers = {}
        if header is not None:
            headers["Inference-Header-Content-Length"] = str(header)
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        media = "application/json" if header is None else "application/octet-stream"
        return Response(content, media_type=media, headers=headers)

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        nonlocal pending
        model = serving(name, version)
        if isinstance(model, JSONResponse):
            return model
        if pending >= max_pending:
            return _error(503, f"{pending} inference requests are in progress; retry shortly")
        pending += 1
        try:
            return await run_inference(request, name, version)
        finally:
            pending -= 1

    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "No such model/version"}}
    bad: dict[int | str, dict[str, Any]] = {
        400: {"description": "Input does not fit, or a malformed binary tensor"},
        413: {"description": "Body over HOTSWAP_MAX_REQUEST_BYTES"},
        503: {"description": "Too many inference requests in progress"},
        **not_found,
    }
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
    for path in ("/models/{name}/infer", "/models/{name}/versions/{version}/infer"):
        router.add_api_route(
            path, infer, methods=["POST"], responses=bad, openapi_extra=_INFER_BODY
        )
    return router
