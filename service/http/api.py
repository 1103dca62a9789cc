"""The HTTP API (FastAPI), served by uvicorn inside the worker process.

Read-only views of the registry and the worker's health, plus Prometheus
metrics and OIP v2 inference. It reads the same in-memory objects the scoring
agent uses, so what it reports is what is serving. Every request body is capped
at ``max_request_bytes`` (413 beyond it, before the body is buffered).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, HTTPException, Path, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import __version__
from service.core.inference import DataPlane
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.http.limits import DEFAULT_MAX_REQUEST_BYTES, BodyLimit
from service.http.oip import create_oip_router

__all__ = ["Readiness", "create_api"]

logger = logging.getLogger(__name__)

ModelName = Annotated[str, Path(description="Model name (the model message's key).")]


class Readiness(BaseModel):
    ready: bool
    broker_reachable: bool
    models_replayed: bool
    models: int
    assigned_partitions: int = Field(description="Data-topic partitions this worker consumes.")
    reason: str = Field("", description="Why the worker is not ready (empty when it is).")
    detail: str = Field(
        "", description="Problems that do not make it unready (e.g. heartbeats not sent)."
    )


class Latency(BaseModel):
    min: float | None = Field(description="Fastest predict call, ms.")
    mean: float | None
    max: float | None
    p99: float | None


class ModelView(BaseModel):
    name: str
    version: str
    format: str
    description: str
    sha256: str
    since: datetime
    records_scored: int
    batches_scored: int
    latency_ms: Latency
    load_ms: float
    signature: dict[str, Any]
    metadata: dict[str, Any]


class ModelSummary(BaseModel):
    name: str
    version: str
    since: datetime
    records_scored: int


class HistoryView(BaseModel):
    version: str
    status: str = Field(
        description="accepted, rejected, retired or removed; rollouts: candidate, promoted, aborted"
    )
    at: datetime
    sha256: str | None = None
    reason: str | None = Field(None, description="Stable rejection code, e.g. sha256_mismatch.")
    detail: str | None = None
    who: str | None = Field(None, description="Who promoted or aborted (rollouts).")
    why: str | None = Field(None, description="Why (rollouts; automatic ones name figures).")


def create_api(
    registry: ModelRegistry,
    metrics: Metrics,
    readiness: Callable[[], Readiness],
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    inference_threads: int = 2,
    routers: Sequence[APIRouter] = (),
    plane: DataPlane | None = None,
) -> FastAPI:
    """Build the FastAPI app over ``registry``; ``readiness`` is asked on every /ready.

    ``max_request_bytes`` is ``Settings.max_request_bytes`` (``HOTSWAP_MAX_REQUEST_BYTES``);
    OIP v2 inference runs on at most ``inference_threads`` threads, off the event loop;
    ``routers`` are more views (the worker's rollouts and fleet, :mod:`service.http.rollouts`);
    ``plane`` is the inference data plane shared with the worker's gRPC server, if any.
    """
    api = FastAPI(
        title="hotswap",
        version=__version__,
        description="Models served from Kafka, hot-swapped while running.",
    )

    api.include_router(
        create_oip_router(
            registry,
            metrics,
            lambda: readiness().ready,
            max_request_bytes=max_request_bytes,
            threads=inference_threads,
            max_pending=4 * inference_threads,
            plane=plane,
        )
    )
    api.add_middleware(BodyLimit, max_bytes=max_request_bytes)

    @api.exception_handler(StarletteHTTPException)
    async def oip_errors(request: Request, exc: StarletteHTTPException) -> Response:
        """Under /v2, FastAPI's own refusals (no such route, a wrong method) in the OIP form,
        ``{"error": ...}``, which OIP clients read (tritonclient read none of ``detail``)."""
        if not request.url.path.startswith("/v2"):
            return await http_exception_handler(request, exc)
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    for router in routers:
        api.include_router(router)

    @api.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        """Liveness: the process and its event loop answer."""
        return {"status": "alive"}

    @api.get("/ready", tags=["health"], response_model=Readiness)
    async def ready() -> JSONResponse:
        """Readiness: broker reachable and the model topic replayed (503 otherwise)."""
        state = readiness()
        metrics.ready.set(1 if state.ready else 0)
        return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)

    @api.get("/models", tags=["models"])
    async def list_models() -> list[ModelSummary]:
        """The version serving now for every model name."""
        return [
            ModelSummary(
                name=m.name, version=m.version, since=m.since, records_scored=m.stats.records
            )
            for m in registry.models()
        ]

    @api.get("/models/{name}", tags=["models"], responses={404: {"description": "No such model"}})
    async def get_model(name: ModelName) -> ModelView:
        """The serving version of ``name``: since when, how much, how fast, what it takes."""
        model = registry.get(name)
        if model is None:
            raise HTTPException(404, f"no model named {name!r} is serving")
        return ModelView.model_validate(registry.describe(model))

    @api.get(
        "/models/{name}/history",
        tags=["models"],
        responses={404: {"description": "Never seen"}},
    )
    async def get_history(name: ModelName) -> list[HistoryView]:
        """Every version seen for ``name``, oldest first: accepted or rejected, when, why."""
        entries = registry.history(name)
        if entries is None:
            raise HTTPException(404, f"no model named {name!r} was ever published")
        return [
            HistoryView(
                version=e.version,
                status=e.status,
                at=e.at,
                sha256=e.sha256,
                reason=e.reason,
                detail=e.detail,
                who=e.who,
                why=e.why,
            )
            for e in entries
        ]

    @api.get("/metrics", tags=["health"], response_class=Response)
    async def prometheus() -> Response:
        """Prometheus text exposition of the ``hotswap_*`` metrics."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return api
