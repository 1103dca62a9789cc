"""The Docker engine as the container tests drive it (make test-image, make test-compose).

Why a module: both tests need the same few things from the engine, done the same careful
way: fail (never skip) when no engine answers, build images with the repository's own
script, read a container's state, find the user its processes really run as, and stop
containers while timing how long each took. Only the ``docker`` command line is used, so
nothing here depends on a Python Docker client. Every container the tests start carries
the label ``LABEL`` so that a failed run can still remove all of them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "DOCKER",
    "LABEL",
    "REPO",
    "Stopped",
    "build_image",
    "container_uids",
    "docker",
    "docker_unavailable",
    "http_status",
    "inspect",
    "remove_labelled",
    "stop_timed",
]

REPO = Path(__file__).resolve().parents[1]
#: Debian's client (matches the daemon scripts/docker_env.sh starts), else whatever is on PATH.
DOCKER = (
    "/usr/bin/docker" if Path("/usr/bin/docker").exists() else (shutil.which("docker") or "docker")
)
#: Label on every container a test starts: ``docker ps -a --filter label=LABEL`` finds them.
LABEL = "org.hotswap.test"


def docker(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``docker ARGS``; on failure raise with the command's output in the message."""
    result = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and result.returncode != 0:
        raise RuntimeError(
            f"docker {' '.join(args[:3])} ... exited {result.returncode}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return result


def docker_unavailable() -> str | None:
    """Why no engine and compose can be used here (``scripts/docker_env.sh --check``), or None."""
    result = subprocess.run(
        ["sh", str(REPO / "scripts" / "docker_env.sh"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return None if result.returncode == 0 else (result.stderr.strip() or "docker unavailable")


def build_image(kind: str, timeout: float = 1200) -> str:
    """Build one image with ``scripts/docker_build.sh KIND`` and return its tag.

    The script is the single recipe: the make targets, a developer and these tests all
    build the same way (base image, pinned wheelhouse, build arguments).
    """
    result = subprocess.run(
        ["sh", str(REPO / "scripts" / "docker_build.sh"), kind],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scripts/docker_build.sh {kind} failed:\n{result.stderr[-4000:]}")
    return result.stdout.strip().splitlines()[-1]


def inspect(container: str) -> dict[str, Any]:
    """``docker inspect`` of one container (or image) as a dict."""
    (found,) = json.loads(docker("inspect", container).stdout)
    assert isinstance(found, dict)
    return found


def container_uids(container: str) -> set[int]:
    """The real, effective, saved and filesystem uids of the container's main process.

    Read on the host from /proc, so it is what the kernel enforces, not what the image
    claims (``Config.User``) or what a ``docker exec`` would run as.
    """
    pid = int(inspect(container)["State"]["Pid"])
    assert pid > 0, f"{container} is not running"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return {int(uid) for uid in line.split()[1:]}
    raise AssertionError(f"no Uid line in /proc/{pid}/status")


def http_status(url: str, timeout: float = 3) -> int | None:
    """The HTTP status of GET ``url``, or None when nothing answers."""
    try:
        return httpx.get(url, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


@dataclass(frozen=True)
class Stopped:
    """How one container ended under ``docker stop``."""

    name: str
    exit_code: int
    seconds: float
    oom_killed: bool


def stop_timed(names: list[str], grace: float) -> list[Stopped]:
    """``docker stop -t GRACE`` every container at once; how each exited and how fast.

    ``docker stop`` sends SIGTERM, then SIGKILL after ``grace`` seconds: an exit code of 0
    well inside ``grace`` is a clean, prompt shutdown, 137 is a kill.
    """

    def stop(name: str) -> Stopped:
        started = time.monotonic()
        docker("stop", "-t", str(int(grace)), name, timeout=grace + 60)
        seconds = time.monotonic() - started
        state = inspect(name)["State"]
        return Stopped(name, int(state["ExitCode"]), seconds, bool(state["OOMKilled"]))

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        return list(pool.map(stop, names))


def remove_labelled(value: str) -> None:
    """Remove (forcibly) every container labelled ``LABEL=value``, running or not."""
    found = docker("ps", "-aq", "--filter", f"label={LABEL}={value}", check=False).stdout.split()
    if found:
        docker("rm", "-f", "-v", *found, check=False)
