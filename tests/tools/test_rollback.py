"""``hotswap rollback NAME`` without ``--to``: the previous version comes from Kafka alone.

So it works with no worker at all, after any worker restart, and rolling back
twice returns to where it began (as ``kubectl rollout undo`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.harness import WorkerProcess, publish_file, run_cli, wait_for
from service.core.settings import Settings
from service.tools.rollback import choose_previous


def test_previous_is_the_version_made_current_before_the_current_one() -> None:
    assert choose_previous(["1", "2", "3"], "3") == "2"
    assert choose_previous(["1", "3", "2"], "2") == "3"  # after a rollback 3 -> 2: undo it
    assert choose_previous(["1", "2", "3"], "2") == "1"  # a worker serves 2 (3 was rejected)
    assert choose_previous(["1", "2", "3"], "3", rejected={"2"}) == "1"
    assert choose_previous(["1", "2", "3"], None) == "3"  # the model was deleted
    assert choose_previous(["1", "2", "3"], "9") == "3"  # current never archived
    assert choose_previous(["1"], "1") is None
    assert choose_previous([], None) is None


@pytest.mark.integration
def test_rollback_without_to_after_a_worker_restart(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], WorkerProcess],
    trained: dict[str, Path],
) -> None:
    settings = make_settings()
    for version, kind in (("1", "wine-logreg"), ("2", "wine-tree")):
        publish_file(settings, trained[kind], "wine", version)  # as `hotswap publish` does
    first = workers(settings)
    first.wait_ready()
    assert first.model_version("wine") == "2"
    assert first.stop() == 0

    # No worker is running: nothing remembers anything but Kafka.
    back = run_cli(settings, "rollback", "wine")
    assert back.stdout == "wine: version 1 is current again (workers swap to it now)\n"
    assert back.stderr == ""

    restarted = workers(settings)
    restarted.wait_ready()
    wait_for(lambda: restarted.model_version("wine") == "1", 30, "v1 after the restart")

    # With the restarted worker running: undo the rollback, then roll back again via --url.
    assert "version 2 is current again" in run_cli(settings, "rollback", "wine").stdout
    wait_for(lambda: restarted.model_version("wine") == "2", 30, "v2 again")
    again = run_cli(settings, "rollback", "wine", "--url", restarted.url)
    assert "version 1 is current again" in again.stdout
    wait_for(lambda: restarted.model_version("wine") == "1", 30, "v1 again")


@pytest.mark.integration
def test_rollback_without_to_and_no_earlier_version(
    make_settings: Callable[..., Settings], trained: dict[str, Path]
) -> None:
    settings = make_settings()
    none = run_cli(settings, "rollback", "wine", check=False)
    assert none.returncode == 1
    assert none.stderr == "error: wine has no archived version: publish one first\n"
    publish_file(settings, trained["wine-logreg"], "wine", "1")
    only = run_cli(settings, "rollback", "wine", check=False)
    assert only.returncode == 1
    assert only.stderr.splitlines() == [
        "error: wine has no version made current before 1: pass --to VERSION (archived: 1)"
    ]
