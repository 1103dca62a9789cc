"""Ed25519 signing: a signature binds name, version and sha256; anything else is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core import errors
from service.core.registry import ModelRegistry
from service.core.signing import (
    Verifier,
    generate_keypair,
    load_private_key,
    load_public_key,
    sign_message,
)
from tests.models import MessageFactory


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    private = tmp_path / "publisher.key"
    return private, generate_keypair(private)


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
    verify_pem = Verifier(load_public_key(public.read_text()))
    verify_pem(signed)

    with pytest.raises(errors.SignatureInvalid, match="unsigned"):
        verify(make_message(version="2"))
    replayed = make_message(version="3").model_copy(update={"signature": signed.signature})
    with pytest.raises(errors.SignatureInvalid):
        verify(replayed)
    renamed = make_message(name="other", version="2").model_copy(
        update={"signature": signed.signature}
    )
    with pytest.raises(errors.SignatureInvalid):
        verify(renamed)
    other_private = tmp_path / "other.key"
    generate_keypair(other_private)
    forged = sign_message(make_message(version="2"), load_private_key(other_private))
    with pytest.raises(errors.SignatureInvalid):
        verify(forged)
    garbage = signed.model_copy(update={"signature": "%%%"})
    with pytest.raises(errors.SignatureInvalid):
        verify(garbage)


def test_registry_with_a_verifier_rejects_before_loading(
    keys: tuple[Path, Path], make_message: MessageFactory
) -> None:
    private, public = keys
    registry = ModelRegistry(verifier=Verifier(load_public_key(str(public))))
    with pytest.raises(errors.SignatureInvalid):
        registry.build(make_message(version="1"))
    model = registry.build(sign_message(make_message(version="1"), load_private_key(private)))
    assert model.version == "1"
