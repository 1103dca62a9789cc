"""The data path: fetch a batch, have the scoring agent score it, deliver, commit.

One confluent-kafka consumer in the ``HOTSWAP_APP_ID`` group reads a batch at a time; the Faust
scoring agent scores each batch as one event; this feed sends the outputs and waits for the
broker's answer for each before committing: in ``at_least_once`` the offsets, once every output
is acknowledged (a crash in between re-scores the batch: duplicates, never a loss); in
``exactly_once`` one transaction per batch holding outputs and offsets, with the group generation
the batch was read in (KIP-447), so a zombie is fenced; a failure aborts it and it is read again.

Batch N's delivery overlaps fetching and scoring N+1; a rebalance waits for the batch in flight.
Blocking calls run on two threads; a stop ends the batch in ``HOTSWAP_STOP_TIMEOUT``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition
from mode import Service

from service.core import errors
from service.core.metrics import Metrics
from service.core.scoring import InputRecord
from service.core.settings import Settings
from service.kafka.assignment import Assignment
from service.kafka.batch import Batch, BatchState, account, assign_again, rewind
from service.kafka.clients import group_consumer_config
from service.kafka.commits import DeliveredOffsets
from service.kafka.delivery import Output, permanent
from service.kafka.fetched import fetch, records_of, unstarted
from service.kafka.lag import Lag
from service.kafka.memory import tune_memory
from service.kafka.publisher import Publisher
from service.kafka.refused import reroute
from service.kafka.routing import Routing
from service.kafka.threads import bounded, wait_or_stop
from service.kafka.transactions import Transactions

__all__ = ["DataFeed"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
HandOver = Callable[[Batch], Awaitable[None]]
Offsets = list[TopicPartition]


class DataFeed(Assignment, Service):
    """Consumes the data topic batch by batch and commits what was delivered."""

    def __init__(
        self,
        settings: Settings,
        *,
        models_replayed: asyncio.Event,
        hand_over: HandOver,
        publisher: Publisher,
        metrics: Metrics,
        on_fenced: Callable[[], None],
        routing: Routing | None = None,  # with routes: decoding, enriched outputs, held routes
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._settings = settings
        self._replayed = models_replayed
        self._hand_over = hand_over
        self._publisher = publisher
        self._metrics = metrics
        self._on_fenced = on_fenced
        self._routing = routing
        self._eos = settings.processing_guarantee == "exactly_once"
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-consumer")
        self._sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="data-producer")
        self._delivery: asyncio.Future[bool] | None = None  # the batch being delivered
        self._in_flight: tuple[Offsets, Offsets] = ([], [])  # its ends and firsts
        self._idle = threading.Event()  # set while no batch is being delivered
        self._idle.set()
        self._consumer: Consumer | None = None
        self._assigned: set[tuple[str, int]] = set()
        self._offsets = DeliveredOffsets()  # at_least_once: what may be committed
        self._finished = asyncio.Event()
        self._deadline: float | None = None  # set by a stop: give up the batch after it
        self.progress = BatchState.of(settings)
        self.lag = Lag()  # records of its partitions not yet fetched, for heartbeats
        self._txn = Transactions(publisher, metrics, self._send_call, self._gave_up, self._fenced)
        self._txn.group = (settings.app_id, group_consumer_config(settings))  # for settle()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """On the consumer's thread: fetching, seeking, closing."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def _send_call(self, fn: Callable[..., T], *args: Any) -> T:
        """On the producer's thread: waiting for acknowledgements, transactions."""
        return await asyncio.get_running_loop().run_in_executor(self._sender, fn, *args)

    def _fetch(self, consumer: Consumer, most: int, wait: float) -> tuple[list[Message], Any]:
        """A batch and, in exactly_once, the group generation it was read in, which its commit
        carries (KIP-447): if a rebalance moved its partitions on, the commit is refused."""
        self._offsets.commit_pending(consumer)  # at_least_once: batches delivered meanwhile
        self.lag.refresh(consumer, self._assigned)
        if self._routing is not None:
            self._routing.resume_due(consumer)
        messages = self.progress.seen(fetch(consumer, most, wait, not self._eos))
        if unstarted(messages):  # once the batch in flight is committed, read from there
            self._idle.wait(self._settings.stop_timeout + self._settings.transaction_timeout)
            assign_again(consumer)
            return [], None
        if not messages:  # a consumer left outside its group for long: a new one
            self._rejoin_if_outside(consumer)
        return messages, consumer.consumer_group_metadata() if self._eos and messages else None

    # --- lifecycle -----------------------------------------------------------------

    @Service.task
    async def _run(self) -> None:
        try:
            if not self._replayed.is_set():
                logger.info("scoring waits for the model topic to be replayed")
                await wait_or_stop(self._replayed.wait(), lambda: self.should_stop)
            tune_memory()  # start-up is over: what it built lives until exit
            if not self.should_stop:
                await self._start_clients()
            while not self.should_stop:
                await self._step()
            await self._delivered()
        except Exception as exc:
            logger.exception("the data feed failed: %s", exc)
            raise
        finally:
            self._finished.set()

    @Service.timer(1.0)
    async def _watch(self) -> None:
        """Keep ``hotswap_stalled`` current for scrapes, not only for ``/ready``."""
        self._metrics.stalled.set(1 if self.progress.stalled() else 0)

    async def _start_clients(self) -> None:
        delay = 0.5
        while not self.should_stop:
            try:
                await self._call(self._publisher.start, 5.0)
                break
            except KafkaException as exc:
                if exc.args and exc.args[0].fatal():
                    raise
                logger.warning("output producer cannot start (%s); retry in %.1fs", exc, delay)
                await self.sleep(delay)
                delay = min(delay * 2, 5.0)
        if not self.should_stop:
            self._consumer = await self._call(self._make_consumer)

    async def on_stop(self) -> None:
        """Let the in-flight batch finish and commit, then leave the group."""
        budget = self._settings.stop_timeout
        self._deadline = time.monotonic() + budget
        slack = 1.0  # for the last commit and leaving the group; halved if the broker is silent
        try:
            await asyncio.wait_for(self._finished.wait(), timeout=budget)
        except TimeoutError:
            logger.warning("the in-flight batch did not finish within %.1f s", budget)
            slack = 0.5
        if self._consumer is not None and not self._eos:
            await self._offsets.commit_sync(self._consumer, slack)
        # On a thread of its own: the feed's thread may still be blocked on a silent broker.
        if not await bounded(self._close, slack):
            logger.warning("the data consumer did not leave its group within %.1f s", slack)
        self._thread.shutdown(wait=False, cancel_futures=True)
        self._sender.shutdown(wait=False, cancel_futures=True)

    def _close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:  # leaves the group at once: the partitions move now
            consumer.close()
        self._publisher.close(0.5)

    async def _step(self) -> None:
        """Fetch and score a batch while the previous one is delivered, then deliver it.

        The broker's acknowledgements (or the transaction commit) of batch N overlap the
        fetching and scoring of batch N+1, whose outputs are sent only once N is committed,
        so order per partition holds. If N's transaction aborts, the consumer is rewound
        and N+1 is dropped unsent; with no N+1, at the next empty fetch."""
        consumer = self._consumer
        assert consumer is not None
        s = self._settings
        most = s.transaction_records if self._eos else s.batch_size
        wait = s.transaction_time if self._eos else s.batch_timeout
        messages, generation = await self._call(self._fetch, consumer, most, wait)
        if not messages:
            if self._delivery is None or self._delivery.done():
                # Aborted: read again, though nothing follows (unless a new consumer took over).
                if not await self._delivered() and self._consumer is consumer:
                    await self._rewind(consumer, *self._in_flight)
                    return
                self.progress.idle()
            return
        records, letters, offsets, firsts = records_of(messages)
        failed: Exception | None = None
        outputs: list[Output] = []
        try:
            outputs = await self._score(records) + letters
            if self._routing is not None:  # enriched outputs; a route the registry refuses waits
                outputs, offsets, firsts = await self._call(
                    self._routing.write, consumer, outputs, offsets, firsts
                )
        except errors.RegistryUnavailable as exc:  # not the records' fault: read them again
            failed = self.progress.waiting(offsets, exc)
        except Exception as exc:  # not a record's fault (the scorer names those): read again
            logger.exception("scoring %d records failed", len(records))
            failed = self.progress.waiting(offsets, exc)  # stalled, for /ready, if it lasts
        delivered = await self._delivered()
        if not delivered or failed is not None:
            # The previous transaction aborted (read it again, and this batch after it),
            # or this batch could not be scored.
            ends, starts = ([], []) if delivered else self._in_flight
            await self._rewind(consumer, ends + offsets, starts + firsts)
            if failed is not None:
                await self.sleep(self.progress.retry_in)
            return
        if not offsets:  # every partition of the batch is held back
            return
        self.progress.started(offsets)
        self._idle.clear()
        self._in_flight = (offsets, firsts)
        delivery = self._deliver(consumer, offsets, outputs, generation)
        self._delivery = asyncio.ensure_future(delivery)
        self._delivery.add_done_callback(lambda _: self._idle.set())

    async def _rewind(self, consumer: Consumer, ends: Offsets, firsts: Offsets) -> None:
        """Read the batches again from the committed offsets (:func:`rewind`); if unreadable,
        settle them (``Transactions.settle``) or assign the partitions again to read from them."""
        if await self._call(rewind, consumer, ends, firsts, self._gave_up, 3):
            return
        eos = self._eos and self._txn.replaced
        if (eos and await self._txn.settle(consumer, ends, firsts, self._call)) or self._gave_up():
            return
        await self._call(assign_again, consumer)

    async def _delivered(self) -> bool:
        """Wait for the batch being delivered; False if it was not committed."""
        if self._delivery is None:
            return True
        delivery, self._delivery = self._delivery, None
        return await delivery

    async def _score(self, records: list[InputRecord]) -> list[Output]:
        if not records:
            return []
        if self._routing is not None:  # framed records, decoded with the registry's schemas
            await self._call(self._routing.decode, records)
        batch = Batch(records)
        await self._hand_over(batch)
        return await batch.done

    async def _deliver(
        self, consumer: Consumer, offsets: Offsets, outputs: list[Output], generation: Any
    ) -> bool:
        """Send ``outputs`` until every one is acknowledged (or rerouted), then commit."""
        await self._send_call(self._publisher.begin) if self._eos else self._publisher.begin()
        pending: list[Output] = outputs
        attempt = 0
        while True:
            if self._gave_up():  # a stop ran out of time: nothing is committed, all read again
                logger.warning("stopping with a batch undelivered; it will be scored again")
                if self._eos:
                    await self._send_call(self._txn.abandon)
                return False
            if pending:
                self._publisher.send(pending)
            started = time.monotonic()
            left, failures = await self._send_call(self._publisher.wait, 1.0)
            while left and not self._gave_up():
                if self._eos and time.monotonic() - started > self._settings.transaction_timeout:
                    logger.warning("%d outputs unacknowledged; aborting the transaction", left)
                    break
                left, more = await self._send_call(self._publisher.wait, 1.0)
                failures += more
            hard = permanent(failures)
            refused = {id(f.output) for f in hard}
            self.progress.failed(failures, left, len(hard))
            letters: list[Output] = list(reroute(hard))
            if hard:
                self._metrics.outputs_rerouted.inc(len(hard))
                outputs = [o for o in outputs if id(o) not in refused] + letters
            if self._eos:
                if failures or left:
                    attempt += 1  # again, or a record refused (its request spent sequence
                    # numbers: the next commit was refused as out of order): a new producer
                    if not await self._txn.again(failures, fresh=attempt >= 2 or bool(hard)):
                        return False  # stopping: fenced, or out of time
                    pending = outputs
                    continue
                if await self._txn.commit(generation, offsets):
                    break
                return False  # aborted: the records are read again from the committed offsets
            pending = [f.output for f in failures if id(f.output) not in refused] + letters
            if not pending and not left:
                if self._deadline is None:  # committed by the consumer's thread, before its
                    self._offsets.delivered(offsets, commit=True)  # next fetch
                else:
                    self._offsets.delivered(offsets)
                    await self._offsets.commit_sync(consumer, self._deadline - time.monotonic())
                break
            await asyncio.sleep(1.0 if self.progress.denied else 0.2)  # an ACL: not soon
        self.progress.committed()
        account(self._metrics, outputs)
        return True

    def _fenced(self) -> None:
        self._on_fenced()
        self._deadline = time.monotonic()

    def _gave_up(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline
