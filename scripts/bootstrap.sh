#!/usr/bin/env bash
# Idempotent setup on a fresh machine: .venv with hotswap and its dev tools, Kafka's jars.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PYTHON" -m venv .venv
fi
stamp=".venv/.stamp-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing hotswap and its dependencies (first run takes a minute or two)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  rm -f .venv/.stamp-*
  touch "$stamp"
fi
echo "[setup] Kafka jars: $(.venv/bin/python scripts/localkafka.py fetch)"
