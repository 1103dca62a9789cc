"""The fleet seen from one worker: who is alive, whether they agree, their rollout totals.

Transport-free: it reads :class:`WorkerStatus` heartbeats (however they were
received) and answers ``GET /fleet`` and the decider of automatic promotion.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from service.core.rollout_messages import RolloutFigures, WorkerStatus

__all__ = ["disagreements", "fleet_figures", "fleet_view", "live_workers"]

logger = logging.getLogger(__name__)


def live_workers(
    statuses: Iterable[WorkerStatus], *, group: str, now: datetime, window: float
) -> list[WorkerStatus]:
    """Workers of ``group`` heard from within ``window`` seconds, by id."""
    oldest = now - timedelta(seconds=window)
    alive = [s for s in statuses if s.group == group and s.last_seen >= oldest]
    return sorted(alive, key=lambda s: s.id)


def disagreements(workers: Iterable[WorkerStatus]) -> dict[str, dict[str, list[str]]]:
    """Models whose serving version differs across ``workers``: name -> version -> worker ids.

    A worker that serves nothing for a name others serve counts as version ``"none"``.
    """
    workers = list(workers)
    names = sorted({name for w in workers for name in w.models})
    split: dict[str, dict[str, list[str]]] = {}
    for name in names:
        versions: dict[str, list[str]] = {}
        for w in workers:
            versions.setdefault(w.models.get(name, "none"), []).append(w.id)
        if len(versions) > 1:
            split[name] = versions
    return split


def fleet_figures(
    workers: Iterable[WorkerStatus], name: str, candidate: str, *, mine: str, own: RolloutFigures
) -> RolloutFigures:
    """Totals of every live worker's figures for ``candidate`` of ``name``.

    This worker (id ``mine``) counts with ``own``, its figures now, rather than
    with its last heartbeat.
    """
    total = own
    for worker in workers:
        if worker.id == mine:
            continue
        figures = worker.figures(name, candidate)
        if figures is not None:
            total = total.plus(figures)
    return total


def fleet_view(workers: list[WorkerStatus], *, group: str, me: str) -> dict[str, Any]:
    """The ``GET /fleet`` document."""
    return {
        "group": group,
        "me": me,
        "workers": [w.model_dump(mode="json") for w in workers],
        "disagreements": disagreements(workers),
    }
