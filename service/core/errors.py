"""Every way a record or a model can be refused, each with a stable name.

The ``reason`` of an error is a short code that never changes: it is the
``hotswap-reason`` header of a dead-letter record, the ``reason`` label of the
metrics and the ``reason`` of a rejected version in a model's history, so
operators can alert and filter on it.
"""

from __future__ import annotations

from typing import ClassVar


class HotswapError(Exception):
    """Base of all refusals; ``reason`` is the stable code."""

    reason: ClassVar[str] = "error"
    #: True when trying again later may succeed (a network or server fault, not the input).
    transient: ClassVar[bool] = False

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


class BadFeature(RecordRejected):
    """A feature that is there but is no finite number (nor a bool or a numeric string)."""

    reason = "bad_feature"


class SchemaUnknown(RecordRejected):
    """A framed record whose schema id the Schema Registry does not hold (404)."""

    reason = "schema_unknown"


class SchemaDecode(RecordRejected):
    """A framed record whose payload does not decode with the schema of its id."""

    reason = "schema_decode"


class ScoringFailed(RecordRejected):
    """The model failed on this row alone, or the record could not be scored for a reason no
    other check names (its detail holds the exception)."""

    reason = "scoring_failed"


class OutputTooLarge(RecordRejected):
    """The scored record (or the dead-letter copy) exceeds what the broker accepts."""

    reason = "output_too_large"


class OutputRefused(RecordRejected):
    """The broker refused the output for good (invalid record, not authorized, ...)."""

    reason = "output_refused"


class UndecodableBatch(RecordRejected):
    """The client could not read the records at these offsets (corrupt or unknown codec)."""

    reason = "undecodable_batch"


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
    """The location cannot be read for good (HTTP 4xx, missing file): not retried."""

    reason = "fetch_failed"


class FetchTimeout(FetchFailed):
    """HOTSWAP_FETCH_TIMEOUT passed before the whole artifact arrived (retries included)."""

    reason = "fetch_timeout"
    transient = True


class FetchTransient(FetchFailed):
    """Every attempt failed transiently (HTTP 5xx/408/429, refused, reset, stalled)."""

    reason = "fetch_transient"
    transient = True


class FetchCancelled(FetchFailed):
    """The worker stopped while fetching."""

    reason = "fetch_cancelled"
    transient = True


class LocationRefused(FetchFailed):
    """A location the worker will not read: unsupported scheme, host in a file URL, ..."""

    reason = "location_refused"


class LocationOutsideRoots(LocationRefused):
    """A ``file://`` path that, symlinks and ``..`` resolved, is outside HOTSWAP_MODEL_ROOTS."""

    reason = "location_outside_roots"


class NotARegularFile(LocationRefused):
    """A ``file://`` location that is a device, FIFO, socket or directory."""

    reason = "not_a_regular_file"


class RedirectRefused(LocationRefused):
    """An HTTP redirect to another scheme (file://, or https to http), or too many of them."""

    reason = "redirect_refused"


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


# --- control and status topics -----------------------------------------------------
# A refused control message changes nothing; its reason is the ``reason`` label of
# ``hotswap_control_rejections_total`` (a fixed set: these classes and
# ``signature_invalid``) and, when it names a model this worker knows, a history entry.


class ControlRejected(HotswapError):
    """A control-topic (or status-topic) message that is not applied."""

    reason = "control_rejected"


class InvalidControl(ControlRejected):
    """Not a control message: bad JSON, a missing or mistyped field, a naive timestamp."""

    reason = "invalid_control"


class ControlTooLarge(ControlRejected):
    reason = "control_too_large"


class ModelNotServing(ControlRejected):
    """A rollout step for a model this worker serves no version of (ghost names included)."""

    reason = "model_not_serving"


class NoRollout(ControlRejected):
    """promoted/aborted that names no candidate, or not the candidate of the rollout running."""

    reason = "no_rollout"


class CandidateIsServing(ControlRejected):
    """A shadow, canary or abort of the version that already serves (e.g. after a promotion)."""

    reason = "candidate_is_serving"


class InvalidStatus(ControlRejected):
    """A heartbeat that is not a worker status: bad JSON, a field mistyped, a naive time."""

    reason = "invalid_status"


class StatusTooLarge(ControlRejected):
    reason = "status_too_large"


class StatusUnsigned(ControlRejected):
    """With HOTSWAP_VERIFY_KEY set: a heartbeat unsigned, or not signed by the fleet's key
    (a worker's figures count in automatic decisions, so only a worker may report them)."""

    reason = "status_unsigned"


# --- the Schema Registry and routes (not a record's fault) ------------------------------


class RegistryUnavailable(HotswapError):
    """The Schema Registry cannot be reached or answers 5xx: the batch waits, nothing is
    dead-lettered, and ``/ready`` names it once the batch stalls."""

    reason = "registry_unavailable"
    transient = True


class OutputSchemaRefused(HotswapError):
    """The registry refused the derived schema of enriched outputs (e.g. by the output
    subject's compatibility rule): that route stalls, the others go on."""

    reason = "output_schema_refused"


class RoutesInvalid(HotswapError, ValueError):
    """``HOTSWAP_ROUTES`` names a file that is missing or does not validate."""

    reason = "routes_invalid"


#: Every error class, and nothing else: the module's public names, kept in step by construction.
__all__ = sorted(
    name
    for name, value in list(globals().items())
    if isinstance(value, type) and issubclass(value, HotswapError)
)
