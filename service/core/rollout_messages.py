"""Wire formats of rollouts and of the fleet: control messages and worker heartbeats.

A **control message** (compacted control topic, key = model name) says what
is being rolled out for a name: the candidate (a whole model message, as on
the model topic), the stage (``shadow``, ``canary``, ``promoted``,
``aborted``), the canary fraction, an optional automatic-promotion policy, and
who decided and why. The model topic is not used for this: it is compacted by
name, so a candidate there would erase the serving version.

Worker heartbeats (the status topic) are in :mod:`service.core.status_messages`.

Both topics are read like the model topic: as hostile input. Schemas are
strict (timezone-aware times, typed non-negative figures, capped strings and
sizes); a message that fails is refused with a reason from
:mod:`service.core.errors` and never reaches a view or the decider.
"""

from __future__ import annotations

import getpass
import logging
import socket
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    model_validator,
)

from service.core import errors
from service.core.messages import ModelMessage, problems
from service.core.truth import TruthFigures

__all__ = [
    "ACTIVE_STAGES",
    "MAX_CONTROL_BYTES",
    "ControlMessage",
    "Figure",
    "RolloutFigures",
    "RolloutPolicy",
    "Stage",
    "encode_control_message",
    "parse_control_message",
    "same_model",
    "who_am_i",
]

logger = logging.getLogger(__name__)

Stage = Literal["shadow", "canary", "promoted", "aborted"]
ACTIVE_STAGES: frozenset[str] = frozenset({"shadow", "canary"})
MAX_CONTROL_BYTES = 16 * 1024**2  # the control topic's max.message.bytes: a candidate inline

#: A figure from another worker: a finite, non-negative number.
Figure = Annotated[float, Field(ge=0, allow_inf_nan=False)]


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

    model_config = ConfigDict(extra="ignore", frozen=True, allow_inf_nan=False)

    promote_after: int = Field(ge=1, le=10**15, description="Records compared before deciding.")
    min_agreement: float | None = Field(None, ge=0, le=1, description="Least label agreement.")
    max_p99_ms: float | None = Field(None, gt=0, description="Slowest candidate p99 (ms/call).")
    max_error_rate: float = Field(0.0, ge=0, le=1, description="Most candidate errors per record.")
    min_labels: int | None = Field(None, ge=1, description="Labelled records both scored first.")
    max_quality_loss: float = Field(
        0.0, ge=0, description="Most accuracy lost (or RMSE gained) against the serving version."
    )


class RolloutFigures(BaseModel):
    """How a candidate compares with the serving version, over the records both scored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    compared: NonNegativeInt = 0
    agreed: NonNegativeInt = 0  # rows whose labels are equal
    labelled: NonNegativeInt = 0  # rows with a label on both sides
    abs_diff_sum: Figure = 0.0  # sum over rows of the mean |serving - candidate| output
    candidate_rows: NonNegativeInt = 0  # rows the candidate scored (compared or not)
    candidate_errors: NonNegativeInt = 0  # rows the candidate failed on
    candidate_p99_ms: Figure | None = None
    serving_p99_ms: Figure | None = None
    truth: TruthFigures | None = None  # both versions' quality on the same labelled records

    @model_validator(mode="after")
    def _consistent(self) -> RolloutFigures:
        if self.agreed > self.labelled or self.labelled > self.compared:
            raise ValueError("agreed <= labelled <= compared does not hold")
        return self

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
    fraction: float = Field(0.0, ge=0, le=1, allow_inf_nan=False, description="canary share")
    candidate: ModelMessage | None = None
    policy: RolloutPolicy | None = None
    who: str = Field("", max_length=200)
    why: str = Field("", max_length=2000)
    at: AwareDatetime = Field(default_factory=_now)
    figures: RolloutFigures | None = None  # what an automatic decision rested on
    signature: str | None = Field(None, max_length=200, description="Base64 Ed25519 signature.")

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
    """Validate a control message; the key, when set, must equal ``name``.

    Raises :class:`~service.core.errors.ControlTooLarge` or
    :class:`~service.core.errors.InvalidControl`, nothing else.
    """
    if len(value) > MAX_CONTROL_BYTES:
        raise errors.ControlTooLarge(f"{len(value)} bytes, limit {MAX_CONTROL_BYTES}")
    try:
        message = ControlMessage.model_validate_json(value)
    except ValidationError as exc:
        raise errors.InvalidControl(problems(exc)[:500]) from None
    except (ValueError, RecursionError) as exc:  # e.g. nesting too deep for the parser
        raise errors.InvalidControl(str(exc)[:500]) from None
    if key is not None and key.decode("utf-8", "replace") != message.name:
        raise errors.InvalidControl(f"key {key[:200]!r} differs from name {message.name!r}")
    return message


def same_model(a: ModelMessage | None, b: ModelMessage | None) -> bool:
    """The same version with the same artifact (version label and sha256)."""
    return a is not None and b is not None and (a.version, a.sha256) == (b.version, b.sha256)


def encode_control_message(message: ControlMessage) -> bytes:
    return orjson.dumps(message.model_dump(mode="json", exclude_none=True))
