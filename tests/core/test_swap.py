"""Applying model messages: every message in order per name, the same checks live and on replay."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from service.core import errors
from service.core.messages import encode_model_message
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.core.swap import Swapper
from tests.models import BuiltModel, MessageFactory


def _apply_all(swapper: Swapper, messages: Sequence[tuple[bytes | None, bytes | None]]) -> None:
    async def run() -> None:
        for key, value in messages:
            await swapper.submit(key, value)
        await swapper.settle()

    asyncio.run(run())


def test_every_message_is_applied_in_order_and_an_incompatible_one_is_refused(
    make_message: MessageFactory, four_feature_model: BuiltModel
) -> None:
    registry = ModelRegistry()
    swapper = Swapper(registry, Metrics())
    log = [
        (b"wine", encode_model_message(make_message(version="1"))),
        (b"wine", encode_model_message(make_message(four_feature_model, version="2"))),
        (b"junk", b"{not json"),
        (b"wine", encode_model_message(make_message(version="3"))),
    ]
    _apply_all(swapper, log)
    model = registry.get("wine")
    assert model is not None
    assert model.version == "3"
    history = [(e.version, e.status, e.reason) for e in registry.history("wine") or []]
    assert ("2", "rejected", "incompatible_inputs") in history, history
    assert [e.reason for e in registry.history("junk") or []] == ["invalid_message"]
    swapper.close()


def test_the_same_log_gives_the_same_result_whatever_the_timing(
    make_message: MessageFactory, four_feature_model: BuiltModel
) -> None:
    """A replay (all at once) and a live feed (one at a time) end on the same versions."""
    log = [
        (b"wine", encode_model_message(make_message(version="1"))),
        (b"wine", encode_model_message(make_message(four_feature_model, version="2"))),
        (b"iris", encode_model_message(make_message(four_feature_model, name="iris"))),
        (b"wine", None),
        (b"wine", encode_model_message(make_message(four_feature_model, version="5"))),
    ]
    replayed, live = ModelRegistry(), ModelRegistry()
    _apply_all(Swapper(replayed, Metrics()), log)
    for message in log:
        _apply_all(Swapper(live, Metrics()), [message])
    versions = {m.name: m.version for m in replayed.models()}
    assert versions == {m.name: m.version for m in live.models()}
    assert versions == {"iris": "1", "wine": "5"}  # the tombstone cleared wine: v5 is new


class _SlowRegistry(ModelRegistry):
    """Fetches of the names in ``slow`` block until released, to show other names do not wait."""

    def __init__(self, slow: set[str]) -> None:
        super().__init__()
        self.slow = slow
        self.release = threading.Event()

    def fetch(self, message: Any) -> bytes:
        if message.name in self.slow:
            self.release.wait(60)  # longer than the test waits for the fast name
        return super().fetch(message)


def test_slow_locations_of_several_names_do_not_hold_back_another(
    make_message: MessageFactory,
) -> None:
    """More slow names than load threads: a fast name is still built while they all wait."""
    slow = {f"slow{i}" for i in range(4)}
    registry = _SlowRegistry(slow)
    changed = asyncio.Event()
    swapper = Swapper(registry, Metrics(), on_change=changed.set)

    async def fast_served() -> None:
        while registry.get("fast") is None:
            changed.clear()
            await changed.wait()

    async def run() -> None:
        for name in sorted(slow):
            await swapper.submit(name.encode(), encode_model_message(make_message(name=name)))
        await swapper.submit(b"fast", encode_model_message(make_message(name="fast")))
        try:  # an upper bound: the slow names wait 60 s
            await asyncio.wait_for(fast_served(), 30)
        except TimeoutError:
            raise AssertionError("fast waited for slow") from None
        assert all(registry.get(name) is None for name in slow)
        registry.release.set()
        await swapper.settle()
        assert all(registry.get(name) is not None for name in slow)

    asyncio.run(run())
    swapper.close()


class _FlakyRegistry(ModelRegistry):
    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    def fetch(self, message: Any) -> bytes:
        self.calls += 1
        if self.calls <= self.failures:
            raise errors.FetchTransient("the file server is away")
        return super().fetch(message)


def test_a_transient_rejection_is_retried_until_it_converges(make_message: MessageFactory) -> None:
    registry = _FlakyRegistry(failures=2)
    swapper = Swapper(registry, Metrics(), retry_after=0.05, retries=3)

    async def run() -> None:
        await swapper.submit(b"wine", encode_model_message(make_message(version="1")))
        await swapper.settle()
        for _ in range(300):
            if registry.get("wine") is not None:
                return
            await asyncio.sleep(0.01)

    asyncio.run(run())
    model = registry.get("wine")
    assert model is not None, [e.reason for e in registry.history("wine") or []]
    assert registry.calls == 3
    swapper.close()


def test_a_newer_message_cancels_the_retry_of_an_older_one(make_message: MessageFactory) -> None:
    registry = _FlakyRegistry(failures=1)
    swapper = Swapper(registry, Metrics(), retry_after=0.2, retries=3)

    async def run() -> None:
        await swapper.submit(b"wine", encode_model_message(make_message(version="1")))
        await swapper.submit(b"wine", encode_model_message(make_message(version="2")))
        await swapper.settle()
        await asyncio.sleep(0.5)  # past the retry time of version 1

    asyncio.run(run())
    model = registry.get("wine")
    assert model is not None
    assert model.version == "2"
    assert registry.calls == 2, "version 1 was retried after version 2 arrived"
    swapper.close()


class _SlowRetryRegistry(ModelRegistry):
    """Version 1's first fetch fails transiently, its second waits until released."""

    def __init__(self) -> None:
        super().__init__()
        self.v1_fetches = 0
        self.release = threading.Event()
        self.v1_retrying = threading.Event()

    def fetch(self, message: Any) -> bytes:
        if message.version == "1":
            self.v1_fetches += 1
            if self.v1_fetches == 1:
                raise errors.FetchTransient("the file server is away")
            self.v1_retrying.set()
            self.release.wait(60)
        return super().fetch(message)


def test_a_retry_built_while_a_newer_version_arrived_is_not_installed(
    make_message: MessageFactory,
) -> None:
    """v1's retry is being built when v2 arrives and swaps in: v2 keeps serving."""
    registry = _SlowRetryRegistry()
    swapper = Swapper(registry, Metrics(), retry_after=0.01)

    async def run() -> None:
        await swapper.submit(b"wine", encode_model_message(make_message(version="1")))
        await swapper.settle()
        loop = asyncio.get_running_loop()
        assert await loop.run_in_executor(None, registry.v1_retrying.wait, 60)
        await swapper.submit(b"wine", encode_model_message(make_message(version="2")))
        await swapper.settle()
        served = registry.get("wine")
        assert served is not None
        assert served.version == "2"
        registry.release.set()
        await asyncio.gather(*swapper._retrying)  # the retry of v1 ends

    asyncio.run(run())
    model = registry.get("wine")
    assert model is not None
    assert model.version == "2", "the retry of version 1 replaced version 2"
    assert [(e.version, e.status) for e in registry.history("wine") or []][-1] == ("2", "accepted")
    swapper.close()


def test_junk_keys_take_no_room(make_message: MessageFactory) -> None:
    """Names are at most 200 characters; a megabyte key is refused under a short name,
    and names whose messages are all applied leave nothing behind in the swapper."""
    registry = ModelRegistry()
    swapper = Swapper(registry, Metrics())
    huge = [bytes([65 + i]) * 1_000_000 for i in range(5)]

    async def run() -> None:
        for key in huge:
            await swapper.submit(key, b"{}")
        for i in range(50):
            await swapper.submit(b"junk%d" % i, b"{not json")
        await swapper.submit(b"wine", encode_model_message(make_message()))
        await swapper.settle()

    asyncio.run(run())
    histories = {name: registry.history(name) or [] for name in ["wine", *registry._history]}
    assert max(map(len, histories)) <= 200
    long_ones = [h for name, h in histories.items() if name.endswith("...")]
    assert len(long_ones) == 5
    assert all(h[0].reason == "invalid_message" and "1000000 characters" in (h[0].detail or "")
               for h in long_ones)  # fmt: skip
    assert registry.get("wine") is not None
    assert swapper._generation == {}
    swapper.close()
