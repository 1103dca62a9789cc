"""The help of every ``hotswap`` command: a one-line summary and an example.

The example ends each ``hotswap COMMAND --help``; the tests hold every
command to having one.
"""

from __future__ import annotations

import logging

__all__ = ["HELP", "MAIN_EPILOG"]

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
        """    --description "logistic regression" --metadata '{"owner": "ml-team"}'""",
    ),
    "produce": (
        "produce demo records from the bundled wine data",
        "hotswap produce --count 10000 --rate 500",
    ),
    "train": (
        "train the example models",
        "hotswap train --kind wine-logreg --out models/trained",
    ),
    "status": (
        "show a running worker's models (a table, or --json)",
        "hotswap status --url http://localhost:8000\n"
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
    "rollback": (
        "make an earlier version current again",
        "hotswap rollback wine          # the version current before this one\n"
        "  hotswap rollback wine --to 1",
    ),
}
