"""Outputs that the output producer never answers are sent again by a new one.

After a broker restart, librdkafka's idempotent producer once answered nothing more
for a batch (an OutOfOrderSequence, then silence): neither a delivery nor a failure,
so an at_least_once worker waited on it forever and never became ready again. The
publisher now gives a batch its records' message timeout plus a margin; past that a
new producer takes over and every output of the batch is reported failed, so the data
feed sends them all again. The silent producer is a stand-in here (the broker state
that made librdkafka go silent could not be made on purpose); everything else is real.
"""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, Producer

from service.core.outputs import InputRecord, Scored
from service.core.settings import Settings
from service.kafka.publisher import Publisher


class _Silent:
    """Takes every record and answers none of them."""

    def __init__(self) -> None:
        self.queued = 0
        self.purged = False

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.queued += 1

    def flush(self, timeout: float = 0) -> int:
        return 0 if self.purged else self.queued

    def purge(self) -> None:
        self.purged = True

    def begin_transaction(self) -> None:
        pass


def _publisher(transactional: bool) -> tuple[Publisher, _Silent]:
    settings = Settings(broker="kafka://127.0.0.1:9", stall_timeout=5.0)
    publisher = Publisher(settings, transactional=transactional)
    silent = _Silent()
    publisher._producer = silent  # type: ignore[assignment]
    publisher._check_above = 1 << 20
    publisher.begin()
    source = InputRecord(b"k", b"{}", settings.data_topic, 0, 0)
    outputs = [Scored(b"k%d" % i, b"{}", [], "m", "1", source) for i in range(3)]
    publisher.send(outputs)
    return publisher, silent


def test_a_batch_left_unanswered_past_its_timeout_is_sent_again_by_a_new_producer() -> None:
    publisher, silent = _publisher(transactional=False)
    assert publisher.wait(0.01) == (3, [])  # within its time: still waiting
    publisher._report.last = time.monotonic() - 16.0  # 5 s message timeout + 10 s margin
    left, failures = publisher.wait(0.01)
    assert left == 0
    assert [f.output.key for f in failures] == [b"k0", b"k1", b"k2"]
    assert {f.error.code() for f in failures} == {KafkaError._MSG_TIMED_OUT}
    assert silent.purged
    assert isinstance(publisher._producer, Producer)


def test_exactly_once_leaves_it_to_the_transaction() -> None:
    publisher, silent = _publisher(transactional=True)
    publisher._report.last = time.monotonic() - 1000.0
    assert publisher.wait(0.01) == (3, [])  # the feed aborts the transaction instead
    assert not silent.purged


def test_outputs_that_time_out_are_sent_again_by_a_new_producer() -> None:
    """A producer that answers every record with a timeout (seen for minutes after a broker
    restart: its partitions' leader "not found in cache") is not given the next try."""
    settings = Settings(broker="kafka://127.0.0.1:9", stall_timeout=5.0)  # nothing listens
    publisher = Publisher(settings, transactional=False)
    stuck = Producer({**publisher._config, "message.timeout.ms": 300})
    publisher._producer = stuck
    publisher._check_above = 1 << 20
    publisher.begin()
    source = InputRecord(b"k", b"{}", settings.data_topic, 0, 0)
    publisher.send([Scored(b"k%d" % i, b"{}", [], "m", "1", source) for i in range(3)])
    failures: list[Any] = []
    deadline = time.monotonic() + 60  # an upper bound: the timeout is 0.3 s
    while not failures and time.monotonic() < deadline:
        _, failures = publisher.wait(1.0)
    assert {f.error.code() for f in failures} == {KafkaError._MSG_TIMED_OUT}
    assert publisher._producer is not stuck
    assert isinstance(publisher._producer, Producer)
