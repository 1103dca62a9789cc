"""Ed25519 signatures over the whole model message.

What is signed is :func:`signed_payload`: the domain tag ``hotswap-model-v2``
and a newline, then the message's canonical JSON: every field except
``signature`` (name, version, format, description, data or location, sha256,
metadata, published_at; fields that are null are left out), keys sorted at
every level, no whitespace, UTF-8, non-ASCII characters as they are. Any
change to any field in transit (a feature name in the metadata, the
description, the location) voids the signature, and the sha256 check then
binds it to the bytes. Keys are PEM files made by ``hotswap keygen``; all
cryptography is the ``cryptography`` package's.

Control messages (rollout steps) are signed the same way with the same keys,
under their own tag ``hotswap-control-v1`` (so a signature of one kind can never
pass as the other): :func:`sign_control`, :class:`ControlVerifier`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from service.core import errors
from service.core.messages import ModelMessage
from service.core.rollout_messages import ControlMessage
from service.core.status_messages import WorkerStatus

if TYPE_CHECKING:  # cryptography loads with the first key: unsigned setups never need it
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

__all__ = [
    "CONTROL_DOMAIN",
    "DOMAIN",
    "STATUS_DOMAIN",
    "ControlVerifier",
    "StatusVerifier",
    "Verifier",
    "canonical_json",
    "control_payload",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "sign_control",
    "sign_message",
    "sign_status",
    "signed_payload",
    "status_payload",
]

logger = logging.getLogger(__name__)


DOMAIN = b"hotswap-model-v2\n"
CONTROL_DOMAIN = b"hotswap-control-v1\n"
STATUS_DOMAIN = b"hotswap-status-v1\n"


def canonical_json(message: ModelMessage) -> bytes:
    """The message minus ``signature`` (and null fields): sorted keys, no spaces, UTF-8.

    Values are taken as parsed (pydantic's JSON mode would turn NaN into null,
    so two different messages would sign alike); ``published_at`` is written
    as pydantic writes it. Raises ValueError for what has no canonical form
    (NaN, infinities, lone surrogates).
    """
    doc = message.model_dump(exclude={"signature"})
    if message.published_at is not None:
        doc.update(message.model_dump(mode="json", include={"published_at"}))
    doc = {key: value for key, value in doc.items() if value is not None}
    text = json.dumps(
        doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")  # UnicodeEncodeError (a ValueError) on a lone surrogate


def signed_payload(message: ModelMessage) -> bytes:
    """The exact bytes that are signed: the domain tag, then the canonical JSON."""
    return DOMAIN + canonical_json(message)


def generate_keypair(private_path: Path) -> Path:
    """Write a new private key (PEM, mode 600) and its public key beside it (``.pub``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    private_path.touch(mode=0o600)
    private_path.write_bytes(private_pem)
    public_path = private_path.with_name(private_path.name + ".pub")
    public_path.write_bytes(public_pem)
    return public_path


def load_private_key(path: Path) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(text_or_path: str) -> Ed25519PublicKey:
    """A public key from PEM text or from the path of a PEM file."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    pem = text_or_path.encode() if "BEGIN" in text_or_path else Path(text_or_path).read_bytes()
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the verify key is not an Ed25519 public key")
    return key


def sign_message(message: ModelMessage, key: Ed25519PrivateKey) -> ModelMessage:
    """A copy of ``message`` carrying a base64 signature of its payload."""
    signature = key.sign(signed_payload(message))
    return message.model_copy(update={"signature": base64.b64encode(signature).decode()})


class Verifier:
    """Rejects model messages that are unsigned or not signed by the configured key."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    def __call__(self, message: ModelMessage) -> None:
        if not message.signature:
            raise errors.SignatureInvalid("model is unsigned and HOTSWAP_VERIFY_KEY is set")
        if not _matches(self._key, message.signature, lambda: signed_payload(message)):
            raise errors.SignatureInvalid(
                f"signature of {message.name} {message.version} does not match the message "
                "(it covers every field but `signature`: one was changed, or another key signed)"
            )


def _jsonable(value: object) -> object:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)  # datetimes as pydantic writes them


def control_payload(control: ControlMessage) -> bytes:
    """The bytes a control message's signature covers: its tag, then its canonical JSON.

    Every field but ``signature`` (the candidate whole, its own signature
    included), null fields left out at the top level, keys sorted, no spaces.
    """
    doc = control.model_dump(exclude={"signature"}, exclude_none=True)
    text = json.dumps(
        doc,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_jsonable,
    )
    return CONTROL_DOMAIN + text.encode("utf-8")


def sign_control(control: ControlMessage, key: Ed25519PrivateKey) -> ControlMessage:
    """A copy of ``control`` carrying a base64 signature of :func:`control_payload`."""
    signature = key.sign(control_payload(control))
    return control.model_copy(update={"signature": base64.b64encode(signature).decode()})


def _matches(key: Ed25519PublicKey, signature: str, payload: Callable[[], bytes]) -> bool:
    """Whether base64 ``signature`` is ``key``'s over ``payload()``; a malformed signature,
    or a message with no canonical form (a NaN where JSON has none), does not match."""
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(base64.b64decode(signature, validate=True), payload())
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


class ControlVerifier:
    """Refuses control messages that are unsigned or not signed by the configured key."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    def __call__(self, control: ControlMessage) -> None:
        if not control.signature:
            raise errors.SignatureInvalid(
                "control message is unsigned and HOTSWAP_VERIFY_KEY is set"
            )
        if not _matches(self._key, control.signature, lambda: control_payload(control)):
            raise errors.SignatureInvalid(
                f"signature of the {control.stage} step for {control.name} does not match "
                "(a field was changed, or another key signed)"
            )


def status_payload(status: WorkerStatus) -> bytes:
    """The bytes a heartbeat's signature covers: its tag, then its canonical JSON (every
    field but ``signature``, as sent: keys sorted, no spaces)."""
    doc = status.model_dump(mode="json", exclude={"signature"})
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return STATUS_DOMAIN + text.encode("utf-8")


def sign_status(status: WorkerStatus, key: Ed25519PrivateKey) -> WorkerStatus:
    """A copy of ``status`` carrying a base64 signature of :func:`status_payload`."""
    signature = key.sign(status_payload(status))
    return status.model_copy(update={"signature": base64.b64encode(signature).decode()})


class StatusVerifier:
    """Refuses heartbeats that are unsigned or not signed by the configured key."""

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key

    def __call__(self, status: WorkerStatus) -> None:
        if not status.signature:
            raise errors.StatusUnsigned("heartbeat is unsigned and HOTSWAP_VERIFY_KEY is set")
        if not _matches(self._key, status.signature, lambda: status_payload(status)):
            raise errors.StatusUnsigned(
                f"signature of {status.id[:200]!r}'s heartbeat does not match "
                "(a field was changed, or another key signed)"
            )
