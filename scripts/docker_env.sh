#!/bin/sh
# Make a Docker engine and docker-compose available for `make test-image` / `make test-compose`.
#
# Why a script: the machines this project runs on start with no container engine, and
# nothing installed by hand survives a new machine, so the install steps live here.
# Debian's packages only (docker.io, docker-compose 1.29 = compose v1, debootstrap for the
# base images, prometheus for the compose test's Prometheus image), then `dockerd` started
# in the background when no daemon answers. Options, as checked on these machines:
#   --bridge=none --iptables=false  no docker0 bridge, no NAT rules: every test container
#                                   uses host networking, so traffic stays on loopback
#   overlay2 storage, cgroup v1     both work here
# Idempotent: does nothing that is already done. Needs root (apt-get, dockerd).
#
#   scripts/docker_env.sh          install if needed, start dockerd if needed
#   scripts/docker_env.sh --check  exit 1 (saying why) unless docker and compose work
set -eu

PACKAGES="docker.io docker-compose debootstrap prometheus"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/hotswap-dockerd.log}"
# Debian's client, not whatever else is first on PATH: it matches the daemon's API.
DOCKER="${DOCKER:-/usr/bin/docker}"

daemon_up() {
    [ -x "$DOCKER" ] && "$DOCKER" info >/dev/null 2>&1
}

check() {
    if ! daemon_up; then
        echo "docker_env: no Docker daemon answers ($DOCKER info failed); run scripts/docker_env.sh as root" >&2
        return 1
    fi
    if ! command -v docker-compose >/dev/null 2>&1; then
        echo "docker_env: docker-compose not found; run scripts/docker_env.sh as root" >&2
        return 1
    fi
    return 0
}

if [ "${1:-}" = "--check" ]; then
    check
    exit $?
fi

missing=""
for pkg in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "docker_env: need root to apt-get install:$missing" >&2
        exit 1
    fi
    echo "docker_env: installing$missing" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086  # a word list on purpose
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! daemon_up; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "docker_env: no Docker daemon, and starting one needs root" >&2
        exit 1
    fi
    echo "docker_env: starting dockerd (log: $DOCKERD_LOG)" >&2
    # setsid + nohup: the daemon outlives this script and the make target that ran it.
    setsid nohup dockerd --bridge=none --iptables=false --ip6tables=false \
        >>"$DOCKERD_LOG" 2>&1 </dev/null &
    tries=0
    until daemon_up; do
        tries=$((tries + 1))
        if [ "$tries" -gt 60 ]; then
            echo "docker_env: dockerd did not answer within 30 s; end of $DOCKERD_LOG:" >&2
            tail -n 30 "$DOCKERD_LOG" >&2
            exit 1
        fi
        sleep 0.5
    done
fi

check
"$DOCKER" version --format 'docker_env: docker {{.Server.Version}} ({{.Server.Os}}/{{.Server.Arch}}), ready' >&2
echo "docker_env: $(docker-compose version --short 2>/dev/null || echo '?') docker-compose" >&2
