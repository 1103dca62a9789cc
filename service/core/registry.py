"""The models that serve now, per name, and the history of every version seen.

Swaps are make-before-break: :meth:`ModelRegistry.build` fetches, checks,
loads and warms a candidate (slow, in a worker thread, touching nothing that
serves), then :meth:`ModelRegistry.install` replaces one dict entry on the
event loop, between batches, and releases the old runtime. Any failure in
``build`` leaves the serving model untouched. Nothing here knows Kafka or HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from service.core import errors
from service.core.artifacts import FetchPolicy, fetch_artifact
from service.core.checks import check_compatible, check_renders, warm_up
from service.core.messages import ModelMessage
from service.core.runtime import ModelRuntime, load_runtime
from service.core.settings import Settings
from service.core.stats import LatencyStats

if TYPE_CHECKING:
    from service.core.rollout import Rollout
    from service.core.rollout_messages import ControlMessage

__all__ = ["BuildLimits", "HistoryEntry", "ModelRegistry", "ServingModel"]

logger = logging.getLogger(__name__)

Status = Literal["accepted", "rejected", "retired", "removed", "candidate", "promoted", "aborted"]
_HISTORY_LIMIT = 100
_NAMES_LIMIT = 2000  # names kept in the history; the oldest that never served go first


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class ServingModel:
    """A loaded, checked and warmed model version."""

    message: ModelMessage
    runtime: ModelRuntime
    since: datetime = field(default_factory=_now)
    stats: LatencyStats = field(default_factory=LatencyStats)
    load_ms: float = 0.0

    @property
    def name(self) -> str:
        return self.message.name

    @property
    def version(self) -> str:
        return self.message.version


@dataclass(slots=True, frozen=True)
class HistoryEntry:
    """One version's fate: accepted, rejected (with why), retired by a newer one, removed;
    or a rollout step: candidate (shadow or canary), promoted, aborted (with who and why)."""

    version: str
    status: Status
    at: datetime
    sha256: str | None = None
    reason: str | None = None
    detail: str | None = None
    who: str | None = None
    why: str | None = None


@dataclass(slots=True)
class BuildLimits:
    max_bytes: int = 200_000_000
    fetch_timeout: float = 30.0
    warmup_rows: int = 64
    warmup_seconds: float = 30.0
    run_seconds: float | None = None  # one live run's deadline; None: unbounded
    model_roots: tuple[Path, ...] = ()  # file:// locations only under these; none: refused
    fetch_attempts: int = 4
    fetch_backoff: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildLimits:
        return cls(
            max_bytes=settings.max_model_bytes,
            fetch_timeout=settings.fetch_timeout,
            warmup_seconds=settings.warmup_timeout,
            run_seconds=settings.score_timeout,
            model_roots=settings.model_root_paths,
            fetch_attempts=settings.fetch_attempts,
            fetch_backoff=settings.fetch_backoff,
        )

    def fetch_policy(self) -> FetchPolicy:
        return FetchPolicy(
            max_bytes=self.max_bytes,
            timeout=self.fetch_timeout,
            roots=self.model_roots,
            attempts=self.fetch_attempts,
            backoff=self.fetch_backoff,
        )


class ModelRegistry:
    """Current model per name plus bounded history; mutated only on the event loop."""

    def __init__(
        self,
        *,
        limits: BuildLimits | None = None,
        threads: int = 1,
        verifier: Callable[[ModelMessage], None] | None = None,
    ) -> None:
        self._limits = limits = limits or BuildLimits()
        self._verifier = verifier
        self._runtime: dict[str, Any] = {"threads": threads, "run_seconds": limits.run_seconds}
        self._current: dict[str, ServingModel] = {}
        self._history: dict[str, deque[HistoryEntry]] = {}
        self._rollouts: dict[str, Rollout] = {}  # the candidate slot of each name
        self._cancel = threading.Event()

    # --- reading -------------------------------------------------------------

    def get(self, name: str) -> ServingModel | None:
        return self._current.get(name)

    def models(self) -> list[ServingModel]:
        return [self._current[n] for n in sorted(self._current)]

    def history(self, name: str) -> list[HistoryEntry] | None:
        entries = self._history.get(name)
        return list(entries) if entries is not None else None

    def known(self, name: str) -> bool:
        return name in self._history

    def rollout(self, name: str) -> Rollout | None:
        return self._rollouts.get(name)

    def rollouts(self) -> list[Rollout]:
        return [self._rollouts[n] for n in sorted(self._rollouts)]

    # --- building (thread-safe: reads only) -----------------------------------

    def build(self, message: ModelMessage) -> ServingModel:
        """Fetch, verify, load, check and warm ``message``; raise ModelRejected on any defect."""
        return self.load(message, self.fetch(message), _now())

    def fetch(self, message: ModelMessage) -> bytes:
        """Verify ``message`` and fetch its artifact: waits on the network, little CPU."""
        if self._verifier is not None:
            self._verifier(message)
        return fetch_artifact(message, self._limits.fetch_policy(), cancel=self._cancel)

    def load(self, message: ModelMessage, artifact: bytes, started: datetime) -> ServingModel:
        """Load, check and warm a fetched artifact (CPU); ``started`` counts into its load time."""
        runtime = load_runtime(message.format, artifact, metadata=message.metadata, **self._runtime)
        try:
            current = self._current.get(message.name)
            old = current.runtime.signature if current is not None else None
            check_compatible(message, runtime.signature, old, current.version if current else "?")
            outputs = warm_up(
                message, runtime, self._limits.warmup_rows, self._limits.warmup_seconds
            )
            load_ms = (_now() - started).total_seconds() * 1000
            model = ServingModel(message=message, runtime=runtime, load_ms=load_ms)
            check_renders(model, outputs)
        except BaseException:
            runtime.close()
            raise
        return model

    def cancel_builds(self) -> None:
        """Make fetches in progress (and later ones) fail fast with ``fetch_cancelled``: on stop."""
        self._cancel.set()

    # --- mutating (event loop only) --------------------------------------------

    def install(self, model: ServingModel) -> ServingModel | None:
        """Make ``model`` current with one assignment; release and return the old one."""
        old = self._current.get(model.name)
        self._current[model.name] = model
        entries = self._entries(model.name)
        if old is not None:
            entries.append(HistoryEntry(old.version, "retired", _now(), old.message.sha256))
        entries.append(HistoryEntry(model.version, "accepted", model.since, model.message.sha256))
        if old is not None:
            old.runtime.close()
        rollout = self._rollouts.get(model.name)
        if rollout is not None and rollout.stage == "promoted":
            self._release(rollout)  # its swap landed (or a rollback came first): serve the topic's
        elif rollout is not None:
            self._release_if_serving(rollout)  # a candidate published meanwhile: one route
        return old

    # --- the candidate slot (event loop only) -------------------------------------

    def begin_rollout(self, rollout: Rollout) -> None:
        """Hold ``rollout`` (its candidate built, or rejected) in place of any earlier one."""
        old = self._rollouts.get(rollout.name)
        self._rollouts[rollout.name] = rollout
        if old is not None and old.candidate is not rollout.candidate:
            self._release(old)
        c = rollout.control
        if rollout.candidate is not None:
            stage = f"canary {c.fraction:g}" if c.stage == "canary" else c.stage
            self._note(c.name, c.candidate, "candidate", detail=stage, who=c.who, why=c.why)

    def end_rollout(self, name: str, control: ControlMessage) -> None:
        """Promote or abort the rollout of ``name``; the history says who and why.

        An aborted candidate is released now; a promoted one takes every record
        until the model topic's swap to its version lands (:meth:`install`).
        """
        rollout = self._rollouts.get(name)
        msg = control.candidate
        if rollout is not None:
            rollout.ended, rollout.ended_at = control, time.monotonic()
            msg = msg or rollout.control.candidate
            if control.stage == "aborted":
                self._release(rollout)
            else:
                self._release_if_serving(rollout)
        self._note(name, msg, control.stage, who=control.who, why=control.why)  # type: ignore[arg-type]

    def reject_candidate(self, rollout: Rollout, error: errors.HotswapError) -> None:
        """A candidate that failed to build: the rollout shows why, the history too."""
        rollout.rejected = f"{error.reason}: {error.detail}"
        self.begin_rollout(rollout)
        detail = f"candidate ({rollout.stage}): {error.detail}"
        self._note(rollout.name, rollout.control.candidate, "rejected", error.reason, detail)

    def _note(
        self,
        name: str,
        msg: ModelMessage | None,
        status: Status,
        reason: str | None = None,
        detail: str | None = None,
        who: str = "",
        why: str = "",
    ) -> None:
        version, sha = (msg.version, msg.sha256) if msg else ("?", None)
        entry = HistoryEntry(version, status, _now(), sha, reason, detail, who or None, why or None)
        self._entries(name).append(entry)

    def _release_if_serving(self, rollout: Rollout) -> None:
        current, msg = self._current.get(rollout.name), rollout.control.candidate
        serving = (current.version, current.message.sha256) if current is not None else None
        if msg is not None and serving == (msg.version, msg.sha256):
            self._release(rollout)

    @staticmethod
    def _release(rollout: Rollout) -> None:
        if rollout.candidate is not None:
            candidate, rollout.candidate = rollout.candidate, None
            candidate.runtime.close()

    def reject(
        self, name: str, version: str | None, error: errors.HotswapError, sha256: str | None = None
    ) -> None:
        self._entries(name).append(
            HistoryEntry(version or "?", "rejected", _now(), sha256, error.reason, error.detail)
        )

    def remove(self, name: str) -> ServingModel | None:
        """Unload ``name`` (a tombstone on the model topic); records for it dead-letter."""
        old = self._current.pop(name, None)
        if old is not None:
            self._entries(name).append(
                HistoryEntry(old.version, "removed", _now(), old.message.sha256)
            )
            old.runtime.close()
        return old

    def _entries(self, name: str) -> deque[HistoryEntry]:
        entries = self._history.get(name)
        if entries is None:
            if len(self._history) >= _NAMES_LIMIT:
                self._forget_one()
            entries = self._history[name] = deque(maxlen=_HISTORY_LIMIT)
        return entries

    def _forget_one(self) -> None:
        """Drop the oldest history of a name that serves nothing: junk names stay bounded."""
        for name in self._history:
            if name not in self._current:
                del self._history[name]
                return

    def describe(self, model: ServingModel) -> dict[str, Any]:
        """The public view of a serving model (``GET /models/{name}``)."""
        msg = model.message
        return {
            "name": msg.name,
            "version": msg.version,
            "format": msg.format,
            "description": msg.description,
            "sha256": msg.sha256,
            "since": model.since,
            "records_scored": model.stats.records,
            "batches_scored": model.stats.calls,
            "latency_ms": model.stats.summary(),
            "load_ms": round(model.load_ms, 3),
            "signature": model.runtime.signature.as_dict(),
            "metadata": {k: v for k, v in msg.metadata.items() if k != "samples"},
        }
