"""The committed gRPC modules are exactly what the pinned grpcio-tools writes from the .proto."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.gen_grpc import GENERATED, PROTO, REPO, generate


@pytest.mark.parametrize("name", GENERATED)
def test_regenerating_gives_the_committed_files(tmp_path: Path, name: str) -> None:
    generate(tmp_path)
    committed = (REPO / PROTO.parent / name).read_text()
    assert (tmp_path / name).read_text() == committed, (
        f"{name} is stale: run `python scripts/gen_grpc.py` and commit the result"
    )


def test_the_messages_live_in_a_private_pool_beside_tritonclients() -> None:
    """tritonclient.grpc defines the same inference.* names; both load in one process."""
    from google.protobuf import descriptor_pool
    from tritonclient.grpc import service_pb2 as triton

    from service.grpc.generated import grpc_predict_v2_pb2 as ours

    assert ours.DESCRIPTOR.pool is not descriptor_pool.Default()
    request = ours.ModelInferRequest(model_name="wine", raw_input_contents=[b"\0" * 4])
    request.inputs.add(name="X", datatype="FP32", shape=[1, 1])
    theirs = triton.ModelInferRequest.FromString(request.SerializeToString())
    assert (theirs.model_name, list(theirs.inputs[0].shape)) == ("wine", [1, 1])
