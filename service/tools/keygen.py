"""``hotswap keygen``: an Ed25519 key pair for signing models (see :mod:`service.core.signing`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from service.tools.errors import ToolError

__all__ = ["KeyPair", "make_keypair"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyPair:
    private: Path  # stays with the publisher (mode 600)
    public: Path  # given to workers as HOTSWAP_VERIFY_KEY


def make_keypair(private: Path, *, force: bool = False) -> KeyPair:
    """Write a new key pair at ``private`` and ``private.pub``; never overwrite unless ``force``."""
    from service.core.signing import generate_keypair

    public = private.with_name(private.name + ".pub")
    if private.is_dir():
        raise ToolError(f"{private} is a directory: give the path of the private key file")
    for path in (private, public):
        if path.exists() and not force:
            raise ToolError(f"{path} exists: pass --force to replace it, or choose another path")
    try:
        written = generate_keypair(private)
    except PermissionError:
        raise ToolError(f"cannot write {private}: permission denied; choose another path") from None
    logger.info("wrote key pair %s, %s", private, written)
    return KeyPair(private, written)
