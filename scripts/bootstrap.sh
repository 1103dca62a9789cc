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
if ! command -v promtool >/dev/null 2>&1; then
  # promtool validates deploy/prometheus in the tests; Debian's prometheus package ships it.
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing promtool (Debian package prometheus)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
    if command -v systemctl >/dev/null 2>&1; then systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
  else
    echo "[setup] warning: promtool missing; install Debian's 'prometheus' package" >&2
  fi
fi
echo "[setup] Kafka jars: $(.venv/bin/python scripts/localkafka.py fetch)"
