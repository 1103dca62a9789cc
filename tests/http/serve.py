"""Serve the HTTP API over given model messages with real uvicorn (a test helper process).

``python -m tests.http.serve --port N [--max-request-bytes B] MESSAGE.json...``
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from service.core.messages import ModelMessage
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.http.api import Readiness, create_api
from service.http.limits import DEFAULT_MAX_REQUEST_BYTES

logger = logging.getLogger(__name__)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-request-bytes", type=int, default=DEFAULT_MAX_REQUEST_BYTES)
    parser.add_argument("messages", nargs="*", type=Path)
    args = parser.parse_args()
    registry = ModelRegistry()
    for path in args.messages:
        registry.install(registry.build(ModelMessage.model_validate_json(path.read_bytes())))
    ready = Readiness(
        ready=True, broker_reachable=True, models_replayed=True, models=1, assigned_partitions=1
    )
    api = create_api(registry, Metrics(), lambda: ready, max_request_bytes=args.max_request_bytes)
    uvicorn.run(api, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
