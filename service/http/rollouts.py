"""Rollouts and the fleet over HTTP: ``GET /models/{name}/rollout`` and ``GET /fleet``.

Read-only views of the registry's candidate slot (what
:class:`~service.core.control.RolloutControl` applied from the control topic)
and of the fleet's heartbeats; nothing here changes a rollout: that is the
control topic's job (``hotswap publish --shadow``, ``promote``, ``abort``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, Field

from service.core.registry import ModelRegistry

__all__ = ["FleetView", "RolloutView", "create_rollout_router"]

logger = logging.getLogger(__name__)

ModelName = Annotated[str, Path(description="Model name (the model message's key).")]


class RolloutReport(BaseModel):
    compared: int = Field(description="Records both versions scored.")
    agreement: float | None = Field(description="Share of compared records with equal labels.")
    mean_abs_diff: float | None = Field(description="Mean |serving - candidate| of outputs.")
    candidate_rows: int
    candidate_errors: int = Field(description="Records the candidate failed on.")
    candidate_p99_ms: float | None = Field(description="p99 of the candidate's predict calls.")
    serving_p99_ms: float | None
    truth: dict[str, Any] | None = Field(
        None, description="Both versions' quality on the same labelled records."
    )


class RolloutView(BaseModel):
    name: str
    stage: str = Field(description="shadow, canary, promoted or aborted")
    fraction: float = Field(description="Share of keys the candidate serves (canary).")
    candidate: str | None = Field(description="Candidate version.")
    candidate_sha256: str | None
    serving: str | None = Field(description="Version serving the other records.")
    since: str
    who: str
    why: str
    policy: dict[str, Any] | None
    rejected: str | None = Field(description="Why the candidate was refused, if it was.")
    report: RolloutReport
    decision: dict[str, Any] | None = Field(description="The promote or abort, who, why.")


class FleetView(BaseModel):
    group: str
    me: str
    workers: list[dict[str, Any]] = Field(description="Live workers of the group.")
    disagreements: dict[str, dict[str, list[str]]] = Field(
        description="Models that workers route differently: name -> routing -> worker ids."
    )
    refused_heartbeats: dict[str, int] = Field(
        default_factory=dict, description="Status-topic messages refused, by reason."
    )


def create_rollout_router(
    registry: ModelRegistry, fleet: Callable[[], dict[str, Any]] | None = None
) -> APIRouter:
    """The rollout view over ``registry``; ``/fleet`` when ``fleet`` (the worker's) is given."""
    router = APIRouter()

    @router.get(
        "/models/{name}/rollout",
        tags=["rollouts"],
        responses={404: {"description": "No rollout for this model"}},
    )
    async def get_rollout(name: ModelName) -> RolloutView:
        """The rollout of ``name``: candidate, stage, figures against the serving version."""
        rollout = registry.rollout(name)
        if rollout is None:
            raise HTTPException(404, f"no rollout for {name!r}")
        return RolloutView.model_validate(rollout.describe(registry.get(name)))

    if fleet is not None:

        @router.get("/fleet", tags=["fleet"])
        async def get_fleet() -> FleetView:
            """Every live worker of this group, and models whose versions differ across it."""
            return FleetView.model_validate(fleet())

    return router
