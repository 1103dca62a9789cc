# hotswap: every command a developer or CI needs. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help setup demo test lint typecheck unit integration bench clean test-image test-compose grpc docs docs-serve

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: ## create .venv, install hotswap with dev tools, fetch Kafka's jars
	@./scripts/bootstrap.sh

demo: setup ## the whole local stack: Kafka, a worker, demo models and records (Ctrl-C stops)
	@$(PY) scripts/demo.py

# The docs are checked inside pytest (tests/docs/): the site builds with `mkdocs build --strict`
# and the reference pages match the code.
# mypy (about a minute from a cold cache) runs beside pytest, whose first seconds wait on
# brokers starting; its verdict is given after the tests and fails the target the same way.
test: setup lint ## everything CI runs: format, lint, types, unit + integration tests, docs
	@mkdir -p .cache; $(VENV)/bin/mypy service models scripts tests bench >.cache/mypy.log 2>&1 & \
	mypy=$$!; status=0; $(PY) -m pytest || status=$$?; \
	if wait $$mypy; then tail -n 1 .cache/mypy.log; else cat .cache/mypy.log; status=1; fi; \
	exit $$status

lint: ## ruff format check and lint
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/ruff check .

typecheck: ## mypy (strict)
	@$(VENV)/bin/mypy service models scripts tests bench

grpc: ## regenerate service/grpc/generated from its .proto (pinned grpcio-tools)
	@$(PY) scripts/gen_grpc.py

docs: setup ## regenerate docs/reference/cli.md, build the docs site into site/ (--strict)
	@$(PY) scripts/gen_docs.py
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

docs-serve: setup ## serve the docs site on http://127.0.0.1:8010, rebuilt on every save
	@NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs serve --strict --dev-addr 127.0.0.1:8010

unit: ## unit tests only (no broker)
	@$(PY) -m pytest -m "not integration and not container"

integration: ## integration tests only (starts a real local broker)
	@$(PY) -m pytest -m integration

# Not part of `test` (minutes, and they need a Docker engine): see docs/how-to/deploy.md.
# pytest fails, never skips, when the engine is missing; docker_env.sh installs it (root).
test-image: setup ## build the image (Debian base, wheelhouse), run 2 workers on a real broker
	@./scripts/docker_env.sh
	@$(PY) -m pytest -m container tests/deploy/test_image.py

test-compose: setup ## docker-compose up the shipped stack (local Kafka/Prometheus images), use it
	@./scripts/docker_env.sh
	@$(PY) -m pytest -m container tests/deploy/test_compose.py

bench: setup ## benchmarks against the local broker
	@$(PY) -m bench

clean: ## remove caches, the venv and Kafka's jars
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache *.egg-info site
