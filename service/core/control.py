"""Applying control-topic messages: begin, change, promote or abort a rollout.

The control topic's counterpart of :mod:`service.core.swap`. Each message is
parsed strictly, its signature checked when ``HOTSWAP_VERIFY_KEY`` is set, and
judged by :func:`service.core.control_rules.decide` against the rollout in
progress and the serving version; a refused one changes nothing, is counted
(``hotswap_control_rejections_total{reason}``) and, when it names a model this
worker knows, shown in that model's history.

A shadow or canary step builds its candidate exactly like a serving version
(verified, checked against the serving version's inputs, warmed up, off the
event loop); a failing candidate is rejected with its reason, in the history
and in the rollout. A new stage or fraction for the same candidate needs no
rebuild. Promote and abort end the rollout (:meth:`ModelRegistry.end_rollout`).

During the replay at start-up every message goes through the same rule, in log
order, but only the resulting state is kept; it is enacted at the end
(:meth:`RolloutControl.settle`), so a worker that restarts mid-rollout builds
the candidate once, and one whose rollout ended builds nothing: records go to
what the model topic serves. (A running worker that applies ``promoted`` live
sends every record to the built candidate until a swap of that name lands, at
most :data:`~service.core.rollout.PROMOTION_GRACE` seconds: the promotion's
model-topic message is normally on its way, and this keeps canary keys from
falling back to the old version meanwhile.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from service.core import errors
from service.core.control_rules import RolloutState, decide
from service.core.messages import ModelMessage
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.rollout import Rollout
from service.core.rollout_messages import ACTIVE_STAGES, ControlMessage, parse_control_message

__all__ = ["RolloutControl"]

logger = logging.getLogger(__name__)

Build = Callable[[ModelMessage], Awaitable[ServingModel]]
Verify = Callable[[ControlMessage], None]
Resubmit = Callable[[bytes | None, bytes], Coroutine[Any, Any, None]]
MAX_WAITING = 100  # names whose newest step waits for their first version to serve
MAX_WAITING_BYTES = 64 * 1024**2  # and their steps' bytes (a step may carry its model inline)


class RolloutControl:
    """Turns control messages into rollouts in the registry; lives on the event loop."""

    def __init__(
        self, registry: ModelRegistry, metrics: Metrics, build: Build, verify: Verify | None = None
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._build = build
        self._verify = verify
        self._replayed: dict[str, RolloutState] = {}
        # A step refused as model_not_serving may have only overtaken its model's first
        # version (two topics, two consumers): the newest such step per name is judged again,
        # through ``resubmit`` (the control agent, in order), when that model starts serving.
        self._waiting: dict[str, tuple[bytes | None, bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.resubmit: Resubmit | None = None
        # A rollout whose candidate was refused as incompatible, and the version it was not
        # compatible with: built again when another version serves (see model_changed).
        self._judged: dict[str, tuple[Rollout, str]] = {}

    async def submit(self, key: bytes | None, value: bytes | None, *, replay: bool) -> None:
        """Apply one message now, or (replay) fold it into the state enacted at settle."""
        if not replay:
            await self.apply(key, value)
            return
        name = _name(key)
        self._waiting.pop(name, None)  # a newer step supersedes a waiting one
        if value is None:
            self._replayed.pop(name, None)
            return
        state = self._replayed.get(name)
        new = self._judge(name, key, value, state)
        if new is not None:
            self._replayed[name] = new

    async def settle(self) -> None:
        """End of the replay: enact the state each name was left in."""
        replayed, self._replayed = self._replayed, {}
        for name, state in replayed.items():
            await self._enact(name, state, None)

    async def apply(self, key: bytes | None, value: bytes | None) -> None:
        name = _name(key)
        self._waiting.pop(name, None)  # a newer step supersedes a waiting one
        current = self._registry.rollout(name)
        if value is None:  # a tombstone: forget the rollout, serve as before
            if current is not None and current.ended is None:
                forget = ControlMessage(
                    name=current.name, stage="aborted", why="control-topic tombstone"
                )
                self._registry.end_rollout(name, forget)
            return
        state = RolloutState(current.control, current.ended) if current is not None else None
        new = self._judge(name, key, value, state)
        if new is not None:
            await self._enact(name, new, current)

    def _judge(
        self, name: str, key: bytes | None, value: bytes, state: RolloutState | None
    ) -> RolloutState | None:
        """The state after this message, or None (refused, counted, shown)."""
        control: ControlMessage | None = None
        try:
            control = parse_control_message(key, value)
            if self._verify is not None:
                self._verify(control)
            return decide(state, control, self._serving(control.name))
        except errors.HotswapError as exc:
            self._refuse(name, control, exc)
            if isinstance(exc, errors.ModelNotServing):
                self._waiting[name] = (key, value)
                while len(self._waiting) > MAX_WAITING or (  # a flood of ghosts: the oldest go
                    sum(len(v) for _, v in self._waiting.values()) > MAX_WAITING_BYTES
                ):
                    del self._waiting[next(iter(self._waiting))]
            return None

    def model_changed(self) -> None:
        """A model swapped in or out: judge again the steps that waited for it to serve,
        and build again a candidate refused as incompatible with a version that no longer
        serves (a step read before the swap it followed on the model topic landed: a
        restarted worker, which replays models first, builds it against the new one)."""
        for name in [n for n in self._waiting if self._registry.get(n) is not None]:
            if self.resubmit is not None:
                key, value = self._waiting.pop(name)
                self._spawn(self.resubmit(key, value))
        for name, (rollout, version) in list(self._judged.items()):
            serving = self._registry.get(name)
            if self._registry.rollout(name) is not rollout:  # superseded by a newer step
                del self._judged[name]
            elif serving is not None and serving.version != version:
                del self._judged[name]
                if rollout.ended is None and rollout.candidate is None:
                    self._spawn(self._rebuild(rollout))

    async def _rebuild(self, rollout: Rollout) -> None:
        def current() -> bool:  # not superseded, nor ended, by a newer step meanwhile
            return self._registry.rollout(rollout.name) is rollout and rollout.ended is None

        if current():
            await self._begin(rollout.control, None, current)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _serving(self, name: str) -> ModelMessage | None:
        model = self._registry.get(name)
        return model.message if model is not None else None

    def _refuse(self, name: str, control: ControlMessage | None, exc: errors.HotswapError) -> None:
        self._metrics.control_rejections.labels(exc.reason).inc()
        if not self._registry.known(name):  # a ghost name: counted, no state
            logger.debug("control message for unknown %r refused (%s)", name[:200], exc.reason)
            return
        stage = control.stage if control is not None else "?"
        version = control.candidate.version if control and control.candidate else None
        detail = f"control message ({stage}) refused: {exc.detail}"
        self._registry.reject(name, version, type(exc)(detail))
        logger.warning("model %s: %s (%s)", name, detail, exc.reason)

    async def _enact(self, name: str, state: RolloutState, current: Rollout | None) -> None:
        """Make the registry show ``state`` (``current``: the rollout it holds now, live)."""
        control = state.ended or state.start
        self._metrics.rollout_steps.labels(self._metrics.model_label(name), control.stage).inc()
        if state.running:
            await self._begin(state.start, current)
            return
        assert state.ended is not None
        if current is None or current.control is not state.start:  # replayed, or a record only
            self._registry.begin_rollout(Rollout(state.start))  # routes nothing: ended
        self._registry.end_rollout(name, state.ended)
        who, why = state.ended.who, state.ended.why
        logger.info("model %s: rollout %s by %s (%s)", name, state.stage, who, why)

    async def _begin(
        self,
        control: ControlMessage,
        current: Rollout | None,
        still: Callable[[], bool] = lambda: True,
    ) -> None:
        """Start ``control``'s rollout; ``still``: whether it is still wanted once built."""
        running = current is not None and current.active() and current.ended is None
        if running and current is not None and current.same_candidate(control):
            current.control = control  # a new stage or fraction: no rebuild
            self._registry.begin_rollout(current)
            logger.info("model %s: rollout now %s", control.name, _stage(control))
            return
        rollout = Rollout(control)
        candidate = control.candidate
        assert candidate is not None
        assert control.stage in ACTIVE_STAGES
        if _same(candidate, self._serving(control.name)):  # nothing to compare: not built
            rollout.rejected = f"candidate_is_serving: version {candidate.version} serves already"
            self._registry.begin_rollout(rollout)
            return
        if not await self._build_into(rollout, candidate, still):
            return
        self._registry.begin_rollout(rollout)
        logger.info(
            "model %s: candidate %s in %s", control.name, candidate.version, _stage(control)
        )

    async def _build_into(
        self, rollout: Rollout, candidate: ModelMessage, still: Callable[[], bool]
    ) -> bool:
        try:
            built = await self._build(candidate)
        except errors.ModelRejected as exc:
            if not still():
                return False
            self._registry.reject_candidate(rollout, exc)
            serving = self._registry.get(rollout.name)
            if isinstance(exc, errors.IncompatibleInputs) and serving is not None:
                self._judged[rollout.name] = (rollout, serving.version)
            self._metrics.rejected(rollout.name, exc.reason)
            logger.warning(
                "model %s: candidate %s rejected (%s: %s)",
                rollout.name,
                candidate.version,
                exc.reason,
                exc.detail,
            )
            return False
        if not still():  # a newer step came while it was built: it decides
            built.runtime.close()
            return False
        rollout.candidate = built
        self._metrics.candidate(rollout.name, candidate.version)
        return True


def _name(key: bytes | None) -> str:
    return key.decode("utf-8", "replace")[:200] if key else "?"


def _same(a: ModelMessage, b: ModelMessage | None) -> bool:
    return b is not None and (a.version, a.sha256) == (b.version, b.sha256)


def _stage(control: ControlMessage) -> str:
    return f"canary {control.fraction:g}" if control.stage == "canary" else control.stage
