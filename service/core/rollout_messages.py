"""Wire formats of rollouts and of the fleet: control messages and worker heartbeats.

A **control message** (compacted control topic, key = model name) says what
is being rolled out for a name: the candidate (a whole model message, as on
the model topic), the stage (``shadow``, ``canary``, ``promoted``,
``aborted``), the canary fraction, an optional automatic-promotion policy, and
who decided and why. The model topic is not used for this: it is compacted by
name, so a candidate there would erase the serving version.

A **worker status** (compacted status topic, key = worker id) is one worker's
heartbeat: what it serves, where its rollouts stand, which data partitions it
holds, and when it last said so. A tombstone means the worker stopped.
"""

from __future__ import annotations

import getpass
import logging
import socket
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.core import errors
from service.core.messages import ModelMessage, problems
from service.core.truth import TruthFigures

__all__ = [
    "ACTIVE_STAGES",
    "ControlMessage",
    "RolloutFigures",
    "RolloutPolicy",
    "Stage",
    "WorkerStatus",
    "encode_control_message",
    "parse_control_message",
    "parse_worker_status",
    "who_am_i",
]

logger = logging.getLogger(__name__)

Stage = Literal["shadow", "canary", "promoted", "aborted"]
ACTIVE_STAGES: frozenset[str] = frozenset({"shadow", "canary"})


def _now() -> datetime:
    return datetime.now(UTC)


def who_am_i() -> str:
    """``user@host``: the ``who`` of a control message written by a person."""
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class RolloutPolicy(BaseModel):
    """When a rollout decides by itself: after ``promote_after`` compared records."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    promote_after: int = Field(ge=1, description="Records compared before deciding.")
    min_agreement: float | None = Field(None, ge=0, le=1, description="Least label agreement.")
    max_p99_ms: float | None = Field(None, gt=0, description="Slowest candidate p99 (ms/call).")
    max_error_rate: float = Field(0.0, ge=0, le=1, description="Most candidate errors per record.")
    min_labels: int | None = Field(None, ge=1, description="Labelled records both scored first.")
    max_quality_loss: float = Field(
        0.0, ge=0, description="Most accuracy lost (or RMSE gained) against the serving version."
    )


class RolloutFigures(BaseModel):
    """How a candidate compares with the serving version, over the records both scored."""

    model_config = ConfigDict(extra="ignore")

    compared: int = 0
    agreed: int = 0  # rows whose labels are equal
    labelled: int = 0  # rows with a label on both sides
    abs_diff_sum: float = 0.0  # sum over rows of the mean |serving - candidate| output
    candidate_rows: int = 0  # rows the candidate scored (compared or not)
    candidate_errors: int = 0  # rows the candidate failed on
    candidate_p99_ms: float | None = None
    serving_p99_ms: float | None = None
    truth: TruthFigures | None = None  # both versions' quality on the same labelled records

    @property
    def agreement(self) -> float | None:
        return self.agreed / self.labelled if self.labelled else None

    @property
    def mean_abs_diff(self) -> float | None:
        return self.abs_diff_sum / self.compared if self.compared else None

    @property
    def error_rate(self) -> float:
        tried = self.candidate_rows + self.candidate_errors
        return self.candidate_errors / tried if tried else 0.0

    def plus(self, other: RolloutFigures) -> RolloutFigures:
        """Figures of two workers together (latencies: the worse of the two)."""

        def worst(a: float | None, b: float | None) -> float | None:
            return max(a, b) if a is not None and b is not None else (a if b is None else b)

        return RolloutFigures(
            compared=self.compared + other.compared,
            agreed=self.agreed + other.agreed,
            labelled=self.labelled + other.labelled,
            abs_diff_sum=self.abs_diff_sum + other.abs_diff_sum,
            candidate_rows=self.candidate_rows + other.candidate_rows,
            candidate_errors=self.candidate_errors + other.candidate_errors,
            candidate_p99_ms=worst(self.candidate_p99_ms, other.candidate_p99_ms),
            serving_p99_ms=worst(self.serving_p99_ms, other.serving_p99_ms),
            truth=self.truth.plus(other.truth) if self.truth is not None else other.truth,
        )

    def report(self) -> dict[str, Any]:
        """The figures people read: counts, agreement, mean absolute difference, latencies."""
        agreement, diff = self.agreement, self.mean_abs_diff
        return {
            "compared": self.compared,
            "agreement": round(agreement, 6) if agreement is not None else None,
            "mean_abs_diff": round(diff, 6) if diff is not None else None,
            "candidate_rows": self.candidate_rows,
            "candidate_errors": self.candidate_errors,
            "candidate_p99_ms": self.candidate_p99_ms,
            "serving_p99_ms": self.serving_p99_ms,
            "truth": self.truth.report() if self.truth is not None else None,
        }


class ControlMessage(BaseModel):
    """One rollout step for ``name`` on the control topic (key = ``name``)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    stage: Stage
    fraction: float = Field(0.0, ge=0, le=1, description="canary: share of keys to the candidate")
    candidate: ModelMessage | None = None
    policy: RolloutPolicy | None = None
    who: str = Field("", max_length=200)
    why: str = Field("", max_length=2000)
    at: datetime = Field(default_factory=_now)
    figures: RolloutFigures | None = None  # what an automatic decision rested on

    @model_validator(mode="after")
    def _consistent(self) -> ControlMessage:
        if self.stage in ACTIVE_STAGES and self.candidate is None:
            raise ValueError(f"stage {self.stage} needs a candidate")
        if self.candidate is not None and self.candidate.name != self.name:
            raise ValueError("candidate.name differs from name")
        if self.stage == "canary" and not 0 < self.fraction <= 1:
            raise ValueError("a canary needs 0 < fraction <= 1")
        return self


def parse_control_message(key: bytes | None, value: bytes) -> ControlMessage:
    """Validate a control message; the key, when set, must equal ``name``."""
    try:
        message = ControlMessage.model_validate_json(value)
    except ValidationError as exc:
        raise errors.InvalidModelMessage(f"control message: {problems(exc)}"[:500]) from None
    if key is not None and key.decode("utf-8", "replace") != message.name:
        raise errors.InvalidModelMessage(f"control key {key!r} differs from name {message.name!r}")
    return message


def encode_control_message(message: ControlMessage) -> bytes:
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))


class WorkerStatus(BaseModel):
    """One worker's heartbeat on the status topic (key = ``id``)."""

    model_config = ConfigDict(extra="ignore")

    id: str
    host: str
    http: str = Field(description="Where its HTTP API answers.")
    group: str = Field(description="Its consumer group (HOTSWAP_APP_ID).")
    models: dict[str, str] = Field(default_factory=dict, description="Serving version per name.")
    rollouts: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Per name: stage, candidate version, figures."
    )
    partitions: list[int] = Field(default_factory=list, description="Data partitions it holds.")
    lag: int | None = None
    ready: bool = False
    last_seen: datetime = Field(default_factory=_now)

    def figures(self, name: str, candidate: str) -> RolloutFigures | None:
        """This worker's figures for ``candidate`` of ``name``, if it reports that rollout."""
        rollout = self.rollouts.get(name)
        if not rollout or rollout.get("candidate") != candidate or not rollout.get("figures"):
            return None
        return RolloutFigures.model_validate(rollout["figures"])


def parse_worker_status(value: bytes) -> WorkerStatus | None:
    try:
        return WorkerStatus.model_validate_json(value)
    except ValidationError as exc:
        logger.debug("ignoring a status message: %s", exc)
        return None
