"""What travels between the data feed and the scoring agent, and how a batch fares.

:class:`Batch` is the one event the scoring agent gets per fetched batch; its
future carries the outputs back. :class:`BatchState` remembers whether the
batch in flight makes progress, so ``/ready`` can say "stalled" (with the
partitions and the error) instead of answering 200 while nothing moves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from service.core.metrics import Metrics
from service.core.scoring import InputRecord, Scored
from service.core.settings import Settings
from service.kafka.authz import NotAuthorized, is_denial, named, principal_of
from service.kafka.delivery import Failure, Output

LATENCY_SAMPLES = 32  # inputs per batch that keep their timestamp: a sample, see account()
#: Latencies observed: from a clock 1 s ahead (counted as 0) to Kafka's default retention. A
#: timestamp the producer chose (1970, next year: a backfill, a mirror) is no latency; one
#: record stamped 1 moved the histogram's sum by 1.8e9 s.
LATENCY_RANGE = (-1.0, 7 * 86400.0)

__all__ = [
    "GROUP_REFUSALS",
    "Batch",
    "BatchState",
    "account",
    "assign_again",
    "resume_points",
    "rewind",
    "seek_back",
]

logger = logging.getLogger(__name__)

#: What the group coordinator answers a JoinGroup it will not take, whatever it is asked
#: again: librdkafka retries for ever with no partition and a line per try, so ``/ready``
#: says why (e.g. HOTSWAP_SESSION_TIMEOUT below the broker's group.min.session.timeout.ms,
#: or more workers than group.max.size).
GROUP_REFUSALS = frozenset(
    {
        KafkaError.INVALID_SESSION_TIMEOUT,
        KafkaError.GROUP_MAX_SIZE_REACHED,
        KafkaError.INCONSISTENT_GROUP_PROTOCOL,
        KafkaError.INVALID_GROUP_ID,
    }
)


@dataclass(eq=False)
class Batch:
    """Records for the scoring agent, and the future of their outputs."""

    records: list[InputRecord]
    done: asyncio.Future[list[Output]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


@dataclass
class BatchState:
    """Progress of the data feed: the batch in flight, since when, and its last error."""

    stall_after: float = 30.0
    since: float | None = None
    partitions: list[str] = field(default_factory=list)
    last_error: str = ""
    batches: int = 0
    retry_in: float = 1.0  # seconds before a batch that could not be scored is read again
    blocked: float | None = None  # since when batches wait for the Schema Registry
    group: str = ""
    principal: str = ""
    # A right the broker refuses (an ACL missing): an output topic's WRITE, for /ready
    # at once, not after ``stall_after``; or the data group's or topic's READ.
    denied: NotAuthorized | None = None
    denied_read: NotAuthorized | None = None
    # The group coordinator's refusal of this worker (see GROUP_REFUSALS), until it joins.
    group_refused: str = ""

    @classmethod
    def of(cls, settings: Settings) -> BatchState:
        return cls(settings.stall_timeout, group=settings.app_id, principal=principal_of(settings))

    def seen(self, messages: list[Message]) -> list[Message]:
        """``messages`` as fetched, noting a refused READ (group or data topic)."""
        for m in messages:
            error = m.error()
            if error is not None and is_denial(error):
                denial = named(error, "READ", m.topic() or "", self.group)
                if denial is not None and self.denied_read is None:
                    said = denial.as_principal(self.principal).line()
                    logger.error("data consumer: %s (retrying until the ACL is added)", said)
                self.denied_read = denial
            elif error is not None and error.code() in GROUP_REFUSALS and m.topic() is None:
                if not self.group_refused:
                    logger.error("data consumer: group %s refused it: %s", self.group, error)
                self.group_refused = f"group {self.group} refused this worker: {error.str()}"
            elif m.partition() is not None and (m.offset() or -1) >= 0:
                self.denied_read = None
        return messages

    def started(self, offsets: Sequence[TopicPartition]) -> None:
        self.since = time.monotonic()
        self.partitions = [f"{tp.topic}[{tp.partition}]" for tp in offsets]
        self.last_error = ""
        self.retry_in = 1.0
        self.blocked = None

    def waiting(self, offsets: Sequence[TopicPartition], error: Exception) -> Exception:
        """The batch cannot be scored yet (the Schema Registry is away): it is read again
        after a backoff (0.5 s doubling to 5 s), and counts as stalled from the first try."""
        if self.blocked is None:
            self.blocked = time.monotonic()
            self.retry_in = 0.25
        self.since = self.blocked
        self.partitions = [f"{tp.topic}[{tp.partition}]" for tp in offsets]
        self.last_error = str(error)
        self.retry_in = min(self.retry_in * 2, 5.0)
        logger.warning("%s; reading the batch again in %.1f s", error, self.retry_in)
        return error

    def failed(self, failures: Sequence[Failure], left: int, permanent: int = 0) -> None:
        refused = next((f for f in failures if is_denial(f.error)), None)
        if refused is not None and self.denied is not None:
            return  # refused again, already said: the batch retries until the ACL is added
        if failures:
            logger.warning(
                "%d outputs failed (%d for good: dead-lettered), e.g. %s",
                len(failures),
                permanent,
                failures[0].error,
            )
            first = failures[0].error
            self.last_error = f"{len(failures)} outputs failed, e.g. {first.name()}: {first.str()}"
            self.denied = NotAuthorized("WRITE", "topic", refused.topic) if refused else None
            if self.denied is not None:
                said = self.denied.as_principal(self.principal).line()
                logger.error("%s (retrying until the ACL is added)", said)
        elif left:
            self.last_error = f"{left} outputs not acknowledged yet (broker unreachable?)"

    def committed(self) -> None:
        self.since = None
        self.denied = None
        self.batches += 1

    def idle(self) -> None:
        """Nothing to read: no lag, so nothing can be stalled (unless waiting for the
        registry: a batch read again may come back after an empty fetch)."""
        self.since = self.blocked

    def stalled(self) -> str | None:
        """Why the feed is stuck, when the batch in flight is older than ``stall_after``."""
        if self.since is None:
            return None
        age = time.monotonic() - self.since
        if age < self.stall_after:
            return None
        return (
            f"no progress for {age:.0f}s on {', '.join(self.partitions)}"
            f"{': ' + self.last_error if self.last_error else ''}"
        )


def account(metrics: Metrics, outputs: Sequence[Output]) -> None:
    """Update counters and end-to-end latency once outputs are acknowledged."""
    now = time.time()
    scored: dict[tuple[str, str], int] = {}
    shadowed: dict[tuple[str, str], int] = {}
    dead: dict[str, int] = {}
    latencies: dict[str, list[float]] = {}
    for out in outputs:
        if type(out) is Scored:
            key = (out.model, out.version)
            if out.shadow:
                shadowed[key] = shadowed.get(key, 0) + 1
                continue
            scored[key] = scored.get(key, 0) + 1
            stamp = out.source.timestamp
            if stamp:
                latencies.setdefault(out.model, []).append(now - stamp)
        else:
            reason: Any = getattr(out, "reason", "error")
            dead[reason] = dead.get(reason, 0) + 1
    for family, counts in ((metrics.records_scored, scored), (metrics.records_shadowed, shadowed)):
        for (model, version), n in counts.items():
            labels = metrics.model_label(model), metrics.version_label(model, version)
            family.labels(*labels).inc(n)
    for reason, n in dead.items():
        metrics.records_dead_lettered.labels(reason).inc(n)
    for model, values in latencies.items():
        histogram = metrics.end_to_end_latency.labels(metrics.model_label(model))
        step = max(1, len(values) // LATENCY_SAMPLES)
        low, high = LATENCY_RANGE
        for value in values[::step]:  # a sample per batch: observing each record costs ~1 µs
            if low <= value <= high:
                histogram.observe(max(0.0, value))


def rewind(
    consumer: Consumer,
    ends: list[TopicPartition],
    firsts: list[TopicPartition],
    gave_up: Callable[[], bool],
    tries: int | None = None,
) -> bool:
    """Read batches that were not committed again, from the group's committed offsets.

    A partition with nothing committed yet (a new group) goes back to the first
    offset the batches read. Until the committed offsets can be read (the broker
    may be away), this keeps asking: going on from the consumer's position would
    skip the batches. Only a stop that ran out of time ends it early (the next
    owner reads them from the committed offsets), or ``tries`` failed reads: then
    False, and the caller settles the offsets another way (exactly_once).
    """
    failures = 0
    while True:
        try:
            committed = consumer.committed(ends, timeout=5.0)
            failed = next((tp.error for tp in committed if tp.error is not None), None)
        except KafkaException as exc:
            failed = exc.args[0]
        if failed is None:
            break
        failures += 1
        if gave_up() or (tries is not None and failures >= tries):
            return False
        logger.warning("cannot read the committed offsets (%s); asking again", failed)
        time.sleep(1.0)
    seek_back(consumer, resume_points(committed, firsts))
    return True


def assign_again(consumer: Consumer) -> None:
    """Assign the consumer's partitions again: librdkafka reads each one's committed offset
    (waiting while it is unstable) and fetches from there; the feed keeps polling meanwhile."""
    logger.warning("committed offsets unreadable: assigning the partitions again")
    consumer.assign(consumer.assignment())


def resume_points(
    committed: list[TopicPartition], firsts: list[TopicPartition]
) -> list[TopicPartition]:
    """Where each partition is read again: its committed offset or, with nothing
    committed yet, the first offset the batches read."""
    first: dict[tuple[str, int], int] = {}
    for tp in firsts:
        key = (tp.topic, tp.partition)
        first[key] = min(first.get(key, tp.offset), tp.offset)
    points = []
    for tp in committed:
        offset = tp.offset if tp.offset >= 0 else first.get((tp.topic, tp.partition), -1)
        if offset >= 0:
            points.append(TopicPartition(tp.topic, tp.partition, offset))
    return points


def seek_back(consumer: Consumer, points: list[TopicPartition]) -> None:
    for tp in points:
        try:
            consumer.seek(tp)
        except KafkaException as exc:  # no longer ours: its new owner reads it
            logger.debug("seek %s: %s", tp, exc)
