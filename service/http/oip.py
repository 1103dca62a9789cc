"""Open Inference Protocol v2 (KServe / Triton) over HTTP: direct, low-latency scoring.

The "call it directly" side of the Kafka-versus-direct trade-off, answered by
the same in-memory model that scores the stream. Tensors come as JSON or with
the binary tensor extension (see :mod:`service.core.oip_binary`), so
``tritonclient.http`` works with its defaults. Decoding, scoring and encoding
run in a bounded thread pool, off the event loop, so ``/health`` and the stream
keep their pace while a large request is handled; at most ``max_pending``
inference requests are held at once (the rest get 503), which with the body
limit bounds the memory they can take; a place is taken once the body is in
(:mod:`service.http.bodies`: a slow body cannot hold one). Admission, refusals, scoring and metrics
are :class:`~service.core.inference.DataPlane`'s, shared with the gRPC adapter.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from service import __version__
from service.core import oip_binary as codec
from service.core.inference import BadRequest, DataPlane, Refused, oip_shape
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.runtime import TensorSpec
from service.core.runtime.base import Outputs
from service.http.bodies import BodyReader, ClientGone
from service.http.oip_infer import (
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
    return {"name": spec.name, "datatype": oip_datatype(spec), "shape": oip_shape(spec)}


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
    offered = set()
    for part in accept.split(","):
        coding, *params = (p.strip().lower() for p in part.split(";"))
        if not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00", "q=0.000") for p in params):
            offered.add(coding)  # q=0: "not acceptable" (RFC 9110)
    if "gzip" in offered:
        return gzip.compress(body, compresslevel=1), "gzip"
    if "deflate" in offered:
        return zlib.compress(body, 1), "deflate"
    return body, None


_STATUS = {
    "invalid": 400,
    "not_found": 404,
    "timeout": 408,
    "too_large": 413,
    "unavailable": 503,
    "failed": 500,
}
_BODY_SECONDS = 30.0  # for a whole body to arrive (16 MiB at ~0.5 MB/s)


def _refused(exc: Refused) -> JSONResponse:
    return _error(_STATUS[exc.kind], str(exc))


def create_oip_router(
    registry: ModelRegistry,
    metrics: Metrics,
    is_ready: Callable[[], bool],
    *,
    max_request_bytes: int,
    threads: int = 2,
    max_pending: int = 8,
    plane: DataPlane | None = None,
    body_seconds: float = _BODY_SECONDS,
) -> APIRouter:
    """The ``/v2`` routes over ``registry``; inference uses at most ``threads`` threads.

    ``plane`` shares admission and threads with another transport (the worker's gRPC
    server); without it the router has a plane of its own.
    """
    router = APIRouter(prefix="/v2", tags=["open inference protocol v2"])
    plane = plane or DataPlane(
        registry, metrics, is_ready, threads=threads, max_pending=max_pending
    )
    bodies = BodyReader(most=4 * plane.max_pending, seconds=body_seconds)

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
        try:
            model = plane.serving(name, version)
        except Refused as exc:
            return _refused(exc)
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
        try:
            plane.serving(name, version)
        except Refused as exc:
            return _refused(exc)
        return JSONResponse({"name": name, "ready": True})

    def decode(request: Request, body: bytes) -> Decoded:
        encoding = request.headers.get("content-encoding", "")
        try:
            plain = codec.decompress(body, encoding, max_request_bytes)
            return decode_request(plain, request.headers.get("inference-header-content-length"))
        except (BadRequest, codec.BinaryFormatError) as exc:
            raise Refused("invalid", str(exc)) from None
        except codec.BodyTooLarge as exc:
            raise Refused("too_large", str(exc)) from None

    def encode(
        model: ServingModel, decoded: Decoded, outputs: Outputs, accept: str
    ) -> tuple[bytes, int | None, str | None]:
        body, header = encode_response(model, decoded.request, outputs)
        content, encoding = _compress(body, accept)
        return content, header, encoding

    async def run_inference(
        request: Request, body: bytes, name: str, version: str | None
    ) -> Response:
        decoded = await plane.run(decode, request, body)
        scored = await plane.score(
            name, version, lambda model: predict(model, decoded), metrics.http_inferences
        )
        accept = request.headers.get("accept-encoding", "")
        content, header, encoding = await plane.run(
            encode, scored.model, decoded, scored.outputs, accept
        )
        headers = {}
        if header is not None:
            headers["Inference-Header-Content-Length"] = str(header)
        if encoding is not None:
            headers["Content-Encoding"] = encoding
        headers["Vary"] = "Accept-Encoding"  # caches: the body depends on it
        media = "application/json" if header is None else "application/octet-stream"
        return Response(content, media_type=media, headers=headers)

    async def infer(request: Request, name: str, version: str | None = None) -> Response:
        try:
            plane.check(name, version)  # no body is read for a call that will be refused
            body = await bodies.read(request)
            async with plane.admitted(name, version):
                return await run_inference(request, body, name, version)
        except Refused as exc:
            return _refused(exc)
        except ClientGone:
            return Response(status_code=400)  # never sent: the client is gone

    not_found: dict[int | str, dict[str, Any]] = {404: {"description": "No such model/version"}}
    bad: dict[int | str, dict[str, Any]] = {
        400: {"description": "Input does not fit, or a malformed binary tensor"},
        413: {"description": "Body over HOTSWAP_MAX_REQUEST_BYTES"},
        503: {"description": "Not ready, or too many inference requests in progress"},
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
