"""The ``hotswap`` command: parse the arguments, call :mod:`service.tools`, print the outcome.

Every subcommand builds the same :class:`Settings` from ``HOTSWAP_*``
variables, so one environment points all of them at one broker and topic set.
The work is in ``service/tools``; here are only the arguments, the output and
the error line: a failure prints ``error: ...`` (one line that says what to
do) on stderr and exits 1, a usage mistake exits 2; ``--verbose`` adds the
libraries' logs and the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

from service.core.settings import Settings
from service.tools.errors import ToolError, kafka_errors, one_line
from service.tools.usage import HELP, MAIN_EPILOG

__all__ = ["main"]

logger = logging.getLogger(__name__)

# Libraries that log their own work (httpx logs every request at INFO): quiet unless --verbose.
# asyncio reports clients left unclosed by a failed start: the error line says it all.
_CHATTY = ("httpx", "httpcore", "aiokafka", "kafka", "confluent_kafka", "skl2onnx", "asyncio")


def _spinner(text: str) -> Any:
    """A spinner on stderr while slow work runs (nothing when stderr is not a terminal)."""
    from rich.console import Console

    return Console(stderr=True).status(text)


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from service.worker import run_worker

    run_worker(settings)
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.publish import PublishRequest
    from service.tools.publishing import describe, parse_metadata, prepare, send

    request = PublishRequest(
        path=Path(args.file),
        name=args.name,
        version=args.version,
        description=args.description,
        metadata=parse_metadata(args.metadata),
        store_dir=Path(args.by_reference) if args.by_reference else None,
        base_url=args.base_url,
    )
    key = Path(args.signing_key) if args.signing_key else None
    with _spinner(f"converting and checking {request.path.name}"):
        message = prepare(request, key)
    with _spinner(f"publishing to {settings.model_topic}"):
        send(settings, message)
    print(describe(message, settings.model_topic))
    return 0


def cmd_produce(settings: Settings, args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from rich.console import Console
    from rich.progress import Progress

    from service.tools.produce import produce_records

    console = Console(stderr=True)
    bar = Progress(console=console, transient=True) if console.is_terminal else None
    progress = None
    if bar is not None:
        task = bar.add_task(f"producing to {settings.data_topic}", total=args.count or None)
        progress = functools.partial(bar.update, task)
    with bar or nullcontext(), kafka_errors(settings):
        sent = asyncio.run(
            produce_records(
                settings,
                count=args.count,
                rate=args.rate,
                model=args.model,
                named=args.named,
                id_prefix=args.id_prefix,
                progress=(lambda n: progress(completed=n)) if progress else None,
            )
        )
    print(f"sent {sent} records to {settings.data_topic}")
    return 0


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.train import train_examples

    for kind, path in train_examples(args.kind or [], Path(args.out), seed=args.seed):
        print(f"trained {kind} -> {path}")
    return 0


def cmd_replay_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.replay import replay_dead_letters

    reasons = set(args.reason or []) or None
    with kafka_errors(settings):
        report = asyncio.run(replay_dead_letters(settings, reasons=reasons, dry_run=args.dry_run))
    verb = "would replay" if args.dry_run else "replayed"
    print(
        f"{verb} {report.replayed} dead letters from {settings.dead_letter_topic} to "
        f"{settings.data_topic} ({report.skipped} skipped by the reason filter)"
    )
    return 0


def cmd_rollback(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.rollback import previous_version, rollback, worker_view

    serving, rejected = worker_view(args.url, args.name) if args.url else (None, set[str]())
    with kafka_errors(settings):
        version = args.to or asyncio.run(
            previous_version(settings, args.name, serving=serving, rejected=rejected)
        )
        asyncio.run(rollback(settings, args.name, version))
    print(f"{args.name}: version {version} is current again (workers swap to it now)")
    return 0


def cmd_keygen(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.keygen import make_keypair

    pair = make_keypair(Path(args.path), force=args.force)
    print(f"private key: {pair.private} (keep it with the publisher)")
    print(f"public key:  {pair.public} (give it to workers as HOTSWAP_VERIFY_KEY)")
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from service.tools.status import fetch_status, status_json, status_table

    status = fetch_status(args.url or f"http://localhost:{settings.http_port}")
    if args.json:
        print(status_json(status))
    else:
        Console().print(status_table(status))
    return 0


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


class _Parser(argparse.ArgumentParser):
    """Usage mistakes on one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _arguments(name: str, p: argparse.ArgumentParser) -> None:
    if name == "publish":
        p.add_argument("file", help="a .onnx file, or a joblib/pickle estimator to convert")
        p.add_argument("--name", required=True, help="model name (records name it in `model`)")
        p.add_argument("--version", required=True, help="version label, unique per name")
        p.add_argument("--description", default="")
        p.add_argument("--metadata", help="JSON object, or @file.json")
        p.add_argument(
            "--by-reference", metavar="DIR", help="store the artifact in DIR, send a URL"
        )
        p.add_argument(
            "--base-url", help="with --by-reference: the http(s) URL where DIR is served"
        )
        p.add_argument("--signing-key", metavar="KEY", help="Ed25519 private key from `keygen`")
    elif name == "replay-dlq":
        p.add_argument("--reason", action="append", help="only this reason code (repeatable)")
        p.add_argument("--dry-run", action="store_true", help="count, send nothing")
    elif name == "rollback":
        p.add_argument("name", help="the model name")
        p.add_argument(
            "--to", metavar="VERSION", help="default: the version made current before this one"
        )
        p.add_argument(
            "--url", help="a worker: take the version it serves as current, skip ones it rejected"
        )
    elif name == "keygen":
        p.add_argument("path", help="private key file; the public key is written to PATH.pub")
        p.add_argument("--force", action="store_true", help="replace existing key files")
    elif name == "produce":
        p.add_argument("--count", type=int, default=1000, help="records to send (0 = forever)")
        p.add_argument("--rate", type=float, default=0.0, help="records per second (0 = flat out)")
        p.add_argument("--model", default="wine", help="the model records name")
        p.add_argument("--named", action="store_true", help="send features by name")
        p.add_argument("--id-prefix", default=None, help="record ids are PREFIX-0, PREFIX-1, ...")
    elif name == "train":
        p.add_argument("--out", default="models/trained", help="directory for the models")
        p.add_argument("--kind", action="append", help="an example kind (repeatable; default all)")
        p.add_argument("--seed", type=int, default=0)
    elif name == "status":
        p.add_argument("--url", help="the worker (default: http://localhost:HOTSWAP_HTTP_PORT)")
        p.add_argument("--json", action="store_true", help="one JSON document instead of a table")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hotswap",
        description="Serve ML models from Kafka; hot-swap them while running.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _Parser(add_help=False)
    common.add_argument(
        "-v", "--verbose", action="store_true", help="show library logs and tracebacks"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        summary, example = HELP[name]
        command = sub.add_parser(
            name,
            help=summary,
            description=summary[0].upper() + summary[1:] + ".",
            epilog=f"example:\n  {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            parents=[] if name == "worker" else [common],
        )
        _arguments(name, command)
    return parser


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "HOTSWAP_" + "_".join(str(p) for p in first["loc"]).upper()
        raise ToolError(f"bad setting {where}: {first['msg']}; fix it in the environment") from None


def _quiet_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "worker":  # a service: it configures its own logging and reports
        return cmd_worker(_settings(), args)
    _quiet_logging(args.verbose)
    try:
        return COMMANDS[args.command](_settings(), args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.verbose:
            logger.exception("hotswap %s failed", args.command)
        hint = "" if isinstance(exc, ToolError) else " (run again with --verbose for details)"
        print(f"error: {one_line(exc)}{hint}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
