#!/usr/bin/env bash
# Idempotent setup for a fresh machine (what `make setup` runs; cheap when already done):
#   1. .venv with python3 (>= 3.11), if missing;
#   2. `pip install -e '.[dev]'`, only when pyproject.toml changed since the last install
#      (stamp file .venv/.stamp-<sha256 of pyproject.toml>);
#   3. promtool (Debian's prometheus package) for the deploy tests, when missing;
#   4. Kafka's broker jars from Maven Central (scripts/localkafka.py fetch; needs java, mvn);
#   5. Apicurio Registry, the tests' Schema Registry, from Maven Central (scripts/localregistry.py
#      fetch; runs on a Java >= 21, e.g. Temurin under /usr/lib/jvm).
# Override the interpreter with PYTHON=/path/to/python3.11 ./scripts/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
VENV=.venv

if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "[setup] error: hotswap needs Python >= 3.11; '$PYTHON' is not (set PYTHON=...)" >&2
    exit 1
  fi
  echo "[setup] creating $VENV with $("$PYTHON" --version)"
  "$PYTHON" -m venv "$VENV"
fi

hash="$("$VENV/bin/python" -c \
  'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')"
stamp="$VENV/.stamp-$hash"
if [ -f "$stamp" ]; then
  echo "[setup] $VENV is up to date with pyproject.toml"
else
  echo "[setup] installing hotswap and its dev tools into $VENV (first run takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
  rm -f "$VENV"/.stamp-*
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

echo "[setup] Kafka jars in $("$VENV/bin/python" scripts/localkafka.py fetch)"
echo "[setup] Apicurio Registry in $("$VENV/bin/python" scripts/localregistry.py fetch)"
echo "[setup] done"
