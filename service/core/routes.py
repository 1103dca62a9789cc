"""Routes: which topics a worker reads, and for each, which model, output topic and mode.

``HOTSWAP_ROUTES`` names a YAML file (see docs/how-to/your-topics.md, "Routes"); it is
validated once at start-up, so a typo stops the worker with one line naming the
field, instead of records going astray. Without it there is no route: the data
topic and each record's ``model`` field work as before.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from service.core import errors
from service.core.messages import problems

__all__ = ["Route", "RouteFile", "Routes", "implicit_routes", "load_routes"]

logger = logging.getLogger(__name__)


class Route(BaseModel):
    """One topic (or every topic a regular expression matches) bound to one model."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str | None = Field(default=None, min_length=1)
    pattern: str | None = Field(default=None, min_length=1)
    # None: each record's own ``model`` field (else HOTSWAP_DEFAULT_MODEL), as on the data topic.
    model: str | None = Field(default=None, min_length=1)
    output: str = Field(min_length=1)
    mode: Literal["enrich", "envelope"] = "envelope"

    @model_validator(mode="after")
    def _one_source(self) -> Route:
        if (self.topic is None) == (self.pattern is None):
            raise ValueError("exactly one of `topic` or `pattern` is required")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"`pattern` is not a regular expression: {exc}") from None
        return self

    @property
    def subscription(self) -> str:
        """What the consumer subscribes to: the topic, or ``^(pattern)$``.

        librdkafka takes a subscription starting with ``^`` as a regular expression and
        *searches* topic names with it: ``^payments[.](eu|us)`` alone also reads
        ``payments.eu.scored``. Anchored at both ends, it reads the topics
        :meth:`matches` (a whole-name match) says it does, and no others.
        """
        if self.topic is not None:
            return self.topic
        return f"^({self._core})$"

    @property
    def _core(self) -> str:
        """The pattern without the anchors a user may have written."""
        assert self.pattern is not None
        core = self.pattern.removeprefix("^")
        if core.endswith("$") and not core.endswith("\\$"):
            core = core[:-1]
        return core

    def matches(self, topic: str) -> bool:
        if self.topic is not None:
            return topic == self.topic
        return re.fullmatch(self._core, topic) is not None


class RouteFile(BaseModel):
    """The whole routes file: ``routes:`` and its list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    routes: list[Route] = Field(min_length=1)


class Routes:
    """The routes of a worker, and the route of a topic (the first that matches, cached)."""

    def __init__(self, routes: list[Route]) -> None:
        self.routes = list(routes)
        self._by_topic: dict[str, Route | None] = {}

    def for_topic(self, topic: str) -> Route | None:
        try:
            return self._by_topic[topic]
        except KeyError:
            found = next((r for r in self.routes if r.topic == topic), None)
            if found is None:
                found = next((r for r in self.routes if r.matches(topic)), None)
            self._by_topic[topic] = found
            return found

    @property
    def subscriptions(self) -> list[str]:
        return list(dict.fromkeys(r.subscription for r in self.routes))

    @property
    def outputs(self) -> list[str]:
        return list(dict.fromkeys(r.output for r in self.routes))

    @property
    def models(self) -> list[str]:
        """The models routes name (a route without one takes each record's own)."""
        return list(dict.fromkeys(r.model for r in self.routes if r.model))


def load_routes(path: str | Path, written: Collection[str] = ()) -> Routes:
    """Read and validate a routes file; :class:`RoutesInvalid` names what is wrong.

    ``written``: the topics the worker writes or keeps for itself (dead letters, model
    topic, ...): a route that read one would score the worker's own outputs, forever.
    """
    where = f"HOTSWAP_ROUTES={path}"
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise errors.RoutesInvalid(f"{where}: cannot read it ({exc.strerror})") from None
    import yaml  # here: only a worker with routes reads YAML

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise errors.RoutesInvalid(f"{where}: not YAML: {exc}") from None
    try:
        parsed = RouteFile.model_validate(raw)
    except ValidationError as exc:
        raise errors.RoutesInvalid(f"{where}: {problems(exc)}") from None
    routes = Routes(parsed.routes)
    for output in [*routes.outputs, *written]:
        reader = routes.for_topic(output)
        if reader is not None:  # it would score its own outputs, forever
            raise errors.RoutesInvalid(
                f"{where}: topic {output!r}, which the worker writes, is also read by route "
                f"{reader.subscription!r}"
            )
    shown = (f"{r.subscription} -> {r.model or 'each record`s model'}" for r in parsed.routes)
    logger.info("routes: %s", ", ".join(shown))
    return routes


def implicit_routes(data_topic: str, scored_topic: str) -> Routes:
    """With a Schema Registry and no routes file: the data topic as one route whose records
    name their model, so framed (Avro, Protobuf, JSON Schema) records are decoded there too."""
    return Routes([Route(topic=data_topic, output=scored_topic, mode="envelope")])
