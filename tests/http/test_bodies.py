"""Request bodies are read within a bound, and a bounded number at once (no server)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import Request

from service.core.inference import Refused
from service.http.bodies import BodyReader, ClientGone


def _request(*messages: dict[str, Any], then_wait: bool = False) -> Request:
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        if then_wait:
            await asyncio.Event().wait()  # a client that never sends the rest
        return {"type": "http.disconnect"}

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


def test_a_body_that_does_not_arrive_in_time_is_refused_as_a_timeout() -> None:
    reader = BodyReader(most=4, seconds=0.2)
    request = _request({"type": "http.request", "body": b"{", "more_body": True}, then_wait=True)
    with pytest.raises(Refused) as refused:
        asyncio.run(reader.read(request))
    assert refused.value.kind == "timeout"
    assert "within 0.2 s" in str(refused.value)
    assert reader.receiving == 0


def test_a_whole_body_is_read_and_a_client_gone_is_told_apart() -> None:
    reader = BodyReader(most=4, seconds=30)
    whole = _request(
        {"type": "http.request", "body": b"{}", "more_body": True},
        {"type": "http.request", "body": b" ", "more_body": False},
    )
    assert asyncio.run(reader.read(whole)) == b"{} "
    gone = _request({"type": "http.request", "body": b"{", "more_body": True})
    with pytest.raises(ClientGone):
        asyncio.run(reader.read(gone))
    assert reader.receiving == 0


def test_no_more_bodies_than_the_bound_are_received_at_once() -> None:
    reader = BodyReader(most=2, seconds=30)

    async def run() -> Refused:
        waiting = [asyncio.create_task(reader.read(_request(then_wait=True))) for _ in range(2)]
        for _ in range(10):  # each task runs until it waits on its body
            await asyncio.sleep(0)
        assert reader.receiving == 2
        try:
            with pytest.raises(Refused) as refused:
                await reader.read(_request({"type": "http.request", "body": b"{}"}))
            return refused.value
        finally:
            for task in waiting:
                task.cancel()

    refused = asyncio.run(run())
    assert refused.kind == "unavailable"
