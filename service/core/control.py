"""Applying one control-topic message: begin, change, promote or abort a rollout.

The control topic's counterpart of :mod:`service.core.swap`. A shadow or
canary message builds its candidate exactly like a serving version (verified,
checked against the serving version's inputs, warmed up, off the event loop)
and puts it in the registry's candidate slot; a failing candidate is rejected
with its reason, in the history and in the rollout. A new stage or fraction
for the same candidate (same version and sha256) needs no rebuild. Promote and
abort end the rollout (see :meth:`ModelRegistry.end_rollout`).

During the replay at start-up only the newest message per name matters, so
messages are collected and applied at the end (:meth:`RolloutControl.settle`):
a worker that restarts mid-rollout builds the candidate once and resumes; one
whose rollout was promoted or aborted meanwhile builds nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from service.core import errors
from service.core.messages import ModelMessage
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.rollout import Rollout
from service.core.rollout_messages import ACTIVE_STAGES, ControlMessage, parse_control_message

__all__ = ["RolloutControl"]

logger = logging.getLogger(__name__)

Build = Callable[[ModelMessage], Awaitable[ServingModel]]


class RolloutControl:
    """Turns control messages into rollouts in the registry; lives on the event loop."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics, build: Build) -> None:
        self._registry = registry
        self._metrics = metrics
        self._build = build
        self._replayed: dict[str, tuple[bytes | None, bytes | None]] = {}

    async def submit(self, key: bytes | None, value: bytes | None, *, replay: bool) -> None:
        """Apply one message now, or (replay) keep only the newest per name until settle."""
        if replay:
            self._replayed[key.decode("utf-8", "replace") if key else "?"] = (key, value)
            return
        await self.apply(key, value)

    async def settle(self) -> None:
        """End of the replay: apply the newest message of every name."""
        replayed, self._replayed = self._replayed, {}
        for key, value in replayed.values():
            await self.apply(key, value)

    async def apply(self, key: bytes | None, value: bytes | None) -> None:
        name = key.decode("utf-8", "replace") if key else "?"
        if value is None:  # a tombstone: forget the rollout, serve as before
            rollout = self._registry.rollout(name)
            if rollout is not None and rollout.ended is None:
                self._registry.end_rollout(name, ControlMessage(name=name, stage="aborted"))
            return
        try:
            control = parse_control_message(key, value)
        except errors.ModelRejected as exc:
            logger.warning("control message for %s refused: %s", name, exc.detail)
            self._registry.reject(name, None, exc)
            return
        self._metrics.rollout_steps.labels(self._metrics.model_label(name), control.stage).inc()
        if control.stage in ACTIVE_STAGES:
            await self._begin(control)
        else:
            if self._registry.rollout(name) is None:  # replayed after its end: show how it ended
                self._registry.begin_rollout(Rollout(control))
            self._registry.end_rollout(control.name, control)
            who, why = control.who, control.why
            logger.info("model %s: rollout %s by %s (%s)", name, control.stage, who, why)

    async def _begin(self, control: ControlMessage) -> None:
        current = self._registry.rollout(control.name)
        running = current is not None and current.active() and current.ended is None
        if running and current is not None and current.same_candidate(control):
            current.control = control  # a new stage or fraction: no rebuild
            self._registry.begin_rollout(current)
            logger.info("model %s: rollout now %s", control.name, _stage(control))
            return
        rollout = Rollout(control)
        candidate = control.candidate
        assert candidate is not None
        try:
            rollout.candidate = await self._build(candidate)
        except errors.ModelRejected as exc:
            self._registry.reject_candidate(rollout, exc)
            self._metrics.rejected(control.name, exc.reason)
            logger.warning(
                "model %s: candidate %s rejected (%s: %s)",
                control.name,
                candidate.version,
                exc.reason,
                exc.detail,
            )
            return
        self._metrics.candidate(control.name, candidate.version)
        self._registry.begin_rollout(rollout)
        logger.info(
            "model %s: candidate %s in %s", control.name, candidate.version, _stage(control)
        )


def _stage(control: ControlMessage) -> str:
    return f"canary {control.fraction:g}" if control.stage == "canary" else control.stage
