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
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service.core import errors
from service.core.artifacts import FetchPolicy, fetch_artifact
from service.core.messages import ModelMessage
from service.core.runtime import ModelRuntime, load_runtime
from service.core.settings import Settings
from service.core.stats import LatencyStats

__all__ = ["BuildLimits", "HistoryEntry", "ModelRegistry", "ServingModel"]

logger = logging.getLogger(__name__)

Status = Literal["accepted", "rejected", "retired", "removed"]
_HISTORY_LIMIT = 100


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
    """One version's fate: accepted, rejected (with why), retired by a newer one, removed."""

    version: str
    status: Status
    at: datetime
    sha256: str | None = None
    reason: str | None = None
    detail: str | None = None


@dataclass(slots=True)
class BuildLimits:
    max_bytes: int = 200_000_000
    fetch_timeout: float = 30.0
    warmup_rows: int = 64
    model_roots: tuple[Path, ...] = ()  # file:// locations only under these; none: refused
    fetch_attempts: int = 4
    fetch_backoff: float = 0.5

    @classmethod
    def from_settings(cls, settings: Settings) -> BuildLimits:
        return cls(
            max_bytes=settings.max_model_bytes,
            fetch_timeout=settings.fetch_timeout,
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
        self._limits = limits or BuildLimits()
        self._verifier = verifier
        self._threads = threads
        self._current: dict[str, ServingModel] = {}
        self._history: dict[str, deque[HistoryEntry]] = {}
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

    # --- building (thread-safe: reads only) -----------------------------------

    def build(self, message: ModelMessage) -> ServingModel:
        """Fetch, verify, load, check and warm ``message``; raise ModelRejected on any defect."""
        started = _now()
        if self._verifier is not None:
            self._verifier(message)
        artifact = fetch_artifact(message, self._limits.fetch_policy(), cancel=self._cancel)
        runtime = load_runtime(
            message.format, artifact, metadata=message.metadata, threads=self._threads
        )
        try:
            self._check_compatible(message, runtime, self._current.get(message.name))
            self._warm_up(message, runtime)
        except BaseException:
            runtime.close()
            raise
        load_ms = (_now() - started).total_seconds() * 1000
        return ServingModel(message=message, runtime=runtime, load_ms=load_ms)

    @staticmethod
    def _check_compatible(
        message: ModelMessage, runtime: ModelRuntime, current: ServingModel | None
    ) -> None:
        """A new version must accept the records the old one accepted, unless told otherwise."""
        if current is None or message.metadata.get("schema_change") is True:
            return
        old, new = current.runtime.signature, runtime.signature
        if old.width != new.width:
            raise errors.IncompatibleInputs(
                f"version {message.version} takes {new.width} features but records for "
                f"{message.name!r} carry {old.width} (set metadata.schema_change=true to allow)"
            )
        if old.feature_names and new.feature_names and old.feature_names != new.feature_names:
            raise errors.IncompatibleInputs(
                f"feature names of {message.version} differ from those of {current.version}"
            )

    def _warm_up(self, message: ModelMessage, runtime: ModelRuntime) -> None:
        """Run the model once on its samples (checking expected labels) or on zeros."""
        samples = message.metadata.get("samples")
        width = runtime.signature.width
        try:
            if isinstance(samples, dict) and isinstance(samples.get("inputs"), list):
                batch = np.asarray(samples["inputs"], dtype=np.float32).reshape(-1, width)
            else:
                batch = np.zeros((self._limits.warmup_rows, width), dtype=np.float32)
            outputs = runtime.predict(batch)
        except errors.ModelRejected:
            raise
        except Exception as exc:
            raise errors.WarmupFailed(f"warm-up prediction failed: {exc}") from None
        for name, value in outputs.items():
            if len(value) != len(batch):
                raise errors.WarmupFailed(f"output {name!r} has {len(value)} rows for {len(batch)}")
        expected = samples.get("labels") if isinstance(samples, dict) else None
        label = runtime.signature.label_output
        if expected is not None and label is not None:
            got = outputs[label].reshape(-1).tolist()
            if [str(x) for x in got] != [str(x) for x in expected]:
                raise errors.WarmupFailed(
                    f"sample predictions {got[:5]} differ from published labels {expected[:5]}"
                )

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
        return old

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
        return self._history.setdefault(name, deque(maxlen=_HISTORY_LIMIT))

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
