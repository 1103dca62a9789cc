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


class Entry:
    """One record's predictions (per model and version) and its label, if any yet.

    A plain class with slots: one is made per record scored, so its construction is
    on the scoring path.
    """

    __slots__ = ("created", "label", "labelled", "preds", "size")

    def __init__(
        self,
        created: float,
        preds: dict[tuple[str, str], tuple[Held, int]] | None = None,
        size: int = _ENTRY_BYTES,
        label: Any = None,
        labelled: bool = False,
    ) -> None:
        self.created = created
        self.preds = {} if preds is None else preds
        self.size = size
        self.label = label
        self.labelled = labelled


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
        version, held = (block.model, block.version), block.held()
        for row, k in enumerate(keys):
            value = entries.get(k)
            if value is None:
                entries[k] = Entry(now, {version: (held, row)}, size)
                self.bytes += size
                continue
            entry = self._entry(k, value) if isinstance(value, int) else value
            if version in entry.preds:  # the same batch scored again (a rewind): once
                continue
            entry.preds[version] = (held, row)
            entry.size += size
            self.bytes += size
            if entry.labelled:  # the label came first
                if len(entry.preds) == 1:
                    self.counts["matched"] += 1
                self._join(entry, {version: entry.preds[version]}, now)
        self._bound()

    def _entry(self, k: Key, code: int) -> Entry:
        """The record entered as ``code`` (block number, row), made an :class:`Entry`."""
        seq, row = code >> 32, code & 0xFFFFFFFF
        (size, _, created) = self.block_info[seq]
        held = self.blocks[seq]
        entry = Entry(created, {(held[0], held[1]): (held, row)}, size)
        self.entries[k] = entry  # keeps its place in the order
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
        if entry is not None and entry.created < now - self.window:
            self._expire_entry(k, entry)
            entry = None
        if entry is None:
            if k in self.expired:
                self.counts["late"] += 1
                return
            entry = self.entries[k] = Entry(now, label=label, labelled=True)
            entry.size += len(k) + 50
            self.bytes += entry.size
            self._bound()
            return
        if entry.labelled:
            self.counts["duplicate"] += 1
            return
        entry.label, entry.labelled = label, True
        if entry.preds:
            self.counts["matched"] += 1
        self._join(entry, entry.preds, now)

    def _join(self, entry: Entry, new: dict[tuple[str, str], tuple[Held, int]], now: float) -> None:
        """Add the ``new`` predictions' figures; a rollout's pair when two versions are in."""
        models: set[str] = set()
        for (model, version), (held, row) in new.items():
            sums = Sums()
            if not score_held(held, row, entry.label, sums):
                self.counts["invalid"] += 1
                continue
            self.book.add(model, version, sums, now)
            models.add(model)
        if self.on_pair is None:
            return
        for model in models:
            versions = {v: p for (m, v), p in entry.preds.items() if m == model}
            if len(versions) < 2:
                continue
            pair: dict[str, Sums] = {}
            for version, (held, row) in versions.items():
                sums = pair[version] = Sums()
                score_held(held, row, entry.label, sums)
            self.on_pair(model, pair)

    # --- time and space ---------------------------------------------------------------

    def expire(self, now: float) -> None:
        """End the wait of every record older than the window."""
        oldest = now - self.window
        entries = self.entries
        while entries:
            k, entry = next(iter(entries.items()))
            created = self.block_info[entry >> 32][2] if isinstance(entry, int) else entry.created
            if created >= oldest:
                break
            self._expire_entry(k, entry)

    def _expire_entry(self, k: Key, entry: Entry | int) -> None:
        del self.entries[k]
        if isinstance(entry, int):
            self.bytes -= self.block_info[entry >> 32][0]
            self.counts["unlabelled"] += 1
            self._release(entry >> 32)
        elif not entry.preds:
            self.counts["unmatched"] += 1
        elif not entry.labelled:
            self.counts["unlabelled"] += len(entry.preds)
        if isinstance(entry, Entry):
            self.bytes -= entry.size
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
            self.bytes -= entry.size
            kind = "label" if not entry.preds else "prediction" if not entry.labelled else "joined"
            self.counts[f"evicted_{kind}"] += 1

    def drain_counts(self) -> Counter[str]:
        counts, self.counts = self.counts, Counter()
        return counts

    @staticmethod
    def sizes(joins: Sequence[PartitionJoin]) -> int:
        return sum(j.bytes for j in joins)
