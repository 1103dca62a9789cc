"""The help of every ``hotswap`` command: a one-line summary, an example, its arguments.

The example ends each ``hotswap COMMAND --help``; the tests hold every
command to having one.
"""

from __future__ import annotations

import argparse
import logging

__all__ = ["HELP", "MAIN_EPILOG", "add_arguments"]

logger = logging.getLogger(__name__)

MAIN_EPILOG = (
    "examples:\n  hotswap train\n"
    "  hotswap publish models/trained/wine-logreg.joblib --name wine --version 1\n"
    "  hotswap worker\n  hotswap status\n"
    "Every command reads HOTSWAP_* settings; `hotswap COMMAND --help` for more."
)

# name: (summary, example); the example ends every `hotswap NAME --help`.
HELP: dict[str, tuple[str, str]] = {
    "worker": (
        "run a scoring worker (HTTP API included)",
        "HOTSWAP_BROKER=localhost:9092 HOTSWAP_HTTP_PORT=8000 hotswap worker",
    ),
    "publish": (
        "publish a model version (.onnx or scikit-learn joblib/pickle)",
        "hotswap publish models/trained/wine-logreg.joblib --name wine --version 2 \\\n"
        """    --description "logistic regression" --metadata '{"owner": "ml-team"}'\n"""
        "  hotswap publish wine-forest.joblib --name wine --version 3 --shadow\n"
        "  hotswap publish wine.onnx --name wine --version 4 --by-reference s3://models/prod\n"
        "  MLFLOW_TRACKING_URI=http://mlflow:5000 hotswap publish models:/wine@champion\n"
        "  hotswap publish wine-forest.joblib --name wine --version 3 --canary 0.1 \\\n"
        "    --promote-after 10000 --min-agreement 0.98 --max-p99-ms 5",
    ),
    "follow": (
        "publish each new version an MLflow alias points at (webhook, else polling)",
        "MLFLOW_TRACKING_URI=http://mlflow:5000 hotswap follow models:/wine@champion\n"
        "  hotswap follow models:/wine@challenger --name wine --shadow --poll-interval 30",
    ),
    "produce": (
        "produce demo records from the bundled wine data",
        "hotswap produce --count 10000 --rate 500",
    ),
    "topics": (
        "create the topics the settings name, if absent (an admin's step on a broker with ACLs)",
        "HOTSWAP_SASL_USERNAME=admin HOTSWAP_SASL_PASSWORD=... hotswap topics",
    ),
    "train": (
        "train the example models",
        "hotswap train --kind wine-logreg --out models/trained",
    ),
    "status": (
        "show a running worker's models, or with --fleet every live worker (a table, or --json)",
        "hotswap status --url http://localhost:8000\n"
        "  hotswap status --fleet\n"
        "  hotswap status --json | jq '.models[].version'",
    ),
    "keygen": (
        "make an Ed25519 key pair for signing models",
        "hotswap keygen keys/publisher.key   # then: publish ... --signing-key keys/publisher.key",
    ),
    "replay-dlq": (
        "send dead-lettered records back to the data topic",
        "hotswap replay-dlq --reason unknown_model --dry-run",
    ),
    "promote": (
        "make a rollout's candidate the serving version on every worker",
        'hotswap promote wine --why "agreement 99.2% over 50k records"',
    ),
    "abort": (
        "end a rollout: every record goes back to the serving version",
        'hotswap abort wine --why "p99 too high"',
    ),
    "backtest": (
        "score past records with a candidate next to the serving version (writes nothing)",
        "hotswap backtest models/trained/wine-forest.joblib --name wine --count 5000\n"
        "  hotswap backtest wine-forest.joblib --name wine --from-time 2025-01-31T12:00 --json",
    ),
    "quality": (
        "show a running worker's live quality per version (or --drift: PSI per feature)",
        "hotswap quality wine\n  hotswap quality wine --drift --url http://localhost:8001",
    ),
    "rollback": (
        "make an earlier version current again",
        "hotswap rollback wine          # the version current before this one\n"
        "  hotswap rollback wine --to 1",
    ),
}


def add_arguments(name: str, p: argparse.ArgumentParser) -> None:
    """The arguments of ``hotswap NAME``."""
    if name == "publish":
        p.add_argument(
            "file",
            help="a .onnx file, a joblib/pickle estimator to convert, or an MLflow registry "
            "version: models:/NAME@ALIAS or models:/NAME/VERSION (MLFLOW_TRACKING_URI)",
        )
        p.add_argument(
            "--name", help="model name (records name it in `model`); models:/ default: NAME"
        )
        p.add_argument(
            "--version", help="version label, unique per name; models:/ default: MLflow's"
        )
        p.add_argument("--description", default="")
        p.add_argument("--metadata", help="JSON object, or @file.json")
        p.add_argument(
            "--by-reference",
            metavar="DIR",
            help="store the artifact in DIR (or upload it to s3://BUCKET/PREFIX), send a URL",
        )
        p.add_argument(
            "--base-url", help="with --by-reference: the http(s) URL where DIR is served"
        )
        p.add_argument("--signing-key", metavar="KEY", help="Ed25519 private key from `keygen`")
        p.add_argument(
            "--reference", metavar="FILE", help="training rows (CSV with a header, or .npy): drift"
        )
        _rollout_arguments(p)
    elif name == "follow":
        p.add_argument("uri", help="models:/NAME@ALIAS (MLFLOW_TRACKING_URI names the server)")
        p.add_argument("--name", help="the hotswap model name (default: NAME)")
        p.add_argument("--by-reference", metavar="DIR", help="as for publish (DIR or s3://)")
        p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT of the webhook receiver")
        p.add_argument("--webhook-url", help="the URL MLflow calls (default: from --listen)")
        p.add_argument("--no-webhook", action="store_true", help="poll only")
        p.add_argument(
            "--poll-interval", type=float, default=10.0, metavar="S", help="without a webhook"
        )
        p.add_argument(
            "--resync", type=float, default=60.0, metavar="S", help="with one: ask anyway"
        )
        p.add_argument("--signing-key", metavar="KEY", help="sign versions and rollout steps")
        _rollout_arguments(p)
    elif name in {"promote", "abort"}:
        p.add_argument("name", help="the model name")
        p.add_argument("--why", default="", help="recorded in the history, with who")
        p.add_argument(
            "--signing-key", metavar="KEY", help="sign the step (workers with a verify key need it)"
        )
    elif name == "backtest":
        p.add_argument("file", help="the candidate: .onnx, or an estimator to convert")
        p.add_argument("--name", required=True, help="the model it would replace")
        p.add_argument("--version", default="candidate", help="its version label in the report")
        p.add_argument("--metadata", help="JSON object, or @file.json")
        p.add_argument("--count", type=int, default=10_000, help="most records to read")
        start = p.add_mutually_exclusive_group()
        start.add_argument(
            "--from-offset", type=int, metavar="N", help="start at offset N of each partition"
        )
        start.add_argument(
            "--from-time", metavar="ISO", help="start at this time, e.g. 2025-01-31T12:00"
        )
        p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    elif name == "replay-dlq":
        p.add_argument("--reason", action="append", help="only this reason code (repeatable)")
        p.add_argument("--dry-run", action="store_true", help="count, send nothing")
    elif name == "rollback":
        p.add_argument("name", help="the model name")
        p.add_argument(
            "--to", metavar="VERSION", help="default: the version made current before this one"
        )
        p.add_argument(
            "--url", help="a worker: take the version it serves as current, skip ones it rejected"
        )
    elif name == "quality":
        p.add_argument("name", help="the model name")
        p.add_argument("--url", help="the worker (default: http://localhost:HOTSWAP_HTTP_PORT)")
        p.add_argument("--drift", action="store_true", help="PSI per feature instead")
        p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    elif name == "keygen":
        p.add_argument("path", help="private key file; the public key is written to PATH.pub")
        p.add_argument("--force", action="store_true", help="replace existing key files")
    elif name == "produce":
        p.add_argument("--count", type=int, default=1000, help="records to send (0 = forever)")
        p.add_argument("--rate", type=float, default=0.0, help="records per second (0 = flat out)")
        p.add_argument("--model", default="wine", help="the model records name")
        p.add_argument("--named", action="store_true", help="send features by name")
        p.add_argument("--id-prefix", default=None, help="record ids are PREFIX-0, PREFIX-1, ...")
        p.add_argument(
            "--labels",
            action="store_true",
            help="also send each record's true class to the labels topic (live quality)",
        )
    elif name == "train":
        p.add_argument("--out", default="models/trained", help="directory for the models")
        p.add_argument("--kind", action="append", help="an example kind (repeatable; default all)")
        p.add_argument("--seed", type=int, default=0)
    elif name == "status":
        p.add_argument("--url", help="the worker (default: http://localhost:HOTSWAP_HTTP_PORT)")
        p.add_argument("--json", action="store_true", help="one JSON document instead of a table")
        p.add_argument("--fleet", action="store_true", help="every live worker of its group")


def _rollout_arguments(p: argparse.ArgumentParser) -> None:
    """--shadow/--canary and the promotion policy (publish and follow)."""
    rollout = p.add_argument_group("rollout (a candidate on the control topic, not serving)")
    stage = rollout.add_mutually_exclusive_group()
    stage.add_argument(
        "--shadow", action="store_true", help="score every record, to the shadow topic"
    )
    stage.add_argument(
        "--canary", type=float, metavar="FRACTION", help="this share of keys, sticky"
    )
    rollout.add_argument("--promote-after", type=int, metavar="N", help="decide after N compared")
    rollout.add_argument("--min-agreement", type=float, metavar="A", help="else abort (0-1)")
    rollout.add_argument("--max-p99-ms", type=float, metavar="MS", help="else abort")
    rollout.add_argument(
        "--max-error-rate", type=float, default=0.0, metavar="R", help="else abort"
    )
    rollout.add_argument(
        "--min-labels", type=int, metavar="N", help="decide once N labelled records both scored"
    )
    rollout.add_argument(
        "--max-quality-loss",
        type=float,
        metavar="D",
        help="else abort: accuracy lost (classifiers) or RMSE gained (regressors)",
    )
    rollout.add_argument("--why", default="", help="recorded with the rollout")
