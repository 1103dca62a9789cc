"""Live quality and drift over HTTP: ``GET /models/{name}/quality`` and ``/drift``.

Read-only views of what the labels feed joined (over the data partitions
this worker holds) and of what drift monitoring measured on this worker's
records; nothing here changes anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path

from service.core.registry import ModelRegistry

__all__ = ["create_quality_router"]

logger = logging.getLogger(__name__)

ModelName = Annotated[str, Path(description="Model name (the model message's key).")]
View = Callable[[str], dict[str, Any] | None]


def create_quality_router(
    registry: ModelRegistry, quality: View, drift: View | None = None
) -> APIRouter:
    """``quality(name)`` and ``drift(name)`` give the documents; 404 for a model never seen."""
    router = APIRouter()

    def known(name: str) -> None:
        if registry.get(name) is None and not registry.history(name):
            raise HTTPException(404, f"no model named {name!r}")

    @router.get(
        "/models/{name}/quality",
        tags=["quality"],
        responses={404: {"description": "Unknown model"}},
    )
    async def get_quality(name: ModelName) -> dict[str, Any]:
        """Per version: labelled records and accuracy, log loss, Brier (or MAE, RMSE)."""
        known(name)
        return quality(name) or {"model": name, "versions": []}

    if drift is not None:

        @router.get(
            "/models/{name}/drift",
            tags=["quality"],
            responses={404: {"description": "Unknown model, or no reference profile"}},
        )
        async def get_drift(name: ModelName) -> dict[str, Any]:
            """PSI of each feature and of the predictions against the reference profile."""
            known(name)
            view = drift(name)
            if view is None:
                raise HTTPException(404, f"{name!r} has no reference profile (publish --reference)")
            return view

    return router
