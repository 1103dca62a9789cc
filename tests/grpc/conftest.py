"""gRPC fixtures: the worker's GrpcServer service, in process, on a loop of its own thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from service.core.inference import DataPlane
from service.core.messages import ModelMessage
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.grpc.server import GrpcServer
from tests.http.conftest import deep, deep_model, text_model, wine_and_text  # noqa: F401


@dataclass
class Served:
    """A running GrpcServer over its own registry; ``ready`` is what readiness answers."""

    port: int
    registry: ModelRegistry
    metrics: Metrics
    ready: list[bool] = field(default_factory=lambda: [True])

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def rows(self, counter: Any, name: str, version: str) -> float:
        return float(counter.labels(name, version)._value.get())


GrpcFactory = Callable[..., Served]


@pytest.fixture(scope="module")
def grpc_serve() -> Iterator[GrpcFactory]:
    """Start ``GrpcServer`` services (port 0: any free one) over the given model messages."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="grpc-test-loop", daemon=True)
    thread.start()
    services: list[GrpcServer] = []

    def start(*messages: ModelMessage, max_request_bytes: int = 16 * 1024 * 1024) -> Served:
        registry, metrics = ModelRegistry(), Metrics()
        for message in messages:
            registry.install(registry.build(message))
            metrics.swapped(message.name, message.version, None)
        served = Served(0, registry, metrics)
        plane = DataPlane(registry, metrics, lambda: served.ready[0])
        service = GrpcServer(
            plane, metrics, host="127.0.0.1", port=0, max_request_bytes=max_request_bytes
        )
        asyncio.run_coroutine_threadsafe(service.start(), loop).result(30)
        services.append(service)
        assert service.port
        served.port = service.port
        return served

    yield start
    for service in services:
        asyncio.run_coroutine_threadsafe(service.stop(), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
