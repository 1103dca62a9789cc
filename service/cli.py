"""The ``hotswap`` command: worker, publish, produce, train, status, rollback, keygen, ...

Every subcommand builds the same :class:`Settings` from ``HOTSWAP_*``
variables, so one environment points all of them at one broker and topic set.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

import orjson

from service.core.settings import Settings

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _metadata(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    raw = Path(text[1:]).read_bytes() if text.startswith("@") else text.encode()
    value = orjson.loads(raw)
    if not isinstance(value, dict):
        raise SystemExit("--metadata must be a JSON object")
    return value


def _status(text: str) -> Any:
    """A spinner on stderr while slow work runs (silent when stderr is not a terminal)."""
    from rich.console import Console

    return Console(stderr=True).status(text)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from service.worker import run_worker

    run_worker(settings)
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from service.core.convert import ConversionError
    from service.tools.publish import PublishRequest, build_message, publish_message

    request = PublishRequest(
        path=Path(args.file),
        name=args.name,
        version=args.version,
        description=args.description,
        metadata=_metadata(args.metadata),
        store_dir=Path(args.by_reference) if args.by_reference else None,
        base_url=args.base_url,
    )
    try:
        with _status(f"converting and checking {request.path.name}"):
            message = build_message(request)
        if args.signing_key:
            from service.core.signing import load_private_key, sign_message

            message = sign_message(message, load_private_key(Path(args.signing_key)))
    except (ConversionError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with _status(f"publishing to {settings.model_topic}"):
        asyncio.run(publish_message(settings, message))
    where = message.location or f"inline, {len(message.data or '') * 3 // 4} bytes"
    print(
        f"published {message.name} version {message.version} "
        f"(sha256 {message.sha256[:12]}…, {where}) to {settings.model_topic}"
    )
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from service.tools.produce import produce_records

    with Progress(transient=True) as bar:
        task = bar.add_task(f"producing to {settings.data_topic}", total=args.count or None)
        sent = asyncio.run(
            produce_records(
                settings,
                count=args.count,
                rate=args.rate,
                model=args.model,
                named=args.named,
                id_prefix=args.id_prefix,
                progress=lambda n: bar.update(task, completed=n),
            )
        )
    print(f"sent {sent} records to {settings.data_topic}")
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from models.train import KINDS, train_model

    kinds = args.kind or list(KINDS)
    for kind in kinds:
        with _status(f"training {kind}"):
            path = train_model(kind, Path(args.out), seed=args.seed)
        print(f"trained {kind} -> {path}")
    return 0


def cmd_replay_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.replay import replay_dead_letters

    report = asyncio.run(
        replay_dead_letters(settings, reasons=set(args.reason or []) or None, dry_run=args.dry_run)
    )
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {report.replayed} dead letters from {settings.dead_letter_topic} to "
        f"{settings.data_topic} ({report.skipped} skipped by the reason filter)"
    )
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.rollback import RollbackError, previous_accepted, rollback

    try:
        url = args.url or f"http://localhost:{settings.http_port}"
        version = args.to or previous_accepted(url, args.name)
        asyncio.run(rollback(settings, args.name, version))
    except RollbackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{args.name}: version {version} is current again (workers swap to it now)")
    return 0


def cmd_keygen(settings: Settings, args: argparse.Namespace) -> int:
    from service.core.signing import generate_keypair

    private = Path(args.path)
    if private.exists() and not args.force:
        print(f"error: {private} exists (use --force to replace it)", file=sys.stderr)
        return 1
    public = generate_keypair(private)
    print(f"private key: {private} (keep it with the publisher)")
    print(f"public key:  {public} (give it to workers as HOTSWAP_VERIFY_KEY)")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    import httpx
    from rich.console import Console
    from rich.table import Table

    url = args.url or f"http://localhost:{settings.http_port}"
    try:
        models = httpx.get(f"{url}/models", timeout=5).json()
        details = [httpx.get(f"{url}/models/{m['name']}", timeout=5).json() for m in models]
        ready = httpx.get(f"{url}/ready", timeout=5).json()
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    table = Table(title=f"hotswap at {url} (ready: {ready.get('ready')})")
    for column in ("model", "version", "since", "records", "p99 ms", "description"):
        table.add_column(column)
    for d in details:
        table.add_row(
            d["name"],
            d["version"],
            d["since"],
            str(d["records_scored"]),
            str(d["latency_ms"]["p99"]),
            d["description"],
        )
    Console().print(table)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hotswap", description="Serve ML models from Kafka; hot-swap them while running."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("worker", help="run a scoring worker (HTTP API included)")

    p = sub.add_parser("publish", help="publish a model version (.onnx or sklearn joblib/pickle)")
    p.add_argument("file")
    p.add_argument("--name", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--description", default="")
    p.add_argument("--metadata", help="JSON object, or @file.json")
    p.add_argument("--by-reference", metavar="DIR", help="store the artifact in DIR, send a URL")
    p.add_argument("--base-url", help="with --by-reference: the http(s) URL where DIR is served")
    p.add_argument("--signing-key", metavar="KEY", help="Ed25519 private key from `keygen`")

    p = sub.add_parser("replay-dlq", help="send dead-lettered records back to the data topic")
    p.add_argument("--reason", action="append", help="only this reason code (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="count, send nothing")

    p = sub.add_parser("rollback", help="make an earlier version current again")
    p.add_argument("name")
    p.add_argument("--to", metavar="VERSION", help="default: the version accepted before")
    p.add_argument("--url", default=None, help="a worker to ask for history (with no --to)")

    p = sub.add_parser("keygen", help="make an Ed25519 key pair for signing models")
    p.add_argument("path", help="private key file; the public key is written to PATH.pub")
    p.add_argument("--force", action="store_true")

    p = sub.add_parser("produce", help="produce demo records from the bundled wine data")
    p.add_argument("--count", type=int, default=1000, help="records to send (0 = forever)")
    p.add_argument("--rate", type=float, default=0.0, help="records per second (0 = flat out)")
    p.add_argument("--model", default="wine")
    p.add_argument("--named", action="store_true", help="send features by name")
    p.add_argument("--id-prefix", default=None)

    p = sub.add_parser("train", help="train the example models")
    p.add_argument("--out", default="models/trained")
    p.add_argument("--kind", action="append", help="one of the example kinds (repeatable)")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("status", help="show a running worker's models")
    p.add_argument("--url", default=None)
    return parser


COMMANDS = {
    "worker": cmd_worker,
    "publish": cmd_publish,
    "produce": cmd_produce,
    "train": cmd_train,
    "status": cmd_status,
    "keygen": cmd_keygen,
    "replay-dlq": cmd_replay_dlq,
    "rollback": cmd_rollback,
}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = Settings()
    if args.command != "worker":
        logging.basicConfig(
            level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    return COMMANDS[args.command](settings, args)


if __name__ == "__main__":
    sys.exit(main())
