"""The docs site builds with ``mkdocs build --strict``: a broken link, a missing anchor, a page
left out of the nav or a bad mkdocs.yml fails here, and so in ``make test``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.docs.pages import REPO


def test_the_site_builds_strict(tmp_path: Path) -> None:
    site = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=REPO,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (site / "index.html").is_file()
    assert (site / "reference" / "configuration" / "index.html").is_file()
