"""The usual batch, decoded in a few passes that run in C: one model, every record valid.

Almost every batch a worker scores is made of well-formed records for one
model, and for those :func:`service.core.messages.decode_records`' per-record
checks cost more than parsing the JSON itself. :func:`uniform_batch` makes the
same checks over the whole batch at once (``map`` and ``set`` over the parsed
documents, no Python loop per record) and gives up (returns None) as soon as
any record is not of that kind; the caller then decodes record by record
(:func:`service.core.messages.decode_records`), which names each defect. It
never accepts a record ``decode_records`` would refuse, and for the records it
accepts it yields the same model, ids and features.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import orjson

from service.core.messages import DataRecord

__all__ = ["Uniform", "uniform_batch"]

logger = logging.getLogger(__name__)

_PLAIN = frozenset({float, int})  # orjson yields no NaN, infinity or ints beyond 64 bits
_NO_MODEL = frozenset({None, ""})


@dataclass(slots=True)
class Uniform:
    """A batch of valid records for one model: their ids and feature rows, in order."""

    model: str
    ids: list[Any]
    rows: list[list[Any]]

    def records(self) -> list[DataRecord]:
        """The batch as :func:`decode_records` gives it, for the general path."""
        return [DataRecord(rid, self.model, row) for rid, row in zip(self.ids, self.rows)]


def uniform_batch(
    values: Sequence[bytes | None], *, max_bytes: int, default_model: str = ""
) -> Uniform | None:
    """The batch as one model's ids and rows, or None if any record needs a closer look."""
    if not values or None in values:
        return None
    sizes = set(map(len, values))  # type: ignore[arg-type]  # no None (checked above)
    if 0 in sizes or max(sizes) > max_bytes:
        return None
    try:
        docs = list(map(orjson.loads, values))  # type: ignore[arg-type]
    except orjson.JSONDecodeError:
        return None
    if set(map(type, docs)) != {dict}:
        return None
    try:
        models = set(map(dict.get, docs, repeat("model")))
    except TypeError:  # a model given as a list or an object: not a name
        return None
    if len(models) != 1:
        if not default_model or not models <= _NO_MODEL:
            return None
        models = {default_model}
    (model,) = models
    if model in _NO_MODEL and default_model:
        model = default_model
    if type(model) is not str or not model:
        return None
    rows: list[Any] = list(map(dict.get, docs, repeat("features")))
    if set(map(type, rows)) != {list} or not set(map(type, chain.from_iterable(rows))) <= _PLAIN:
        return None
    ids = list(map(dict.get, docs, repeat("id")))
    if float in set(map(type, ids)) and any(  # perhaps an integer beyond 64 bits: exact_id
        type(i) is float and abs(i) >= 2.0**63 for i in ids
    ):
        return None
    return Uniform(model, ids, rows)
