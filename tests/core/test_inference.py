"""The transport-free OIP data plane: admission, refusals, the swap retry, the row count."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from service.core.inference import BadRequest, DataPlane, Refused, oip_datatype
from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.runtime.base import Outputs, TensorSpec
from tests.models import MessageFactory


def _plane(make_message: MessageFactory, **kw: object) -> tuple[DataPlane, list[bool]]:
    registry, metrics = ModelRegistry(), Metrics()
    registry.install(registry.build(make_message(version="1")))
    metrics.swapped("wine", "1", None)
    ready = [True]
    return DataPlane(registry, metrics, lambda: ready[0], **kw), ready  # type: ignore[arg-type]


def _refusal(plane: DataPlane, name: str, version: str | None) -> tuple[str, str]:
    async def enter() -> None:
        async with plane.admitted(name, version):
            pass

    with pytest.raises(Refused) as caught:
        asyncio.run(enter())
    return caught.value.kind, str(caught.value)


def test_admission_refusals(make_message: MessageFactory) -> None:
    plane, ready = _plane(make_message)
    assert _refusal(plane, "nope", None) == ("not_found", "no model named 'nope' is serving")
    assert _refusal(plane, "wine", "2") == ("not_found", "wine serves version 1, not 2")
    ready[0] = False
    assert _refusal(plane, "wine", None) == (
        "unavailable",
        "hotswap is not ready to score; retry shortly",
    )


def test_at_most_max_pending_requests(make_message: MessageFactory) -> None:
    plane, _ = _plane(make_message, max_pending=2)

    async def main() -> None:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(plane.admitted("wine", None))
            await stack.enter_async_context(plane.admitted("wine", "1"))
            with pytest.raises(Refused, match="2 inference requests are in progress"):
                await stack.enter_async_context(plane.admitted("wine", None))
        async with plane.admitted("wine", None):  # places are given back
            assert plane.pending == 1

    asyncio.run(main())
    assert plane.pending == 0


def test_score_counts_rows_and_maps_bad_requests(make_message: MessageFactory) -> None:
    plane, _ = _plane(make_message)
    counter = plane.metrics.grpc_inferences

    def rows(model: ServingModel) -> tuple[Outputs, int]:
        return {}, 5

    def bad(model: ServingModel) -> tuple[Outputs, int]:
        raise BadRequest("shape [1, 2] does not fit [rows, 13]")

    scored = asyncio.run(plane.score("wine", None, rows, counter))
    assert (scored.model.version, scored.rows) == ("1", 5)
    assert counter.labels("wine", "1")._value.get() == 5
    with pytest.raises(Refused) as caught:
        asyncio.run(plane.score("wine", None, bad, counter))
    assert (caught.value.kind, str(caught.value)) == (
        "invalid",
        "shape [1, 2] does not fit [rows, 13]",
    )


def test_a_swap_during_the_call_scores_again_with_the_new_version(
    make_message: MessageFactory,
) -> None:
    plane, _ = _plane(make_message)
    v2 = plane.registry.build(make_message(version="2"))
    calls: list[str] = []

    def predict(model: ServingModel) -> tuple[Outputs, int]:
        calls.append(model.version)
        if model.version == "1":
            plane.registry.install(v2)  # swapped (and released) while it ran
            raise RuntimeError("session released")
        return {}, 1

    scored = asyncio.run(plane.score("wine", None, predict, plane.metrics.http_inferences))
    assert calls == ["1", "2"]
    assert scored.model.version == "2"

    def broken(model: ServingModel) -> tuple[Outputs, int]:
        raise RuntimeError("boom")

    with pytest.raises(Refused) as caught:
        asyncio.run(plane.score("wine", None, broken, plane.metrics.http_inferences))
    assert (caught.value.kind, str(caught.value)) == (
        "failed",
        "scoring failed: RuntimeError: boom",
    )


@pytest.mark.parametrize(
    ("onnx", "oip"),
    [("int8", "INT8"), ("int16", "INT16"), ("uint8", "UINT8"), ("uint16", "UINT16"),
     ("uint32", "UINT32"), ("uint64", "UINT64"), ("float16", "FP16"), ("string", "BYTES")],
)  # fmt: skip
def test_every_output_type_keeps_its_oip_datatype(onnx: str, oip: str) -> None:
    """Integers of every width are numbers, not BYTES strings ("255")."""
    assert oip_datatype(TensorSpec("y", f"tensor({onnx})", (None, 1))) == oip
