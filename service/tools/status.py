"""``hotswap status``: what a running worker serves, as a Rich table or as JSON.

``--fleet``: every live worker of its group (``GET /fleet``), one row each.

Read from the worker's HTTP API (``/ready``, ``/models``, ``/models/{name}``);
nothing here logs, so the output is the table (or the JSON document) alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from rich.table import Table

from service.tools.errors import ToolError, worker_errors

__all__ = [
    "WorkerStatus",
    "fetch_fleet",
    "fetch_status",
    "fleet_json",
    "fleet_table",
    "status_json",
    "status_table",
]

logger = logging.getLogger(__name__)

_TIMEOUT = 5.0


@dataclass(frozen=True)
class WorkerStatus:
    """A worker's readiness and the model views it serves (``GET /models/{name}`` bodies)."""

    url: str
    ready: bool
    readiness: dict[str, Any]
    models: list[dict[str, Any]] = field(default_factory=list)


def fetch_status(url: str, *, timeout: float = _TIMEOUT) -> WorkerStatus:
    """Ask the worker at ``url``; a :class:`ToolError` when it cannot be asked."""
    url = url.rstrip("/")
    with worker_errors(url), httpx.Client(base_url=url, timeout=timeout) as client:
        ready = client.get("/ready")  # 503 while not ready, with the same JSON body
        readiness = ready.json()
        listing = client.get("/models")
        if listing.status_code != 200:
            raise ToolError(f"{url}/models answered {listing.status_code}: is it a hotswap worker?")
        models = []
        for summary in listing.json():
            detail = client.get(f"/models/{summary['name']}")
            if detail.status_code == 200:  # 404: removed between the two calls
                models.append(detail.json())
    if not isinstance(readiness, dict):
        raise ToolError(f"{url}/ready did not answer like a hotswap worker")
    return WorkerStatus(url, ready.status_code == 200, readiness, models)


def status_json(status: WorkerStatus) -> str:
    """The status as one JSON document (``--json``)."""
    document = {
        "url": status.url,
        "ready": status.ready,
        "readiness": status.readiness,
        "models": status.models,
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()


def _not_ready_because(readiness: dict[str, Any]) -> str:
    """``not ready (models replayed: no, ...)`` from the /ready body's false checks and reasons."""
    failing = [f"{k.replace('_', ' ')}: no" for k, v in readiness.items() if v is False]
    reasons = [str(v) for k, v in readiness.items() if k in {"reason", "detail"} and v]
    because = [*reasons, *(f for f in failing if not f.startswith("ready:"))]
    return f"NOT READY ({', '.join(because)})" if because else "NOT READY"


def _number(value: Any, digits: int = 2) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return "-"


def status_table(status: WorkerStatus) -> Table:
    """A Rich table: one row per serving model; the title says ready or why not."""
    state = "ready" if status.ready else _not_ready_because(status.readiness)
    table = Table(title=f"hotswap worker at {status.url}: {state}", title_justify="left")
    for column in ("model", "version", "since"):
        table.add_column(column, no_wrap=True)
    for column in ("records", "batches", "p99 ms", "load ms"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("description")
    for model in status.models:
        latency = model.get("latency_ms") or {}
        since = str(model.get("since", "-")).replace("T", " ")[:19]
        table.add_row(
            str(model.get("name", "?")),
            str(model.get("version", "?")),
            since,
            _number(model.get("records_scored")),
            _number(model.get("batches_scored")),
            _number(latency.get("p99"), 3),
            _number(model.get("load_ms"), 1),
            str(model.get("description") or ""),
        )
    if not status.models:
        table.caption = "no model is serving yet: publish one with `hotswap publish`"
    return table


def fetch_fleet(url: str, *, timeout: float = _TIMEOUT) -> dict[str, Any]:
    """``GET /fleet`` of the worker at ``url``: every live worker of its group."""
    url = url.rstrip("/")
    with worker_errors(url), httpx.Client(base_url=url, timeout=timeout) as client:
        response = client.get("/fleet")
        if response.status_code != 200:
            raise ToolError(f"{url}/fleet answered {response.status_code}: is it a hotswap worker?")
        fleet = response.json()
    if not isinstance(fleet, dict) or not isinstance(fleet.get("workers"), list):
        raise ToolError(f"{url}/fleet did not answer like a hotswap worker")
    return fleet


def fleet_json(fleet: dict[str, Any]) -> str:
    return orjson.dumps(fleet, option=orjson.OPT_INDENT_2).decode()


def _models(worker: dict[str, Any]) -> str:
    listed = ", ".join(f"{n} {v}" for n, v in (worker.get("models") or {}).items()) or "-"
    left_out = worker.get("models_left_out")
    return f"{listed} (+{left_out} more)" if isinstance(left_out, int) and left_out else listed


def fleet_table(fleet: dict[str, Any]) -> Table:
    """One row per live worker; the caption flags models whose versions differ."""
    workers = fleet["workers"]
    table = Table(
        title=f"hotswap fleet of group {fleet.get('group')}: {len(workers)} live worker(s)",
        title_justify="left",
    )
    columns = ("worker", "http", "ready", "partitions", "lag", "models", "rollouts", "skew s")
    for column in columns:
        table.add_column(column)
    for w in workers:
        rollouts = ", ".join(
            f"{name}: {r.get('candidate')} {r.get('stage')}"
            for name, r in (w.get("rollouts") or {}).items()
        )
        table.add_row(
            str(w.get("id")) + (" (this one)" if w.get("id") == fleet.get("me") else ""),
            str(w.get("http", "-")),
            "yes" if w.get("ready") else "no",
            ",".join(str(p) for p in w.get("partitions") or []) or "-",
            "-" if w.get("lag") is None else f"{w['lag']:,}",
            _models(w),
            rollouts or "-",
            _number(w.get("clock_skew_seconds"), 1),
        )
    split = fleet.get("disagreements") or {}
    if split:
        table.caption = "routing differs: " + "; ".join(
            f"{name}: " + ", ".join(f"{v} on {', '.join(ids)}" for v, ids in versions.items())
            for name, versions in split.items()
        )
    return table
