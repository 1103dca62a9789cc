#!/bin/sh
# Base images for the container tests, from Debian packages when no image registry answers.
#
# Why: these machines reach Debian's archive, PyPI, Maven Central and the Go module proxy,
# but no image registry, so `FROM python:3.11-slim` cannot be pulled. A root filesystem
# made by `debootstrap --variant=minbase bookworm` and loaded with `docker import` is a
# faithful stand-in (same Debian release as python:3.11-slim's, Python 3.11 from Debian).
# When a registry does answer, the official image is pulled and used instead.
#
#   scripts/docker_base.sh python   prints the image to build hotswap FROM
#   scripts/docker_base.sh jre      Debian + OpenJDK 17 JRE (the compose test's Kafka)
#   scripts/docker_base.sh prometheus   Debian + Debian's prometheus package (+ wget)
#
# Images are tagged hotswap-base:<flavour>-bookworm and built once; delete them
# (docker rmi) to rebuild. Debian's .debs are cached in .cache/debootstrap.
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
DOCKER="${DOCKER:-/usr/bin/docker}"
SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CACHE="$REPO/.cache/debootstrap"
OFFICIAL_PYTHON="${OFFICIAL_PYTHON_IMAGE:-python:3.11-slim}"

flavour="${1:?usage: docker_base.sh python|jre|prometheus}"
case "$flavour" in
    python) include="python3,python3-venv,python-is-python3" ;;
    jre) include="openjdk-17-jre-headless" ;;
    prometheus) include="prometheus,wget,ca-certificates" ;;
    *) echo "docker_base: unknown flavour $flavour" >&2; exit 2 ;;
esac
tag="hotswap-base:$flavour-$SUITE"

# The official image when a registry answers (only the python flavour has one we use).
if [ "$flavour" = python ]; then
    if "$DOCKER" image inspect "$OFFICIAL_PYTHON" >/dev/null 2>&1 \
        || timeout 120 "$DOCKER" pull -q "$OFFICIAL_PYTHON" >/dev/null 2>&1; then
        echo "$OFFICIAL_PYTHON"
        exit 0
    fi
fi

if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

command -v debootstrap >/dev/null 2>&1 || {
    echo "docker_base: debootstrap missing; run scripts/docker_env.sh" >&2
    exit 1
}
root=$(mktemp -d /var/tmp/hotswap-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
mkdir -p "$CACHE"
echo "docker_base: debootstrap $SUITE ($include) -> $tag" >&2
debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE" \
    "$SUITE" "$root" "$MIRROR" >"$root.log" 2>&1 || {
    tail -n 30 "$root.log" >&2
    rm -f "$root.log"
    exit 1
}
rm -f "$root.log"
# Like the official slim images: no apt lists or caches, no docs, no man pages.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/*
tar -C "$root" -c . | "$DOCKER" import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase --include=$include $SUITE" \
    - "$tag" >/dev/null
echo "$tag"
