"""What librdkafka answered for a batch's outputs: the failures, matched to the outputs.

Delivery reports come back only for failures (``delivery.report.only.error``), so
a clean batch costs no Python callback per record; a failure is matched to its
output when taken. The broker answers are sorted here: permanent (the record is
the problem), purged (our own abort) and fenced (another instance owns the id).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError

from service.core import errors
from service.core.scoring import DeadLetter, Scored

__all__ = ["Failure", "Output", "Report", "fenced", "permanent", "purged"]

logger = logging.getLogger(__name__)

Output = Scored | DeadLetter

#: Broker answers that no retry will change: the record itself is the problem.
_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
}
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}


#: Refusals the broker may give a whole request for one bad record in it (a keyless record
#: on a compacted topic): the keyed ones of the batch were seen refused alongside it.
_FOR_ITS_REQUEST = {KafkaError.INVALID_RECORD, KafkaError.INVALID_MSG}


def permanent(failures: Sequence[Failure]) -> list[Failure]:
    """The failures no retry will change. A keyed output refused as an invalid record is
    sent again only when a keyless one was refused so too: it may only have shared that
    one's request. Refused so on its own (a broker's schema validation), it is final."""
    keyless = any(f.output.key is None and f.error.code() in _FOR_ITS_REQUEST for f in failures)
    return [
        f
        for f in failures
        if f.error.code() in _PERMANENT
        and not (keyless and f.output.key is not None and f.error.code() in _FOR_ITS_REQUEST)
    ]


#: Fatal answers meaning another instance now owns this transactional id: stop.
_FENCED = {
    KafkaError.PRODUCER_FENCED,
    KafkaError._FENCED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


def fenced(error: KafkaError) -> bool:
    return error.code() in _FENCED


@dataclass(slots=True)
class Failure:
    output: Output
    error: KafkaError
    topic: str = ""  # where it was going (named when the broker refuses the right to write)

    def as_rejection(self) -> errors.RecordRejected:
        if self.error.code() in {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE}:
            return errors.OutputTooLarge(f"{self.error.name()}: {self.error.str()}"[:500])
        return errors.OutputRefused(f"{self.error.name()}: {self.error.str()}"[:500])


@dataclass
class Report:
    """One batch's outputs as sent, and the failures librdkafka reported (any thread).

    A failure names only topic, key and value; it is matched to its output when
    taken, so the common case, no failure, costs nothing per record.
    """

    sent: list[Output] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    raw: list[tuple[str, bytes | None, bytes | None, KafkaError]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last: float = field(default_factory=time.monotonic)  # of the last send

    def add(self, output: Output, error: KafkaError, topic: str = "") -> None:
        with self.lock:
            self.failures.append(Failure(output, error, topic))

    def add_raw(
        self, topic: str, key: bytes | None, value: bytes | None, error: KafkaError
    ) -> None:
        with self.lock:
            self.raw.append((topic, key, value, error))

    def take(self) -> list[Failure]:
        """The failures reported since the last call (each is handled once)."""
        with self.lock:
            taken, self.failures = self.failures, []
            raw, self.raw = self.raw, []
        if raw:
            by_content: dict[tuple[bytes | None, bytes | None], list[Output]] = {}
            for out in self.sent:
                by_content.setdefault((out.key, out.value), []).append(out)
            for _topic, key, value, error in raw:
                matches = by_content.get((key, value))
                if matches:
                    taken.append(Failure(matches.pop(), error, _topic))
                else:
                    logger.warning("a failed delivery matches no output of this batch: %s", error)
        return taken


def purged(error: KafkaError) -> bool:
    """Purged by our own abort: that transaction's batch is sent again anyway."""
    return error.code() in _PURGED
