"""Errors of the command-line tools: one line that says what went wrong and what to do.

A tool raises :class:`ToolError` with a message a user can act on; the
context managers below turn the libraries' own failures (a broker or a worker
that does not answer) into one. :func:`one_line` renders anything else on a
single line, so the CLI never shows a traceback unless asked (``--verbose``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from aiokafka.errors import KafkaConnectionError, KafkaError

from service.core.settings import Settings
from service.kafka.authz import NotAuthorized, is_denial, principal_of

__all__ = ["ToolError", "kafka_errors", "one_line", "require_file", "worker_errors"]

logger = logging.getLogger(__name__)


class ToolError(Exception):
    """A failure the CLI reports as one line (the message says what to do), exit code 1."""


def one_line(exc: BaseException, *, named: bool = True) -> str:
    """``exc`` as a single line: its type (unless not ``named``) and its message."""
    text = " ".join(str(exc).split())
    if isinstance(exc, ToolError) or (text and not named):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def require_file(path: Path, what: str) -> Path:
    """``path`` if it is a readable file; otherwise a :class:`ToolError` naming ``what``."""
    if not path.exists():
        raise ToolError(f"{what} {path} does not exist: check the path")
    if path.is_dir():
        raise ToolError(f"{what} {path} is a directory: give a file")
    return path


@contextmanager
def kafka_errors(settings: Settings) -> Iterator[None]:
    """Turn "the broker does not answer" (any client library) into a :class:`ToolError`."""
    where = ", ".join(settings.bootstrap_servers)
    hint = "start it, or point HOTSWAP_BROKER at a running broker (host:port)"
    try:
        yield
    except NotAuthorized as exc:
        raise ToolError(exc.as_principal(principal_of(settings)).line()) from None
    except KafkaConnectionError:
        raise ToolError(f"cannot reach the Kafka broker at {where}: {hint}") from None
    except TimeoutError:
        raise ToolError(f"the Kafka broker at {where} did not answer in time: {hint}") from None
    except KafkaError as exc:
        if is_denial(exc):  # a request no caller named: at least say it was a refused right
            who = principal_of(settings) or "this client"
            raise ToolError(f"not authorized ({one_line(exc)}) as {who}") from None
        raise ToolError(f"Kafka error from {where}: {one_line(exc)}") from None
    except Exception as exc:
        if _is_rdkafka_transport(exc):
            raise ToolError(f"cannot reach the Kafka broker at {where}: {hint}") from None
        raise


def _is_rdkafka_transport(exc: Exception) -> bool:
    """A confluent-kafka error meaning "no broker answered" (without importing it eagerly)."""
    try:
        from confluent_kafka import KafkaError as RdError
        from confluent_kafka import KafkaException
    except ImportError:  # pragma: no cover - a dependency of the worker
        return False
    if not isinstance(exc, KafkaException) or not exc.args:
        return False
    error = exc.args[0]
    codes = {RdError._TRANSPORT, RdError._ALL_BROKERS_DOWN, RdError._TIMED_OUT}
    return isinstance(error, RdError) and error.code() in codes


@contextmanager
def worker_errors(url: str) -> Iterator[None]:
    """Turn "the worker does not answer" into a :class:`ToolError`."""
    import httpx  # here: `hotswap worker` itself never asks a worker over HTTP

    hint = "start one with `hotswap worker`, or pass --url of a running worker"
    try:
        yield
    except (httpx.ConnectError, httpx.TimeoutException) as exc:
        reason = one_line(exc) or "no answer"
        raise ToolError(f"cannot reach the worker at {url} ({reason}): {hint}") from None
    except httpx.HTTPError as exc:
        raise ToolError(f"the worker at {url} failed: {one_line(exc)}") from None
    except ValueError as exc:  # not JSON: something else listens there
        raise ToolError(f"{url} did not answer like a hotswap worker ({one_line(exc)})") from None
