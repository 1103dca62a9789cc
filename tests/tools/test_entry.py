"""``hotswap worker`` stopped while it imports its libraries exits 0, not -15.

Those imports take seconds (more on a loaded machine), before the worker installs its own
signal handlers. Here the import of ``service.cli`` is held until the test has sent its
SIGTERM, so the stop lands in that window every time, however fast the machine.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.harness import REPO, wait_for

_HELD = """
import pathlib, runpy, sys, time

marker = pathlib.Path(sys.argv[1])

class Hold:  # the import of service.cli waits until the test has sent SIGTERM
    def find_spec(self, name, path=None, target=None):
        if name == "service.cli":
            marker.write_text("importing")
            time.sleep(60)
        return None

sys.meta_path.insert(0, Hold())
command = sys.argv[2]
sys.argv = ["hotswap", command]
runpy.run_module("service", run_name="__main__")
"""


def _stopped_while_importing(tmp_path: Path, command: str) -> int:
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _HELD, str(marker), command], cwd=REPO)
    try:
        wait_for(marker.exists, 60, "the import of service.cli")
        proc.send_signal(signal.SIGTERM)
        return proc.wait(30)
    finally:
        proc.kill()
        proc.wait()


def test_a_worker_stopped_while_it_starts_exits_0(tmp_path: Path) -> None:
    assert _stopped_while_importing(tmp_path, "worker") == 0


@pytest.mark.parametrize("command", ["publish", "status"])
def test_other_commands_keep_the_default_stop(tmp_path: Path, command: str) -> None:
    # A publish cut short must not look like one that succeeded.
    assert _stopped_while_importing(tmp_path, command) == -signal.SIGTERM
