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
from typing import NoReturn

from service.core.settings import Settings
from service.tools.errors import ToolError, kafka_errors, one_line
from service.tools.publish_command import spinner as _spinner
from service.tools.usage import HELP, MAIN_EPILOG, add_arguments

__all__ = ["main"]

logger = logging.getLogger(__name__)

# Libraries that log their own work (httpx logs every request at INFO): quiet unless --verbose.
# asyncio reports clients left unclosed by a failed start: the error line says it all.
_CHATTY = (
    "httpx", "httpcore", "aiokafka", "kafka", "confluent_kafka", "librdkafka", "skl2onnx", "asyncio"
)  # fmt: skip


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from service.core.errors import RoutesInvalid
    from service.core.routes import load_routes
    from service.worker import run_worker

    try:  # a bad routes file stops the worker with one line naming the field
        load_routes(settings.routes, settings.written_topics) if settings.routes else None
    except RoutesInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    run_worker(settings)
    return 0


def cmd_publish(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.publish_command import publish_command

    if not args.file.startswith("models:/") and not (args.name and args.version):
        _parser().error("publish FILE needs --name and --version (a models:/ URI brings both)")
    return publish_command(settings, args)


def cmd_follow(settings: Settings, args: argparse.Namespace) -> int:
    from service.tools.follow import follow_command

    return follow_command(settings, args)


def cmd_end_rollout(settings: Settings, args: argparse.Namespace) -> int:
    """``promote`` or ``abort``."""
    from service.tools.rollouts import describe_step, end_rollout, load_signing_key

    promote = args.command == "promote"
    key = load_signing_key(Path(args.signing_key) if args.signing_key else None)
    control = end_rollout(
        settings, args.name, "promoted" if promote else "aborted", args.why, key=key
    )
    print(describe_step(control, settings))
    return 0


def cmd_backtest(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from service.tools.backtest import backtest, parse_time, report_json, report_table
    from service.tools.publish import PublishRequest
    from service.tools.publishing import parse_metadata, prepare

    since = parse_time(args.from_time)
    metadata = parse_metadata(args.metadata)
    request = PublishRequest(Path(args.file), args.name, args.version, metadata=metadata)
    with _spinner(f"converting and checking {request.path.name}"):
        candidate = prepare(request)
    with _spinner(f"scoring up to {args.count} records of {settings.data_topic}"):
        report = backtest(
            settings, candidate, count=args.count, from_offset=args.from_offset, from_time=since
        )
    if args.json:
        print(report_json(report))
    else:
        Console().print(report_table(report))
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
                labels=args.labels,
                progress=(lambda n: progress(completed=n)) if progress else None,
            )
        )
    print(f"sent {sent} records to {settings.data_topic}")
    return 0


def cmd_topics(settings: Settings, args: argparse.Namespace) -> int:
    """Create every topic (the roles of a broker with ACLs have no CREATE right)."""
    from service.kafka.clients import ensure_topics
    from service.kafka.join_store import create_join_topics

    with kafka_errors(settings):
        asyncio.run(ensure_topics(settings))
        create_join_topics(settings)  # the label join's changelog, sized from the settings
    print(f"topics ready on {settings.broker}")
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

    from service.tools import status as tool

    url = args.url or f"http://localhost:{settings.http_port}"
    if args.fleet:
        fleet = tool.fetch_fleet(url)
        table, text = tool.fleet_table(fleet), tool.fleet_json(fleet)
    else:
        status = tool.fetch_status(url)
        table, text = tool.status_table(status), tool.status_json(status)
    if args.json:
        print(text)
    else:
        Console().print(table)
    return 0


def cmd_quality(settings: Settings, args: argparse.Namespace) -> int:
    from rich.console import Console

    from service.tools import quality as tool

    url = args.url or f"http://localhost:{settings.http_port}"
    view = tool.fetch_view(url, args.name, "drift" if args.drift else "quality")
    if args.json:
        print(tool.view_json(view))
    else:
        Console().print(tool.drift_table(view) if args.drift else tool.quality_table(view))
    return 0


COMMANDS = {
    "worker": cmd_worker,
    "publish": cmd_publish,
    "follow": cmd_follow,
    "produce": cmd_produce,
    "topics": cmd_topics,
    "train": cmd_train,
    "status": cmd_status,
    "keygen": cmd_keygen,
    "replay-dlq": cmd_replay_dlq,
    "rollback": cmd_rollback,
    "promote": cmd_end_rollout,
    "abort": cmd_end_rollout,
    "backtest": cmd_backtest,
    "quality": cmd_quality,
}


class _Parser(argparse.ArgumentParser):
    """Usage mistakes on one line, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


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
        add_arguments(name, command)
    return parser


def _settings() -> Settings:
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        if not first["loc"]:  # a check across settings: its message names them
            raise ToolError(f"bad settings: {first['msg']}; fix them in the environment") from None
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
        try:
            settings = _settings()
        except ToolError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return cmd_worker(settings, args)
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
