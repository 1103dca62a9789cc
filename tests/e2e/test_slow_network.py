"""A worker whose broker is far away: 100 ms round trips on every connection.

The broker gets a second listener, advertised at a proxy that holds every chunk
50 ms in each direction (a cross-region link), so the worker and every client of
the test reach it only through the proxy: bootstrap, metadata, produce, fetch,
group and transaction coordinator requests alike. The worker starts, a model
arrives, 1,000 records are scored and a second version swaps in while they
stream; under exactly_once every record is scored exactly once, under
at_least_once at least once, and nothing is dead-lettered.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from scripts.harness import (
    ConsumedRecord,
    WorkerProcess,
    consume,
    isolated_settings,
    publish_file,
    send_raw,
    wait_for,
)
from scripts.localkafka import LocalKafka, free_port
from service.core.settings import Settings

pytestmark = pytest.mark.integration

DELAY = 0.05  # seconds each chunk is held, each way
RECORDS = 1000
ROW = [13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]


class _DelayProxy:
    """TCP from ``listen`` to ``upstream``, every chunk delivered ``delay`` s after it
    was read, in order; the bandwidth is not limited (a long link, not a thin one)."""

    def __init__(self, listen: int, upstream: int, delay: float) -> None:
        self.listen, self.upstream, self.delay = listen, upstream, delay
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="delay-proxy")

    def __enter__(self) -> _DelayProxy:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the delay proxy did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, "127.0.0.1", self.listen)
        )
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                if not chunk:
                    break
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, chunk))
        finally:
            queue.put_nowait((0.0, b""))
            await asyncio.gather(sender, return_exceptions=True)
            writer.close()


@pytest.fixture(scope="module")
def far_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a broker reached only through the delay proxy."""
    port, slow, proxied = free_port(), free_port(), free_port()
    broker = LocalKafka(port, tmp_path_factory.mktemp("far-kafka"))
    cport = broker.controller_port
    broker.extra_config.update(
        {
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{port},FAR://127.0.0.1:{slow},"
                f"CONTROLLER://127.0.0.1:{cport}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port},FAR://127.0.0.1:{proxied}",
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,FAR:PLAINTEXT"
            ),
        }
    )
    with broker, _DelayProxy(proxied, slow, DELAY):
        yield f"127.0.0.1:{proxied}"


@pytest.fixture
def far_settings(far_kafka: str, tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        return isolated_settings(
            far_kafka, tmp_path, "far", tag=uuid.uuid4().hex[:8], log_level="INFO", **overrides
        )

    return make


def _round_trip(settings: Settings) -> float:
    """Seconds one metadata request takes through the proxy (it must be the far path)."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers[0]})
    admin.list_topics(timeout=30)  # connected
    started = time.monotonic()
    admin.list_topics(timeout=30)
    return time.monotonic() - started


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
def test_a_far_broker_scores_every_record_and_swaps(
    far_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
    guarantee: str,
) -> None:
    settings = far_settings(processing_guarantee=guarantee)
    assert _round_trip(settings) >= 2 * DELAY  # every request crosses the slow link
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    worker = workers(settings)
    worker.wait_ready()
    ids = [f"r{i}" for i in range(RECORDS)]
    records = [(i.encode(), orjson.dumps({"id": i, "features": ROW, "model": "wine"})) for i in ids]
    half = RECORDS // 2
    send_raw(settings, settings.data_topic, records[:half])
    publish_file(settings, trained["wine-forest"], "wine", "2")
    send_raw(settings, settings.data_topic, records[half:])
    wait_for(lambda: worker.model_version("wine") == "2", 60, "v2 serving")

    def every_id(rs: list[ConsumedRecord]) -> bool:
        return len({r.json()["id"] for r in rs}) >= RECORDS

    scored = consume(settings, settings.scored_topic, until=every_id)
    counts = Counter(r.json()["id"] for r in scored)
    assert set(counts) == set(ids), f"{len(set(ids) - set(counts))} records not scored"
    if guarantee == "exactly_once":
        assert max(counts.values()) == 1, counts.most_common(3)
    assert {r.json()["version"] for r in scored} <= {"1", "2"}
    letters = consume(settings, settings.dead_letter_topic, until=lambda rs: False, timeout=2)
    assert letters == []
    assert worker.stop() == 0
