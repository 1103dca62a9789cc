"""``hotswap follow models:/NAME@ALIAS``: publish each version an MLflow alias points at.

A long-running bridge. It registers an MLflow webhook for
``model_version_alias.created`` with a fresh secret and receives it on a small
HTTP server (``--listen``); a delivery whose ``X-MLflow-Signature`` (HMAC-SHA256
of ``delivery-id.timestamp.body``) does not verify, or whose timestamp is over
5 minutes off, is refused with 401. A delivery only wakes the bridge: it then
asks MLflow where the alias points, so deliveries out of order, twice or lost
change nothing; ``--resync`` seconds without one it asks anyway. When no
webhook can be registered (an MLflow server without webhooks, or one refusing
the URL) it polls every ``--poll-interval`` seconds instead, and says so.

Idempotent across restarts: what is published is read from Kafka, never kept
locally. A version the model topic already holds as current (or, with
``--shadow``/``--canary``, the candidate of the rollout in progress) is not
published again; one found in the archive (the alias moved back) is made
current from there, as ``hotswap rollback`` does, without converting again.
One line on stdout per publish; an unreachable MLflow or broker is one line on
stderr, retried with backoff until it answers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from service.core.messages import ModelMessage
from service.core.rollout_messages import ACTIVE_STAGES
from service.core.settings import Settings
from service.kafka.control import current_rollout, newest_model
from service.tools.errors import ToolError, kafka_errors, one_line
from service.tools.mlflow_source import (
    MlflowVersion,
    mlflow_errors,
    parse_uri,
    prepare_version,
    resolve,
)
from service.tools.publishing import describe, send, store_of
from service.tools.rollback import archived_versions, published_version, rollback

__all__ = ["Follower", "follow_command", "verify_signature"]

logger = logging.getLogger(__name__)

EVENT: Final = "model_version_alias.created"
PATH = "/mlflow-webhook"
MAX_SKEW = 300  # seconds a delivery's timestamp may be off
MAX_BODY = 1 << 20


def verify_signature(secret: str, headers: Any, body: bytes, now: float | None = None) -> bool:
    """MLflow's ``X-MLflow-Signature: v1,<base64 HMAC-SHA256>`` over ``id.timestamp.body``."""
    signature = headers.get("X-MLflow-Signature") or ""
    delivery, stamp = headers.get("X-MLflow-Delivery-Id") or "", headers.get("X-MLflow-Timestamp")
    if not signature.startswith("v1,") or not stamp or not stamp.isdigit():
        return False
    if abs((now if now is not None else time.time()) - int(stamp)) > MAX_SKEW:
        return False
    signed = f"{delivery}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(secret.encode(), signed, hashlib.sha256).digest())
    return hmac.compare_digest(expected, signature[3:].encode())


class _Receiver(ThreadingHTTPServer):
    daemon_threads = True


def _handler(secret: str, name: str, alias: str, wake: threading.Event) -> type:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, MAX_BODY))
            if self.path != PATH or not verify_signature(secret, self.headers, body):
                logger.warning("refused a webhook delivery to %s (bad signature)", self.path)
                self._answer(401)
                return
            self._answer(200)
            try:
                data = json.loads(body).get("data") or {}
            except (ValueError, AttributeError):
                return
            if (data.get("name"), data.get("alias")) == (name, alias):
                wake.set()

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            logger.debug("webhook: " + format, *args)

    return Handler


class Follower:
    """Keeps the model topic's ``name`` at the version ``uri``'s alias points to."""

    def __init__(
        self,
        settings: Settings,
        uri: str,
        *,
        name: str | None = None,
        rollout: Callable[[ModelMessage], str] | None = None,
        store: tuple[Path | None, str | None] = (None, None),
        signing_key: Path | None = None,
        out: Callable[[str], None] = print,
        err: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self.settings, self.uri, self.rollout, self.store = settings, uri, rollout, store
        self.signing_key = signing_key  # signs each version as publish --signing-key does
        self.model, self.alias, _ = parse_uri(uri)
        if self.alias is None:
            raise ToolError(f"follow needs an alias: models:/{self.model}@ALIAS, not {uri}")
        self.name = name or self.model
        self.out, self.err = out, err
        self.done: str | None = None  # the alias's version last brought in line (this run)
        self.wake, self.stop = threading.Event(), threading.Event()

    # --- one pass ------------------------------------------------------------------

    def reconcile(self) -> None:
        """Bring the model topic in line with the alias (raises :class:`ToolError`)."""
        found = resolve(self.uri)
        if found.version != self.done:
            self._apply(found)
            self.done = found.version

    def _apply(self, found: MlflowVersion) -> None:
        version, settings = found.version, self.settings
        with kafka_errors(settings):
            current = asyncio.run(published_version(settings, self.name))
            state = (
                current_rollout(settings, self.name, newest_model(settings, self.name))
                if self.rollout
                else None
            )  # the rollout by the workers' own rule: junk on the control topic hides nothing
            control = state.start if state is not None and state.running else None
            archived = asyncio.run(archived_versions(settings, self.name))
        if current == version or (
            control is not None
            and control.stage in ACTIVE_STAGES
            and control.candidate is not None
            and control.candidate.version == version
        ):
            if self.done is None:  # the first pass of this run: say where things stand
                self.out(f"{self.name} version {version} ({self.uri}) is already published")
            return
        if version in archived and self.rollout is None:
            with kafka_errors(settings):
                asyncio.run(rollback(settings, self.name, version))
            self.out(
                f"published {self.name} version {version} again, from the archive "
                f"({self.uri} moved back to it) to {settings.model_topic}"
            )
            return
        message = archived.get(version) or prepare_version(
            found, self.name, store=self.store, signing_key=self.signing_key
        )
        if self.rollout is not None:
            self.out(self.rollout(message))
            return
        send(settings, message)
        run = f", run {found.run_id}" if found.run_id else ""
        self.out(f"{describe(message, settings.model_topic)} [{self.uri}{run}]")

    # --- the loop ------------------------------------------------------------------

    def _register(self, listen: str, url: str | None) -> tuple[_Receiver, str, str] | None:
        """Start the receiver and register the webhook; None (and why, on stderr) if not."""
        from mlflow import MlflowClient

        host, _, port = listen.rpartition(":")
        secret = secrets.token_urlsafe(32)
        try:
            server = _Receiver(
                (host or "127.0.0.1", int(port)),
                _handler(secret, self.model, str(self.alias), self.wake),
            )
        except (OSError, ValueError) as exc:
            self.err(f"error: cannot listen on {listen} for webhooks ({one_line(exc)}): polling")
            return None
        bound = f"{server.server_address[0]!s}:{server.server_address[1]}"
        url = url or f"http://{bound}{PATH}"
        hook = f"hotswap-{self.settings.model_topic}-{self.name}-{self.alias}"
        client = MlflowClient()
        try:
            mine = [w for w in client.list_webhooks() if w.name == hook]
            if mine:
                hook_id = mine[0].webhook_id
                client.update_webhook(
                    hook_id, url=url, events=[EVENT], secret=secret, status="ACTIVE"
                )
            else:
                hook_id = client.create_webhook(hook, url, [EVENT], secret=secret).webhook_id
        except Exception as exc:
            server.server_close()
            self.err(f"no MLflow webhook ({one_line(exc)[:200]}): polling instead")
            return None
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server, str(hook_id), url

    def run(
        self, *, listen: str, webhook_url: str | None, webhook: bool, poll: float, resync: float
    ) -> None:
        """Follow until :attr:`stop` is set (SIGTERM, Ctrl-C)."""
        hooked = None
        if webhook:
            try:
                hooked = self._register(listen, webhook_url)
            except Exception as exc:
                self.err(f"no MLflow webhook ({one_line(exc)[:200]}): polling instead")
        how = f"webhook {hooked[2]}, resync every {resync:g}s" if hooked else f"every {poll:g}s"
        self.out(f"following {self.uri} -> {self.name} on {self.settings.model_topic} ({how})")
        backoff = 1.0
        try:
            while not self.stop.is_set():
                self.wake.clear()
                wait = resync if hooked else poll
                try:
                    self.reconcile()
                    backoff = 1.0
                except ToolError as exc:
                    wait, backoff = min(backoff, wait), min(backoff * 2, 30.0)
                    self.err(f"error: {one_line(exc)} (retrying in {wait:g}s)")
                except Exception as exc:
                    wait, backoff = min(backoff, wait), min(backoff * 2, 30.0)
                    self.err(f"error: {one_line(mlflow_errors(exc))} (retrying in {wait:g}s)")
                self.wake.wait(wait)
        finally:
            if hooked is not None:
                hooked[0].shutdown()
                hooked[0].server_close()
                try:
                    from mlflow import MlflowClient

                    MlflowClient().delete_webhook(hooked[1])
                except Exception as exc:
                    logger.warning("could not delete webhook %s: %s", hooked[1], exc)


def follow_command(settings: Settings, args: argparse.Namespace) -> int:
    """``hotswap follow``: build the follower from the arguments, run until stopped."""
    from service.tools.rollouts import describe_step, load_signing_key, policy_of, start_rollout

    rolling = bool(args.shadow or args.canary is not None)
    policy = policy_of(
        args.promote_after, args.min_agreement, args.max_p99_ms, args.max_error_rate, rolling,
        args.min_labels, args.max_quality_loss,
    )  # fmt: skip
    signing_key = Path(args.signing_key) if args.signing_key else None
    key = load_signing_key(signing_key)

    def rollout(message: ModelMessage) -> str:
        control = start_rollout(
            settings, message, canary=args.canary, policy=policy, why=args.why or args.uri, key=key
        )
        return describe_step(control, settings)

    follower = Follower(
        settings,
        args.uri,
        name=args.name,
        rollout=rollout if rolling else None,
        store=store_of(args.by_reference),
        signing_key=signing_key,
        out=lambda line: print(line, flush=True),
    )

    def stop(signum: int, frame: object) -> None:
        follower.stop.set()
        follower.wake.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    follower.run(
        listen=args.listen,
        webhook_url=args.webhook_url,
        webhook=not args.no_webhook,
        poll=args.poll_interval,
        resync=args.resync,
    )
    return 0
