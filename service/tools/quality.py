"""``hotswap quality NAME``: a running worker's live quality per model version, as a table.

Read from ``GET /models/{name}/quality`` (and ``/drift`` with ``--drift``); the
figures are those of the data partitions that worker holds.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
from rich.table import Table

from service.tools.errors import ToolError, worker_errors

__all__ = ["drift_table", "fetch_view", "quality_table", "view_json"]

logger = logging.getLogger(__name__)

_CLASSIFIER = ("accuracy", "log_loss", "brier")
_REGRESSOR = ("mae", "rmse")


def fetch_view(url: str, name: str, what: str = "quality", timeout: float = 5.0) -> dict[str, Any]:
    """``GET /models/{name}/{what}``; a :class:`ToolError` that says what to do otherwise."""
    url = url.rstrip("/")
    with worker_errors(url), httpx.Client(base_url=url, timeout=timeout) as client:
        response = client.get(f"/models/{name}/{what}")
    if response.status_code == 404:
        raise ToolError(f"{url}: {response.json().get('detail', 'not found')}")
    if response.status_code != 200:
        raise ToolError(f"{url}/models/{name}/{what} answered {response.status_code}")
    body = response.json()
    if not isinstance(body, dict):
        raise ToolError(f"{url} answered something that is not a {what} document")
    return body


def _shown(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)


def quality_table(view: dict[str, Any]) -> Table:
    """One row per version: over the window, and since the version began."""
    versions = view.get("versions", [])
    regression = any("rmse" in v for v in versions)
    metrics = _REGRESSOR if regression else _CLASSIFIER
    window = view.get("window_seconds")
    title = f"{view.get('model')}: quality over the last {_shown(window)} s (and since it began)"
    table = Table(title=title)
    table.add_column("version")
    table.add_column("labelled", justify="right")
    for metric in metrics:
        table.add_column(metric, justify="right")
    table.add_column("labelled (all)", justify="right")
    table.add_column(f"{metrics[0]} (all)", justify="right")
    for v in versions:
        since = v.get("since_began", {})
        table.add_row(
            str(v["version"]),
            _shown(v.get("labelled")),
            *(_shown(v.get(m)) for m in metrics),
            _shown(since.get("labelled")),
            _shown(since.get(metrics[0])),
        )
    return table


def drift_table(view: dict[str, Any]) -> Table:
    """PSI per feature (most drifted first) and of the predictions."""
    table = Table(
        title=f"{view.get('model')} v{view.get('version')}: drift over {view.get('window')} records"
    )
    table.add_column("feature")
    table.add_column("psi", justify="right")
    for feature in view.get("features", []):
        table.add_row(str(feature["name"]), _shown(feature["psi"]))
    table.add_row("(predictions)", _shown(view.get("prediction", {}).get("psi")))
    return table


def view_json(view: dict[str, Any]) -> str:
    return orjson.dumps(view, option=orjson.OPT_INDENT_2).decode()
