# hotswap: one image for every role (worker, publisher, demo producer).
#
#   docker build -t hotswap:latest .
#   docker run --rm -e HOTSWAP_BROKER=kafka://broker:9092 -p 8000:8000 hotswap:latest
#
# Without a package index in the build (no network, or none to PyPI), install from a
# wheelhouse filled on the host; `make test-image` does this (scripts/docker_build.sh):
#
#   pip wheel -w deploy/wheelhouse <pyproject's dependencies> 'setuptools>=68' wheel
#   docker build --build-arg PIP_INSTALL_OPTIONS="--no-index --find-links=/wheelhouse" \
#       [--build-arg PYTHON_IMAGE=hotswap-base:python-bookworm] -t hotswap:latest .
#
# PYTHON_IMAGE may be any Debian-based image with Python 3.11 as `python` and the venv
# module (the official python:3.11-slim, or one made from Debian packages by
# scripts/docker_base.sh where no image registry is reachable).
#
# Two stages. The builder installs the dependencies (their own layer, rebuilt
# only when pyproject.toml or the wheelhouse changes) and then the project
# itself into a venv at /opt/venv. The runtime stage copies only that venv: no
# pip cache, no wheelhouse, no build tools, no source tree. Both stages use the same base image, so the venv's
# interpreter path (/usr/local/bin/python3.11 in python:3.11-slim, /usr/bin/python3.11 in
# Debian's) exists in the runtime stage.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

# Extra pip options for every install below, e.g. "--no-index --find-links=/wheelhouse".
ARG PIP_INSTALL_OPTIONS=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first: the runtime dependencies listed in pyproject.toml (not the
# dev extras), installed before any source is copied.
# deploy/wheelhouse/ holds only a README unless a wheelhouse was filled on the host
# (the glob then copies nothing).
COPY pyproject.toml ./
COPY deploy/wheelhouse/README.md deploy/wheelhouse/*.whl /wheelhouse/
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; print('\n'.join(deps))" > /tmp/requirements.txt \
    && pip install --no-cache-dir ${PIP_INSTALL_OPTIONS} -r /tmp/requirements.txt

# Then the project: build its wheel and install it without touching the deps.
COPY README.md* ./
COPY service ./service
COPY models ./models
RUN pip wheel --no-cache-dir ${PIP_INSTALL_OPTIONS} --no-deps --wheel-dir /tmp/wheels . \
    && pip install --no-cache-dir --no-deps /tmp/wheels/*.whl \
    && pip check


FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="hotswap" \
      org.opencontainers.image.description="Serve ML models from Kafka; hot-swap them while running."

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOTSWAP_HTTP_HOST=0.0.0.0 \
    HOTSWAP_HTTP_PORT=8000 \
    HOTSWAP_DATA_DIR=/app/data

RUN groupadd --system --gid 10001 hotswap \
    && useradd --system --uid 10001 --gid hotswap --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin hotswap

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The demo publisher loop (docker-compose.yml's `publisher` service runs it).
COPY deploy/demo/publisher.sh /app/deploy/demo/publisher.sh
RUN mkdir -p /app/data && chown -R hotswap:hotswap /app

USER hotswap
EXPOSE 8000
# OIP v2 over gRPC (HOTSWAP_GRPC_PORT; 0 turns it off).
EXPOSE 8081

# Liveness of the HTTP API; readiness (/ready) is checked by compose/Kubernetes.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('HOTSWAP_HTTP_PORT', '8000'), timeout=4)"]

ENTRYPOINT ["hotswap"]
CMD ["worker"]
