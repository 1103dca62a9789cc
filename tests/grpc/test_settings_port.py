"""HOTSWAP_GRPC_PORT: the worker gets a gRPC service on it, and none when it is 0."""

from __future__ import annotations

from pathlib import Path

from service.core.settings import Settings
from service.worker import build_worker


def test_port_zero_turns_grpc_off(tmp_path: Path) -> None:
    assert Settings().grpc_port == 8081
    on = build_worker(Settings(data_dir=str(tmp_path / "on"), grpc_port=50123))
    assert on.grpc is not None
    assert on.grpc.address == "0.0.0.0:50123"
    off = build_worker(Settings(data_dir=str(tmp_path / "off"), grpc_port=0))
    assert off.grpc is None
