"""Autoscaling manifests: KEDA's ScaledObject and the HPA fallback, checked against schemas.

The ScaledObject is validated against the openAPIV3Schema of KEDA's own CRD (a copy in
tests/deploy/schemas), with unknown fields refused as ``kubectl apply --validate=strict``
does; the HPA and the other manifests against Kubernetes' JSON schemas as shipped by
``kubernetes-validate``. Then what no schema knows: the trigger names this deployment's
broker, group and topic, and its activation threshold covers the exactly_once markers.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.test_deploy_files import K8S, REPO, k8s_documents, k8s_object

README = REPO / "README.md"
KEDA = K8S / "keda" / "scaledobject.yaml"
HPA = K8S / "hpa" / "hpa.yaml"
CRD = REPO / "tests" / "deploy" / "schemas" / "keda.sh_scaledobjects.yaml"
KUBERNETES = "1.37.0"  # the newest release kubernetes-validate ships schemas for
# Metadata keys of KEDA's kafka scaler (pkg/scalers/kafka_scaler.go, kafkaMetadata's
# `keda:"name=...,order=triggerMetadata..."` fields, same commit as the CRD copy).
KAFKA_TRIGGER_KEYS = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "partitionLimitation",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "fullMetadata",
    "version",
    "tls",
    "unsafeSsl",
    "sasl",
    "saslTokenProvider",
    "awsRegion",
}


def _one(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, f"{path.name}: expected one document"
    doc = docs[0]
    assert isinstance(doc, dict)
    return doc


def _strict(schema: Any) -> Any:
    """``schema`` with unknown fields refused wherever the CRD lists an object's fields."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            out.get("type") == "object"
            and "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def keda_validator() -> jsonschema.Draft7Validator:
    crd = _one(CRD)
    (version,) = [v for v in crd["spec"]["versions"] if v["storage"]]
    scaled = _one(KEDA)
    assert scaled["apiVersion"] == f"{crd['spec']['group']}/{version['name']}"
    assert scaled["kind"] == crd["spec"]["names"]["kind"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def _config() -> dict[str, str]:
    data = k8s_object("ConfigMap")["data"]
    assert isinstance(data, dict)
    return data


def test_scaled_object_fits_kedas_crd_schema(keda_validator: jsonschema.Draft7Validator) -> None:
    errors = sorted(keda_validator.iter_errors(_one(KEDA)), key=str)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("spec", "minReplicaCount"), "one"),  # a type
        (("spec", "pollingIntervall"), 15),  # a misspelt field
        (("spec", "triggers"), [{"metadata": {"topic": "records"}}]),  # a trigger with no type
        (("spec", "scaleTargetRef"), {"kind": "Deployment"}),  # no name
    ],
)
def test_the_schema_check_sees_a_mistake(
    keda_validator: jsonschema.Draft7Validator, where: tuple[str, ...], value: Any
) -> None:
    broken = copy.deepcopy(_one(KEDA))
    node = broken
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    assert list(keda_validator.iter_errors(broken))


def test_kafka_trigger_watches_the_workers_group_on_the_data_topic() -> None:
    scaled, config = _one(KEDA), _config()
    deployment = k8s_object("Deployment")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert set(meta) <= KAFKA_TRIGGER_KEYS, set(meta) - KAFKA_TRIGGER_KEYS
    assert all(isinstance(v, str) for v in meta.values()), "trigger metadata values are strings"
    assert meta["bootstrapServers"] == config["HOTSWAP_BROKER"].removeprefix("kafka://")
    assert meta["consumerGroup"] == config["HOTSWAP_APP_ID"]  # the data feed's group.id
    assert meta["topic"] == config["HOTSWAP_DATA_TOPIC"]
    partitions = int(config["HOTSWAP_DATA_PARTITIONS"])
    assert scaled["spec"]["maxReplicaCount"] == partitions
    assert int(meta["lagThreshold"]) >= 1
    assert meta["offsetResetPolicy"] == "earliest"  # as the workers' auto.offset.reset


def test_activation_threshold_covers_exactly_once_markers() -> None:
    """keda#5675: an idle exactly_once topic keeps a lag of 1 per partition (commit markers).

    KEDA activates (0 -> 1 replica) when the total lag is above activationLagThreshold,
    so markers alone (at most one per partition) must not reach it.
    """
    (trigger,) = _one(KEDA)["spec"]["triggers"]
    partitions = int(_config()["HOTSWAP_DATA_PARTITIONS"])
    assert int(trigger["metadata"]["activationLagThreshold"]) > partitions


def test_hpa_fallback_fits_kubernetes_schema_and_targets_the_workers() -> None:
    hpa = _one(HPA)
    kubernetes_validate.validate(hpa, KUBERNETES, strict=True)
    deployment = k8s_object("Deployment")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["maxReplicas"] == int(_config()["HOTSWAP_DATA_PARTITIONS"])
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["cpu"], "Utilization is of the CPU request"


def test_the_schema_check_refuses_a_bad_hpa() -> None:
    broken = copy.deepcopy(_one(HPA))
    broken["spec"]["maxReplicas"] = "4"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_every_other_manifest_fits_kubernetes_schema() -> None:
    checked = 0
    for docs in k8s_documents().values():
        for doc in docs:
            kubernetes_validate.validate(doc, KUBERNETES, strict=True)
            checked += 1
    assert checked >= 3


def test_only_one_autoscaler_is_applied_with_the_workers() -> None:
    """Each lives in its own folder, so `kubectl apply -f deploy/kubernetes/` applies neither."""
    top_level = {doc["kind"] for docs in k8s_documents().values() for doc in docs}
    assert not top_level & {"ScaledObject", "HorizontalPodAutoscaler"}
    for path in (KEDA, HPA):
        assert "never both" in path.read_text(), f"{path.name} must say to apply only one"
    docs = " ".join(p.read_text() for p in [README, *sorted((REPO / "docs").rglob("*.md"))])
    for said in ("deploy/kubernetes/keda/", "deploy/kubernetes/hpa/", "keda#5675"):
        assert said in docs, f"README.md or docs/ must mention {said}"
