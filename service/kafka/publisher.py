"""Writing a batch's outputs: scored records and dead letters, acknowledged or named.

One confluent-kafka producer per worker (transactional in exactly_once mode). ``produce``
only queues a record in librdkafka; :meth:`Publisher.wait` blocks (in a thread) until the
broker has answered for every record of the batch. Delivery reports come back only for
failures (``delivery.report.only.error``): a clean batch costs no Python callback per record.

A record the broker refuses for good (too large, invalid, not authorized) is not retried:
the caller routes it to the dead-letter topic with the reason, and when even the dead-letter
copy cannot be written, a small entry that names the source topic, partition, offset and
size (:func:`tombstone_letter`). Keys are partitioned like Java clients do (murmur2);
records without a key follow their source partition, keeping their order.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from service.core.scoring import Scored
from service.core.settings import Settings
from service.kafka.authz import NotAuthorized, is_denial, principal_of
from service.kafka.clients import rdkafka_config, topic_limits
from service.kafka.delivery import Failure, Output, Report, purged

__all__ = ["Publisher", "flush_promptly"]

logger = logging.getLogger(__name__)

_OVERHEAD = 512  # record and batch framing, generously
_SLICE = 0.001  # seconds: flush_promptly's step
_SLICES = 30  # its short steps before it waits in one call


def flush_promptly(producer: Producer, timeout: float) -> int:
    """``producer.flush(timeout)``, in 1-ms steps for the first ~30 ms; records unanswered.

    Short steps (each tells librdkafka's broker threads to send at once, not after
    ``linger.ms``) drained a backlog faster: in eight alternating benchmark runs,
    at_least_once reached 0.70-0.81x the floor with them and 0.60-0.73x without; a batch
    of 5 at 2,000 records/s was answered as fast either way (p50 ~1.3 ms). After
    ``_SLICES`` steps (a broker under load, or away) the wait goes on in one call.
    """
    end = time.monotonic() + timeout
    left = int(producer.flush(0))
    steps = 0
    # Until the end itself: librdkafka counts whole milliseconds and may return just before.
    while left and (remaining := end - time.monotonic()) > 0:
        left = int(producer.flush(min(remaining, _SLICE) if steps < _SLICES else remaining))
        steps += 1
    return left


def _timed_out(failure: Failure) -> bool:
    return failure.error.code() == KafkaError._MSG_TIMED_OUT


class Publisher:
    """The producer of scored records and dead letters."""

    def __init__(
        self, settings: Settings, *, transactional: bool, queue_limit: int = 1_000_000
    ) -> None:
        self._settings = settings
        self.outputs: tuple[str, ...] = (settings.scored_topic,)  # or the routes' outputs
        self.transactional = transactional
        config: dict[str, Any] = {
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": settings.producer_linger_ms,
            "compression.type": settings.producer_compression,
            "partitioner": "murmur2_random",
            "message.max.bytes": 64 * 1024 * 1024,
            "delivery.report.only.error": True,
            # librdkafka's own retries of one record; a transaction must outlive them.
            "message.timeout.ms": int(max(settings.stall_timeout, 5.0) * 1000),
            "queue.buffering.max.messages": queue_limit,  # records queued, not yet sent
        }
        if transactional:
            config["transactional.id"] = f"{settings.app_id}-{settings.worker_id}"
            config["transaction.timeout.ms"] = int(settings.transaction_timeout * 1000)
            config["message.timeout.ms"] = min(
                config["message.timeout.ms"], config["transaction.timeout.ms"]
            )
        config["on_delivery"] = self._undelivered  # called only for failures (see above)
        self._config = rdkafka_config(settings, **config)
        self._producer: Producer = None  # type: ignore[assignment]  # made by start()
        self._partitions: dict[str, int] = {}
        self._limits: dict[str, int] = {}  # max.message.bytes of each output topic
        self._check_above = 0  # values shorter than this cannot exceed any limit
        self._report = Report()
        self.started = False
        self.denied: NotAuthorized | None = None  # a refused transactional id, for /ready
        self._initialising = False  # replace(): a new producer's init_transactions timed out

    # --- lifecycle (blocking: call from a thread) ------------------------------------

    def start(self, timeout: float) -> None:
        """Fetch partition counts; in exactly_once, fence older instances of this id."""
        s = self._settings
        topics = (*self.outputs, s.shadow_topic, s.dead_letter_topic)
        if self._producer is None:
            self._limits = topic_limits(self._config, topics, timeout)
            smallest = min(self._limits.values())
            # A producer batch never exceeds the smallest topic limit, so one record that
            # is too large fails alone instead of taking its batch-mates with it.
            self._config["batch.size"] = max(1024, min(1_000_000, smallest - _OVERHEAD))
            self._check_above = smallest // 2
            self._producer = Producer(self._config)
        for topic in topics:
            self._partitions[topic] = self._count(topic, timeout)
        if self.transactional:
            self._init_transactions(timeout)
        self.started = True

    def _init_transactions(self, timeout: float) -> None:
        """``init_transactions``; a refused transactional id is named and retried.

        librdkafka makes the refusal fatal for this producer, so the next start makes a
        new one; the error is re-raised as not fatal, so the feed retries instead of
        crashing the worker (which would only crash-loop until the ACL is added).
        """
        try:
            self._producer.init_transactions(timeout)
            self.denied = None
        except KafkaException as exc:
            if not is_denial(exc):
                raise
            self._producer = None  # type: ignore[assignment]  # a new one next time
            tid = str(self._config["transactional.id"])
            self.denied = NotAuthorized(
                "WRITE", "transactional id", tid, principal_of(self._settings)
            )
            code = KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED
            raise KafkaException(KafkaError(code, self.denied.line(), fatal=False)) from None

    def _count(self, topic: str, timeout: float) -> int:
        info = self._producer.list_topics(topic, timeout=timeout).topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"no topic {topic}"))
        return len(info.partitions)

    def close(self, timeout: float) -> int:
        """Deliver what is queued, within ``timeout``; return what is left."""
        return int(self._producer.flush(timeout)) if self._producer is not None else 0

    # --- one batch ---------------------------------------------------------------------

    def begin(self) -> None:
        self._report = Report()
        if self.transactional:
            self._producer.begin_transaction()

    def send(self, outputs: Sequence[Output]) -> None:
        """Queue every output (event loop thread; never blocks for long). ``produce`` gets
        every argument by position: (topic, value, key, partition, on_delivery, callback,
        timestamp, headers), None meaning the producer's own delivery report and 0 the time
        of sending; keyword parsing cost ~0.2 µs a record."""
        self._report.sent.extend(outputs)
        self._report.last = time.monotonic()
        produce, scored_topic = self._producer.produce, self._settings.scored_topic
        check_above = self._check_above
        i, n = 0, len(outputs)
        while i < n:
            try:
                for out in outputs[i:] if i else outputs:
                    i += 1
                    # The common output, on its own short path: a keyed scored record of
                    # an ordinary size (partitioned by its key, as Java clients do).
                    if (
                        type(out) is Scored
                        and out.key is not None
                        and not out.shadow
                        and len(out.value) <= check_above
                    ):
                        topic = out.topic or scored_topic
                        produce(topic, out.value, out.key, -1, None, None, 0, out.headers)  # type: ignore[arg-type]
                    else:
                        self._send_one(out)
            except BufferError:  # the local queue is full: let librdkafka drain it, go on
                i -= 1
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused at once: this record is named, the rest go
                self._report.add(outputs[i - 1], exc.args[0])

    def _send_one(self, out: Output) -> None:
        if type(out) is Scored:
            topic = self._settings.shadow_topic if out.shadow else out.topic or self.outputs[0]
        else:
            topic = self._settings.dead_letter_topic
        key, value = out.key, out.value
        partition = (
            -1 if key is not None else max(out.source.partition, 0) % self._partitions[topic]
        )
        if value is not None and len(value) > self._check_above and self._too_large(out, topic):
            self._report.add(
                out, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "over max.message.bytes"), topic
            )
            return
        try:
            self._producer.produce(topic, value, key, partition, None, None, 0, out.headers)  # type: ignore[arg-type]
        except KafkaException as exc:
            self._report.add(out, exc.args[0], topic)

    def _undelivered(self, error: KafkaError | None, message: Any) -> None:
        """librdkafka's delivery report, for failures only (any thread)."""
        if error is None or purged(error):
            return  # purged by our own abort: that transaction's batch is sent again anyway
        self._report.add_raw(message.topic(), message.key(), message.value(), error)

    def _too_large(self, out: Output, topic: str) -> bool:
        size = len(out.value or b"") + len(out.key or b"") + _OVERHEAD
        size += sum(len(name) + len(data) + 8 for name, data in out.headers)
        return size > self._limits.get(topic, 1_000_000)

    def wait(self, timeout: float) -> tuple[int, list[Failure]]:
        """Block until every queued record is answered or ``timeout``; (left, failures).

        at_least_once: records still unanswered well past their message timeout never
        will be (seen after a broker restart: librdkafka's idempotent producer, after an
        OutOfOrderSequence, answered nothing more). A new producer takes over and every
        output of the batch is reported failed, so the caller sends them all again
        (duplicates, never a loss). exactly_once aborts the transaction instead.
        """
        try:
            left = flush_promptly(self._producer, timeout)
        except KafkaException as exc:  # a fatal error (fenced): every output failed with it
            self._report.take()
            if not self.transactional:
                self.renew()  # exactly_once: Transactions counts the fence, then replaces it
            return 0, [Failure(out, exc.args[0]) for out in self._unique_sent()]
        bound = self._config["message.timeout.ms"] / 1000 + 10.0
        if not left or self.transactional or time.monotonic() - self._report.last < bound:
            failures = self._report.take()
            if not (left or self.transactional) and any(_timed_out(f) for f in failures):
                # Undelivered for a whole message timeout: a producer stuck after a broker
                # restart (a leader "not found in cache") timed out every retry for minutes.
                logger.warning("%d outputs timed out: a new producer sends them", len(failures))
                self.renew()
            return left, failures
        logger.warning("%d outputs unanswered for %.0f s: a new producer sends them", left, bound)
        self.renew()
        self._report.take()
        again = KafkaError(KafkaError._MSG_TIMED_OUT, "unanswered: sent again by a new producer")
        return 0, [Failure(out, again) for out in self._unique_sent()]

    def _unique_sent(self) -> list[Output]:
        return list({id(out): out for out in self._report.sent}.values())

    def commit(self, offsets: list[Any], group_metadata: Any, timeout: float) -> None:
        """exactly_once: the batch's outputs and input offsets become visible together.

        On one producer: a commit that hung past its bound may wake after a replacement,
        and must not commit the next attempt's half-sent batch (duplicates were seen)."""
        producer = self._producer
        producer.send_offsets_to_transaction(offsets, group_metadata, timeout)
        producer.commit_transaction(timeout)

    def settle(self, offsets: list[Any], group_metadata: Any, timeout: float) -> None:
        """exactly_once: commit ``offsets`` in a transaction of their own, with no outputs.

        Used when the group's committed offsets stay unreadable after this producer was
        replaced (see :meth:`Transactions.settle`); a failure aborts and raises."""
        producer = self._producer
        producer.begin_transaction()
        try:
            producer.send_offsets_to_transaction(offsets, group_metadata, timeout)
            producer.commit_transaction(timeout)
        except KafkaException:
            producer.abort_transaction(timeout)
            raise

    def abort(self, timeout: float) -> None:
        if self.transactional:
            self._producer.abort_transaction(timeout)

    def renew(self) -> None:
        """A new producer in place of this one, whose queued records are purged.

        See :meth:`wait` for at_least_once; :meth:`replace` for exactly_once.
        """
        old, self._producer = self._producer, Producer(self._config)
        if old is not None:
            with contextlib.suppress(KafkaException):  # a fenced one raises its error again
                old.purge()
                old.flush(0)

    def replace(self, timeout: float) -> None:
        """After a fatal error: a new producer under the same transactional id.

        ``init_transactions`` bumps the id's epoch, which aborts whatever the old
        producer left open; the batch is then sent again in a new transaction.
        """
        if not self._initialising:  # else resume the one whose init timed out (see below)
            self.renew()
        # A timed-out init_transactions is retriable and must be resumed on the same
        # producer: a second producer would get its epoch, and then be fenced when the first
        # one's request completes (seen on a broker restart).
        self._initialising = True
        try:
            self._producer.init_transactions(timeout)
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            self._initialising = bool(error is not None and error.retriable())
            raise
        self._initialising = False

    def abandon_init(self) -> None:
        """Give up resuming an init_transactions that hangs: the next replace makes a new
        producer (if the hung one ever completes, it fences that one, which is replaced in
        turn: see ``transactions.FENCES``)."""
        self._initialising = False

    def poll(self) -> None:
        self._producer.poll(0)
