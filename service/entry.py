"""The ``hotswap`` command's first lines: a worker stopped while it starts exits 0.

Importing the worker's libraries takes seconds (over ten on a loaded machine), and until the
worker installs its own signal handlers Python's default one killed it on SIGTERM (-15): a
supervisor stopping a starting worker saw it fail. Nothing is read or written before those
handlers exist, so the process simply ends. Other commands keep the default: a publish cut
short must not look like one that succeeded.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

__all__ = ["main"]


def _stop_while_starting(signum: int, frame: FrameType | None) -> None:
    os._exit(0)


def _command(argv: list[str]) -> str | None:
    """The subcommand: the first argument that is not an option."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main() -> int:
    if _command(sys.argv[1:]) == "worker":
        signal.signal(signal.SIGTERM, _stop_while_starting)
    from service.cli import main as cli_main

    return cli_main()
