"""Shared fixtures: tiny models built in tmp_path/memory, and a real broker per session."""

pytest_plugins = [
    "tests.models",
    "tests.brokers",
    "tests.s3server",
    "tests.mlflowserver",
    "tests.registry",
]
