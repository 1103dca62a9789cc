"""Which control messages are applied: one rule, the same live, on replay and in the tools.

A rollout step is applied only when it is consistent with what the model
topic made this worker serve and with the rollout in progress; otherwise it is
refused with a reason and changes nothing. The rule looks only at the step,
the state the earlier *applied* steps left, and the serving version, so a
worker that applies the control topic live and one that replays it in log
order end in the same state (given the same serving version, which the model
topic decides for both), and route every record the same way.

- Every step names a model that serves here (``model_not_serving`` otherwise:
  ghost names create no state).
- ``shadow``/``canary``: applied; it replaces any earlier rollout of the name.
  (A candidate that is the serving version is not built: nothing to compare.
  Not refused, since a restarted worker replays it after the model topic
  already made it serve, and must reach the same state.)
- ``promoted``: the candidate of the rollout in progress (same version and
  sha256); or, with no rollout in progress, the version that already serves
  (the record of a promotion whose earlier steps compaction removed). Anything
  else, a bare ``{"name", "stage": "promoted"}`` included: ``no_rollout``.
- ``aborted``: the candidate of the rollout in progress; of the serving version
  (after its promotion): ``candidate_is_serving``; else ``no_rollout``.
- A tombstone forgets the rollout (records go to the serving version).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from service.core import errors
from service.core.messages import ModelMessage
from service.core.rollout_messages import ACTIVE_STAGES, ControlMessage, same_model

__all__ = ["RolloutState", "decide"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RolloutState:
    """What the applied steps say for a name: the step that began it, and the one that ended it."""

    start: ControlMessage
    ended: ControlMessage | None = None

    @property
    def running(self) -> bool:
        return self.ended is None

    @property
    def stage(self) -> str:
        return self.ended.stage if self.ended is not None else self.start.stage


def decide(
    state: RolloutState | None, control: ControlMessage, serving: ModelMessage | None
) -> RolloutState:
    """The state after ``control``, or :class:`~service.core.errors.ControlRejected` (why not)."""
    name, stage, candidate = control.name, control.stage, control.candidate
    if serving is None:
        raise errors.ModelNotServing(f"{stage} for {name!r}, which serves no version here")
    if stage in ACTIVE_STAGES:
        return RolloutState(control)
    if candidate is None:
        raise errors.NoRollout(f"{stage} names no candidate")
    running = state is not None and state.running
    if running and state is not None and same_model(state.start.candidate, candidate):
        return RolloutState(state.start, control)
    if stage == "promoted" and not running and same_model(candidate, serving):
        return RolloutState(control, control)  # the promotion the model topic already shows
    if stage == "aborted" and same_model(candidate, serving):
        raise errors.CandidateIsServing(f"aborted version {candidate.version}, which serves")
    now = (
        f"the rollout in progress is of {state.start.candidate.version}"
        if running and state is not None and state.start.candidate is not None
        else "no rollout is in progress"
    )
    raise errors.NoRollout(f"{stage} of version {candidate.version}, but {now}")
