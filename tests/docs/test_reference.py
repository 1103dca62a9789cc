"""The reference pages stay true: settings, reason codes, metrics, alerts, the CLI, benchmarks."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase
from pydantic import SecretStr

from bench.report import render as bench_report
from scripts.gen_docs import PAGE as CLI_PAGE
from scripts.gen_docs import render as cli_page
from service.core import errors
from service.core.metrics import Metrics
from service.core.settings import Settings
from tests.docs.pages import REPO, page, section, table_rows

#: Base classes whose reason never reaches a record, a model or a metric label alone.
_BASES = {"error", "invalid_record", "model_rejected"}


def _reasons() -> set[str]:
    return {
        cls.reason
        for cls in vars(errors).values()
        if isinstance(cls, type) and issubclass(cls, errors.HotswapError)
    } - _BASES


def _metrics() -> dict[str, tuple[str, ...]]:
    """Every metric of the worker, as scraped (counters with ``_total``), and its labels."""
    found = {}
    for metric in vars(Metrics()).values():
        if isinstance(metric, MetricWrapperBase):
            name = metric._name + ("_total" if metric._type == "counter" else "")
            found[name] = tuple(metric._labelnames)
    return found


def test_the_configuration_table_is_the_settings_in_order() -> None:
    rows = table_rows(page("reference/configuration.md"), r"`HOTSWAP_[A-Z_]+`")
    documented = [cells[0].strip("`") for cells in rows]
    assert documented == [f"HOTSWAP_{name.upper()}" for name in Settings.model_fields]


def test_the_configuration_table_gives_every_default() -> None:
    rows = {
        cells[0].strip("`"): cells[1]
        for cells in table_rows(page("reference/configuration.md"), r"`HOTSWAP_[A-Z_]+`")
    }
    wrong = {}
    for name, field in Settings.model_fields.items():
        default: Any = field.default
        if isinstance(default, SecretStr):
            default = default.get_secret_value()
        cell = rows[f"HOTSWAP_{name.upper()}"]
        # An empty default is said in words: (empty), or what it stands for.
        expected_ok = cell.startswith("(") if default == "" else cell == f"`{default}`"
        if not expected_ok:
            wrong[name] = (cell, default)
    assert not wrong, f"defaults differ from Settings (documented, actual): {wrong}"


def test_every_reason_code_is_listed_and_nothing_else() -> None:
    listed = section(page("reference/topics.md"), "Reason codes")
    missing = {r for r in _reasons() if f"`{r}`" not in listed}
    assert not missing, f"reason codes missing from reference/topics.md: {missing}"
    # Anything written like a reason code there must be one (metric names aside).
    codes = set(re.findall(r"`([a-z]+(?:_[a-z0-9]+)+)`", listed))
    stale = {c for c in codes if not c.startswith("hotswap_")} - _reasons()
    assert not stale, f"reference/topics.md lists codes the code does not have: {stale}"


def test_the_metrics_table_is_every_metric_with_its_labels() -> None:
    rows = table_rows(page("reference/metrics.md"), r"`hotswap_\w+`")
    documented = {
        cells[0].strip("`"): tuple(label for label in cells[1].split(", ") if label)
        for cells in rows
    }
    assert documented == _metrics()


def test_the_alerts_table_is_the_alert_rules() -> None:
    rules = yaml.safe_load((REPO / "deploy" / "prometheus" / "alerts.yml").read_text())
    shipped = {
        rule["alert"]: (rule["for"], rule["labels"]["severity"])
        for group in rules["groups"]
        for rule in group["rules"]
    }
    rows = table_rows(page("reference/alerts.md"), r"`Hotswap\w+`")
    documented = {cells[0].strip("`"): (cells[2], cells[3]) for cells in rows}
    assert documented == shipped


def test_the_cli_page_is_what_the_parser_prints() -> None:
    assert CLI_PAGE.read_text() == cli_page(), (
        "docs/reference/cli.md is out of date: run `make docs` (scripts/gen_docs.py)"
    )


def test_the_benchmark_printout_is_the_committed_results() -> None:
    """The run quoted on the performance page is bench/results/latest.json, as bench prints it."""
    results = json.loads((REPO / "bench" / "results" / "latest.json").read_text())
    printed = [line for line in bench_report(results).splitlines() if line.strip()]
    text = page("reference/performance.md")
    block = re.search(r"^```text\n(hotswap benchmark:.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert block is not None, "the performance page lost its benchmark printout"
    quoted = [line for line in block.group(1).splitlines() if line.strip()]
    assert quoted[: len(printed)] == printed
    assert all(line.startswith("total ") for line in quoted[len(printed) :])
