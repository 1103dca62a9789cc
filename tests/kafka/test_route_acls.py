"""The worker's ACLs with routes: its routes' topics, not the default data and scored topics."""

from __future__ import annotations

from pathlib import Path

from service.core.settings import Settings
from service.kafka.acls import role_acls


def test_a_routed_worker_needs_its_routes_topics_and_not_the_defaults(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "routes:\n"
        "  - topic: payments\n    model: fraud\n    output: payments.scored\n"
        '  - pattern: "^orders\\\\.(eu|us)$"\n    model: fraud\n    output: orders.scored\n'
        '  - pattern: "a|b"\n    model: fraud\n    output: ab.scored\n'
        '  - pattern: "shipments-\\\\d+"\n    model: fraud\n    output: ab.scored\n'
    )
    acls = role_acls(Settings(routes=str(routes)), "worker")
    rights = {(a.operation, a.name, a.prefixed) for a in acls if a.resource == "topic"}
    assert ("READ", "payments", False) in rights
    assert ("READ", "orders.", True) in rights  # every topic the pattern may match
    assert ("READ", "*", False) in rights  # an alternation may start with anything
    assert ("READ", "shipments-", True) in rights  # \\d is a class, not a letter d
    for output in ("payments.scored", "orders.scored", "ab.scored"):
        assert ("WRITE", output, False) in rights
        assert ("DESCRIBE_CONFIGS", output, False) in rights
    assert not {name for _, name, _ in rights} & {"records", "scored"}
    assert ("WRITE", "records.dlq", False) in rights  # the rest as without routes
    assert len(acls) == len(set(acls))
