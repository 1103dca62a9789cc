"""``hotswap status`` against a real worker: a clean table, or JSON, and never a log line."""

from __future__ import annotations

import re

import orjson
import pytest

from scripts.harness import run_cli, wait_for
from tests.brokers import WineWorker

pytestmark = pytest.mark.integration

# What a log line looks like, whichever library writes it ("INFO httpx: HTTP Request: ...").
LOG_LINE = re.compile(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b|HTTP Request|httpx|aiokafka")


def test_status_table_and_json_from_a_running_worker(wine_worker: WineWorker) -> None:
    settings, worker = wine_worker()  # HOTSWAP_LOG_LEVEL=INFO: a chatty library would show
    run_cli(settings, "produce", "--count", "50")
    wait_for(lambda: worker.get("/models/wine").json()["records_scored"] >= 50, 30, "50 scored")

    table = run_cli(settings, "status", "--url", worker.url)
    assert table.stderr == ""
    assert not LOG_LINE.search(table.stdout), table.stdout
    assert f"hotswap worker at {worker.url}: ready" in table.stdout
    row = next(line for line in table.stdout.splitlines() if "wine" in line)
    assert re.search(r"\bwine\b.*\b1\b.*\b50\b", row), row  # model, version, records

    as_json = run_cli(settings, "status", "--json")  # the default URL: HOTSWAP_HTTP_PORT
    assert as_json.stderr == ""
    document = orjson.loads(as_json.stdout)  # the whole of stdout is one JSON document
    assert document["ready"] is True
    assert document["readiness"]["ready"] is True
    [model] = document["models"]
    assert model["name"] == "wine"
    assert model["version"] == "1"
    assert model["records_scored"] == 50
