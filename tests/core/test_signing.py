"""Ed25519 signing: the signature covers the whole message; any change to any field is refused."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from service.core import errors
from service.core.messages import ModelMessage, encode_model_message
from service.core.registry import ModelRegistry
from service.core.signing import (
    Verifier,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_message,
    signed_payload,
)
from tests.models import MessageFactory

KEY = Ed25519PrivateKey.generate()
VERIFY = Verifier(KEY.public_key())


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "publisher.key"
    return private, generate_keypair(private)


def _wire(message: ModelMessage) -> ModelMessage:
    """What a worker parses after ``message`` crossed the model topic."""
    return ModelMessage.model_validate_json(encode_model_message(message))


# --- random whole messages ------------------------------------------------------------

texts = st.text(max_size=20)
names = st.text(min_size=1, max_size=20)
labels = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+:@~-]{0,19}", fullmatch=True)  # VERSION_PATTERN
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
metadatas = st.dictionaries(texts, json_values, max_size=5)
digests = st.text("0123456789abcdef", min_size=64, max_size=64)
times = st.none() | st.datetimes(timezones=st.just(UTC))
artifacts = st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode())
locations = st.sampled_from(["file:///srv/models/", "https://models.example.com/"]).flatmap(
    lambda prefix: texts.map(lambda rest: prefix + rest)
)


@st.composite
def messages(draw: st.DrawFn) -> ModelMessage:
    inline = draw(st.booleans())
    return ModelMessage(
        name=draw(names),
        version=draw(labels),
        format=draw(st.sampled_from(["onnx", "onnx", "pmml"])),
        description=draw(texts),
        data=draw(artifacts) if inline else None,
        location=None if inline else draw(locations),
        sha256=draw(digests),
        metadata=draw(metadatas),
        published_at=draw(times),
    )


#: One way to change each signed field to a different, still valid, value.
MUTATIONS: dict[str, st.SearchStrategy[Any]] = {
    "name": names,
    "version": labels,
    "format": st.sampled_from(["onnx", "pmml", "ONNX"]),
    "description": texts,
    "sha256": digests,
    "metadata": metadatas,
    "published_at": times,
    "source": st.booleans(),  # data <-> location, or a new value of the one present
}


def _mutate(doc: dict[str, Any], field: str, value: Any, data: st.DataObject) -> None:
    if field != "source":
        if value is None:
            doc.pop(field, None)
        else:
            doc[field] = value.isoformat() if isinstance(value, datetime) else value
        return
    had_data = "data" in doc
    doc.pop("data", None)
    doc.pop("location", None)
    if value:  # switch from inline to by reference, or back
        doc["location" if had_data else "data"] = data.draw(locations if had_data else artifacts)
    else:
        doc["data" if had_data else "location"] = data.draw(artifacts if had_data else locations)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_a_signed_message_verifies_after_crossing_the_topic(message: ModelMessage) -> None:
    signed = sign_message(message, KEY)
    VERIFY(_wire(signed))
    VERIFY(_wire(_wire(signed)))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(messages(), st.sampled_from(sorted(MUTATIONS)), st.data())
def test_changing_any_one_field_in_transit_is_rejected(
    message: ModelMessage, field: str, data: st.DataObject
) -> None:
    signed = sign_message(message, KEY)
    doc = orjson.loads(encode_model_message(signed))
    original = dict(doc)
    _mutate(doc, field, data.draw(MUTATIONS[field]), data)
    tampered = ModelMessage.model_validate_json(orjson.dumps(doc))
    assume(tampered.model_dump() != _wire(signed).model_dump())  # the draw changed something
    assert doc != original
    with pytest.raises(errors.SignatureInvalid) as info:
        VERIFY(tampered)
    assert info.value.reason == "signature_invalid"
    assert "every field" in info.value.detail


# --- what exactly is signed ------------------------------------------------------------


def test_the_signed_payload_is_the_domain_tag_and_canonical_json() -> None:
    message = ModelMessage(
        name="wine",
        version="2",
        description="vin rouge é",
        location="https://m.example/wine-2.onnx",
        sha256="AB" * 32,
        metadata={"feature_names": ["b", "a"], "z": {"y": 1, "x": [1.5, None]}},
        published_at=datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        signature="ignored",
    )
    assert signed_payload(message) == (
        b"hotswap-model-v2\n"
        b'{"description":"vin rouge \xc3\xa9","format":"onnx",'
        b'"location":"https://m.example/wine-2.onnx",'
        b'"metadata":{"feature_names":["b","a"],"z":{"x":[1.5,null],"y":1}},'
        b'"name":"wine","published_at":"2026-01-02T03:04:05.678000Z",'
        b'"sha256":"' + b"AB" * 32 + b'","version":"2"}'
    )


def test_a_signature_of_the_old_payload_is_refused(make_message: MessageFactory) -> None:
    message = make_message(version="2")
    old_payload = b"\n".join([b"hotswap-model-v1", b"wine", b"2", message.sha256.encode()])
    old = message.model_copy(update={"signature": base64.b64encode(KEY.sign(old_payload)).decode()})
    with pytest.raises(errors.SignatureInvalid):
        VERIFY(old)


def test_fields_the_worker_does_not_read_are_dropped_not_signed(
    make_message: MessageFactory,
) -> None:
    signed = sign_message(make_message(), KEY)
    doc = orjson.loads(encode_model_message(signed))
    doc["dataType"] = "never read by the worker"
    VERIFY(ModelMessage.model_validate_json(orjson.dumps(doc)))


def test_a_message_without_a_canonical_form_is_not_signed_nor_accepted(
    make_message: MessageFactory,
) -> None:
    message = make_message(metadata={"x": float("nan")})
    with pytest.raises(ValueError, match="JSON compliant"):
        sign_message(message, KEY)
    forged = message.model_copy(update={"signature": sign_message(make_message(), KEY).signature})
    with pytest.raises(errors.SignatureInvalid):
        VERIFY(forged)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"1e400"])
def test_null_turned_into_nan_in_transit_is_rejected(literal: bytes) -> None:
    message = ModelMessage(name="m", version="1", location="https://x/m", sha256="a" * 64)
    signed = sign_message(message.model_copy(update={"metadata": {"x": None}}), KEY)
    wire = encode_model_message(signed)
    assert b'"x":null' in wire
    tampered = ModelMessage.model_validate_json(wire.replace(b'"x":null', b'"x":' + literal))
    with pytest.raises(errors.SignatureInvalid):
        VERIFY(tampered)


# --- keys, and the worker side -------------------------------------------------------------


def test_keygen_writes_a_private_key_only_its_owner_reads(keys: tuple[Path, Path]) -> None:
    private, public = keys
    assert private.stat().st_mode & 0o077 == 0
    assert b"PUBLIC KEY" in public.read_bytes()


def test_signed_model_is_accepted_and_anything_else_refused(
    keys: tuple[Path, Path], make_message: MessageFactory, tmp_path: Path
) -> None:
    private, public = keys
    verify = Verifier(load_public_key(str(public)))
    signed = sign_message(make_message(version="2"), load_private_key(private))
    verify(signed)  # no exception
    Verifier(load_public_key(public.read_text()))(signed)

    with pytest.raises(errors.SignatureInvalid, match="unsigned"):
        verify(make_message(version="2"))
    for changed in (
        make_message(version="3"),
        make_message(name="other", version="2"),
        make_message(version="2", metadata={"feature_names": ["a"] * 13}),
    ):
        with pytest.raises(errors.SignatureInvalid):
            verify(changed.model_copy(update={"signature": signed.signature}))
    other_private = tmp_path / "other.key"
    generate_keypair(other_private)
    forged = sign_message(make_message(version="2"), load_private_key(other_private))
    with pytest.raises(errors.SignatureInvalid):
        verify(forged)
    with pytest.raises(errors.SignatureInvalid):
        verify(signed.model_copy(update={"signature": "%%%"}))


def test_registry_with_a_verifier_rejects_before_loading(
    keys: tuple[Path, Path], make_message: MessageFactory
) -> None:
    private, public = keys
    registry = ModelRegistry(verifier=Verifier(load_public_key(str(public))))
    with pytest.raises(errors.SignatureInvalid):
        registry.build(make_message(version="1"))
    signed = sign_message(make_message(version="1"), load_private_key(private))
    retitled = signed.model_copy(update={"description": "tampered"})
    with pytest.raises(errors.SignatureInvalid):
        registry.build(retitled)
    model = registry.build(signed)
    assert model.version == "1"


# --- heartbeats ------------------------------------------------------------------------


def test_a_signed_heartbeat_verifies_and_any_change_or_other_key_is_refused(
    tmp_path: Path,
) -> None:
    from service.core.signing import StatusVerifier, sign_status
    from service.core.status_messages import WorkerStatus, parse_worker_status

    key_path = tmp_path / "fleet.key"
    verify = StatusVerifier(load_public_key(str(generate_keypair(key_path))))
    key = load_private_key(key_path)
    status = WorkerStatus(id="w1", host="h", http="http://h:1", group="g", lag=3, ready=True)
    signed = sign_status(status, key)
    verify(parse_worker_status(signed.model_dump_json().encode()))  # as it crosses the topic
    with pytest.raises(errors.StatusUnsigned, match="unsigned"):
        verify(status)
    tampered = signed.model_copy(update={"lag": 0})
    with pytest.raises(errors.StatusUnsigned, match="does not match"):
        verify(tampered)
    other = tmp_path / "other.key"
    generate_keypair(other)
    with pytest.raises(errors.StatusUnsigned, match="does not match"):
        verify(sign_status(status, load_private_key(other)))
