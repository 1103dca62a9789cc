"""Publishing a model version to the model topic.

Accepts an ``.onnx`` file as is, or a model that is converted to ONNX here
and checked for parity (see :mod:`service.core.convert`): a pickled
scikit-learn API estimator (XGBoost and LightGBM ones included), a native
XGBoost/LightGBM model file, or a PMML document. The message carries the
artifact inline (base64) or, with ``store_dir``, by reference (a ``file://``
location, or an ``http(s)://`` one when ``base_url`` says where that directory
is served), or with ``store_s3`` uploaded to S3 (an ``s3://`` location, see
:mod:`service.tools.s3store`); either way with its sha256, which the worker
verifies.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from service.core.artifacts import sha256_hex
from service.core.convert import convert_file
from service.core.messages import ModelMessage, archive_key
from service.core.settings import Settings
from service.kafka.control import model_records, send_in_order
from service.tools.errors import ToolError

__all__ = ["PublishRequest", "archive_key", "build_message", "publish_message", "read_sidecar"]

logger = logging.getLogger(__name__)

SAMPLE_ROWS_FOR_WARMUP = 8


@dataclass
class PublishRequest:
    path: Path
    name: str
    version: str
    description: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    store_dir: Path | None = None
    base_url: str | None = None  # where ``store_dir`` is served over http(s), if it is
    store_s3: str | None = None  # s3://bucket/prefix to upload the artifact to
    reference: Path | None = None  # training rows: a drift profile goes in the metadata


def read_sidecar(path: Path) -> dict[str, Any]:
    """Metadata written beside a trained model (``NAME.meta.json``), if any."""
    sidecar = path.with_suffix(".meta.json")
    if sidecar.exists():
        data = orjson.loads(sidecar.read_bytes())
        return data if isinstance(data, dict) else {}
    return {}


def build_message(request: PublishRequest) -> ModelMessage:
    """Read or convert the artifact and describe it in a model message."""
    metadata = {**read_sidecar(request.path), **request.metadata}
    sample_rows = metadata.pop("sample_rows", None)
    if request.path.suffix == ".onnx":
        artifact = request.path.read_bytes()
    else:
        names = metadata.get("feature_names")
        converted = convert_file(
            request.path, sample_rows, feature_names=names if isinstance(names, list) else None
        )
        for note in converted.notes:
            logger.warning("%s: %s", request.path.name, note)
        artifact = converted.onnx
        metadata.setdefault("converted_from", converted.source)
        if converted.feature_names is not None:
            metadata["feature_names"] = converted.feature_names
        metadata["parity_max_abs_diff"] = converted.max_abs_diff
        if converted.classes is not None:
            metadata["classes"] = converted.classes
        if sample_rows is not None and converted.sample_labels is not None:
            metadata["samples"] = {
                "inputs": sample_rows[:SAMPLE_ROWS_FOR_WARMUP],
                "labels": converted.sample_labels[:SAMPLE_ROWS_FOR_WARMUP],
            }
    named = metadata.pop("reference", None)  # a sidecar may name one, beside it
    reference = request.reference or (request.path.parent / named if named else None)
    if reference is not None:
        from service.tools.reference import reference_profile

        if not Path(reference).is_file():
            named_by = "--reference" if request.reference else "the sidecar's reference"
            raise ToolError(f"{reference}: no such file (the training rows {named_by} names)")
        metadata["drift_profile"] = reference_profile(Path(reference), artifact, metadata)
    digest = sha256_hex(artifact)
    data: str | None = base64.b64encode(artifact).decode()
    location: str | None = None
    if request.store_dir is not None:
        request.store_dir.mkdir(parents=True, exist_ok=True)
        target = request.store_dir / f"{request.name}-{request.version}-{digest[:12]}.onnx"
        target.write_bytes(artifact)
        location = target.resolve().as_uri()
        if request.base_url:
            location = f"{request.base_url.rstrip('/')}/{target.name}"
        data = None
    elif request.store_s3 is not None:
        from service.tools.s3store import upload_artifact

        location = upload_artifact(
            request.store_s3, request.name, request.version, digest, artifact
        )
        data = None
    return ModelMessage(
        name=request.name,
        version=request.version,
        format="onnx",
        description=request.description,
        data=data,
        location=location,
        sha256=digest,
        metadata=metadata,
        published_at=datetime.now(UTC),
    )


async def publish_message(settings: Settings, message: ModelMessage) -> None:
    """Archive ``message`` (for rollback), then make it current on the model topic.

    The archive is written first, so any version that ever served can be
    found again, even after the model topic has compacted it away.
    """
    await send_in_order(settings, model_records(settings, message))
    logger.info(
        "published %s version %s to %s", message.name, message.version, settings.model_topic
    )
