"""The README stays true: every setting, reason code, metric and command is documented."""

from __future__ import annotations

import re
from pathlib import Path

from service.cli import COMMANDS
from service.core import errors
from service.core.metrics import Metrics
from service.core.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `(HOTSWAP_[A-Z_]+)` \|", README, re.MULTILINE))
    assert documented == {f"HOTSWAP_{name.upper()}" for name in Settings.model_fields}


def test_every_reason_code_is_documented() -> None:
    reasons = {
        cls.reason
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.HotswapError)
    } - {"error", "invalid_record", "model_rejected"}
    missing = {r for r in reasons if f"`{r}`" not in README}
    assert not missing


def test_every_metric_is_documented() -> None:
    names = {
        m.name + ("_total" if m.type == "counter" else "") for m in Metrics().registry.collect()
    }
    missing = {n for n in names if f"`{n}`" not in README}
    assert not missing


def test_every_command_is_documented() -> None:
    missing = {c for c in COMMANDS if f"hotswap {c}" not in README}
    assert not missing
