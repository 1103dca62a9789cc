"""The join of true labels to predictions, for the records of one data partition.

Transport-free and clocked by the caller (``now`` in seconds), so the live
worker and a replay of the changelog apply the same events the same way.

A record is known by its key, then its id. A prediction (one per model
version that scored the record: the serving version, and a shadow or canary
candidate) waits ``window`` seconds for its label; a label that comes first
waits as long for a prediction. What is counted, never raised:

- ``matched``: a label joined to the predictions made for its record;
- ``duplicate``: a second label for a record already labelled;
- ``late``: a label for a record whose wait is over (its prediction expired);
- ``unmatched``: a label that no prediction joined within the window;
- ``unlabelled``: a prediction no label joined within the window;
- ``evicted_*``: state dropped, oldest first, to stay within ``max_bytes``.

Sizes are estimates (Python objects are not measured one by one) but are
charged consistently, so the bound holds within a small factor.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

from service.core.predictions import Held, PredictionBlock, score_held
from service.core.quality import QualityBook, Sums

__all__ = ["Entry", "PartitionJoin", "join_key"]

logger = logging.getLogger(__name__)

_ENTRY_BYTES = 200  # an entry's own objects, before its key, id and predictions
_CODE_BYTES = 150  # a record entered as an int (its key, the dict's slot)
_MARKER_BYTES = 100  # an expired record remembered to tell late labels from unmatched ones

Key = bytes


def join_key(key: bytes | None, record_id: Any) -> Key:
    """The record key first, then its id (as text, so ``1`` and ``"1"`` join).

    One bytes value, the key's length first so no key and id can pass for another
    pair. Not a tuple: the state holds a key per prediction for the whole window,
    and a tuple is tracked by the cycle collector until a collection has looked at
    it (and moved it on to an older generation when one of its items was young);
    bytes are never tracked.
    """
    k = key or b""
    text = "" if record_id is None else str(record_id)
    return b"%d:%b%b" % (len(k), k, text.encode("utf-8", "surrogatepass"))


# A record's entry, once its label or a second prediction came: one plain tuple, flat
# (created, size, labelled, label, then model, version, held block, row per prediction),
# which a collection stops tracking as it does held blocks (PredictionBlock.held): an
# object per record, or a tuple inside, stayed tracked for the whole window.
Entry = tuple[Any, ...]
_PRED = 4  # slots per prediction
Pred = tuple[str, str, Held, int]


def _preds(entry: Entry) -> list[Pred]:
    return [entry[i : i + _PRED] for i in range(4, len(entry), _PRED)]  # type: ignore[misc]


def _has(entry: Entry, model: str, version: str) -> bool:
    return any(entry[i] == model and entry[i + 1] == version for i in range(4, len(entry), _PRED))


class PartitionJoin:
    """Join state and quality book of one data partition."""

    def __init__(
        self,
        partition: int,
        *,
        window: float,
        quality_window: float,
        max_bytes: int,
        on_pair: Callable[[str, dict[str, Sums]], None] | None = None,
    ) -> None:
        self.partition = partition
        self.window = window
        self.max_bytes = max_bytes
        self.entries: OrderedDict[Key, Entry | int] = OrderedDict()  # oldest first
        # number -> block, and (bytes a row, rows still entered by number, created): two
        # maps, so a block adds no list the collector would walk for the whole window
        self.blocks: dict[int, Held] = {}
        self.block_info: dict[int, tuple[int, int, float]] = {}
        self._seq = 0
        self.expired: OrderedDict[Key, None] = OrderedDict()
        self.bytes = 0
        self.counts: Counter[str] = Counter()
        self.book = QualityBook(quality_window)
        self.labels_next = -1  # the next labels-topic offset to apply (-1: none applied yet)
        self.on_pair = on_pair

    # --- events ---------------------------------------------------------------------

    def predicted(self, block: PredictionBlock, now: float) -> None:
        """Record a block of predictions; join those whose label is already waiting.

        The usual block (records not seen yet) costs one C-level pass: each record
        is entered as an int, its block's number and its row, and becomes an
        :class:`Entry` only when its label or another version's prediction comes.
        """
        keys = list(map(join_key, block.keys, block.ids))
        if not keys:
            return
        entries = self.entries
        size = _CODE_BYTES + len(keys[0]) + block.row_bytes()  # estimated
        if entries.keys().isdisjoint(keys):
            seq = self._seq
            self._seq += 1
            before = len(entries)
            entries.update(zip(keys, range(seq << 32, (seq << 32) + len(keys))))
            live = len(entries) - before  # a key twice in one block is entered once
            self.blocks[seq] = block.held()
            self.block_info[seq] = (size, live, now)
            self.bytes += live * size
            self._bound()
            return
        model, version, held = block.model, block.version, block.held()
        for row, k in enumerate(keys):
            value = entries.get(k)
            if value is None:
                entries[k] = (now, size, False, None, model, version, held, row)
                self.bytes += size
                continue
            entry = self._entry(k, value) if isinstance(value, int) else value
            if _has(entry, model, version):  # the same batch scored again (a rewind): once
                continue
            created, had, labelled, label, *preds = entry
            entry = entries[k] = (created, had + size, labelled, label, *preds,
                                  model, version, held, row)  # fmt: skip
            self.bytes += size
            if labelled:  # the label came first
                if not preds:
                    self.counts["matched"] += 1
                self._join(entry, [(model, version, held, row)], now)
        self._bound()

    def _entry(self, k: Key, code: int) -> Entry:
        """The record entered as ``code`` (block number, row), made an :class:`Entry`."""
        seq, row = code >> 32, code & 0xFFFFFFFF
        (size, _, created) = self.block_info[seq]
        held = self.blocks[seq]
        entry = self.entries[k] = (created, size, False, None, held[0], held[1], held, row)
        self._release(seq)
        return entry

    def _release(self, seq: int) -> None:
        size, live, created = self.block_info[seq]
        if live <= 1:
            del self.blocks[seq], self.block_info[seq]
        else:
            self.block_info[seq] = (size, live - 1, created)

    def labelled(self, key: bytes | None, record_id: Any, label: Any, now: float) -> None:
        """Join a true label to its record's predictions, or keep it waiting for them."""
        k = join_key(key, record_id)
        value = self.entries.get(k)
        entry = self._entry(k, value) if isinstance(value, int) else value
        if entry is not None and entry[0] < now - self.window:
            self._expire_entry(k, entry)
            entry = None
        if entry is None:
            if k in self.expired:
                self.counts["late"] += 1
                return
            size = _ENTRY_BYTES + len(k) + 50
            self.entries[k] = (now, size, True, label)
            self.bytes += size
            self._bound()
            return
        if entry[2]:
            self.counts["duplicate"] += 1
            return
        entry = self.entries[k] = (entry[0], entry[1], True, label, *entry[4:])
        if len(entry) > 4:
            self.counts["matched"] += 1
        self._join(entry, _preds(entry), now)

    def _join(self, entry: Entry, new: list[Pred], now: float) -> None:
        """Add the ``new`` predictions' figures; a rollout's pair when two versions are in."""
        models: set[str] = set()
        label = entry[3]
        for model, version, held, row in new:
            sums = Sums()
            if not score_held(held, row, label, sums):
                self.counts["invalid"] += 1
                continue
            self.book.add(model, version, sums, now)
            models.add(model)
        if self.on_pair is None:
            return
        for model in models:
            versions = {v: (held, row) for m, v, held, row in _preds(entry) if m == model}
            if len(versions) < 2:
                continue
            pair: dict[str, Sums] = {}
            for version, (held, row) in versions.items():
                sums = pair[version] = Sums()
                score_held(held, row, label, sums)
            self.on_pair(model, pair)

    # --- time and space ---------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End the wait of every record older than the window."""
        oldest = now - self.window
        entries = self.entries
        while entries:
            k, entry = next(iter(entries.items()))
            created = self.block_info[entry >> 32][2] if isinstance(entry, int) else entry[0]
            if created >= oldest:
                break
            self._expire_entry(k, entry)

    def _expire_entry(self, k: Key, entry: Entry | int) -> None:
        del self.entries[k]
        if isinstance(entry, int):
            self.bytes -= self.block_info[entry >> 32][0]
            self.counts["unlabelled"] += 1
            self._release(entry >> 32)
        elif len(entry) == 4:
            self.counts["unmatched"] += 1
        elif not entry[2]:
            self.counts["unlabelled"] += (len(entry) - 4) // _PRED
        if not isinstance(entry, int):
            self.bytes -= entry[1]
        self.expired[k] = None
        self.bytes += _MARKER_BYTES
        self._bound()

    def _bound(self) -> None:
        """Drop the oldest state until it fits: expired markers first, then records."""
        while self.bytes > self.max_bytes and self.expired:
            self.expired.popitem(last=False)
            self.bytes -= _MARKER_BYTES
        while self.bytes > self.max_bytes and self.entries:
            _, entry = self.entries.popitem(last=False)
            if isinstance(entry, int):
                self.bytes -= self.block_info[entry >> 32][0]
                self._release(entry >> 32)
                self.counts["evicted_prediction"] += 1
                continue
            self.bytes -= entry[1]
            kind = "label" if len(entry) == 4 else "prediction" if not entry[2] else "joined"
            self.counts[f"evicted_{kind}"] += 1

    def drain_counts(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        return counts

    @staticmethod
    def sizes(joins: Sequence[PartitionJoin]) -> int:
        return sum(j.bytes for j in joins)
