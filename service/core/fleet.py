"""The fleet seen from one worker: who is alive, whether they agree, their rollout totals.

Transport-free: it reads :class:`WorkerStatus` heartbeats (however they were
received) and answers ``GET /fleet`` and the decider of automatic promotion.

**Liveness is judged by arrival.** A worker is live when one of its heartbeats
*arrived here* within the window: the local monotonic clock at receipt, not
the sender's ``last_seen`` (a skewed or lying clock, e.g. a ``last_seen`` in
2099, cannot keep a ghost alive) and not the record's broker timestamp (under
the default ``CreateTime`` that is the sender's clock again). Heartbeats read
while replaying the topic at start-up count as not heard yet: a stopped
worker's last heartbeat is in the log too. The sender's clock skew
(``last_seen`` minus local receipt time) is shown, never used.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from service.core.registry import ModelRegistry
from service.core.rollout_messages import RolloutFigures
from service.core.status_messages import (
    MAX_LISTED,
    RolloutSummary,
    WorkerStatus,
    routing,
    routing_digest,
)

__all__ = [
    "Heard",
    "disagreements",
    "fleet_figures",
    "fleet_view",
    "live_workers",
    "routes_of",
    "status_of",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Heard:
    """A heartbeat and when it arrived here (monotonic seconds, and the wall clock)."""

    status: WorkerStatus
    arrived: float
    received_at: datetime

    @property
    def clock_skew_seconds(self) -> float:
        """How far ahead of this worker's clock the sender's clock was (negative: behind)."""
        return round((self.status.last_seen - self.received_at).total_seconds(), 3)


def live_workers(heard: Iterable[Heard], *, group: str, now: float, window: float) -> list[Heard]:
    """Workers of ``group`` whose heartbeat arrived within ``window`` seconds of ``now``, by id."""
    alive = [h for h in heard if h.status.group == group and now - h.arrived <= window]
    return sorted(alive, key=lambda h: h.status.id)


def routes_of(worker: WorkerStatus) -> dict[str, str]:
    """How ``worker`` routes each model it lists (see :func:`routing`)."""
    names = set(worker.models) | set(worker.rollouts)
    return {n: routing(worker.models.get(n), worker.rollouts.get(n)) for n in names}


def disagreements(workers: Iterable[WorkerStatus]) -> dict[str, dict[str, list[str]]]:
    """Models that workers route differently: name -> routing -> worker ids.

    Not only the serving version: a rollout stage, candidate or canary
    fraction that differs counts too. A worker that serves nothing for a name
    others serve counts as ``"none"`` (unless its heartbeat left that name
    out); workers whose whole routing (``routing_digest``) differs with no
    listed name to show it appear under ``"(models not listed)"``.
    """
    workers = list(workers)
    routes = {w.id: routes_of(w) for w in workers}
    names = sorted({name for r in routes.values() for name in r})
    split: dict[str, dict[str, list[str]]] = {}
    for name in names:
        seen: dict[str, list[str]] = {}
        for w in workers:
            route = routes[w.id].get(name)
            if route is None and w.models_left_out:
                continue  # not listed: the digest below still tells
            seen.setdefault(route or "none", []).append(w.id)
        if len(seen) > 1:
            split[name] = seen
    digests: dict[str, list[str]] = {}
    for w in workers:
        digests.setdefault(w.routing_digest[:16] or "?", []).append(w.id)
    if not split and len(digests) > 1:
        split["(models not listed)"] = digests
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


def status_of(registry: ModelRegistry, **fields: Any) -> WorkerStatus:
    """This worker's heartbeat: at most :data:`MAX_LISTED` models and rollouts, all counted.

    Listed first: the rollouts that route records (active), then by name.
    ``fields`` are the rest (id, host, http, group, partitions, lag, ready).
    """
    serving = {m.name: m.version for m in registry.models()}
    summaries: dict[str, RolloutSummary] = {}
    for rollout in registry.rollouts():
        view = rollout.describe(registry.get(rollout.name))
        summaries[rollout.name] = RolloutSummary(
            stage=rollout.stage,  # type: ignore[arg-type]
            fraction=view["fraction"],
            candidate=view["candidate"],
            active=rollout.active(),
            figures=rollout.figures(registry.get(rollout.name)),
            rejected=(rollout.rejected or "")[:500] or None,
        )
    every = set(serving) | set(summaries)
    digest = routing_digest((n, routing(serving.get(n), summaries.get(n))) for n in every)
    ranked = sorted(summaries, key=lambda n: (not summaries[n].active, n))[:MAX_LISTED]
    return WorkerStatus(
        models={n: serving[n] for n in sorted(serving)[:MAX_LISTED]},
        rollouts={n: summaries[n] for n in ranked},
        models_total=len(serving),
        rollouts_total=len(summaries),
        routing_digest=digest,
        **fields,
    )


def fleet_view(
    me: WorkerStatus, others: list[Heard], *, group: str, received_at: datetime
) -> dict[str, Any]:
    """The ``GET /fleet`` document: this worker as it is now, and every live other."""
    rows: list[tuple[WorkerStatus, dict[str, Any]]] = [
        (me, {"received_at": received_at.isoformat(), "clock_skew_seconds": 0.0})
    ]
    for heard in others:
        if heard.status.id != me.id:
            seen = {
                "received_at": heard.received_at.isoformat(),
                "clock_skew_seconds": heard.clock_skew_seconds,
            }
            rows.append((heard.status, seen))
    rows.sort(key=lambda row: row[0].id)
    workers = [{**w.model_dump(mode="json"), **extra} for w, extra in rows]
    for shown, (w, _) in zip(workers, rows, strict=True):
        shown["models_left_out"] = w.models_left_out
    return {
        "group": group,
        "me": me.id,
        "workers": workers,
        "disagreements": disagreements(w for w, _ in rows),
    }
