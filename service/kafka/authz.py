"""A right the broker refused, named: which operation on which resource.

On a broker with ACLs both client libraries answer a missing right with a bare
code ("Broker: Topic authorization failed") that names neither the operation
nor, often, the resource. The code that makes a request knows both, so it
wraps the request in :func:`denied_as`, which turns any authorization error
into :class:`NotAuthorized`: one line a user or an operator can act on
("not authorized to WRITE topic 'models' as User:publisher"). The CLI prints
it and exits 1; the worker shows it in ``/ready`` and keeps retrying
(:class:`Denials`) until the ACL is added.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from aiokafka import errors as aioerrors
from confluent_kafka import KafkaError, KafkaException

from service.core.settings import Settings

__all__ = ["Denials", "NotAuthorized", "denied_as", "is_denial", "principal_of"]

logger = logging.getLogger(__name__)

_RD_TOPIC = {KafkaError.TOPIC_AUTHORIZATION_FAILED}
_RD_GROUP = {KafkaError.GROUP_AUTHORIZATION_FAILED}
_RD_TXN = {KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED}
_RD_CLUSTER = {KafkaError.CLUSTER_AUTHORIZATION_FAILED}
_RD_ALL = _RD_TOPIC | _RD_GROUP | _RD_TXN | _RD_CLUSTER


class NotAuthorized(Exception):
    """The broker refused ``operation`` on ``resource`` ``name`` (an ACL is missing)."""

    def __init__(self, operation: str, resource: str, name: str, principal: str = "") -> None:
        self.operation = operation
        self.resource = resource
        self.name = name
        self.principal = principal
        super().__init__(self.line())

    def line(self) -> str:
        who = f" as {self.principal}" if self.principal else ""
        return f"not authorized to {self.operation} {self.resource} '{self.name}'{who}"

    def as_principal(self, principal: str) -> NotAuthorized:
        return NotAuthorized(self.operation, self.resource, self.name, principal)


def principal_of(settings: Settings) -> str:
    """``User:NAME`` of a SASL client; empty when the connection carries no user name."""
    return f"User:{settings.sasl_username}" if settings.sasl_username else ""


def _code(exc: BaseException) -> int | None:
    """The librdkafka error code of ``exc`` (a KafkaException or a KafkaError), if any."""
    error = exc.args[0] if isinstance(exc, KafkaException) and exc.args else exc
    return error.code() if isinstance(error, KafkaError) else None


def is_denial(error: object) -> bool:
    """Whether ``error`` (either library's exception, or a librdkafka KafkaError) is a
    refused right rather than a failure worth retrying the same way."""
    if isinstance(error, KafkaError):
        return error.code() in _RD_ALL
    if isinstance(error, KafkaException):
        return _code(error) in _RD_ALL
    return isinstance(
        error,
        aioerrors.TopicAuthorizationFailedError
        | aioerrors.GroupAuthorizationFailedError
        | aioerrors.TransactionalIdAuthorizationFailed
        | aioerrors.ClusterAuthorizationFailedError,
    )


def named(
    error: object,
    operation: str,
    topic: str = "",
    group: str = "",
    transactional_id: str = "",
    group_operation: str = "READ",
) -> NotAuthorized | None:
    """``error`` as :class:`NotAuthorized` when it is a refused right, else None."""
    if not is_denial(error):
        return None
    code = error.code() if isinstance(error, KafkaError) else None
    if isinstance(error, KafkaException):
        code = _code(error)
    if code in _RD_GROUP or isinstance(error, aioerrors.GroupAuthorizationFailedError):
        return NotAuthorized(group_operation, "group", group or "?")
    if code in _RD_TXN or isinstance(error, aioerrors.TransactionalIdAuthorizationFailed):
        return NotAuthorized("WRITE", "transactional id", transactional_id or "?")
    if code in _RD_CLUSTER or isinstance(error, aioerrors.ClusterAuthorizationFailedError):
        return NotAuthorized(operation, "cluster", "kafka-cluster")
    return NotAuthorized(operation, "topic", topic or "?")


@contextmanager
def denied_as(
    operation: str,
    topic: str = "",
    *,
    group: str = "",
    transactional_id: str = "",
    group_operation: str = "READ",
) -> Iterator[None]:
    """Turn an authorization error raised inside into :class:`NotAuthorized`.

    ``operation`` on ``topic`` is what the block does; a refused group or
    transactional id is named as such whatever the block was doing.
    """
    try:
        yield
    except (KafkaException, aioerrors.KafkaError) as exc:
        denial = named(exc, operation, topic, group, transactional_id, group_operation)
        if denial is None:
            raise
        raise denial from None


class Denials:
    """The rights a worker is refused right now, for ``/ready`` and the log.

    A feed that hits a refusal calls :meth:`refused` (logged once per minute per
    right, not per retry), keeps retrying, and calls :meth:`granted` once the same
    step succeeds: the worker stays up and recovers by itself when the ACL is added.
    """

    def __init__(self, principal: str) -> None:
        self._principal = principal
        self._refused: dict[str, NotAuthorized] = {}
        self._logged: dict[str, float] = {}

    def refused(self, step: str, denial: NotAuthorized) -> None:
        denial = denial.as_principal(self._principal) if self._principal else denial
        self._refused[step] = denial
        now = time.monotonic()
        if now - self._logged.get(step, -60.0) >= 60.0:
            self._logged[step] = now
            logger.error("%s: %s (retrying until the ACL is added)", step, denial.line())

    def granted(self, step: str) -> None:
        if self._refused.pop(step, None) is not None:
            logger.info("%s: authorized now", step)
            self._logged.pop(step, None)

    def reason(self) -> str:
        return "; ".join(dict.fromkeys(d.line() for d in self._refused.values()))
