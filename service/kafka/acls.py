"""The Kafka ACLs each hotswap role needs on a secured broker, least privilege.

One list per role, derived from :class:`Settings` (the topic names and the
consumer group), so the docs' ACL table, the integration tests and an operator
granting rights all read the same thing. Found by running every client of the
role as a principal with nothing else: each entry is used by some code path,
named in ``why``. Topics are created by an admin beforehand (none of the roles
has CREATE); see docs/how-to/kafka-security.md.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

from service.core.settings import Settings

__all__ = ["ROLES", "Acl", "Role", "grant", "readme_rows", "role_acls"]

logger = logging.getLogger(__name__)

Role = Literal["worker", "publisher", "producer"]
ROLES: tuple[Role, ...] = ("worker", "publisher", "producer")


@dataclass(frozen=True, slots=True)
class Acl:
    """ALLOW ``operation`` on a resource (``prefixed``: every name starting with ``name``)."""

    resource: Literal["topic", "group", "transactional_id", "cluster"]
    name: str
    operation: str
    why: str
    prefixed: bool = False

    def describe(self) -> str:
        pattern = " (prefix)" if self.prefixed else ""
        return f"{self.operation} {self.resource} '{self.name}'{pattern}"


def role_acls(settings: Settings, role: Role) -> list[Acl]:
    """The ACLs of ``role`` for the topics and group of ``settings``."""
    s = settings
    if role == "worker" and s.routes:  # the routes' topics in place of data and scored
        routed = _route_acls(s)
        unused = {s.data_topic, s.scored_topic}  # what routes read and write: in `routed`
        return [*routed, *(a for a in role_acls(_unrouted(s), role) if a.name not in unused)]
    if role == "worker":
        return [
            Acl("topic", s.model_topic, "READ", "model feed: replay and tail"),
            Acl("topic", s.control_topic, "READ", "control feed: rollouts"),
            Acl("topic", s.status_topic, "READ", "fleet view: other workers' heartbeats"),
            Acl("topic", s.data_topic, "READ", "the records to score"),
            Acl("group", s.app_id, "READ", "the data consumer group: join, commit"),
            Acl("group", f"{s.app_id}-reader", "DESCRIBE", "feeds' group-less consumers"),
            Acl("topic", s.scored_topic, "WRITE", "scored records"),
            Acl("topic", s.shadow_topic, "WRITE", "shadow/canary comparisons"),
            Acl("topic", s.dead_letter_topic, "WRITE", "dead letters"),
            Acl("topic", s.status_topic, "WRITE", "heartbeats and tombstones"),
            Acl("topic", s.scored_topic, "DESCRIBE_CONFIGS", "max.message.bytes of outputs"),
            Acl("topic", s.shadow_topic, "DESCRIBE_CONFIGS", "max.message.bytes of outputs"),
            Acl("topic", s.dead_letter_topic, "DESCRIBE_CONFIGS", "max.message.bytes of outputs"),
            Acl("topic", s.archive_topic, "WRITE", "automatic promotion: archive first"),
            Acl("topic", s.model_topic, "WRITE", "automatic promotion: the new version"),
            Acl("topic", s.control_topic, "WRITE", "automatic promotion: the decision"),
            Acl("topic", s.labels_topic, "READ", "label join: the true labels"),
            Acl("topic", s.label_state_topic_name, "READ", "label join: restore its state"),
            Acl("topic", s.label_state_topic_name, "WRITE", "label join: its changelog"),
            Acl("group", f"{s.app_id}.labels", "DESCRIBE", "label join's group-less consumer"),
            Acl("group", f"{s.app_id}.labels-restore", "DESCRIBE", "label join's restore"),
            Acl(
                "transactional_id",
                f"{s.app_id}-",
                "WRITE",
                "exactly_once: one transactional id per worker",
                prefixed=True,
            ),
        ]
    if role == "publisher":
        return [
            Acl("topic", s.archive_topic, "WRITE", "publish, promote, rollback: archive"),
            Acl("topic", s.model_topic, "WRITE", "publish, promote, rollback"),
            Acl("topic", s.control_topic, "WRITE", "publish --shadow/--canary, promote, abort"),
            Acl("topic", s.archive_topic, "READ", "rollback: the archived versions"),
            Acl("topic", s.model_topic, "READ", "rollback, backtest: the serving version"),
            Acl("topic", s.control_topic, "READ", "promote, abort: the rollout in progress"),
            Acl("topic", s.data_topic, "READ", "backtest: a window of records"),
            Acl("group", f"{s.app_id}-reader", "DESCRIBE", "group-less readers (librdkafka)"),
        ]
    return [
        Acl("topic", s.data_topic, "WRITE", "produce, replay: records to score"),
        Acl("topic", s.labels_topic, "WRITE", "produce --labels: the records' true classes"),
        Acl("topic", s.dead_letter_topic, "READ", "replay: the dead letters"),
        Acl("group", f"{s.app_id}-replay-dlq-", "READ", "replay: its progress", prefixed=True),
    ]


def _unrouted(settings: Settings) -> Settings:
    return settings.model_copy(update={"routes": ""})


def _route_acls(settings: Settings) -> list[Acl]:
    """READ on each route's input (a pattern: on the literal start of its names, prefixed),
    WRITE and DESCRIBE_CONFIGS on each output."""
    from service.core.routes import load_routes

    routes = load_routes(settings.routes)
    acls = []
    for route in routes.routes:
        if route.topic is not None:
            acls.append(Acl("topic", route.topic, "READ", "a route's records to score"))
        else:
            prefix = _literal_start(route.pattern or "")
            why = f"a route's records to score (pattern {route.pattern})"
            if prefix:
                acls.append(Acl("topic", prefix, "READ", why, prefixed=True))
            else:  # it may match any name: every topic (Kafka's literal wildcard)
                acls.append(Acl("topic", "*", "READ", why))
    for output in routes.outputs:
        acls.append(Acl("topic", output, "WRITE", "a route's outputs"))
        acls.append(Acl("topic", output, "DESCRIBE_CONFIGS", "max.message.bytes of outputs"))
    return acls


def _literal_start(pattern: str) -> str:
    """What every name ``pattern`` matches starts with ("" when it may start with anything:
    an alternation at its top level)."""
    pattern = pattern.removeprefix("^")
    depth, escaped = 0, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "|" and depth == 0:
            return ""
    start = re.match(r"(?:[^\\.^$*+?()\[\]{}|]|\\[^A-Za-z0-9])*", pattern)  # not \d, \w
    literal = re.sub(r"\\(.)", r"\1", start.group(0) if start else "")
    follows = pattern[len(start.group(0)) if start else 0 :][:1]
    return literal[:-1] if follows in ("*", "?", "{") else literal  # `a*`: the a is optional


def readme_rows(role: Role) -> list[str]:
    """``role``'s ACLs as the rows of the docs' table, names given by their settings.

    ``$HOTSWAP_MODEL_TOPIC`` stands for the model topic's name, and so on; the
    docs check (tests/docs/test_acls.py) compares docs/how-to/kafka-security.md's
    table with these rows.
    """
    names = {
        field: f"$HOTSWAP_{field.upper()}"
        for field in Settings.model_fields
        if field.endswith("_topic") or field == "app_id"
    }
    placeholders = Settings.model_construct(**names)  # type: ignore[arg-type]
    rows = []
    for acl in role_acls(placeholders, role):
        name = f"`{acl.name}`" + (" (prefixed)" if acl.prefixed else "")
        rows.append(f"| {role} | {acl.operation} | {acl.resource} | {name} | {acl.why} |")
    return rows


def grant(bootstrap: str, principal: str, acls: list[Acl]) -> None:
    """Create ``acls`` for ``principal`` (``User:NAME``) through an admin's listener.

    For tests and operators' scripts; the service itself never grants anything.
    """
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AclBinding,
        AclOperation,
        AclPermissionType,
        AdminClient,
        ResourcePatternType,
        ResourceType,
    )

    admin = AdminClient({"bootstrap.servers": bootstrap})
    bindings = [
        AclBinding(
            ResourceType[acl.resource.upper()],
            "kafka-cluster" if acl.resource == "cluster" else acl.name,
            ResourcePatternType.PREFIXED if acl.prefixed else ResourcePatternType.LITERAL,
            principal,
            "*",
            AclOperation[acl.operation],
            AclPermissionType.ALLOW,
        )
        for acl in acls
    ]
    for future in admin.create_acls(bindings).values():
        future.result(30)
    logger.info("granted %d ACLs to %s", len(bindings), principal)
