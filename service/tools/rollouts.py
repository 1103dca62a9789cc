"""``hotswap publish --shadow/--canary``, ``promote`` and ``abort``: rollout steps.

Each step is one message on the control topic (key = model name); a promotion
first writes the candidate's model message to the archive and the model topic
(see :mod:`service.kafka.control`), so the serving version becomes the
candidate through the normal swap, durably. Workers follow the control topic
within about a second; ``who`` is ``user@host``.
"""

from __future__ import annotations

import asyncio
import logging

from service.core.messages import ModelMessage
from service.core.rollout_messages import (
    ACTIVE_STAGES,
    ControlMessage,
    RolloutPolicy,
    Stage,
    who_am_i,
)
from service.core.settings import Settings
from service.kafka.clients import ensure_topics
from service.kafka.control import current_control, write_control
from service.tools.errors import ToolError, kafka_errors, one_line

__all__ = ["describe_step", "end_rollout", "policy_of", "start_rollout"]

logger = logging.getLogger(__name__)


def policy_of(
    promote_after: int | None,
    min_agreement: float | None,
    max_p99_ms: float | None,
    max_error_rate: float,
    rollout: bool,
) -> RolloutPolicy | None:
    """The automatic-promotion policy the options ask for (None: promote by hand)."""
    if promote_after is not None and not rollout:
        raise ToolError("--promote-after needs --shadow or --canary FRACTION")
    if promote_after is None:
        if min_agreement is not None or max_p99_ms is not None:
            raise ToolError("--min-agreement and --max-p99-ms need --promote-after N")
        return None
    try:
        return RolloutPolicy(
            promote_after=promote_after,
            min_agreement=min_agreement,
            max_p99_ms=max_p99_ms,
            max_error_rate=max_error_rate,
        )
    except ValueError as exc:
        raise ToolError(f"bad policy: {one_line(exc, named=False)}") from None


def start_rollout(
    settings: Settings,
    candidate: ModelMessage,
    *,
    canary: float | None = None,
    policy: RolloutPolicy | None = None,
    why: str = "",
) -> ControlMessage:
    """Shadow ``candidate`` (``canary`` None) or send it that fraction of keys."""
    if canary is not None and not 0 < canary <= 1:
        raise ToolError(f"--canary takes a fraction in (0, 1], e.g. 0.1, not {canary}")
    control = ControlMessage(
        name=candidate.name,
        stage="shadow" if canary is None else "canary",
        fraction=canary or 0.0,
        candidate=candidate,
        policy=policy,
        who=who_am_i(),
        why=why,
    )
    with kafka_errors(settings):
        asyncio.run(write_control(settings, control))
    return control


def end_rollout(settings: Settings, name: str, stage: Stage, why: str = "") -> ControlMessage:
    """Promote or abort the rollout of ``name`` in progress (a :class:`ToolError` if none)."""
    with kafka_errors(settings):
        asyncio.run(ensure_topics(settings, only={settings.control_topic}))
        current = current_control(settings, name)
    if current is None or current.candidate is None:
        raise ToolError(
            f"{name} has no rollout: start one with "
            f"`hotswap publish FILE --name {name} --version V --shadow`"
        )
    if current.stage not in ACTIVE_STAGES:
        raise ToolError(
            f"the rollout of {name} (version {current.candidate.version}) is already "
            f"{current.stage} ({current.who}: {current.why or 'no reason given'})"
        )
    control = ControlMessage(
        name=name,
        stage=stage,
        fraction=current.fraction,
        candidate=current.candidate,
        policy=current.policy,
        who=who_am_i(),
        why=why,
    )
    with kafka_errors(settings):
        asyncio.run(write_control(settings, control))
    return control


def describe_step(control: ControlMessage, settings: Settings) -> str:
    """One line for the user: what the workers do now."""
    version = control.candidate.version if control.candidate else "?"
    name = control.name
    if control.stage == "shadow":
        return (
            f"{name} version {version} is in shadow: it scores every record to "
            f"{settings.shadow_topic}; watch GET /models/{name}/rollout"
        )
    if control.stage == "canary":
        return (
            f"{name} version {version} serves {control.fraction:.1%} of keys (canary); "
            f"watch GET /models/{name}/rollout"
        )
    if control.stage == "promoted":
        return f"{name}: version {version} promoted; every worker serves it now"
    return f"{name}: rollout of version {version} aborted; every record goes to the serving version"
