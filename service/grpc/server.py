"""The OIP v2 gRPC server (``inference.GRPCInferenceService``), run inside the worker.

:class:`InferenceServicer` answers ServerLive, ServerReady, ModelReady,
ServerMetadata, ModelMetadata and ModelInfer over the worker's in-memory registry,
through the same :class:`~service.core.inference.DataPlane` as the HTTP ``/v2``
routes: the same refusals with the same messages, the same pool of threads and bound on
requests in progress, the same metrics (rows on ``hotswap_grpc_inference_rows_total``).
:class:`GrpcServer` is a mode service: a ``grpc.aio`` server on the worker's own event
loop, started and stopped with the worker. A message over ``max_request_bytes`` is
refused by gRPC itself (RESOURCE_EXHAUSTED) before it is buffered whole.
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import grpc
from mode import Service

from service import __version__
from service.core.inference import BadRequest, DataPlane, RefusalKind, Refused
from service.core.metrics import Metrics
from service.core.settings import Settings
from service.grpc import tensors
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as rpc

__all__ = ["GrpcServer", "InferenceServicer", "create_server"]

logger = logging.getLogger(__name__)

_CODES: dict[RefusalKind, grpc.StatusCode] = {
    "invalid": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "too_large": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "failed": grpc.StatusCode.INTERNAL,
    "timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
}
_STOP_GRACE = 2.0  # seconds a call in progress may take to finish when the worker stops

Context = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Context, exc: Refused) -> NoReturn:
    await context.abort(_CODES[exc.kind], str(exc))
    raise AssertionError("context.abort returned")  # it raises; this line is never reached


def _version(value: str) -> str | None:
    return value or None  # proto3: an empty string is "not given"


class InferenceServicer(rpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """The six RPCs of the protocol over ``plane``; rows counted on ``metrics``."""

    def __init__(self, plane: DataPlane, metrics: Metrics) -> None:
        self.plane = plane
        self.metrics = metrics

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Context
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Context
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.plane.is_ready())

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Context
    ) -> pb.ModelReadyResponse:
        """Ready when that model (version) serves; an unknown one is simply not ready."""
        try:
            self.plane.serving(request.name, _version(request.version))
        except Refused:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Context
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="hotswap", version=__version__)

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Context
    ) -> pb.ModelMetadataResponse:
        try:
            model = self.plane.serving(request.name, _version(request.version))
        except Refused as exc:
            await _abort(context, exc)
        return tensors.tensor_metadata(model)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Context
    ) -> pb.ModelInferResponse:
        name, version = request.model_name, _version(request.model_version)
        try:
            async with self.plane.admitted(name, version):
                try:
                    decoded = await self.plane.run(tensors.decode_input, request)
                except BadRequest as exc:
                    raise Refused("invalid", str(exc)) from None
                scored = await self.plane.score(
                    name,
                    version,
                    lambda model: tensors.predict(model, decoded),
                    self.metrics.grpc_inferences,
                )
                return await self.plane.run(
                    tensors.encode_outputs, scored.model, decoded, scored.outputs, request.id
                )
        except Refused as exc:
            await _abort(context, exc)


def create_server(plane: DataPlane, metrics: Metrics, *, max_request_bytes: int) -> grpc.aio.Server:
    """A ``grpc.aio`` server with the servicer; call on the loop that will run it."""
    server = grpc.aio.server(
        # gRPC reads a whole message before the servicer is called: the calls it takes at once
        # are bounded as HTTP's bodies are, or memory grows with the number of clients.
        maximum_concurrent_rpcs=4 * plane.max_pending,
        options=[
            ("grpc.max_receive_message_length", max_request_bytes),
            ("grpc.max_send_message_length", -1),  # a response is as large as its request allows
            # A call counts from its headers, and gRPC sets no deadline on a slow message:
            # connections are closed after 60 s (+30 s for calls in flight), so clients that
            # send slowly cannot hold the 32 calls for longer; clients reconnect by themselves.
            ("grpc.max_connection_age_ms", 60_000),
            ("grpc.max_connection_age_grace_ms", 30_000),
        ],
    )
    servicer = InferenceServicer(plane, metrics)
    rpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    return server


class GrpcServer(Service):  # type: ignore[misc]
    """The gRPC server as a service of the worker: listens after start, drains on stop."""

    def __init__(
        self,
        plane: DataPlane,
        metrics: Metrics,
        *,
        host: str,
        port: int,
        max_request_bytes: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plane = plane
        self.metrics = metrics
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.max_request_bytes = max_request_bytes
        self.server: grpc.aio.Server | None = None
        self.port: int | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, plane: DataPlane, metrics: Metrics
    ) -> GrpcServer | None:
        """The worker's server on ``HOTSWAP_GRPC_PORT`` (and ``HOTSWAP_HTTP_HOST``); 0: none."""
        if not settings.grpc_port:
            return None
        return cls(
            plane,
            metrics,
            host=settings.http_host,
            port=settings.grpc_port,
            max_request_bytes=settings.max_request_bytes,
        )

    async def on_start(self) -> None:
        server = create_server(self.plane, self.metrics, max_request_bytes=self.max_request_bytes)
        self.port = server.add_insecure_port(self.address)  # raises when it cannot bind
        await server.start()
        self.server = server
        logger.info("OIP v2 gRPC on %s", self.address)

    async def on_stop(self) -> None:
        if self.server is not None:
            await self.server.stop(_STOP_GRACE)
            self.server = None
