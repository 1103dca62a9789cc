"""Scoring with routes: each record scored by its topic's model, whatever its shape.

A record arrives decoded (a framed record by :mod:`service.kafka.schemas`) or as
plain JSON, decoded here. Its row is read from its own fields by the model's
``feature_names`` (a hotswap envelope's ``features`` still work); then each
route's rows go through the same group scoring as envelopes (one predict call,
rollouts, isolation of failing rows). Outputs name their route's output topic;
in ``enrich`` mode their value is the prediction, which the Kafka side merges
into the input record in the input's format.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from service.core import errors
from service.core.messages import DataRecord
from service.core.outputs import DeadLetter, InputRecord, Scored, dead_letter, render
from service.core.registry import ServingModel
from service.core.routes import Route, Routes
from service.core.scoring import BatchResult, Scorer
from service.core.shapes import envelope_features, features_of, plain_document, render_prediction

__all__ = ["RoutedScorer"]

logger = logging.getLogger(__name__)

Slots = list[Scored | DeadLetter | None]


class RoutedScorer:
    """Scores batches of routed topics against the registry's current models."""

    def __init__(
        self, scorer: Scorer, routes: Routes, *, max_record_bytes: int, default_model: str = ""
    ) -> None:
        self._scorer = scorer
        self._routes = routes
        self._max_bytes = max_record_bytes
        self._default_model = default_model

    def score(self, records: Sequence[InputRecord]) -> BatchResult:
        """Every record's output or dead letter; never raises for a record (as Scorer.score)."""
        return self._scorer.isolating(self._score_batch, records)

    def _score_batch(self, records: Sequence[InputRecord]) -> BatchResult:
        result = BatchResult()
        slots: Slots = [None] * len(records)
        # Keyed by (id(route), model): hashing a pydantic model per record costs more than
        # scoring it.
        groups: dict[tuple[int, str], tuple[Route, list[tuple[int, DataRecord]]]] = {}
        models: dict[tuple[int, str], ServingModel | None] = {}
        registry = self._scorer._registry
        for i, record in enumerate(records):
            route = self._routes.for_topic(record.topic)
            try:
                if route is None:
                    raise errors.UnknownModel(f"no route for topic {record.topic!r}")
                doc = None if route.model else self._document(record)
                name = route.model or self._named(doc)
                key = (id(route), name)
                if key not in models:
                    models[key] = registry.get(name)
                model = models[key]
                if model is None:
                    raise errors.UnknownModel(f"no model named {name!r} is serving")
                doc = doc if doc is not None else self._document(record)
                row = self._row(doc, model, record.frame is None)
            except errors.RecordRejected as exc:
                slots[i] = dead_letter(record, exc)
                continue
            group = groups.get(key)
            if group is None:
                group = groups[key] = (route, [])
            group[1].append((i, DataRecord(doc.get("id"), name, row)))
        shadows: list[Scored] = []
        for key, (route, members) in groups.items():
            model = models[key]
            assert model is not None
            enrich = route.mode == "enrich"
            draw = render_prediction if enrich else render
            self._scorer._score_group(model, members, records, slots, result, shadows, render=draw)
            for i, _ in members:
                out = slots[i]
                if type(out) is Scored:
                    out.topic, out.enrich = route.output, enrich
        result.outputs = [s for s in slots if s is not None]
        result.outputs += shadows  # to the shadow topic, as JSON whatever the mode
        return result

    def _named(self, doc: dict[str, Any] | None) -> str:
        """A route without a model: the record's ``model`` field, else the default model."""
        name = (doc or {}).get("model") or self._default_model
        if not name:
            raise errors.MissingModel("record has no `model` and no default model is set")
        if not isinstance(name, str):
            raise errors.MissingModel("record `model` is not a string")
        return name

    def _document(self, record: InputRecord) -> dict[str, Any]:
        doc = record.document
        if doc is None:  # unframed: plain JSON
            doc = record.document = plain_document(record.value, self._max_bytes)
        elif isinstance(doc, errors.RecordRejected):  # the decoder's verdict
            raise doc
        elif len(record.value or b"") > self._max_bytes:  # framed: the same limit
            size = len(record.value or b"")
            raise errors.RecordTooLarge(f"record is {size} bytes, limit {self._max_bytes}")
        return doc  # type: ignore[no-any-return]

    @staticmethod
    def _row(doc: dict[str, Any], model: ServingModel, plain: bool) -> list[float]:
        signature = model.runtime.signature
        names = signature.feature_names
        if plain and "features" in doc and (not names or "features" not in names):
            return envelope_features(doc, names, signature.width)  # hotswap's envelope
        if not names:
            raise errors.UnknownFeature(
                f"model {model.name!r} has no feature_names to read the record's fields by"
            )
        return features_of(doc, names)
