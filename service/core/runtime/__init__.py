"""Model runtimes: one small interface, one module per artifact format."""

from service.core.runtime.base import ModelRuntime, Signature, TensorSpec
from service.core.runtime.onnx import OnnxModel, load_runtime

__all__ = ["ModelRuntime", "OnnxModel", "Signature", "TensorSpec", "load_runtime"]
