"""Writing rollout steps to Kafka, and reading where a rollout stands.

A shadow, canary or abort step is one control message. A promotion is three
messages, in this order: the candidate into the archive (for rollback), onto
the model topic (so every worker swaps to it through the normal path, and a
restart restores it), then the ``promoted`` control message. Workers that see
``promoted`` before their swap lands keep sending every record to the
candidate until it does, so nothing ever falls back to the old version.

Where a rollout stands is read the way workers apply it: every control message
for the name, in log order, through :func:`service.core.control_rules.decide`
(junk and refused steps change nothing), against the model topic's newest
version of the name.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from service.core import errors
from service.core.control_rules import RolloutState, decide
from service.core.messages import (
    ModelMessage,
    archive_key,
    encode_model_message,
    parse_model_message,
)
from service.core.rollout_messages import (
    ControlMessage,
    encode_control_message,
    parse_control_message,
)
from service.core.settings import Settings
from service.kafka.authz import denied_as
from service.kafka.clients import ensure_topics, producer
from service.kafka.readtoend import read_to_end

__all__ = [
    "current_rollout",
    "model_records",
    "newest_model",
    "newest_value",
    "send_in_order",
    "write_control",
]

logger = logging.getLogger(__name__)

Record = tuple[str, bytes, bytes | None]  # topic, key, value


def model_records(settings: Settings, message: ModelMessage) -> list[Record]:
    """A version made current: archived first, then on the model topic."""
    value = encode_model_message(message)
    return [
        (settings.archive_topic, archive_key(message.name, message.version), value),
        (settings.model_topic, message.name.encode(), value),
    ]


async def send_in_order(settings: Settings, records: Sequence[Record]) -> None:
    """Send ``records`` one after the other, each acknowledged before the next."""
    await ensure_topics(settings, only={topic for topic, _, _ in records})
    kafka = producer(settings)
    await kafka.start()
    try:
        for topic, key, value in records:
            with denied_as("WRITE", topic):
                await kafka.send_and_wait(topic, value, key=key)
    finally:
        await kafka.stop()


async def write_control(settings: Settings, control: ControlMessage) -> None:
    """One rollout step; a promotion writes the candidate's model message first."""
    records: list[Record] = []
    if control.stage == "promoted":
        assert control.candidate is not None, "a promotion names its candidate"
        records += model_records(settings, control.candidate)
    records.append((settings.control_topic, control.name.encode(), encode_control_message(control)))
    await send_in_order(settings, records)
    logger.info("rollout of %s: %s (%s)", control.name, control.stage, control.why)


def newest_value(settings: Settings, topic: str, key: bytes) -> bytes | None:
    """The newest value for ``key`` on ``topic`` (blocking; reads the topic to its end)."""
    newest: bytes | None = None
    for message in read_to_end(settings, topic):
        if message.key() == key:
            newest = message.value()
    return newest


def newest_model(settings: Settings, name: str) -> ModelMessage | None:
    """The model topic's newest valid message for ``name`` (what workers serve, unless refused)."""
    value = newest_value(settings, settings.model_topic, name.encode())
    if value is None:
        return None
    try:
        return parse_model_message(name.encode(), value)
    except errors.ModelRejected:
        return None


def current_rollout(
    settings: Settings,
    name: str,
    serving: ModelMessage | None,
    verify: Callable[[ControlMessage], None] | None = None,
) -> RolloutState | None:
    """Where the rollout of ``name`` stands, by the workers' rule (blocking; reads the topic).

    ``serving``: the version the workers serve; ``verify``: the signature check
    the workers make (None: none).
    """
    state: RolloutState | None = None
    key = name.encode()
    for message in read_to_end(settings, settings.control_topic):
        if message.key() != key:
            continue
        value = message.value()
        if value is None:
            state = None
            continue
        try:
            control = parse_control_message(key, value)
            if verify is not None:
                verify(control)
            state = decide(state, control, serving)
        except errors.HotswapError as exc:
            logger.debug("control message for %s at %s refused: %s", name, message.offset(), exc)
    return state
