"""Every way a record or a model can be refused, each with a stable name.

The ``reason`` of an error is a short code that never changes: it is the
``hotswap-reason`` header of a dead-letter record, the ``reason`` label of the
metrics and the ``reason`` of a rejected version in a model's history, so
operators can alert and filter on it.
"""

from __future__ import annotations

from typing import ClassVar

__all__ = [
    "ArtifactTooLarge",
    "ChecksumMismatch",
    "EmptyValue",
    "FetchFailed",
    "HotswapError",
    "IncompatibleInputs",
    "InvalidBase64",
    "InvalidJson",
    "InvalidModel",
    "InvalidModelMessage",
    "InvalidUtf8",
    "MissingFeature",
    "MissingFeatures",
    "MissingModel",
    "ModelRejected",
    "NonFiniteValue",
    "NonNumericValue",
    "NotAnObject",
    "NullValue",
    "PickleRefused",
    "RecordRejected",
    "RecordTooLarge",
    "ScoringFailed",
    "SignatureInvalid",
    "UnknownFeature",
    "UnknownModel",
    "UnsupportedFormat",
    "WarmupFailed",
    "WrongFeatureCount",
]


class HotswapError(Exception):
    """Base of all refusals; ``reason`` is the stable code."""

    reason: ClassVar[str] = "error"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.reason)
        self.detail = detail or self.reason


# --- records -----------------------------------------------------------------


class RecordRejected(HotswapError):
    """A data record that cannot be scored; it goes to the dead-letter topic."""

    reason = "invalid_record"


class EmptyValue(RecordRejected):
    reason = "empty_value"


class NullValue(RecordRejected):
    reason = "null_value"


class RecordTooLarge(RecordRejected):
    reason = "record_too_large"


class InvalidUtf8(RecordRejected):
    reason = "invalid_utf8"


class InvalidJson(RecordRejected):
    reason = "invalid_json"


class NotAnObject(RecordRejected):
    reason = "not_an_object"


class MissingModel(RecordRejected):
    reason = "missing_model"


class UnknownModel(RecordRejected):
    reason = "unknown_model"


class MissingFeatures(RecordRejected):
    reason = "missing_features"


class WrongFeatureCount(RecordRejected):
    reason = "wrong_feature_count"


class MissingFeature(RecordRejected):
    reason = "missing_feature"


class UnknownFeature(RecordRejected):
    reason = "unknown_feature"


class NonNumericValue(RecordRejected):
    reason = "non_numeric"


class NonFiniteValue(RecordRejected):
    reason = "non_finite"


class ScoringFailed(RecordRejected):
    reason = "scoring_failed"


# --- models ------------------------------------------------------------------


class ModelRejected(HotswapError):
    """A model message that is not installed; the previous version keeps serving."""

    reason = "model_rejected"


class InvalidModelMessage(ModelRejected):
    reason = "invalid_message"


class UnsupportedFormat(ModelRejected):
    reason = "unsupported_format"


class InvalidBase64(ModelRejected):
    reason = "invalid_base64"


class ArtifactTooLarge(ModelRejected):
    reason = "artifact_too_large"


class FetchFailed(ModelRejected):
    reason = "fetch_failed"


class ChecksumMismatch(ModelRejected):
    reason = "sha256_mismatch"


class SignatureInvalid(ModelRejected):
    reason = "signature_invalid"


class PickleRefused(ModelRejected):
    reason = "pickle_refused"


class InvalidModel(ModelRejected):
    reason = "invalid_onnx"


class IncompatibleInputs(ModelRejected):
    reason = "incompatible_inputs"


class WarmupFailed(ModelRejected):
    reason = "warmup_failed"
