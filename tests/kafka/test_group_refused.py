"""A worker its consumer group will not take says so on /ready, instead of "ready, 0 partitions".

The coordinator refuses a JoinGroup for reasons no retry changes: a session timeout
outside the broker's ``group.min.session.timeout.ms`` .. ``max`` (6 s .. 30 min by
default), more members than ``group.max.size``, a protocol the group does not speak.
librdkafka then retries for ever with no partition; a worker holding none looked like
a surplus replica of a scaled-out fleet, and answered 200. Here: a real broker, a
session timeout below its minimum, and beside it a worker of the same fleet with
the default (the baseline: the same group, topics and broker are fine).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.harness import WorkerProcess, publish_file, wait_for
from scripts.localkafka import free_port
from service.core.settings import Settings

pytestmark = pytest.mark.integration


def test_a_session_timeout_the_broker_refuses_keeps_the_worker_unready_and_says_why(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
    tmp_path: Path,
) -> None:
    settings = make_settings()
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    fine = workers(settings)
    fine.wait_ready(timeout=120)
    ports = {"http_port": free_port(), "grpc_port": free_port(), "data_dir": str(tmp_path / "2")}
    refused = workers(settings.model_copy(update={**ports, "session_timeout": 2.0}))

    def says_why() -> bool:
        response = refused.get("/ready")
        reason = str(response.json().get("reason", "")) if response.status_code == 503 else ""
        return "refused this worker" in reason

    wait_for(says_why, 180, "the refused worker's /ready to say why")
    body = refused.get("/ready").json()
    assert "Invalid session timeout" in body["reason"], body
    assert body["assigned_partitions"] == 0, body
    assert fine.get("/ready").status_code == 200  # the group itself is fine
