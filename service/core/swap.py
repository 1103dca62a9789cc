"""Applying one model-topic message: validate, build off the loop, swap or reject.

The same code runs for every message, whether it is replayed at start-up or
arrives live, and in log order; so every worker that reads the same model log
ends on the same version of each model whatever its start time. A message
that fails is rejected with its reason and never stops the ones after it.

Messages for one name are applied one after the other; messages for other
names do not wait for them (a slow location holds back only its own model,
and only up to ``HOTSWAP_FETCH_TIMEOUT``: eight versions are fetched and loaded
at once, fetches on threads of their own apart from the two that load).
:meth:`Swapper.settle` waits for everything submitted so far: the model feed
calls it at the end of replay.

A version refused for a *transient* reason (its location could not be fetched
after the bounded retries of :mod:`service.core.artifacts`) is tried again
later, in the background, unless a newer message for that name has arrived
meanwhile: one worker's bad luck with a file server converges instead of
splitting the fleet. Permanent refusals (bad checksum, bad model, ...) are final.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import orjson

from service.core import errors
from service.core.messages import ModelMessage, parse_model_message
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel

__all__ = ["Swapper"]

logger = logging.getLogger(__name__)

_MAX_PENDING = 64  # messages accepted ahead of their build: back-pressure on the feed
_BUILDING = 8  # versions fetched or loaded at once (see Swapper.__init__)
MAX_NAME = 200  # characters of a model name (ModelMessage.name says the same)


def _guess_version(value: bytes) -> str | None:
    """Best-effort version of a message that failed validation, for its history entry."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    version = doc.get("version") if isinstance(doc, dict) else None
    return str(version)[:200] if version is not None else None


class Swapper:
    """Turns model messages into registry changes; lives on the event loop."""

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: Metrics,
        *,
        retry_after: float = 30.0,
        retries: int = 5,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._registry = registry
        self._metrics = metrics
        self._retry_after = retry_after
        self._retries = retries
        self._on_change = on_change
        # Fetches wait on the network (up to HOTSWAP_FETCH_TIMEOUT each): threads of their
        # own, so slow locations of some names do not hold back the others; loads burn CPU:
        # two. At most _BUILDING versions are between fetch start and load end at once: each
        # holds its artifact (up to HOTSWAP_MAX_MODEL_BYTES), and a replay may queue many.
        self._fetching = ThreadPoolExecutor(_BUILDING, thread_name_prefix="model-fetch")
        self._building = asyncio.Semaphore(_BUILDING)
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="model-build")
        # Messages seen per name while any is pending: a retry must still be the newest.
        self._generation: dict[str, int] = {}
        self._retries_of: dict[str, int] = {}  # retries scheduled per name
        self._retrying: set[asyncio.Task[None]] = set()
        self._chains: dict[str, asyncio.Task[None]] = {}
        self._pending: set[asyncio.Task[None]] = set()

    async def submit(self, key: bytes | None, value: bytes | None) -> None:
        """Queue one message behind the earlier ones of its name; returns without waiting."""
        while len(self._pending) >= _MAX_PENDING:
            await asyncio.wait(set(self._pending), return_when=asyncio.FIRST_COMPLETED)
        name = key.decode("utf-8", "replace") if key else "?"
        if len(name) > MAX_NAME:  # junk keys take no room: refused under a short name
            detail = f"model name is {len(name)} characters; at most {MAX_NAME}"
            self._rejected(f"{name[:40]}...", None, errors.InvalidModelMessage(detail))
            return
        generation = self._generation.get(name, 0) + 1
        self._generation[name] = generation
        previous = self._chains.get(name)
        task = asyncio.get_running_loop().create_task(
            self._after(previous, name, key, value, generation)
        )
        self._chains[name] = task
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def settle(self) -> None:
        """Wait until every message submitted so far is applied (swapped or rejected)."""
        while self._pending:
            await asyncio.wait(set(self._pending))

    async def _after(
        self,
        previous: asyncio.Task[None] | None,
        name: str,
        key: bytes | None,
        value: bytes | None,
        generation: int,
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        try:
            await self.apply(name, key, value, generation)
        finally:
            if self._chains.get(name) is asyncio.current_task():
                del self._chains[name]
                self._forget_if_idle(name)

    def _forget_if_idle(self, name: str) -> None:
        """Nothing pending for ``name`` (no message, no retry): nothing can be stale, so its
        count of messages goes (junk names cost nothing once applied)."""
        if name not in self._chains and name not in self._retries_of:
            self._generation.pop(name, None)

    async def apply(
        self, name: str, key: bytes | None, value: bytes | None, generation: int
    ) -> None:
        """Apply one message of the model topic (``value`` None is a tombstone)."""
        if value is None:
            self._remove(name)
            return
        try:  # off the loop too: an inline artifact of 16 MiB took ~12 ms to validate
            loop = asyncio.get_running_loop()
            message = await loop.run_in_executor(self._executor, parse_model_message, key, value)
        except errors.ModelRejected as exc:
            self._rejected(name, _guess_version(value), exc)
            return
        await self._try(message, generation, attempt=0)

    async def _try(self, message: ModelMessage, generation: int, attempt: int) -> None:
        if attempt and self._generation.get(message.name) != generation:
            return  # a retry, but a newer message for this name came meanwhile: it decides
        try:
            model = await self.build(message)
            if attempt and self._generation.get(message.name) != generation:
                model.runtime.close()  # a newer message came while this retry was built
                return
            self._install(model)
        except errors.ModelRejected as exc:
            self._rejected(message.name, message.version, exc, message.sha256)
            if exc.transient and exc.reason != "fetch_cancelled" and attempt < self._retries:
                self._schedule(message, generation, attempt + 1)

    def _schedule(self, message: ModelMessage, generation: int, attempt: int) -> None:
        delay = self._retry_after * (2 ** (attempt - 1))
        logger.info(
            "model %s version %s: fetch failed transiently; retry %d/%d in %.0fs",
            message.name,
            message.version,
            attempt,
            self._retries,
            delay,
        )

        name = message.name

        async def later() -> None:
            try:
                await asyncio.sleep(delay)
                await self._try(message, generation, attempt)
            finally:
                self._retries_of[name] -= 1
                if not self._retries_of[name]:
                    del self._retries_of[name]
                    self._forget_if_idle(name)

        self._retries_of[name] = self._retries_of.get(name, 0) + 1
        task = asyncio.get_running_loop().create_task(later())
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    async def build(self, message: ModelMessage) -> ServingModel:
        """Build ``message`` off the event loop; any failure is a :class:`ModelRejected`."""
        loop = asyncio.get_running_loop()
        started = datetime.now(UTC)
        try:
            async with self._building:
                fetch = self._registry.fetch
                artifact = await loop.run_in_executor(self._fetching, fetch, message)
                return await loop.run_in_executor(
                    self._executor, self._registry.load, message, artifact, started
                )
        except errors.ModelRejected:
            raise
        except Exception as exc:  # an unexpected failure is still a rejection, not a crash
            logger.exception("unexpected error loading %s %s", message.name, message.version)
            raise errors.InvalidModel(f"{type(exc).__name__}: {exc}") from None

    def _install(self, model: ServingModel) -> None:
        old = self._registry.install(model)
        self._metrics.swapped(model.name, model.version, old.version if old else None)
        self._metrics.model_load_seconds.labels(self._metrics.model_label(model.name)).observe(
            model.load_ms / 1000
        )
        logger.info(
            "model %s: now serving version %s (was %s), built in %.1f ms",
            model.name,
            model.version,
            old.version if old else "none",
            model.load_ms,
        )
        self._changed()

    def _remove(self, name: str) -> None:
        old = self._registry.remove(name)
        if old is not None:
            self._metrics.removed(name, old.version)
            logger.info("model %s unloaded by a tombstone (was version %s)", name, old.version)
        self._changed()

    def _rejected(
        self,
        name: str,
        version: str | None,
        exc: errors.ModelRejected,
        sha256: str | None = None,
    ) -> None:
        self._registry.reject(name, version, exc, sha256)
        self._metrics.rejected(name, exc.reason)  # names that never served share one label
        current = self._registry.get(name)
        logger.warning(
            "model %s: version %s rejected (%s: %s); still serving %s",
            name,
            version or "?",
            exc.reason,
            exc.detail,
            current.version if current else "nothing",
        )
        self._changed()

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def close(self) -> None:
        self._registry.cancel_builds()  # a fetch in progress ends now (fetch_cancelled)
        for task in [*self._retrying, *self._pending]:
            task.cancel()
        self._fetching.shutdown(wait=False, cancel_futures=True)
        self._executor.shutdown(wait=False, cancel_futures=True)
