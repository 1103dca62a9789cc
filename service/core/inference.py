"""One OIP v2 inference, whatever the transport: which model, whether to admit it, how to score.

The Open Inference Protocol is served over HTTP (:mod:`service.http.oip`) and gRPC
(:mod:`service.grpc.servicer`). Each adapter decodes its own wire format into numpy
tensors and encodes the outputs back; everything in between lives here, once, so both
transports refuse the same requests with the same messages, bound the same resources and
record the same metrics:

- :meth:`DataPlane.admitted` refuses a worker that is not ready, an unknown model or
  version, and a request over the number allowed in progress;
- :func:`model_batch` and :func:`wanted_outputs` refuse a tensor the model cannot take
  (shape, datatype, NaN, too many rows) and outputs it does not have;
- :meth:`DataPlane.score` runs the model on a bounded pool of threads, off the event loop,
  scores again with the new version if a swap released the model during the call, and
  counts the rows on the transport's counter.

Every refusal is a :class:`Refused` whose ``kind`` each adapter maps to its status
(HTTP 400/404/413/503/500, gRPC INVALID_ARGUMENT/NOT_FOUND/RESOURCE_EXHAUSTED/
UNAVAILABLE/INTERNAL).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter

from service.core.metrics import Metrics
from service.core.registry import ModelRegistry, ServingModel
from service.core.runtime.base import Outputs, TensorSpec

__all__ = [
    "MAX_ROWS",
    "BadRequest",
    "DataPlane",
    "RefusalKind",
    "Refused",
    "Scored",
    "check_input",
    "model_batch",
    "oip_datatype",
    "oip_shape",
    "wanted_outputs",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
RefusalKind = Literal["invalid", "not_found", "too_large", "unavailable", "failed", "timeout"]

MAX_ROWS = 100_000
_ONNX_TO_OIP = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint64)": "UINT64",
    "tensor(uint32)": "UINT32",
    "tensor(uint16)": "UINT16",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
    "tensor(string)": "BYTES",
}
_MODEL_INPUT = {"tensor(double)": np.dtype(np.float64)}


class Refused(Exception):
    """The request is refused; ``kind`` picks the transport's status, the message says why."""

    def __init__(self, kind: RefusalKind, message: str) -> None:
        super().__init__(message)
        self.kind: RefusalKind = kind


class BadRequest(ValueError):
    """The request cannot be scored as sent; the message says why (HTTP 400, INVALID_ARGUMENT)."""


@dataclass(frozen=True, slots=True)
class Scored:
    model: ServingModel
    outputs: Outputs
    rows: int


def oip_datatype(spec: TensorSpec) -> str:
    return _ONNX_TO_OIP.get(spec.dtype, "BYTES")


def oip_shape(spec: TensorSpec) -> list[int]:
    """The shape metadata gives (-1: any size); a sequence (a ZipMap's list of maps) has no
    tensor shape in ONNX but is answered as one BYTES element per row: ``[-1]``."""
    if not spec.shape and not spec.dtype.startswith("tensor("):
        return [-1]
    return [d if d is not None else -1 for d in spec.shape]


def check_input(datatype: str, shape: Sequence[int]) -> None:
    """Refuse, before its data is decoded, an input no model here takes: text, or a
    tensor that is not ``[rows, width]`` (numpy itself stops at 64 dimensions)."""
    if datatype == "BYTES":
        raise BadRequest("datatype BYTES is not numeric; the model takes numbers")
    if len(shape) > 2:
        shown = f"{list(shape)[:4]}..." if len(shape) > 4 else str(list(shape))
        raise BadRequest(
            f"shape {shown} has {len(shape)} dimensions; the model takes [rows, width]"
        )


def model_batch(model: ServingModel, tensor: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The input as the model's ``(rows, width)`` float array, or why it cannot be."""
    width = model.runtime.signature.width  # (BYTES was refused before decoding: check_input)
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != width or shape[0] < 1:
        raise BadRequest(f"shape {shape} does not fit [rows, {width}]")
    if shape[0] > MAX_ROWS:
        raise BadRequest(f"{shape[0]} rows is over the limit of {MAX_ROWS}")
    dtype = _MODEL_INPUT.get(model.runtime.signature.inputs[0].dtype, np.dtype(np.float32))
    batch = np.ascontiguousarray(tensor, dtype=dtype)
    if not np.isfinite(batch).all():
        raise BadRequest("data holds NaN or infinity")
    return batch


def wanted_outputs(
    model: ServingModel, names: Sequence[str] | None, *, class_count: bool = False
) -> list[str]:
    """The outputs to return: ``names`` (all of them known), or every output when ``None``."""
    known = [s.name for s in model.runtime.signature.outputs]
    if names is None:
        return known
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise BadRequest(f"unknown outputs {unknown}; model has {sorted(known)}")
    if class_count:
        raise BadRequest("the classification extension (class_count) is not supported")
    return list(names)


class DataPlane:
    """Admission, scoring and metrics of OIP inference over ``registry``, for any transport.

    At most ``threads`` threads decode, score and encode; at most ``max_pending``
    requests are held at once (the rest are refused ``unavailable``), which with the
    transport's size limit bounds the memory they can take.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        metrics: Metrics,
        is_ready: Callable[[], bool],
        *,
        threads: int = 2,
        max_pending: int = 8,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.is_ready = is_ready
        self.threads = threads
        self.max_pending = max_pending
        self.pending = 0
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="oip")

    def serving(self, name: str, version: str | None) -> ServingModel:
        """The model serving under ``name`` (of ``version``, when given), or ``not_found``."""
        model = self.registry.get(name)
        if model is None:  # names and versions echoed at most 200 characters (gRPC metadata)
            raise Refused("not_found", f"no model named {name[:200]!r} is serving")
        if version is not None and version != model.version:
            raise Refused(
                "not_found", f"{name} serves version {model.version}, not {version[:200]}"
            )
        return model

    def check(self, name: str, version: str | None) -> None:
        """Refuse now what admission would: not ready (``unavailable``), no such model."""
        if not self.is_ready():
            raise Refused("unavailable", "hotswap is not ready to score; retry shortly")
        self.serving(name, version)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the plane's threads (off the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args))

    @contextlib.asynccontextmanager
    async def admitted(self, name: str, version: str | None) -> AsyncIterator[None]:
        """Hold one of the ``max_pending`` places for an inference on ``name``, or refuse."""
        self.check(name, version)
        if self.pending >= self.max_pending:
            raise Refused(
                "unavailable", f"{self.pending} inference requests are in progress; retry shortly"
            )
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    async def score(
        self,
        name: str,
        version: str | None,
        predict: Callable[[ServingModel], tuple[Outputs, int]],
        rows_counter: Counter,
    ) -> Scored:
        """``predict`` on the serving model, in a thread; rows counted on ``rows_counter``."""
        for _ in range(2):  # once more if the model was swapped out during the call
            model = self.serving(name, version)
            started = time.perf_counter()
            try:
                outputs, rows = await self.run(predict, model)
            except BadRequest as exc:
                raise Refused("invalid", str(exc)) from None
            except Exception as exc:
                if self.registry.get(name) is not model:
                    continue  # released by a swap while it ran: score with the new version
                logger.exception("OIP inference on %s %s failed", model.name, model.version)
                raise Refused("failed", f"scoring failed: {type(exc).__name__}: {exc}") from None
            model.stats.observe((time.perf_counter() - started) * 1000, rows)
            labels = self.metrics.model_label(name), self.metrics.version_label(name, model.version)
            rows_counter.labels(*labels).inc(rows)
            return Scored(model, outputs, rows)
        raise Refused("unavailable", f"model {name!r} was swapped twice during the call; retry")

    def close(self) -> None:
        """Let the threads go (requests still running finish)."""
        self._pool.shutdown(wait=False)
