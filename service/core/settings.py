"""One settings object for every hotswap command.

Built once in the entry point and passed down, so the worker, the publisher
and the demo producer read the same ``HOTSWAP_*`` variables and therefore
talk to the same broker and topics.
"""

from __future__ import annotations

import difflib
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["SecurityProtocol", "Settings"]

logger = logging.getLogger(__name__)

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]


class Settings(BaseSettings):
    """Configuration, read from ``HOTSWAP_*`` environment variables."""

    model_config = SettingsConfigDict(env_prefix="HOTSWAP_", extra="ignore")

    broker: str = Field("kafka://localhost:9092", description="Kafka bootstrap servers.")
    model_topic: str = Field("models", description="Compacted topic of model messages.")
    data_topic: str = Field("records", description="Topic of records to score.")
    scored_topic: str = Field("scored", description="Topic of scored records.")
    dead_letter_topic: str = Field("records.dlq", description="Topic of rejected records.")
    archive_topic: str = Field(
        "models.archive", description="Every published version, kept for rollback."
    )
    control_topic: str = Field(
        "models.control", description="Compacted topic of rollouts (shadow, canary, ...)."
    )
    shadow_topic: str = Field("scored.shadow", description="Outputs of shadow candidates.")
    status_topic: str = Field(
        "hotswap.status", description="Compacted topic of worker heartbeats (the fleet view)."
    )
    labels_topic: str = Field(
        "labels", description="Topic of true labels ({id, label}, keyed like the records)."
    )
    label_state_topic: str = Field(
        "", description="Changelog of the label join; default: APP_ID.labels-join."
    )
    label_window: float = Field(
        86400.0, gt=0, description="Seconds a prediction waits for its label (and a label for it)."
    )
    label_state_bytes: int = Field(
        256 * 1024 * 1024,
        ge=1024,
        description="Most bytes of join state (memory; disk per partition).",
    )
    quality_window: float = Field(
        3600.0, gt=0, description="Seconds of the sliding window of live quality figures."
    )
    drift_window: int = Field(
        10_000, ge=100, description="Records of the sliding window drift is measured over."
    )
    drift_max_features: int = Field(
        20, ge=1, description="Most features per model with a drift gauge (the most drifted)."
    )
    app_id: str = Field("hotswap", description="Consumer group of the scoring workers.")
    http_host: str = Field("0.0.0.0", description="Interface the HTTP API binds to.")
    http_port: int = Field(8000, description="Port of the HTTP API.")
    grpc_port: int = Field(
        8081, ge=0, le=65535, description="Port of OIP v2 over gRPC (on `http_host`); 0: off."
    )

    data_partitions: int = Field(4, ge=1, description="Partitions when creating the data topic.")
    replication_factor: int = Field(1, ge=1, description="Replication when creating topics.")
    batch_size: int = Field(2000, ge=1, description="Most records scored in one ONNX call.")
    batch_timeout: float = Field(0.02, gt=0, description="Seconds to wait to fill a batch.")
    default_model: str = Field("", description="Model for records with no `model` field.")
    max_record_bytes: int = Field(1_000_000, ge=1, description="Larger records are rejected.")
    max_model_bytes: int = Field(200_000_000, ge=1, description="Larger artifacts are rejected.")
    max_request_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Larger HTTP request bodies get 413."
    )
    fetch_timeout: float = Field(
        15.0, gt=0, description="Deadline (s) of a whole model-location fetch, retries included."
    )
    warmup_timeout: float = Field(
        30.0, gt=0, description="Deadline (s) of a new version's warm-up predictions."
    )
    score_timeout: float = Field(
        10.0,
        gt=0,
        description="Deadline (s) of one model run: a batch past it is scored record by "
        "record; a record past it alone is dead-lettered scoring_failed.",
    )
    fetch_attempts: int = Field(
        4, ge=1, description="Tries of a location that fails transiently (5xx, refused, stalled)."
    )
    fetch_backoff: float = Field(
        0.5, gt=0, description="Seconds before the first retry; doubles per retry, at most 8 s."
    )
    model_roots: str = Field(
        "",
        description="Directories file:// locations may be in (os.pathsep-separated); "
        "empty: DATA_DIR/models.",
    )
    session_timeout: float = Field(
        10.0, gt=0, description="Seconds before the group gives a silent worker's partitions away."
    )
    producer_linger_ms: int = Field(5, ge=0, description="Producer batching delay.")
    producer_compression: Literal["none", "gzip", "lz4", "zstd", "snappy"] = Field(
        "none", description="Codec of what the worker writes (records of any codec are read)."
    )
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="exactly_once: outputs and input offsets commit in one transaction per batch.",
    )
    instance_id: str = Field(
        "",
        description="Stable id of this worker (transactional id); default: host name and port.",
    )
    transaction_records: int = Field(
        5000, ge=1, description="exactly_once: most records per transaction (one batch)."
    )
    # 0.03, not 0.1: a record waits on average half of this before its transaction even
    # starts, so it is most of exactly_once's latency at moderate rates (p50 ~70 ms at
    # 0.1). A backlog fills TRANSACTION_RECORDS at once and never waits for it, so the
    # drain rate is unchanged; the cost is more, smaller transactions at low rates
    # (at most ~33 a second).
    transaction_time: float = Field(
        0.03, gt=0, description="exactly_once: seconds a transaction gathers records for."
    )
    transaction_timeout: float = Field(
        10.0, gt=0, description="Seconds before the broker aborts a dead worker's transaction."
    )
    stall_timeout: float = Field(
        30.0, gt=0, description="Seconds without progress on a pending batch before /ready fails."
    )
    stop_timeout: float = Field(
        5.0, gt=0, description="Seconds a stop waits for the in-flight batch to commit."
    )
    data_dir: str = Field(".hotswap", description="Scratch directory of the worker.")
    log_level: str = Field("INFO", description="Logging level.")
    kafka_debug: str = Field(
        "",
        description="librdkafka debug contexts of the worker's Kafka clients (e.g. `cgrp,eos`), "
        "logged by the `librdkafka` logger whatever `LOG_LEVEL` is; empty: off.",
    )

    verify_key: str = Field(
        "", description="Ed25519 public key (PEM text or file path); unsigned models are refused."
    )
    signing_key: str = Field(
        "",
        description="Ed25519 private key file the worker signs its automatic rollout "
        "decisions with (needed when verify_key is set).",
    )

    schema_registry_url: str = Field(
        "", description="Schema Registry (Confluent API) for framed Avro/Protobuf/JSON Schema."
    )
    schema_registry_user: str = Field("", description="Schema Registry basic-auth user.")
    schema_registry_password: SecretStr = Field(
        SecretStr(""), description="Schema Registry basic-auth password."
    )
    routes: str = Field(
        "", description="Path of routes.yaml: topics bound to models; empty: the data topic."
    )

    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: str = Field("PLAIN", description="SASL mechanism, e.g. PLAIN, SCRAM-SHA-256.")
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: str = ""

    @field_validator("broker")
    @classmethod
    def _broker_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("HOTSWAP_BROKER must name at least one host:port")
        return value

    @model_validator(mode="after")
    def _one_role_per_topic(self) -> Settings:
        """Two roles on one topic loop: dead letters read back as records, outputs as models."""
        roles = {
            "HOTSWAP_MODEL_TOPIC": self.model_topic,
            "HOTSWAP_DATA_TOPIC": self.data_topic,
            "HOTSWAP_SCORED_TOPIC": self.scored_topic,
            "HOTSWAP_DEAD_LETTER_TOPIC": self.dead_letter_topic,
            "HOTSWAP_ARCHIVE_TOPIC": self.archive_topic,
            "HOTSWAP_CONTROL_TOPIC": self.control_topic,
            "HOTSWAP_SHADOW_TOPIC": self.shadow_topic,
            "HOTSWAP_STATUS_TOPIC": self.status_topic,
            "HOTSWAP_LABELS_TOPIC": self.labels_topic,
            "HOTSWAP_LABEL_STATE_TOPIC": self.label_state_topic_name,
        }
        seen: dict[str, str] = {}
        for role, topic in roles.items():
            if topic in seen:
                raise ValueError(f"{seen[topic]} and {role} are both {topic!r}: one role a topic")
            seen[topic] = role
        return self

    @property
    def written_topics(self) -> tuple[str, ...]:
        """The topics the worker writes or reads for itself: no route may read them."""
        return (
            self.scored_topic,
            self.dead_letter_topic,
            self.shadow_topic,
            self.labels_topic,
            self.label_state_topic_name,
            self.model_topic,
            self.archive_topic,
            self.control_topic,
            self.status_topic,
        )

    @property
    def model_root_paths(self) -> tuple[Path, ...]:
        """Where ``file://`` model locations may point: ``model_roots``, or DATA_DIR/models."""
        roots = [Path(p.strip()) for p in self.model_roots.split(os.pathsep) if p.strip()]
        return tuple(roots) if roots else (Path(self.data_dir) / "models",)

    @property
    def label_state_topic_name(self) -> str:
        """The join changelog: ``label_state_topic``, or one per consumer group."""
        return self.label_state_topic or f"{self.app_id}.labels-join"

    @property
    def bootstrap_servers(self) -> list[str]:
        """Broker list for aiokafka: ``kafka://a:1;b:2`` becomes ``["a:1", "b:2"]``."""
        servers = []
        for part in self.broker.replace(";", ",").split(","):
            part = part.strip()
            if "://" in part:
                part = part.split("://", 1)[1]
            if part:
                servers.append(part)
        return servers

    @property
    def worker_id(self) -> str:
        """``instance_id``, or host name and HTTP port: stable across restarts of one worker."""
        return self.instance_id or f"{socket.gethostname()}-{self.http_port}"


# Set by Kubernetes for a Service named `hotswap` (HOTSWAP_SERVICE_HOST, HOTSWAP_PORT_8000_TCP)
_SERVICE_LINKS = ("SERVICE_", "PORT")


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """``HOTSWAP_*`` variables that name no setting (a typo is otherwise silently ignored),
    each with the setting it most likely meant."""
    known = {name.upper() for name in Settings.model_fields}
    found = []
    for variable in sorted(environ):
        name = variable.removeprefix("HOTSWAP_")
        if name == variable or name in known or name.startswith(_SERVICE_LINKS):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
        found.append(f"{variable} (did you mean HOTSWAP_{close[0]}?)" if close else variable)
    return found
