"""ONNX Runtime models: the only format the worker executes.

ONNX is a graph of known operators, so loading one runs no code of the
publisher's; pickled estimators are refused before they reach here (see
:func:`load_runtime`) and converted on the publisher's machine instead.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from service.core import errors
from service.core.runtime.base import ModelRuntime, Outputs, Signature, TensorSpec

__all__ = ["OnnxModel", "load_runtime", "looks_like_pickle"]

logger = logging.getLogger(__name__)

_FLOAT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def looks_like_pickle(artifact: bytes) -> bool:
    """True for pickle (and uncompressed joblib) bytes: protocol 2+ starts ``\\x80 <proto>``."""
    return len(artifact) >= 2 and artifact[0] == 0x80 and 2 <= artifact[1] <= 5


class _Deadlines:
    """Stops model runs that outlive their deadline, from one thread for all of them.

    A run is data-dependent (a ``Loop`` whose count comes from the input): a record can
    make a model that passed its warm-up run for hours, holding a scoring thread and the
    whole stream. ONNX Runtime stops a run whose ``RunOptions.terminate`` is set (at its
    next node: one node that runs long is not cut short). A timer thread per run would
    cost more than a small model's run, so one daemon thread looks at the runs in
    progress every :attr:`TICK` seconds (~2 us a run to register: once per batch)."""

    TICK = 0.05

    def __init__(self) -> None:
        self._runs: dict[int, tuple[float, Any]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self, seconds: float) -> Any:
        """Options for a run that is stopped after ``seconds``; hand them to :meth:`end`."""
        options = ort.RunOptions()
        options.log_severity_level = 4  # a stopped run is reported once, by the caller
        with self._lock:
            self._runs[id(options)] = (time.monotonic() + seconds, options)
            if self._thread is None or not self._thread.is_alive():
                thread = threading.Thread(target=self._watch, daemon=True, name="run-dl")
                thread.start()  # kept only once running: a failed start is tried again
                self._thread = thread
        return options

    def end(self, options: Any) -> None:
        with self._lock:
            self._runs.pop(id(options), None)

    def _watch(self) -> None:
        while True:
            time.sleep(self.TICK)
            now = time.monotonic()
            with self._lock:
                for deadline, options in self._runs.values():
                    if now >= deadline:
                        options.terminate = True


_DEADLINES = _Deadlines()


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else None for d in (arg.shape or ()))
    return TensorSpec(name=arg.name, dtype=str(arg.type), shape=shape)


class OnnxModel(ModelRuntime):
    """An ONNX Runtime session over a model with one 2-D numeric input."""

    def __init__(
        self,
        artifact: bytes,
        *,
        feature_names: list[str] | None = None,
        classes: list[Any] | None = None,
        threads: int = 1,
        run_seconds: float | None = None,
    ) -> None:
        self._run_seconds = run_seconds  # None: unbounded
        if looks_like_pickle(artifact):
            raise errors.PickleRefused("artifact is a Python pickle; only ONNX is loaded")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                artifact, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise errors.InvalidModel(f"ONNX Runtime cannot load the artifact: {exc}") from None
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1:
            raise errors.IncompatibleInputs(f"model has {len(inputs)} inputs; exactly 1 needed")
        spec = _spec(inputs[0])
        if spec.dtype not in _FLOAT_TYPES or len(spec.shape) != 2 or spec.shape[1] is None:
            raise errors.IncompatibleInputs(
                f"input {spec.name!r} is {spec.dtype} {spec.shape}; need float [batch, width]"
            )
        if spec.shape[0] is not None:  # a batch is any number of records
            raise errors.IncompatibleInputs(
                f"input {spec.name!r} has a fixed batch size of {spec.shape[0]}; "
                "export the model with a free first dimension"
            )
        width = spec.shape[1]
        if feature_names is not None and (
            not all(type(n) is str for n in feature_names)
            or len(set(feature_names)) != len(feature_names)
        ):
            raise errors.IncompatibleInputs("metadata feature_names must be distinct strings")
        if feature_names is not None and len(feature_names) != width:
            raise errors.IncompatibleInputs(
                f"metadata names {len(feature_names)} features but the model takes {width}"
            )
        self._input_name = spec.name
        self._dtype = _FLOAT_TYPES[spec.dtype]
        out_specs = tuple(_spec(o) for o in outputs)
        label = next(
            (o.name for o in out_specs if o.dtype in {"tensor(int64)", "tensor(string)"}), None
        )
        proba = None
        if label is not None:
            proba = next(
                (o.name for o in out_specs if o.dtype in _FLOAT_TYPES and len(o.shape) == 2), None
            )
        self.signature = Signature(
            inputs=(spec,),
            outputs=out_specs,
            width=width,
            feature_names=tuple(feature_names) if feature_names else None,
            label_output=label,
            probability_output=proba,
            classes=tuple(classes) if classes else None,
        )
        self._output_names = [o.name for o in out_specs]

    def predict(self, batch: npt.NDArray[np.floating[Any]]) -> Outputs:
        if self._run_seconds is None:
            return self._run(batch, None)
        return self.predict_within(batch, self._run_seconds)

    def predict_within(self, batch: npt.NDArray[np.floating[Any]], seconds: float) -> Outputs:
        options = _DEADLINES.start(seconds)
        try:
            return self._run(batch, options)
        except errors.ScoringFailed:
            raise
        except Exception:
            if options.terminate:
                raise TimeoutError(f"stopped after {seconds:g} s") from None
            raise
        finally:
            _DEADLINES.end(options)

    def _run(self, batch: npt.NDArray[np.floating[Any]], options: Any) -> Outputs:
        if batch.dtype != self._dtype:
            batch = batch.astype(self._dtype)
        results = self._session.run(self._output_names, {self._input_name: batch}, options)
        outputs = {name: np.asarray(value) for name, value in zip(self._output_names, results)}
        for name, value in outputs.items():  # a row for each record, or records go missing
            if value.ndim == 0 or len(value) != len(batch):
                rows = len(value) if value.ndim else "no"
                raise errors.ScoringFailed(
                    f"output {name!r} has {rows} rows for a batch of {len(batch)}"
                )
        return outputs

    def close(self) -> None:
        # Dropping the only reference frees the session's arena; there is no explicit close.
        self._session = None  # type: ignore[assignment]


def load_runtime(
    fmt: str,
    artifact: bytes,
    *,
    metadata: dict[str, Any],
    threads: int = 1,
    run_seconds: float | None = None,
) -> ModelRuntime:
    """Build the runtime for ``fmt``; the one place a new format is plugged in. Each of its
    runs is stopped after ``run_seconds`` (a :class:`TimeoutError`); None: unbounded."""
    if fmt != "onnx":
        raise errors.UnsupportedFormat(f"format {fmt!r} is not served (only 'onnx')")
    names = metadata.get("feature_names")
    classes = metadata.get("classes")
    return OnnxModel(
        artifact,
        feature_names=list(names) if isinstance(names, list) else None,
        classes=list(classes) if isinstance(classes, list) else None,
        threads=threads,
        run_seconds=run_seconds,
    )
