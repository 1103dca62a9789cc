"""``hotswap publish``: a file or an MLflow version, converted, checked, then published or
rolled out (``--shadow``/``--canary``), signed when a key is given.

Called by :mod:`service.cli` once the arguments are parsed; kept apart so the command line
stays a table of commands and this, the longest of them, reads in one place.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from service.core.settings import Settings

__all__ = ["publish_command", "spinner"]

logger = logging.getLogger(__name__)


def spinner(text: str) -> Any:
    """A spinner on stderr while slow work runs (nothing when stderr is not a terminal)."""
    from rich.console import Console

    return Console(stderr=True).status(text)


def publish_command(settings: Settings, args: argparse.Namespace) -> int:
    """Publish ``args.file`` (or roll it out); the caller checked --name/--version."""
    from service.tools.publish import PublishRequest
    from service.tools.publishing import parse_metadata, prepare, store_of

    store, key = store_of(args.by_reference), Path(args.signing_key) if args.signing_key else None
    if args.file.startswith("models:/"):  # an MLflow registry version: its own name, version
        from service.tools.mlflow_source import publish_request

        with spinner(f"fetching, converting and checking {args.file}"):
            message = publish_request(args, parse_metadata(args.metadata), store, key)
        return _publish_or_roll_out(settings, args, message)
    request = PublishRequest(
        path=Path(args.file),
        name=args.name or "",
        version=args.version or "",
        description=args.description,
        metadata=parse_metadata(args.metadata),
        store_dir=store[0],
        base_url=args.base_url,
        store_s3=store[1],
        reference=Path(args.reference) if args.reference else None,
    )
    with spinner(f"converting and checking {request.path.name}"):
        message = prepare(request, key)
    return _publish_or_roll_out(settings, args, message)


def _publish_or_roll_out(settings: Settings, args: argparse.Namespace, message: Any) -> int:
    from service.tools.publishing import describe, send
    from service.tools.rollouts import policy_of

    if args.shadow or args.canary is not None:
        return _start_rollout(settings, args, message)
    policy_of(args.promote_after, args.min_agreement, args.max_p99_ms, args.max_error_rate, False,
              args.min_labels, args.max_quality_loss)  # fmt: skip
    with spinner(f"publishing to {settings.model_topic}"):
        send(settings, message)
    print(describe(message, settings.model_topic))
    return 0


def _start_rollout(settings: Settings, args: argparse.Namespace, message: Any) -> int:
    from service.tools.rollouts import describe_step, load_signing_key, policy_of, start_rollout

    policy = policy_of(
        args.promote_after, args.min_agreement, args.max_p99_ms, args.max_error_rate, True,
        args.min_labels, args.max_quality_loss,
    )  # fmt: skip
    key = load_signing_key(Path(args.signing_key) if args.signing_key else None)
    with spinner(f"starting the rollout on {settings.control_topic}"):
        control = start_rollout(
            settings, message, canary=args.canary, policy=policy, why=args.why, key=key
        )
    print(describe_step(control, settings))
    return 0
