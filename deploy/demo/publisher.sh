#!/bin/sh
# Demo publisher: train the example models, publish `wine` version 1
# (wine-logreg), then publish the next version every $SWAP_EVERY seconds,
# alternating wine-forest, wine-tree, wine-logreg, ... for ever.
#
# docker-compose.yml's `publisher` service runs this in the hotswap image; the
# integration test (tests/integration/test_deploy.py) runs the same file on the
# host. It reads the usual HOTSWAP_* variables (broker, model topic) through
# `hotswap publish`, plus:
#   SWAP_EVERY   seconds between versions (default 180)
#   MODELS_DIR   where the models are trained (default /tmp/models)
#   MODEL_NAME   the model name to publish under (default wine)
#   HOTSWAP      the hotswap command (default: hotswap on PATH)
# After each successful publish it writes the version to
# $MODELS_DIR/last-published (compose's healthcheck waits for that file).
set -eu

SWAP_EVERY="${SWAP_EVERY:-180}"
MODELS_DIR="${MODELS_DIR:-/tmp/models}"
MODEL_NAME="${MODEL_NAME:-wine}"
HOTSWAP="${HOTSWAP:-hotswap}"

# Stop promptly on `docker compose stop` (SIGTERM), even while sleeping.
sleeper=
trap 'echo "publisher: stopping"; [ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; exit 0' TERM INT

publish() {
    # publish VERSION KIND
    $HOTSWAP publish "$MODELS_DIR/$2.joblib" \
        --name "$MODEL_NAME" --version "$1" --description "$2 (demo publisher)"
    echo "$1" > "$MODELS_DIR/last-published"
}

mkdir -p "$MODELS_DIR"
rm -f "$MODELS_DIR/last-published"
$HOTSWAP train --out "$MODELS_DIR"

version=1
publish "$version" wine-logreg
echo "publisher: $MODEL_NAME version $version published; next one every ${SWAP_EVERY}s"

while :; do
    sleep "$SWAP_EVERY" &
    sleeper=$!
    wait "$sleeper" || true
    sleeper=
    version=$((version + 1))
    case $(((version - 1) % 3)) in
        1) kind=wine-forest ;;
        2) kind=wine-tree ;;
        *) kind=wine-logreg ;;
    esac
    if ! publish "$version" "$kind"; then
        echo "publisher: publishing $MODEL_NAME version $version ($kind) failed; next try in ${SWAP_EVERY}s" >&2
    fi
done
