"""CPU time and memory of a process tree, read from /proc.

Read from outside the process so that every contender is measured the same way
(no instrumentation inside, nothing that could favour one of them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ProcStats"]

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStats:
    """The process ``pid`` and its live children (any thread may have spawned them)."""

    pid: int

    def tree(self) -> list[int]:
        pids: list[int] = []
        todo = [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            for children in Path(f"/proc/{pid}/task").glob("*/children"):
                try:
                    todo += [int(c) for c in children.read_text().split()]
                except OSError:
                    continue
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU seconds (utime + stime) of every live process in the tree."""
        ticks = 0
        for pid in self.tree():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12])
        return ticks / _TICKS

    def _status_mb(self, key: str) -> float:
        kb = 0
        for pid in self.tree():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            kb += sum(int(line.split()[1]) for line in lines if line.startswith(key + ":"))
        return kb / 1024

    def rss_mb(self) -> float:
        """Resident set size now (VmRSS)."""
        return self._status_mb("VmRSS")

    def peak_rss_mb(self) -> float:
        """Largest resident set size since the process started (VmHWM)."""
        return self._status_mb("VmHWM")
