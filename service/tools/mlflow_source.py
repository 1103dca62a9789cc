"""``models:/NAME@ALIAS``, ``models:/NAME/VERSION``: an MLflow registry version as a message.

The version is resolved on the server ``MLFLOW_TRACKING_URI`` names, its
artifacts downloaded, and its flavour turned into a file ``hotswap publish``
already accepts: an ``onnx`` flavour as is; ``sklearn``, ``xgboost`` and
``lightgbm`` ones loaded with MLflow's own loader **on the publisher's
machine** (as a joblib file would be) and converted with the parity check
(:mod:`service.core.convert`). Sample rows for the check come from the
version's input example when it has one. The message's version label is
MLflow's version number; its metadata keeps the run id, the registered
model's signature (``feature_names`` from its input schema) and the version's
tags. Needs ``hotswap[mlflow]``.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.core.messages import ModelMessage
from service.tools.errors import ToolError, one_line
from service.tools.publish import PublishRequest

__all__ = [
    "MlflowVersion",
    "is_registry_uri",
    "mlflow_errors",
    "parse_uri",
    "prepare_version",
    "publish_request",
    "resolve",
]

logger = logging.getLogger(__name__)

_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")
FLAVOURS = ("onnx", "sklearn", "xgboost", "lightgbm")


def is_registry_uri(text: str) -> bool:
    return text.startswith("models:/")


def parse_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/3`` -> (NAME, None, "3")."""
    found = _URI.match(uri)
    if found is None:
        raise ToolError(f"{uri!r} is not models:/NAME@ALIAS or models:/NAME/VERSION")
    return found["name"], found["alias"], found["version"]


def _client() -> Any:
    # MLflow retries an unreachable server 7 times with backoff (minutes): fail in seconds.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ToolError("install hotswap[mlflow] to publish from an MLflow registry") from None
    if not logging.getLogger().isEnabledFor(logging.INFO):  # the CLI without --verbose
        for chatty in ("urllib3", "mlflow"):  # a retry warning per refused connection
            logging.getLogger(chatty).setLevel(logging.CRITICAL + 1)
    return MlflowClient()


def mlflow_errors(exc: Exception) -> ToolError:
    """An MLflow failure as one line that says what to check."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    text = one_line(exc, named=False)
    if "RESOURCE_DOES_NOT_EXIST" in text or "not found" in text.lower():
        return ToolError(f"MLflow at {uri}: {text[:300]}")
    reason = "connection refused" if "refused" in text.lower() else text[:160]
    return ToolError(
        f"cannot reach MLflow at {uri} ({reason}): start it, or point "
        "MLFLOW_TRACKING_URI at a running tracking server"
    )


@dataclass
class MlflowVersion:
    """One registered version, as the registry describes it."""

    name: str
    version: str
    run_id: str | None
    source: str
    tags: dict[str, str] = field(default_factory=dict)
    alias: str | None = None

    @property
    def uri(self) -> str:
        return f"models:/{self.name}@{self.alias}" if self.alias else self.version_uri

    @property
    def version_uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve(uri: str) -> MlflowVersion:
    """The version ``uri`` names now (an alias is looked up on every call)."""
    name, alias, version = parse_uri(uri)
    client = _client()
    try:
        if alias is not None:
            found = client.get_model_version_by_alias(name, alias)
        else:
            found = client.get_model_version(name, version)
    except Exception as exc:
        raise mlflow_errors(exc) from None
    return MlflowVersion(
        name=name,
        version=str(found.version),
        run_id=found.run_id or None,
        source=str(found.source),
        tags=dict(found.tags or {}),
        alias=alias,
    )


def _model_file(local: Path, into: Path) -> tuple[Path, str, dict[str, Any]]:
    """(a file `publish` accepts, the flavour, metadata from the MLmodel file)."""
    from mlflow.models import Model

    model = Model.load(str(local))
    meta: dict[str, Any] = {}
    if model.signature is not None:
        meta["mlflow_signature"] = model.signature.to_dict()
        names = model.signature.inputs.input_names() if model.signature.inputs else []
        if names and all(isinstance(n, str) for n in names):
            meta["feature_names"] = list(names)
    try:
        example = model.load_input_example(str(local))
    except Exception as exc:  # an example MLflow itself cannot read: random rows instead
        logger.warning("ignoring the input example: %s", exc)
        example = None
    if example is not None:
        rows = example.to_numpy() if hasattr(example, "to_numpy") else example
        meta["sample_rows"] = [[float(v) for v in row] for row in rows]
    flavour = next((f for f in FLAVOURS if f in model.flavors), None)
    if flavour is None:
        raise ToolError(
            f"MLflow flavours {sorted(model.flavors)}: hotswap converts {', '.join(FLAVOURS)}"
        )
    if flavour == "onnx":
        return local / model.flavors["onnx"]["data"], flavour, meta
    import importlib

    import joblib

    loaded = importlib.import_module(f"mlflow.{flavour}").load_model(str(local))
    if type(loaded).__name__ == "Booster":  # a native booster: its own file format
        target = into / ("model.ubj" if flavour == "xgboost" else "model.txt")
        loaded.save_model(str(target))
    else:
        target = into / "model.joblib"
        joblib.dump(loaded, target)
    return target, flavour, meta


def prepare_version(
    found: MlflowVersion,
    name: str | None = None,
    extra: dict[str, Any] | None = None,
    store: tuple[Path | None, str | None] = (None, None),
    signing_key: Path | None = None,
) -> ModelMessage:
    """Download ``found``, convert it, check parity: the message to publish (not yet sent)."""
    import mlflow

    from service.tools.publishing import prepare

    with tempfile.TemporaryDirectory(prefix="hotswap-mlflow-") as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=found.version_uri, dst_path=str(Path(tmp) / "download")
                )
            )
        except Exception as exc:
            raise mlflow_errors(exc) from None
        path, flavour, meta = _model_file(local, Path(tmp))
        signature = meta.pop("mlflow_signature", None)
        metadata: dict[str, Any] = {
            **meta,
            "mlflow": {
                "model": found.name,
                "version": found.version,
                "alias": found.alias,
                "run_id": found.run_id,
                "tags": found.tags,
                "flavour": flavour,
                "signature": signature,
                "tracking_uri": mlflow.get_tracking_uri(),
            },
            **(extra or {}),
        }
        request = PublishRequest(
            path=path,
            name=name or found.name,
            version=found.version,
            description=f"{found.uri} (MLflow version {found.version})",
            metadata=metadata,
            store_dir=store[0],
            store_s3=store[1],
        )
        return prepare(request, signing_key)


def publish_request(
    args: Any, extra: dict[str, Any], store: tuple[Path | None, str | None], key: Path | None
) -> ModelMessage:
    """``hotswap publish models:/...``: the message for the version the URI names now."""
    if args.version:
        raise ToolError("a models:/ version is published under MLflow's version: drop --version")
    return prepare_version(resolve(args.file), args.name, extra, store, key)
