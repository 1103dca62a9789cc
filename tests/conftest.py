"""Shared fixtures: tiny models built in tmp_path/memory, and a real broker per session."""

import compileall
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Property tests judge correctness, never speed: on a loaded 2-core machine one example can
# take longer than hypothesis' default 200 ms deadline, which would fail a correct test.
settings.register_profile(
    "hotswap", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("hotswap")

pytest_plugins = [
    "tests.models",
    "tests.brokers",
    "tests.s3server",
    "tests.mlflowserver",
    "tests.registry",
]

# The test files that take longest (seconds of wall time on 2 cores, from `--durations=0`),
# collected first. pytest-xdist (`--dist loadfile --no-loadscope-reorder`) hands files out
# in collection order, so the long ones start at once instead of leaving one worker busy
# with them at the end while the others idle. Unlisted files keep their order, after these.
SLOWEST_FIRST = (
    "tests/e2e/test_faults.py",  # ~180 s
    "tests/e2e/test_faults_exactly_once.py",  # ~180 s
    "tests/kafka/test_secured.py",  # ~200 s, a SASL_SSL broker of its own
    "tests/e2e/test_demo.py",  # ~90-160 s
    "tests/e2e/test_rollouts.py",
    "tests/e2e/test_quality.py",
    "tests/e2e/test_mlflow.py",  # an MLflow server of its own
    "tests/kafka/test_stopping.py",
    "tests/e2e/test_lifecycle.py",
    "tests/e2e/test_hostile_control.py",
    "tests/kafka/test_codecs.py",
    "tests/tools/test_rollback.py",
    "tests/e2e/test_schema_registry.py",  # a Schema Registry of its own
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_configure(config: pytest.Config) -> None:
    """Byte-compile the project once, before any test starts a process.

    The suite starts a few hundred ``hotswap`` processes (workers, CLI commands). Where
    ``PYTHONDONTWRITEBYTECODE`` is set, none of them writes the bytecode of the project's
    own modules, so each compiled all of them again (~0.35 s of CPU a worker). Python
    reads a ``.pyc`` whatever that variable says, and ignores one older than its source.
    Run once, by the controller (pytest-xdist's workers get ``workerinput``).
    """
    if hasattr(config, "workerinput"):
        return
    root = Path(__file__).resolve().parent.parent
    for package in ("service", "scripts", "models"):
        compileall.compile_dir(root / package, quiet=1)
