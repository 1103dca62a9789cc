"""Outputs the broker refuses for good, and where they go instead.

A scored record that cannot be written becomes a dead letter of its input
(reason ``output_too_large`` or ``output_refused``); a dead letter that cannot
be written becomes a small entry without the value that names the source
topic, partition, offset and size, keeping the record's own reason. When even
that fails, the loss is logged with its coordinates; the stream goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from service.core import errors
from service.core.messages import HEADER_ORIGINAL_SIZE, HEADER_REASON
from service.core.scoring import DeadLetter, InputRecord, Scored, dead_letter
from service.kafka.delivery import Failure

__all__ = ["reroute", "tombstone_letter"]

logger = logging.getLogger(__name__)


def tombstone_letter(
    source: InputRecord, rejection: errors.RecordRejected, reason: str | None = None
) -> DeadLetter:
    """A dead letter without the record's value: where it was, how big, and why.

    ``reason`` keeps the record's own reason (e.g. ``invalid_json``) when it is
    its dead-letter copy that did not fit; ``rejection`` then says why not.
    """
    where = InputRecord(source.key, None, source.topic, source.partition, source.offset)
    letter = dead_letter(where, rejection)
    size = len(source.value or b"") + len(source.key or b"")
    headers = [(HEADER_ORIGINAL_SIZE, str(size).encode()), *letter.headers]
    if reason is not None:
        headers = [(n, reason.encode() if n == HEADER_REASON else v) for n, v in headers]
        return replace(letter, headers=headers, reason=reason)
    return replace(letter, headers=headers)


def reroute(failures: Sequence[Failure]) -> list[DeadLetter]:
    """Dead letters for outputs the broker refused for good."""
    letters: list[DeadLetter] = []
    for failure in failures:
        rejection = failure.as_rejection()
        source = failure.output.source
        if isinstance(failure.output, Scored) and failure.output.shadow:
            # The serving version's output of this record stands; a candidate's output
            # that does not fit is no reason to dead-letter the record.
            logger.warning(
                "shadow output for %s[%d]@%d refused: %s",
                source.topic,
                source.partition,
                source.offset,
                failure.error,
            )
        elif isinstance(failure.output, Scored):
            letters.append(dead_letter(source, rejection))
        elif not any(h == HEADER_ORIGINAL_SIZE for h, _ in failure.output.headers):
            letters.append(tombstone_letter(source, rejection, failure.output.reason))
        else:
            logger.error(
                "cannot write even a dead-letter entry for %s[%d]@%d: %s",
                source.topic,
                source.partition,
                source.offset,
                failure.error,
            )
    return letters
