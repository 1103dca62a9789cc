"""Signed models on a real broker: a change to any field in transit is rejected.

The signature covers the whole message (README: Signed models), so a tampered
copy of a correctly signed version, whatever field was changed, is refused
with ``signature_invalid`` while the previous version keeps serving, and the
untouched message is then accepted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from scripts.harness import WorkerProcess, send_raw, wait_for
from service.core.messages import encode_model_message
from service.core.settings import Settings
from service.core.signing import generate_keypair, load_private_key, sign_message
from service.tools.publish import PublishRequest, build_message, publish_message

pytestmark = pytest.mark.integration


def _tamper(doc: dict[str, Any], field: str) -> dict[str, Any]:
    changed: dict[str, Any] = orjson.loads(orjson.dumps(doc))
    meta = changed["metadata"]
    if field == "feature_names":  # swap two inputs: records would be fed in the wrong order
        names = meta["feature_names"]
        names[0], names[1] = names[1], names[0]
    elif field == "classes":
        meta["classes"] = list(reversed(meta["classes"]))
    elif field == "schema_change":
        meta["schema_change"] = True
    elif field == "description":
        changed["description"] = "approved by security"
    elif field == "version":
        changed["version"] = "3"
    elif field == "published_at":
        changed["published_at"] = "2020-01-01T00:00:00Z"
    return changed


FIELDS = ["feature_names", "classes", "schema_change", "description", "version", "published_at"]


def test_a_signed_model_changed_in_transit_is_rejected_whatever_the_field(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
    tmp_path: Path,
) -> None:
    key_path = tmp_path / "publisher.key"
    public = generate_keypair(key_path)
    key = load_private_key(key_path)
    settings = make_settings(verify_key=str(public))
    v1 = sign_message(build_message(PublishRequest(trained["wine-logreg"], "wine", "1")), key)
    asyncio.run(publish_message(settings, v1))
    worker = workers(settings)
    worker.wait_ready()
    assert worker.model_version("wine") == "1"

    v2 = sign_message(build_message(PublishRequest(trained["wine-forest"], "wine", "2")), key)
    signed = orjson.loads(encode_model_message(v2))
    tampered = [_tamper(signed, field) for field in FIELDS]
    assert all(t != signed for t in tampered)
    started = time.monotonic()
    send_raw(settings, settings.model_topic, [(b"wine", orjson.dumps(t)) for t in tampered])

    def rejected() -> list[dict[str, Any]] | None:
        history = worker.get("/models/wine/history").json()
        found = [h for h in history if h["status"] == "rejected"]
        return found if len(found) >= len(FIELDS) else None

    entries = wait_for(rejected, 30, "every tampered copy rejected")
    print(
        f"\n{len(FIELDS)} tampered copies rejected {time.monotonic() - started:.2f}s after sending"
    )
    assert [h["reason"] for h in entries] == ["signature_invalid"] * len(FIELDS)
    assert worker.model_version("wine") == "1"

    send_raw(settings, settings.model_topic, [(b"wine", orjson.dumps(signed))])
    wait_for(lambda: worker.model_version("wine") == "2", 60, "the untouched v2")
