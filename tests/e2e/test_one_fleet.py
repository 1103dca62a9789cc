"""One model log, one truth: workers started at different times serve the same versions.

Class 4 of the promises. The same checks apply live and on replay (an
incompatible version refused by an early worker is refused by a late one
too), a broken message in the log never stops the replay of the messages
after it, and a by-reference version whose server fails for a while is
retried until it answers, so no worker's bad luck splits the fleet.
"""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scripts.harness import WorkerProcess, publish_file, send_raw, wait_for
from scripts.localkafka import free_port
from service.core.settings import Settings
from service.tools.publish import publish_message
from tests.models import BuiltModel, MessageFactory

pytestmark = pytest.mark.integration


def _history(worker: WorkerProcess, name: str) -> list[tuple[str, str, str | None]]:
    entries = worker.get(f"/models/{name}/history").json()
    return [(e["version"], e["status"], e["reason"]) for e in entries]


def _settled(worker: WorkerProcess, name: str, version: str) -> bool:
    return worker.model_version(name) == version


class _FlakyFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a directory, but answers 503 until ``healthy_after`` (a monotonic time)."""

    healthy_after = 0.0
    refused = 0

    def do_GET(self) -> None:
        if time.monotonic() < type(self).healthy_after:
            type(self).refused += 1
            self.send_error(503, "warming up")
            return
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_server(tmp_path: Path) -> Iterator[tuple[str, Path, type[_FlakyFiles]]]:
    root = tmp_path / "served"
    root.mkdir()

    class Handler(_FlakyFiles):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", root, Handler
    finally:
        server.shutdown()


def test_late_and_early_workers_agree_on_every_model(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
    make_message: MessageFactory,
    four_feature_model: BuiltModel,
    flaky_server: tuple[str, Path, type[_FlakyFiles]],
) -> None:
    url, root, handler = flaky_server
    settings = make_settings()
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    early = workers(settings)
    early.wait_ready()

    # An incompatible version (4 inputs for 13-feature records), a broken message for
    # another name, then a compatible version; all while the early worker is live.
    incompatible = make_message(four_feature_model, name="wine", version="2")
    asyncio.run(publish_message(settings, incompatible))
    send_raw(settings, settings.model_topic, [(b"junk", b"{not a model")])
    publish_file(settings, trained["wine-forest"], "wine", "3")
    publish_file(settings, trained["wine-tree"], "tree", "1")
    wait_for(lambda: _settled(early, "tree", "1") and _settled(early, "wine", "3"), 60, "early")

    # A by-reference version whose server refuses every request for 2 s.
    handler.healthy_after = time.monotonic() + 2.0
    publish_file(settings, trained["wine-tree"], "wine", "4", store_dir=root, base_url=url)
    wait_for(lambda: _settled(early, "wine", "4"), 60, "early worker retries and takes v4")
    assert handler.refused >= 1, "the flaky server never refused: the test proves nothing"

    late = workers(settings.model_copy(update={"http_port": free_port()}))
    late.wait_ready()
    for worker in (early, late):
        assert worker.model_version("wine") == "4"
        assert worker.model_version("tree") == "1"
    early_history, late_history = _history(early, "wine"), _history(late, "wine")
    assert ("2", "rejected", "incompatible_inputs") in early_history
    assert [e for e in late_history if e[1] != "retired"] == [
        e for e in early_history if e[1] != "retired" and e[2] != "fetch_transient"
    ], (early_history, late_history)
    junk = late.get("/models/junk/history").json()
    assert [e["reason"] for e in junk] == ["invalid_message"]
