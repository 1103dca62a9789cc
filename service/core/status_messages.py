"""Wire format of the fleet's status topic: one worker's heartbeat, strict and bounded.

A **worker status** (compacted status topic, key = worker id) says what one
worker serves, where its rollouts stand, which data partitions it holds, and
when it said so (``last_seen``, the sender's clock: shown, never trusted; a
worker is live by when its heartbeat *arrived*, see :mod:`service.core.fleet`).
A tombstone means the worker stopped.

Anyone who can write the topic can write anything to it, so the schema is
strict (no coercion: ``"lots"`` is not a count, a time without a zone is not a
time), every string and list is capped, and a heartbeat lists at most
:data:`MAX_LISTED` models and rollouts whatever the worker serves: the rest are
counted (``models_total``), and ``routing_digest`` covers all of them, so two
workers that route any record differently still disagree visibly.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    StringConstraints,
    ValidationError,
)

from service.core import errors
from service.core.messages import problems
from service.core.rollout_messages import Figure, RolloutFigures, Stage

__all__ = [
    "MAX_LISTED",
    "MAX_STATUS_BYTES",
    "RolloutSummary",
    "WorkerStatus",
    "parse_worker_status",
    "routing",
    "routing_digest",
]

logger = logging.getLogger(__name__)

MAX_LISTED = 100  # models (and rollouts) named in one heartbeat
MAX_STATUS_BYTES = 256 * 1024  # far below the status topic's 1 MB; a full heartbeat is ~60 KB

Short = Annotated[str, StringConstraints(max_length=200)]


def _now() -> datetime:
    return datetime.now(UTC)


class RolloutSummary(BaseModel):
    """Where one rollout stands on a worker, as its heartbeat says."""

    model_config = ConfigDict(extra="ignore", strict=True, frozen=True)

    stage: Stage
    fraction: Figure = Field(0.0, le=1)
    candidate: Short | None = None
    active: bool = Field(False, description="Records go to the candidate (or are shadowed).")
    figures: RolloutFigures | None = None
    rejected: Annotated[str, StringConstraints(max_length=500)] | None = None


class WorkerStatus(BaseModel):
    """One worker's heartbeat on the status topic (key = ``id``)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    host: Short
    http: Short = Field(description="Where its HTTP API answers.")
    group: Short = Field(description="Its consumer group (HOTSWAP_APP_ID).")
    models: dict[Short, Short] = Field(
        default_factory=dict, max_length=MAX_LISTED, description="Serving version per name."
    )
    rollouts: dict[Short, RolloutSummary] = Field(default_factory=dict, max_length=MAX_LISTED)
    models_total: NonNegativeInt = Field(0, description="Models it serves, listed or not.")
    rollouts_total: NonNegativeInt = 0
    routing_digest: Annotated[str, StringConstraints(max_length=64)] = Field(
        "", description="sha256 of how it routes every model (listed or not)."
    )
    partitions: list[NonNegativeInt] = Field(default_factory=list, max_length=10_000)
    lag: NonNegativeInt | None = None
    topics: dict[Short, Annotated[list[NonNegativeInt], Field(max_length=10_000)]] = Field(
        default_factory=dict,
        max_length=MAX_LISTED,
        description="Partitions it holds per topic read (the data topic, or each route's).",
    )
    lag_by_topic: dict[Short, NonNegativeInt] = Field(
        default_factory=dict, max_length=MAX_LISTED, description="``lag`` per topic read."
    )
    ready: bool = False
    last_seen: AwareDatetime = Field(default_factory=_now)
    signature: Annotated[str, StringConstraints(max_length=200)] | None = Field(
        None, description="base64 Ed25519 over the rest (HOTSWAP_SIGNING_KEY), when set."
    )

    @property
    def models_left_out(self) -> int:
        return max(0, self.models_total - len(self.models))

    def figures(self, name: str, candidate: str) -> RolloutFigures | None:
        """This worker's figures for ``candidate`` of ``name``, if it reports that rollout."""
        rollout = self.rollouts.get(name)
        if rollout is None or rollout.candidate != candidate:
            return None
        return rollout.figures


def routing(version: str | None, rollout: RolloutSummary | None) -> str:
    """How records of one model are routed, as one comparable string.

    ``"5"``; ``"5 + canary 0.3 to 6"``; ``"5 + shadow 6"``; ``"5 -> 6 (promoted)"``
    (every record to 6 until its swap lands); ``"none"`` when nothing serves.
    """
    serving = version or "none"
    if rollout is None or not rollout.active:
        return serving
    if rollout.stage == "canary":
        return f"{serving} + canary {rollout.fraction:g} to {rollout.candidate}"
    if rollout.stage == "promoted":
        return f"{serving} -> {rollout.candidate} (promoted)"
    return f"{serving} + {rollout.stage} {rollout.candidate}"


def routing_digest(routes: Iterable[tuple[str, str]]) -> str:
    """sha256 of every ``(name, routing)`` pair, in name order."""
    digest = hashlib.sha256()
    for name, route in sorted(routes):
        digest.update(f"{name}\x00{route}\x01".encode())
    return digest.hexdigest()


def parse_worker_status(value: bytes) -> WorkerStatus:
    """Validate a heartbeat; :class:`~service.core.errors.ControlRejected` when it is not one."""
    if len(value) > MAX_STATUS_BYTES:
        raise errors.StatusTooLarge(f"{len(value)} bytes, limit {MAX_STATUS_BYTES}")
    try:
        return WorkerStatus.model_validate_json(value)
    except ValidationError as exc:
        raise errors.InvalidStatus(problems(exc)[:500]) from None
    except (ValueError, RecursionError) as exc:
        raise errors.InvalidStatus(str(exc)[:500]) from None
