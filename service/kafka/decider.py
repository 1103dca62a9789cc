"""Automatic promotion, decided once for the fleet.

Only the worker that holds partition 0 of the data topic decides (at most one
worker of a group holds it at a time). Once a second, for each rollout with a
policy, it totals the figures of every live worker for that candidate (its
own now, the others' from their last heartbeat, see :mod:`service.kafka.fleet`)
and, once ``promote_after`` records are compared, writes ONE control message:
``promoted`` (with the candidate's model message first) or ``aborted``, with
the figures in ``why`` and ``figures``. Every worker, the decider included,
then follows the control topic like after a manual promote or abort.

It does not decide twice: a decision is remembered per candidate; before
writing it reads the control topic again and writes nothing unless this
candidate's rollout is still in progress there, by the rule workers apply
(:func:`~service.kafka.control.current_rollout`; a decider that restarted, or
took partition 0 over, finds the decision already made, and junk written to
the control topic does not hide the rollout).

When workers verify control messages (``HOTSWAP_VERIFY_KEY``), the decider
signs its decisions with ``HOTSWAP_SIGNING_KEY``; without that key it decides
nothing and says so (``problem``, shown in ``/ready``'s detail and logged):
an unsigned decision would be refused by every worker.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from mode import Service

from service.core.fleet import fleet_figures
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.core.rollout import Rollout, evaluate
from service.core.rollout_messages import ControlMessage
from service.core.settings import Settings
from service.core.signing import ControlVerifier, load_private_key, load_public_key, sign_control
from service.kafka.control import current_rollout, write_control
from service.kafka.fleet import Fleet

__all__ = ["Decider"]

logger = logging.getLogger(__name__)

DECIDER_PARTITION = 0


class Decider(Service):
    """Evaluates rollout policies on the worker that holds data partition 0."""

    def __init__(
        self,
        settings: Settings,
        registry: ModelRegistry,
        fleet: Fleet,
        metrics: Metrics,
        *,
        partitions: Callable[[], list[int]],
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._registry = registry
        self._fleet = fleet
        self._metrics = metrics
        self._partitions = partitions
        # (name, candidate sha256, when its step was written): a rollout of the same
        # candidate started again later (a looser policy) is a new one, decided again
        self._decided: set[tuple[str, str, datetime]] = set()
        self._verify = (
            ControlVerifier(load_public_key(settings.verify_key)) if settings.verify_key else None
        )
        self._key = load_private_key(Path(settings.signing_key)) if settings.signing_key else None
        self.problem = ""  # why it cannot decide, when it cannot
        self._warned = False
        if self._verify is not None and self._key is None:
            self.problem = (
                "decider: HOTSWAP_VERIFY_KEY is set but HOTSWAP_SIGNING_KEY is not, "
                "so automatic promotions are not decided (workers would refuse them unsigned)"
            )

    @Service.timer(1.0)
    async def _tick(self) -> None:
        if DECIDER_PARTITION not in self._partitions():
            return
        if self.problem:
            waiting = any(r.control.policy and r.ended is None for r in self._registry.rollouts())
            if waiting and not self._warned:
                logger.warning("%s", self.problem)
            self._warned = self._warned or waiting
            return
        for rollout in self._registry.rollouts():
            candidate = rollout.control.candidate
            if rollout.ended is not None or rollout.control.policy is None or candidate is None:
                continue
            decided = (rollout.name, candidate.sha256, rollout.control.at)
            if not rollout.active() or decided in self._decided:
                continue
            try:
                await self._consider(rollout)
            except Exception as exc:  # the next tick tries again
                logger.warning("deciding the rollout of %s failed: %s", rollout.name, exc)
                self._decided.discard(decided)

    async def _consider(self, rollout: Rollout) -> None:
        control, candidate = rollout.control, rollout.control.candidate
        assert control.policy is not None
        assert candidate is not None
        own = rollout.figures(self._registry.get(rollout.name))
        others = self._fleet.workers()
        figures = fleet_figures(
            others, rollout.name, candidate.version, mine=self._settings.worker_id, own=own
        )
        decision = evaluate(control.policy, figures)
        if decision is None:
            return
        self._decided.add((rollout.name, candidate.sha256, control.at))
        serving = self._registry.get(rollout.name)
        latest = await asyncio.to_thread(
            current_rollout,
            self._settings,
            rollout.name,
            serving.message if serving is not None else None,
            self._verify,
        )
        if latest is None or not latest.running or not rollout.same_candidate(latest.start):
            logger.info("rollout of %s already decided on the control topic", rollout.name)
            return
        step = ControlMessage(
            name=rollout.name,
            stage=decision.outcome,
            fraction=control.fraction,
            candidate=candidate,
            policy=control.policy,
            who=f"hotswap-decider@{self._settings.worker_id}",
            why=decision.why,
            figures=figures,
        )
        if self._key is not None:
            step = sign_control(step, self._key)
        await write_control(self._settings, step)
        logger.info("rollout of %s %s automatically: %s", rollout.name, step.stage, step.why)
