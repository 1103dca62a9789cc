"""The README's first command: the demo stack starts, scores, swaps, rejects, and stops."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.harness import REPO
from scripts.localkafka import free_port

pytestmark = pytest.mark.integration


@pytest.mark.timeout(1500)  # beyond the demo's own bound below, so that one names the step
def test_demo_runs_the_whole_stack_and_stops_cleanly(tmp_path: Path) -> None:
    demo = subprocess.Popen(
        [
            sys.executable, "scripts/demo.py", "--port", str(free_port()),
            "--http-port", str(free_port()), "--duration", "1", "--swap-every", "2",
            "--rate", "300", "--state-dir", str(tmp_path / "demo"),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        out, err = demo.communicate(timeout=900)  # a bound, not a budget: it waits on events
    except subprocess.TimeoutExpired:
        demo.terminate()  # as Ctrl-C: the demo stops its broker, registry and worker itself
        out, err = demo.communicate(timeout=120)
        pytest.fail(f"the demo did not finish within 900 s:\n{out}{err}")
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, out + err
    assert "[demo] ready" in out
    assert "published wine version 2 (wine-forest)" in out
    assert "corrupt wine version 3" in out
    assert "last rejection: v3 sha256_mismatch" in out
    assert "wine v2 (wine-forest (demo))" in out, out
    assert "wine version 4 (wine-forest) in shadow" in out, out
    assert "[demo] promoted the candidate (compared" in out, out
    # The labels the producer streams abort the weak canary on quality, and the table shows it.
    assert "wine version 5 (wine-stump) as a canary, decided by the labels" in out, out
    aborted = [line for line in out.splitlines() if "the labels aborted wine v5" in line]
    assert aborted, out
    assert "accuracy" in aborted[0], out
    table = out.split(aborted[0], 1)[1]  # what `hotswap quality wine` printed after it
    assert "labelled" in table, out
    assert "accuracy" in table, out
    enriched = [line for line in out.splitlines() if "payments.scored (Avro, enriched)" in line]
    assert enriched, out  # read back with AvroDeserializer and the registry alone
    assert "'prediction': {'model': 'payments', 'version': '1', 'label': " in enriched[0]
    assert "'merchant': {'name': 'shop-" in enriched[0]
    scored = [line for line in out.splitlines() if " rec/s" in line and "in all" in line]
    assert scored, out
    assert int(scored[-1].split(" in all")[0].rsplit(" ", 1)[1]) > 1000
    assert out.rstrip().endswith("[demo] stopped")
