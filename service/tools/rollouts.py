"""``hotswap publish --shadow/--canary``, ``promote`` and ``abort``: rollout steps.

Each step is one message on the control topic (key = model name); a promotion
first writes the candidate's model message to the archive and the model topic
(see :mod:`service.kafka.control`), so the serving version becomes the
candidate through the normal swap, durably. Workers follow the control topic
within about a second; ``who`` is ``user@host``. With ``--signing-key`` (the
key ``publish`` signs models with) the step is signed, as workers with
``HOTSWAP_VERIFY_KEY`` require; ``promote`` and ``abort`` then also judge the
rollout in progress by that key, as the workers do.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.core.messages import ModelMessage
from service.core.rollout_messages import (
    ACTIVE_STAGES,
    ControlMessage,
    RolloutPolicy,
    Stage,
    who_am_i,
)
from service.core.settings import Settings
from service.core.signing import ControlVerifier, load_private_key, sign_control
from service.kafka.clients import ensure_topics
from service.kafka.control import current_rollout, newest_model, write_control
from service.tools.errors import ToolError, kafka_errors, one_line, require_file

__all__ = ["describe_step", "end_rollout", "load_signing_key", "policy_of", "start_rollout"]

logger = logging.getLogger(__name__)


def policy_of(
    promote_after: int | None,
    min_agreement: float | None,
    max_p99_ms: float | None,
    max_error_rate: float,
    rollout: bool,
    min_labels: int | None = None,
    max_quality_loss: float | None = None,
) -> RolloutPolicy | None:
    """The automatic-promotion policy the options ask for (None: promote by hand)."""
    if (promote_after is not None or min_labels is not None) and not rollout:
        raise ToolError("--promote-after and --min-labels need --shadow or --canary FRACTION")
    if max_quality_loss is not None and min_labels is None:
        raise ToolError("--max-quality-loss needs --min-labels N")
    if min_labels is not None and promote_after is None:
        promote_after = 1  # decided by the labels alone
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
            min_labels=min_labels,
            max_quality_loss=max_quality_loss or 0.0,
        )
    except ValueError as exc:
        raise ToolError(f"bad policy: {one_line(exc, named=False)}") from None


def load_signing_key(path: Path | None) -> Ed25519PrivateKey | None:
    """``--signing-key``: the Ed25519 private key from ``hotswap keygen``, or None."""
    if path is None:
        return None
    require_file(path, "signing key")
    try:
        return load_private_key(path)
    except (ValueError, TypeError) as exc:
        raise ToolError(
            f"{path} is not an Ed25519 private key ({one_line(exc)}): "
            "make one with `hotswap keygen PATH`"
        ) from None


def _signed(
    settings: Settings, control: ControlMessage, key: Ed25519PrivateKey | None
) -> ControlMessage:
    if key is None and settings.verify_key:
        raise ToolError(
            "workers verify rollout steps (HOTSWAP_VERIFY_KEY is set): sign this one with "
            "--signing-key KEY, the key models are published with"
        )
    return sign_control(control, key) if key is not None else control


def start_rollout(
    settings: Settings,
    candidate: ModelMessage,
    *,
    canary: float | None = None,
    policy: RolloutPolicy | None = None,
    why: str = "",
    key: Ed25519PrivateKey | None = None,
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
    control = _signed(settings, control, key)
    with kafka_errors(settings):
        asyncio.run(write_control(settings, control))
    return control


def end_rollout(
    settings: Settings,
    name: str,
    stage: Stage,
    why: str = "",
    key: Ed25519PrivateKey | None = None,
) -> ControlMessage:
    """Promote or abort the rollout of ``name`` in progress (a :class:`ToolError` if none)."""
    if key is None and settings.verify_key:
        _signed(settings, ControlMessage(name=name, stage=stage), key)  # refuses, says why
    verify = ControlVerifier(key.public_key()) if key is not None else None
    with kafka_errors(settings):
        asyncio.run(ensure_topics(settings, only={settings.control_topic}))
        serving = newest_model(settings, name)
        state = current_rollout(settings, name, serving, verify)
    current = state.ended or state.start if state is not None else None
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
    control = _signed(settings, control, key)
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
