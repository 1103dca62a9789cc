#!/bin/sh
# Build the images the container tests run, with nothing but what these machines reach.
#
#   scripts/docker_build.sh hotswap      the project's image from its Dockerfile (hotswap:latest)
#   scripts/docker_build.sh kafka        Kafka 3.9.1 from its Maven jars on a Debian JRE
#   scripts/docker_build.sh prometheus   Debian's prometheus package
#
# Why: no image registry and no package index are reachable from a container here. The
# base images come from scripts/docker_base.sh (python:3.11-slim when a registry answers,
# else Debian packages); Python packages come from a wheelhouse filled on the host, pinned
# to the versions installed in .venv (the ones the tests ran), so the image runs the same
# code the test suite checked. kafka and prometheus stand in for the official apache/kafka
# and prom/prometheus images in tests/deploy/compose/override.yml; their Dockerfiles are
# beside that file. The classic builder (DOCKER_BUILDKIT=0) with host networking: the
# daemon runs without a bridge (scripts/docker_env.sh), and no build step needs a network.
# Prints the image tag on stdout; progress goes to stderr.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
DOCKER="${DOCKER:-/usr/bin/docker}"
PY="${PY:-$REPO/.venv/bin/python}"
COMPOSE_DIR="$REPO/tests/deploy/compose"
export DOCKER_BUILDKIT=0

build() {
    # build TAG CONTEXT [docker build options...]
    tag=$1
    context=$2
    shift 2
    old=$("$DOCKER" image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)
    log=$(mktemp)
    if ! "$DOCKER" build --network host --force-rm -t "$tag" "$@" "$context" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        rm -f "$log"
        echo "docker_build: building $tag failed" >&2
        exit 1
    fi
    rm -f "$log"
    # The image this build replaced, now untagged: remove it (and its unshared layers)
    # instead of leaving one more dangling image per rebuild. Cached build layers stay.
    new=$("$DOCKER" image inspect -f '{{.Id}}' "$tag")
    if [ -n "$old" ] && [ "$old" != "$new" ]; then
        "$DOCKER" rmi "$old" >/dev/null 2>&1 || true
    fi
    echo "$tag"
}

kafka_version() {
    sed -n 's/^KAFKA_VERSION = "\(.*\)"$/\1/p' "$REPO/scripts/localkafka.py"
}

case "${1:?usage: docker_build.sh hotswap|kafka|prometheus}" in
hotswap)
    base=$("$REPO/scripts/docker_base.sh" python)
    wheelhouse="$REPO/deploy/wheelhouse"
    constraints=$(mktemp)
    requirements=$(mktemp)
    trap 'rm -f "$constraints" "$requirements"' EXIT
    # Pins: what .venv runs (editable and local installs left out: they are no pins).
    "$PY" -m pip freeze --exclude-editable --disable-pip-version-check | grep -v ' @ ' >"$constraints"
    "$PY" -c "import tomllib; print('\n'.join(tomllib.load(open('$REPO/pyproject.toml', 'rb'))['project']['dependencies']))" >"$requirements"
    rm -f "$wheelhouse"/*.whl
    echo "docker_build: wheelhouse for pyproject.toml's dependencies -> deploy/wheelhouse" >&2
    "$PY" -m pip wheel -q --disable-pip-version-check -w "$wheelhouse" \
        -r "$requirements" -c "$constraints" 'setuptools>=68' wheel >&2
    echo "docker_build: hotswap:latest FROM $base" >&2
    build "${IMAGE:-hotswap:latest}" "$REPO" \
        --build-arg "PYTHON_IMAGE=$base" \
        --build-arg "PIP_INSTALL_OPTIONS=--no-index --find-links=/wheelhouse"
    ;;
kafka)
    version=$(kafka_version)
    base=$("$REPO/scripts/docker_base.sh" jre)
    libs=$("$PY" "$REPO/scripts/localkafka.py" fetch)
    # kafka-topics.sh's TopicCommand lives in kafka-tools, which the broker does not need.
    tools="$REPO/.cache/kafka-tools-$version"
    if [ ! -f "$tools/kafka-tools-$version.jar" ]; then
        mvn -q -B -f "$REPO/deploy/kafka/pom.xml" dependency:copy \
            "-Dartifact=org.apache.kafka:kafka-tools:$version" "-DoutputDirectory=$tools" >&2
    fi
    context=$(mktemp -d)
    trap 'rm -rf "$context"' EXIT
    cp -r "$COMPOSE_DIR/kafka/." "$context/"
    mkdir -p "$context/libs"
    cp "$libs"/*.jar "$tools"/*.jar "$context/libs/"
    cp "$REPO/deploy/kafka/log4j.properties" "$context/"
    echo "docker_build: hotswap-test/kafka:$version FROM $base" >&2
    build "hotswap-test/kafka:$version" "$context" \
        --build-arg "BASE_IMAGE=$base" --build-arg "KAFKA_VERSION=$version"
    ;;
prometheus)
    base=$("$REPO/scripts/docker_base.sh" prometheus)
    echo "docker_build: hotswap-test/prometheus:debian FROM $base" >&2
    build "hotswap-test/prometheus:debian" "$COMPOSE_DIR/prometheus" --build-arg "BASE_IMAGE=$base"
    ;;
*)
    echo "docker_build: unknown image $1" >&2
    exit 2
    ;;
esac
