"""``hotswap train``: the example models (a thin wrapper over :mod:`models.train`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

from service.tools.errors import ToolError

__all__ = ["example_kinds", "train_examples"]

logger = logging.getLogger(__name__)


def example_kinds() -> list[str]:
    from models.train import KINDS

    return list(KINDS)


def train_examples(kinds: Sequence[str], out: Path, *, seed: int = 0) -> Iterator[tuple[str, Path]]:
    """Train each of ``kinds`` (all when empty) into ``out``; yield (kind, joblib path) as done.

    Unknown kinds are refused before any training starts.
    """
    from models.train import KINDS, train_model

    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ToolError(f"unknown kind {', '.join(unknown)}: choose from {', '.join(KINDS)}")
    if out.exists() and not out.is_dir():
        raise ToolError(f"{out} is a file: --out must be a directory")
    for kind in kinds or list(KINDS):
        yield kind, train_model(kind, out, seed=seed)
