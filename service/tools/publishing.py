"""``hotswap publish``, step by step: check the inputs, build and sign the message, send it.

The work itself (conversion, the message, the archive) is in
:mod:`service.tools.publish`; this module turns the command's arguments into
that call and every failure into a :class:`~service.tools.errors.ToolError`
that says what to fix, before anything is sent.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import orjson

from service.core.messages import NAME_PATTERN, VERSION_PATTERN, ModelMessage
from service.core.settings import Settings
from service.tools.errors import ToolError, kafka_errors, one_line, require_file
from service.tools.publish import PublishRequest, build_message, publish_message

__all__ = ["describe", "parse_metadata", "prepare", "send", "store_of"]

logger = logging.getLogger(__name__)


def parse_metadata(text: str | None) -> dict[str, Any]:
    """``--metadata``: a JSON object given inline or as ``@file.json``."""
    if not text:
        return {}
    if text.startswith("@"):
        raw = require_file(Path(text[1:]), "metadata file").read_bytes()
    else:
        raw = text.encode()
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ToolError(
            f"--metadata is not valid JSON ({one_line(exc)}): give an object such as "
            """'{"owner": "ml-team"}' or @file.json"""
        ) from None
    if not isinstance(value, dict):
        raise ToolError(f"--metadata must be a JSON object, not {type(value).__name__}")
    return value


def store_of(by_reference: str | None) -> tuple[Path | None, str | None]:
    """``--by-reference``: (a directory, None) or (None, an ``s3://`` URL), or neither."""
    if by_reference and by_reference.startswith("s3://"):
        return None, by_reference
    return (Path(by_reference) if by_reference else None), None


def prepare(request: PublishRequest, signing_key: Path | None = None) -> ModelMessage:
    """The model message for ``request``, signed with ``signing_key`` when given."""
    if not (request.name and request.version):
        raise ToolError("publish FILE needs --name and --version (a models:/ URI brings both)")
    if not re.fullmatch(NAME_PATTERN, request.name):
        raise ToolError(
            f"name {request.name[:80]!r} cannot be a URL path segment: no /, no control "
            "character, not . or .. (at most 200 characters)"
        )
    if not re.fullmatch(VERSION_PATTERN, request.version):
        raise ToolError(
            f"version {request.version[:80]!r} is not a valid label: use letters, digits and "
            ". _ + : @ ~ - (at most 200, the first a letter or digit), e.g. 2 or 2025-01-31.1"
        )
    require_file(request.path, "model file")
    if request.base_url and request.store_dir is None:
        raise ToolError("--base-url needs --by-reference DIR (the directory it serves)")
    if request.store_s3 is not None and not request.store_s3.removeprefix("s3://").strip("/"):
        raise ToolError("--by-reference s3:// needs a bucket: s3://BUCKET or s3://BUCKET/PREFIX")
    if signing_key is not None:
        require_file(signing_key, "signing key")
    from service.core.convert import ConversionError

    try:
        message = build_message(request)
    except ConversionError as exc:  # says what to do ("install hotswap[xgboost] ...")
        raise ToolError(
            f"cannot publish {request.path.name}: {one_line(exc, named=False)}"
        ) from None
    except (ValueError, TypeError, OSError, ImportError) as exc:
        raise ToolError(f"cannot publish {request.path.name}: {one_line(exc)}") from None
    if signing_key is None:
        return message
    from service.core.signing import load_private_key, sign_message

    try:
        key = load_private_key(signing_key)
    except (ValueError, TypeError) as exc:
        raise ToolError(
            f"{signing_key} is not an Ed25519 private key ({one_line(exc)}): "
            "make one with `hotswap keygen PATH`"
        ) from None
    return sign_message(message, key)


def send(settings: Settings, message: ModelMessage) -> None:
    """Archive ``message`` and make it current on the model topic."""
    with kafka_errors(settings):
        asyncio.run(publish_message(settings, message))


def describe(message: ModelMessage, topic: str) -> str:
    """One line for the user: what was published, where."""
    where = message.location or f"inline, {len(message.data or '') * 3 // 4:,} bytes"
    return (
        f"published {message.name} version {message.version} "
        f"(sha256 {message.sha256[:12]}…, {where}) to {topic}"
    )
