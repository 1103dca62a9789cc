"""``GET /models/{name}/rollout`` and ``GET /fleet`` over a real registry, in process."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from service.core.metrics import Metrics
from service.core.registry import ModelRegistry
from service.core.rollout import Rollout
from service.core.rollout_messages import ControlMessage, RolloutPolicy
from service.http.api import Readiness, create_api
from service.http.rollouts import create_rollout_router
from tests.models import MessageFactory


def _client(registry: ModelRegistry, fleet: dict[str, Any] | None = None) -> TestClient:
    ready = Readiness(
        ready=True, broker_reachable=True, models_replayed=True, models=1, assigned_partitions=1
    )
    router = create_rollout_router(registry, (lambda: fleet) if fleet is not None else None)
    return TestClient(create_api(registry, Metrics(), lambda: ready, routers=[router]))


def test_rollout_view_shows_candidate_stage_policy_figures_and_history(
    make_message: MessageFactory,
) -> None:
    registry = ModelRegistry()
    registry.install(registry.build(make_message(version="1")))
    candidate = make_message(version="2")
    control = ControlMessage(
        name="wine", stage="canary", fraction=0.1, candidate=candidate,
        policy=RolloutPolicy(promote_after=100, min_agreement=0.9), who="ann@h", why="try it",
    )  # fmt: skip
    with _client(registry) as client:
        assert client.get("/models/wine/rollout").status_code == 404
        registry.begin_rollout(Rollout(control, candidate=registry.build(candidate)))
        view = client.get("/models/wine/rollout").json()
        assert (view["stage"], view["fraction"], view["candidate"], view["serving"]) == (
            "canary", 0.1, "2", "1",
        )  # fmt: skip
        assert view["policy"]["promote_after"] == 100
        assert view["report"]["compared"] == 0
        assert view["decision"] is None
        registry.end_rollout("wine", control.model_copy(update={"stage": "aborted", "why": "no"}))
        view = client.get("/models/wine/rollout").json()
        assert (view["stage"], view["decision"]["why"]) == ("aborted", "no")
        history = client.get("/models/wine/history").json()
        assert [(h["status"], h["who"], h["why"]) for h in history[-2:]] == [
            ("candidate", "ann@h", "try it"),
            ("aborted", "ann@h", "no"),
        ]
        assert client.get("/fleet").status_code == 404, "/fleet is the worker's, when given"


def test_fleet_route_serves_the_workers_view(make_message: MessageFactory) -> None:
    fleet = {"group": "g", "me": "a", "workers": [{"id": "a"}], "disagreements": {}}
    with _client(ModelRegistry(), fleet) as client:
        assert client.get("/fleet").json() == {**fleet, "refused_heartbeats": {}}


def test_every_label_of_the_safe_alphabet_reaches_the_versioned_routes(
    make_message: MessageFactory,
) -> None:
    registry = ModelRegistry()
    label = "2025-01-31_rc.1+build:7@eu~b"
    registry.install(registry.build(make_message(version=label)))
    with _client(registry) as client:
        assert client.get(f"/v2/models/wine/versions/{label}").json()["versions"] == [label]
        assert client.get(f"/v2/models/wine/versions/{label}/ready").status_code == 200
