"""``hotswap backtest``: a candidate against the serving version, on past records.

Reads a window of the data topic (see :mod:`service.kafka.window`: no group,
nothing committed), builds the serving version from the model topic's newest
message for the name and the candidate from a local file (converted like
``publish``), both exactly as a worker would (checked, warmed up), and scores
the window with the very code of a live shadow rollout
(:class:`~service.core.scoring.Scorer` with the candidate in the registry's
candidate slot). The outputs are thrown away: nothing is written anywhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from rich.table import Table

from service.core import errors
from service.core.messages import ModelMessage, parse_model_message
from service.core.outputs import DeadLetter
from service.core.registry import BuildLimits, ModelRegistry
from service.core.rollout import Rollout
from service.core.rollout_messages import ControlMessage, RolloutFigures
from service.core.scoring import Scorer
from service.core.settings import Settings
from service.kafka.authz import denied_as
from service.kafka.control import newest_value
from service.kafka.readtoend import reader_group
from service.kafka.window import read_window
from service.tools.errors import ToolError, kafka_errors

__all__ = ["BacktestReport", "backtest", "parse_time", "report_json", "report_table"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BacktestReport:
    name: str
    serving: str
    candidate: str
    records: int  # read from the data topic
    refused: dict[str, int]  # records the serving version could not score, by reason
    figures: RolloutFigures

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "serving": self.serving,
            "candidate": self.candidate,
            "records": self.records,
            "refused": self.refused,
            **self.figures.report(),
        }


def parse_time(text: str | None) -> datetime | None:
    """``--from-time``: ISO 8601 (a time without a zone is local time)."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ToolError(f"--from-time {text!r} is not ISO 8601, e.g. 2025-01-31T12:00") from None


def _serving_message(settings: Settings, name: str) -> ModelMessage:
    with kafka_errors(settings):
        value = newest_value(settings, settings.model_topic, name.encode())
    if value is None:
        raise ToolError(f"{name} has no serving version on {settings.model_topic}: publish one")
    try:
        return parse_model_message(name.encode(), value)
    except errors.ModelRejected as exc:
        raise ToolError(f"the newest {name} message on the model topic is invalid: {exc}") from None


def backtest(
    settings: Settings,
    candidate: ModelMessage,
    *,
    count: int = 10_000,
    from_offset: int | None = None,
    from_time: datetime | None = None,
) -> BacktestReport:
    """Score a window of the data topic with the serving version and ``candidate``."""
    name = candidate.name
    registry = ModelRegistry(limits=BuildLimits.from_settings(settings))
    try:
        serving = registry.build(_serving_message(settings, name))
        registry.install(serving)
        rollout = Rollout(ControlMessage(name=name, stage="shadow", candidate=candidate))
        rollout.candidate = registry.build(candidate)
    except errors.ModelRejected as exc:
        raise ToolError(f"cannot build a version of {name}: {exc.reason}: {exc.detail}") from None
    registry.begin_rollout(rollout)
    reader = {"group": reader_group(settings), "group_operation": "DESCRIBE"}
    with kafka_errors(settings), denied_as("READ", settings.data_topic, **reader):
        records = read_window(settings, count=count, from_offset=from_offset, from_time=from_time)
    scorer = Scorer(
        registry, max_record_bytes=settings.max_record_bytes, default_model=settings.default_model
    )
    refused: dict[str, int] = {}
    for start in range(0, len(records), settings.batch_size):
        for out in scorer.score(records[start : start + settings.batch_size]).outputs:
            if isinstance(out, DeadLetter):
                refused[out.reason] = refused.get(out.reason, 0) + 1
    figures = rollout.figures(serving)
    registry.remove(name)
    return BacktestReport(name, serving.version, candidate.version, len(records), refused, figures)


def report_json(report: BacktestReport) -> str:
    return orjson.dumps(report.as_dict(), option=orjson.OPT_INDENT_2).decode()


def report_table(report: BacktestReport) -> Table:
    """The agreement report as a two-column Rich table."""
    title = (
        f"backtest of {report.name}: candidate {report.candidate} against serving {report.serving}"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in report.as_dict().items():
        if key in {"name", "serving", "candidate"}:
            continue
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        table.add_row(key.replace("_", " "), "-" if value is None else str(value))
    return table
