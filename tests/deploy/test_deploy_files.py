"""The deploy files, checked without a Docker engine or a cluster.

Dockerfile, .dockerignore, docker-compose.yml, the Kubernetes manifests, the
Prometheus config and the Grafana provisioning and dashboard are parsed and
checked against each other and against the code: every ``HOTSWAP_*`` variable
is a real setting, the topics the compose stack creates are the ones the
worker would create, every dashboard query names a metric the worker exports.
``promtool`` (Debian package ``prometheus``) checks the Prometheus config and
the dashboard's PromQL.

The helpers here are shared with tests/e2e/test_deploy.py, which runs
the compose services' commands against a real broker.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import posixpath
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import yaml

from service.core.metrics import Metrics
from service.core.settings import Settings
from service.kafka import clients as kafka_clients

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
COMPOSE = REPO / "docker-compose.yml"
K8S = REPO / "deploy" / "kubernetes"
PROMETHEUS = REPO / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = REPO / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "hotswap.json"
PUBLISHER_SCRIPT = REPO / "deploy" / "demo" / "publisher.sh"
LOCALKAFKA = REPO / "scripts" / "localkafka.py"

#: The compose services that run the hotswap image, and the role each plays.
HOTSWAP_SERVICES = {
    "worker-1": "worker",
    "worker-2": "worker",
    "publisher": "publisher",
    "producer": "producer",
}
PROMTOOL_MISSING = (
    "promtool not found on PATH. It checks the Prometheus config and the dashboard's "
    "PromQL; install it with `apt-get install -y prometheus` (Debian's package ships "
    "/usr/bin/promtool; run `apt-get update` first on a fresh machine)."
)


# --- shared helpers (also used by tests/e2e/test_deploy.py) -------------------


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


def compose_services() -> dict[str, dict[str, Any]]:
    services = load_compose().get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services"
    assert services, "docker-compose.yml has no services"
    return services


_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}|\$(\w+)")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``$VAR`` and ``$$`` interpolation."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(3)
        default = match.group(2)
        found = variables.get(name)
        if found:
            return found
        return default if default is not None else ""

    return _INTERPOLATION.sub(replace, value)


def service_environment(
    service: Mapping[str, Any], variables: Mapping[str, str] | None = None
) -> dict[str, str]:
    """A service's ``environment`` (mapping or ``KEY=VALUE`` list), interpolated, as strings."""
    raw = service.get("environment") or {}
    items: dict[str, Any] = {}
    if isinstance(raw, list):
        for entry in raw:
            key, _, value = str(entry).partition("=")
            items[key] = value
    else:
        items = dict(raw)
    variables = variables if variables is not None else {}
    return {str(k): interpolate("" if v is None else str(v), variables) for k, v in items.items()}


def as_argv(value: Any) -> list[str] | None:
    """A compose ``command``/``entrypoint`` (string or list) as an argv list."""
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


@dataclass
class Stage:
    name: str
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last_json(self, keyword: str) -> list[str]:
        """The last ENTRYPOINT/CMD-like instruction's JSON (exec form) argument list."""
        found = self.args(keyword)
        assert found, f"stage {self.name!r} has no {keyword}"
        value = json.loads(found[-1])
        assert isinstance(value, list), f"{keyword} is not in exec (JSON) form"
        return [str(v) for v in value]


def dockerfile_stages(text: str | None = None) -> list[Stage]:
    """The Dockerfile's stages: continuation lines joined, comments dropped, ARGs resolved."""
    text = DOCKERFILE.read_text() if text is None else text
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current.strip():
        logical.append(current)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "ARG" and not stages:
            name, _, default = args.partition("=")
            global_args[name.strip()] = default.strip().strip('"')
        elif keyword == "FROM":
            parts = args.split()
            base = interpolate(parts[0], global_args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(name, base))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def image_entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    final = dockerfile_stages()[-1]
    return final.last_json("ENTRYPOINT"), final.last_json("CMD")


def service_argv(service: Mapping[str, Any]) -> list[str]:
    """What a compose service runs in the hotswap image: entrypoint + command.

    As in compose, an ``entrypoint`` set in the service also drops the image's CMD.
    """
    image_entrypoint, image_cmd = image_entrypoint_and_cmd()
    entrypoint = as_argv(service.get("entrypoint"))
    command = as_argv(service.get("command"))
    if entrypoint is not None:
        return entrypoint + (command or [])
    return image_entrypoint + (command if command is not None else image_cmd)


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    bootstrap: str


def compose_topic_specs() -> dict[str, TopicSpec]:
    """The topics the one-shot ``topics`` service creates with kafka-topics.sh --create."""
    service = compose_services()["topics"]
    script = "\n".join(as_argv(service.get("command")) or [])
    script = script.replace("\\\n", " ")
    specs: dict[str, TopicSpec] = {}
    for line in script.splitlines():
        argv = shlex.split(line)
        if not argv or not argv[0].endswith("kafka-topics.sh") or "--create" not in argv:
            continue
        options: dict[str, str] = {}
        configs: dict[str, str] = {}
        i = 1
        while i < len(argv):
            if argv[i] in {"--create", "--if-not-exists"}:
                i += 1
                continue
            key, value = argv[i], argv[i + 1]
            if key == "--config":
                name, _, setting = value.partition("=")
                configs[name] = setting
            else:
                options[key] = value
            i += 2
        spec = TopicSpec(
            name=options["--topic"],
            partitions=int(options["--partitions"]),
            replication_factor=int(options.get("--replication-factor", "1")),
            configs=configs,
            bootstrap=options["--bootstrap-server"],
        )
        specs[spec.name] = spec
    return specs


def load_dashboard() -> dict[str, Any]:
    dashboard = json.loads(DASHBOARD.read_text())
    assert isinstance(dashboard, dict)
    return dashboard


def dashboard_panels(dashboard: Mapping[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    stack = list((dashboard or load_dashboard()).get("panels", []))
    while stack:
        panel = stack.pop(0)
        if panel.get("type") == "row":
            stack.extend(panel.get("panels", []))
            continue
        yield panel


def dashboard_queries(dashboard: Mapping[str, Any] | None = None) -> list[str]:
    return [
        str(target["expr"])
        for panel in dashboard_panels(dashboard)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


_PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords left out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.:])[A-Za-z_:][\w:]*", text):
        word = match.group()
        if text[match.end() :].lstrip().startswith("(") or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_metric_names() -> set[str]:
    names: set[str] = set()
    for expr in dashboard_queries():
        names |= promql_metric_names(expr)
    return names


def base_metric_name(name: str) -> str:
    """``x_bucket``, ``x_sum``, ``x_count`` -> ``x`` (a histogram's series -> its name)."""
    return re.sub(r"_(bucket|sum|count)$", "", name)


def local_kafka_version() -> str:
    assert LOCALKAFKA.exists(), (
        f"{LOCALKAFKA.relative_to(REPO)} is missing: it defines KAFKA_VERSION, the broker "
        "version the tests run and docker-compose.yml's apache/kafka image must match"
    )
    match = re.search(
        r"^KAFKA_VERSION\s*(?::\s*[\w\[\]]+\s*)?=\s*[\"']([^\"']+)[\"']",
        LOCALKAFKA.read_text(),
        re.MULTILINE,
    )
    assert match, f"no KAFKA_VERSION = '...' line in {LOCALKAFKA.relative_to(REPO)}"
    return match.group(1)


def settings_field_env_names() -> set[str]:
    return {f"HOTSWAP_{name.upper()}" for name in Settings.model_fields}


def settings_from_env(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a process with exactly ``env``'s HOTSWAP_* variables would build them."""
    for name in list(os.environ):
        if name.upper().startswith("HOTSWAP_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("HOTSWAP_"):
            monkeypatch.setenv(name, value)
    return Settings()


def one_shot_services(services: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """Services some other service waits for with ``service_completed_successfully``."""
    return {
        target
        for service in services.values()
        for target, spec in (service.get("depends_on") or {}).items()
        if isinstance(spec, dict) and spec.get("condition") == "service_completed_successfully"
    }


def k8s_documents() -> dict[str, list[dict[str, Any]]]:
    docs: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        loaded = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert loaded, f"{path.name} holds no document"
        docs[path.name] = loaded
    return docs


def k8s_object(kind: str) -> dict[str, Any]:
    found = [d for docs in k8s_documents().values() for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/kubernetes, found {len(found)}"
    return found[0]


# --- .dockerignore semantics ------------------------------------------------------------


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob: ``*`` and ``?`` stay within a path segment, ``**`` not."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i:]:
            end = pattern.index("]", i)
            out += "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]"
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_patterns() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def excluded_from_context(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative, posix) out of the build context.

    The last pattern matching the path or one of its parent folders wins; ``!`` re-includes.
    """
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        cleaned = posixpath.normpath(pattern[1:] if negate else pattern).lstrip("/")
        regex = _glob_regex(cleaned)
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negate
    return excluded


# --- docker-compose.yml -------------------------------------------------------------------


def test_compose_has_the_whole_stack() -> None:
    services = compose_services()
    expected = {"kafka", "topics", "kafka-exporter", "prometheus", "grafana", *HOTSWAP_SERVICES}
    assert expected <= set(services), f"missing services: {expected - set(services)}"
    assert "version" not in load_compose(), "the top-level `version` key is obsolete"


def test_every_long_running_service_has_a_healthcheck() -> None:
    services = compose_services()
    one_shots = one_shot_services(services)
    assert one_shots == {"topics"}, f"one-shot services: {one_shots}"
    for name, service in services.items():
        if name in one_shots:
            assert str(service.get("restart", "no")) == "no", f"one-shot {name} must not restart"
            continue
        check = service.get("healthcheck")
        assert isinstance(check, dict), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
        test = check.get("test")
        assert test, f"{name}'s healthcheck has no test"
        assert test != ["NONE"], f"{name}'s healthcheck has no test"
        if isinstance(test, list):
            assert test[0] in {"CMD", "CMD-SHELL"}, f"{name}: healthcheck test {test[0]!r}"
        assert service.get("restart") in {"unless-stopped", "on-failure", "always"}, name


def test_every_depends_on_uses_a_condition() -> None:
    services = compose_services()
    one_shots = one_shot_services(services)
    for name, service in services.items():
        depends = service.get("depends_on")
        if depends is None:
            continue
        assert isinstance(depends, dict), f"{name}: depends_on must be a mapping with conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown service {target}"
            assert isinstance(spec, dict), f"{name} -> {target}: no condition"
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health"
            else:
                assert condition == "service_completed_successfully", (
                    f"{name} -> {target}: condition {condition!r}"
                )
                assert target in one_shots


def test_start_order_follows_the_data_flow() -> None:
    services = compose_services()

    def waits_for(name: str) -> dict[str, str]:
        depends = services[name].get("depends_on") or {}
        return {target: spec["condition"] for target, spec in depends.items()}

    assert waits_for("topics") == {"kafka": "service_healthy"}
    for worker in ("worker-1", "worker-2", "publisher"):
        assert waits_for(worker).get("topics") == "service_completed_successfully", worker
    assert waits_for("producer") == {
        "worker-1": "service_healthy",
        "worker-2": "service_healthy",
        "publisher": "service_healthy",
    }
    assert waits_for("grafana") == {"prometheus": "service_healthy"}


def test_kafka_image_is_the_local_broker_version() -> None:
    version = local_kafka_version()
    services = compose_services()
    for name in ("kafka", "topics"):
        assert services[name]["image"] == f"apache/kafka:{version}", name


def test_kafka_is_a_single_kraft_node_reachable_as_kafka_9092() -> None:
    env = service_environment(compose_services()["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    listeners = dict(item.split("://", 1) for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://", 1) for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocols)
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in listeners
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] not in advertised
    assert "kafka:9092" in advertised.values()
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    # CLUSTER_ID must be a base64url-encoded 16-byte UUID, as `kafka-storage format` wants.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    check = compose_services()["kafka"]["healthcheck"]["test"]
    assert "/opt/kafka/bin/" in " ".join(check)


def test_hotswap_services_share_one_image_broker_and_topics() -> None:
    services = compose_services()
    first = services["worker-1"]
    for name in HOTSWAP_SERVICES:
        service = services[name]
        assert service.get("build") == first.get("build"), f"{name} builds another image"
        assert service.get("image") == "hotswap:latest", name
        assert service.get("init") is True, f"{name}: no init to forward SIGTERM"
        env = service_environment(service)
        assert env["HOTSWAP_BROKER"] == "kafka://kafka:9092", name
        for key in ("HOTSWAP_MODEL_TOPIC", "HOTSWAP_DATA_TOPIC", "HOTSWAP_APP_ID"):
            assert env[key] == service_environment(first)[key], f"{name}: {key} differs"
    build = first["build"]
    context = build if isinstance(build, str) else build.get("context")
    assert context == ".", "the hotswap image is built from the repository root"


def test_workers_publish_distinct_ports_and_check_readiness() -> None:
    services = compose_services()
    host_ports = []
    for name in ("worker-1", "worker-2"):
        service = services[name]
        assert service_argv(service) == ["hotswap", "worker"], name
        port = service_environment(service).get("HOTSWAP_HTTP_PORT", "8000")
        grpc_port = service_environment(service).get("HOTSWAP_GRPC_PORT", "8081")
        ports = [str(p) for p in service["ports"]]
        assert len(ports) == 2, f"{name}: ports {ports}"
        assert ports[0].endswith(f":{port}"), f"{name}: ports {ports}"
        assert ports[1].endswith(f":{grpc_port}"), f"{name}: ports {ports}"
        host_ports += [p.split(":")[0] for p in ports]
        check = " ".join(service["healthcheck"]["test"])
        assert "/ready" in check, f"{name}'s healthcheck must use /ready"
    assert host_ports == ["8001", "8081", "8002", "8082"]


def test_publisher_and_producer_commands() -> None:
    services = compose_services()
    publisher = service_argv(services["publisher"])
    assert publisher[:1] == ["/bin/sh"], publisher
    assert len(publisher) == 2, publisher
    # The image has the script at /app/<repo path> (WORKDIR /app, see the Dockerfile).
    assert publisher[1] == "/app/" + PUBLISHER_SCRIPT.relative_to(REPO).as_posix()
    copies = dockerfile_stages()[-1].args("COPY")
    assert any(c.split()[-1] == publisher[1] for c in copies), "the image lacks the script"
    env = service_environment(services["publisher"])
    assert interpolate(services["publisher"]["environment"]["SWAP_EVERY"], {}) == "180"
    assert env["SWAP_EVERY"] == "180"
    assert service_argv(services["producer"]) == [
        "hotswap",
        "produce",
        "--count",
        "0",
        "--rate",
        "200",
        "--labels",
    ]


def test_publisher_script_is_valid_posix_sh() -> None:
    subprocess.run(["sh", "-n", str(PUBLISHER_SCRIPT)], check=True)
    text = PUBLISHER_SCRIPT.read_text()
    assert text.startswith("#!/bin/sh\n")
    for kind in ("wine-logreg", "wine-forest", "wine-tree"):
        assert kind in text
    assert "${SWAP_EVERY:-180}" in text


def test_compose_creates_the_topics_the_worker_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """The `topics` one-shot and `ensure_topics` give every topic the same layout."""
    created: list[Any] = []

    class RecordingAdmin:
        """Stands in for AIOKafkaAdminClient: no topic exists, every creation succeeds."""

        instances: ClassVar[int] = 0

        def __init__(self, **options: Any) -> None:
            RecordingAdmin.instances += 1

        async def start(self) -> None:
            return None

        async def list_topics(self) -> list[str]:
            return []

        async def create_topics(self, topics: list[Any]) -> Any:
            created.extend(topics)
            return SimpleNamespace(topic_errors=[(t.name, 0, None) for t in topics])

        async def close(self) -> None:
            return None

    worker_env = service_environment(compose_services()["worker-1"])
    settings = settings_from_env(worker_env, monkeypatch)
    monkeypatch.setattr(kafka_clients, "AIOKafkaAdminClient", RecordingAdmin)
    asyncio.run(kafka_clients.ensure_topics(settings))
    assert RecordingAdmin.instances == 1, "ensure_topics no longer uses AIOKafkaAdminClient"

    wanted = {t.name: t for t in created}
    specs = compose_topic_specs()
    assert set(specs) == set(wanted), f"compose creates {set(specs)}, the worker {set(wanted)}"
    for name, spec in specs.items():
        topic = wanted[name]
        assert spec.partitions == topic.num_partitions, name
        assert spec.replication_factor == topic.replication_factor, name
        assert spec.configs == {k: str(v) for k, v in (topic.topic_configs or {}).items()}, name
        assert f"kafka://{spec.bootstrap}" == settings.broker, name
    assert specs[settings.model_topic].configs.get("cleanup.policy") == "compact"
    assert specs[settings.model_topic].partitions == 1


def test_every_hotswap_variable_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings ignore unknown HOTSWAP_* variables, so a typo would silently do nothing."""
    known = settings_field_env_names()
    sources: dict[str, dict[str, str]] = {
        f"compose service {name}": service_environment(service)
        for name, service in compose_services().items()
    }
    sources["k8s configmap"] = {
        str(k): str(v) for k, v in k8s_object("ConfigMap").get("data", {}).items()
    }
    sources["Dockerfile ENV"] = {
        key: value
        for stage in dockerfile_stages()
        for env in stage.args("ENV")
        for key, value in re.findall(r"(HOTSWAP_\w+)=(\S+)", env)
    }
    seen = 0
    for where, env in sources.items():
        hotswap = {k: v for k, v in env.items() if k.startswith("HOTSWAP_")}
        unknown = set(hotswap) - known
        assert not unknown, f"{where}: {sorted(unknown)} are not fields of Settings"
        settings_from_env(hotswap, monkeypatch)  # and their values parse
        seen += len(hotswap)
    assert seen > 20


# --- Dockerfile and .dockerignore -----------------------------------------------------------


def test_dockerfile_is_multi_stage_and_runs_as_non_root() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "the Dockerfile must be multi-stage"
    assert all(stage.base == "python:3.11-slim" for stage in stages), [s.base for s in stages]
    builder, final = stages[0], stages[-1]
    users = final.args("USER")
    assert users, "the final stage has no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}, f"runs as {users[-1]}"
    copies = final.args("COPY")
    assert f"--from={builder.name} /opt/venv /opt/venv" in copies
    assert not any(kw == "RUN" and "pip install" in args for kw, args in final.instructions), (
        "the runtime stage must not install anything: it copies the builder's venv"
    )
    assert "8000" in final.args("EXPOSE")
    assert "8081" in final.args("EXPOSE")  # OIP v2 over gRPC
    assert final.last_json("ENTRYPOINT") == ["hotswap"]
    assert final.last_json("CMD") == ["worker"]


def test_dockerfile_installs_dependencies_before_copying_the_source() -> None:
    builder = dockerfile_stages()[0]
    steps = [f"{kw} {args}" for kw, args in builder.instructions]
    deps = next(i for i, s in enumerate(steps) if "pip install" in s and "requirements" in s)
    copy_pyproject = next(i for i, s in enumerate(steps) if s.startswith("COPY pyproject.toml"))
    copy_source = next(i for i, s in enumerate(steps) if s.startswith("COPY service"))
    assert copy_pyproject < deps < copy_source
    for step in steps:
        if "pip install" in step or "pip wheel" in step:
            assert "--no-cache-dir" in step, step
    assert "/opt/venv" in " ".join(steps)


def test_dockerfile_healthcheck_hits_health() -> None:
    checks = dockerfile_stages()[-1].args("HEALTHCHECK")
    assert len(checks) == 1
    assert re.search(r"--interval=\S+", checks[0])
    assert re.search(r"--timeout=\S+", checks[0])
    command = json.loads(checks[0].split("CMD", 1)[1])
    assert command[:2] == ["python", "-c"]
    assert "urllib" in command[2]
    assert "127.0.0.1" in command[2]
    assert "/health" in command[2]


def test_dockerignore_keeps_the_context_small_and_complete() -> None:
    patterns = dockerignore_patterns()
    for path in [
        ".venv/bin/python",
        ".git/HEAD",
        ".cache/kafka-3.9.1/libs/kafka_2.13-3.9.1.jar",
        ".mypy_cache/3.11/service/cli.data.json",
        ".ruff_cache/CACHEDIR.TAG",
        ".pytest_cache/v/cache/lastfailed",
        "tests/deploy/test_deploy_files.py",
        "service/__pycache__/cli.cpython-311.pyc",
        "models/trained/wine-logreg.joblib",
        "hotswap.egg-info/PKG-INFO",
        "deploy/kubernetes/deployment.yaml",
    ]:
        assert excluded_from_context(path, patterns), f"{path} would be sent to the build"
    # Everything the Dockerfile copies from the context is in it.
    for stage in dockerfile_stages():
        for args in stage.args("COPY"):
            if "--from=" in args:
                continue
            for source in [a for a in args.split() if not a.startswith("--")][:-1]:
                matches = sorted(REPO.glob(source))
                if not matches and "*" in source:
                    continue  # an optional file (README.md*) that does not exist yet
                assert matches, f"COPY {source}: no such file"
                for match in matches:
                    files = [match] if match.is_file() else sorted(match.rglob("*.py"))
                    assert files, f"COPY {source}: nothing to copy"
                    for file in files:
                        relative = file.relative_to(REPO).as_posix()
                        if "__pycache__" not in relative:
                            assert not excluded_from_context(relative, patterns), relative


# --- Kubernetes -------------------------------------------------------------------------------


def test_kubernetes_manifests_parse() -> None:
    docs = k8s_documents()
    assert {"configmap.yaml", "deployment.yaml", "service.yaml"} <= set(docs)
    for name, loaded in docs.items():
        for doc in loaded:
            assert doc.get("apiVersion"), name
            assert doc.get("kind"), name
            assert doc.get("metadata", {}).get("name"), name


def test_kubernetes_deployment() -> None:
    deployment = k8s_object("Deployment")
    config_map = k8s_object("ConfigMap")
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    template = spec["template"]
    labels = template["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    pod_security = template["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    assert pod_security.get("runAsUser", 1) != 0
    (container,) = template["spec"]["containers"]
    assert container["image"] == "hotswap:latest"
    port = int(config_map["data"]["HOTSWAP_HTTP_PORT"])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port in ports.values()
    assert annotations["prometheus.io/port"] == str(port)

    def probe(kind: str) -> tuple[str, int]:
        get = container[kind]["httpGet"]
        target = get["port"]
        return get["path"], ports[target] if isinstance(target, str) else int(target)

    assert probe("readinessProbe") == ("/ready", port)
    assert probe("livenessProbe") == ("/health", port)
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert {"cpu", "memory"} <= set(resources["limits"])
    assert container["envFrom"] == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    if security.get("readOnlyRootFilesystem"):
        mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
        assert config_map["data"]["HOTSWAP_DATA_DIR"] in mounts, "the data dir must be writable"


def test_kubernetes_service_selects_the_workers() -> None:
    service = k8s_object("Service")
    deployment = k8s_object("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    names = {p["name"] for p in container["ports"]}
    for port in service["spec"]["ports"]:
        assert port["targetPort"] in names or port["targetPort"] in {
            p["containerPort"] for p in container["ports"]
        }


# --- Prometheus and Grafana -------------------------------------------------------------------


def test_prometheus_scrapes_the_workers_and_the_exporter() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert {"worker-1:8000", "worker-2:8000", "kafka-exporter:9308"} <= targets
    services = compose_services()
    for target in targets:
        host = target.split(":")[0]
        assert host == "localhost" or host in services, f"{target}: no such compose service"
    mounts = [str(v) for v in services["prometheus"].get("volumes", [])]
    assert any(m.startswith("./deploy/prometheus/prometheus.yml:") for m in mounts)
    exporter = " ".join(as_argv(services["kafka-exporter"].get("command")) or [])
    assert "--kafka.server=kafka:9092" in exporter
    assert ":9308" in exporter


def test_grafana_provisioning_matches_the_stack() -> None:
    services = compose_services()
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (datasource,) = datasources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    (provider,) = providers["providers"]
    mounts = dict(str(v).rsplit(":", 1)[0].split(":", 1) for v in services["grafana"]["volumes"])
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    assert mounts["./deploy/grafana/dashboards"] == provider["options"]["path"]
    env = service_environment(services["grafana"])
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert [str(p) for p in services["grafana"]["ports"]] == ["3000:3000"]
    # Every panel queries the provisioned datasource.
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]


def test_dashboard_panels_all_have_promql() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"]
    assert dashboard["title"]
    panels = list(dashboard_panels(dashboard))
    assert len(panels) >= 7
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no target"
        for target in targets:
            assert str(target.get("expr", "")).strip(), f"panel {panel['title']!r}: empty query"
            assert promql_metric_names(target["expr"]), f"{panel['title']!r}: selects no metric"


def test_dashboard_covers_the_brief() -> None:
    """Throughput, both latencies, versions, swaps, rejections, dead letters and lag."""
    queries = "\n".join(dashboard_queries())
    for needle in [
        "rate(hotswap_records_scored_total",
        "histogram_quantile(0.99, sum by (model, le) (rate(hotswap_scoring_latency_seconds_bucket",
        "hotswap_end_to_end_latency_seconds_bucket",
        "hotswap_model_info",
        "hotswap_model_swaps_total",
        "by (model, reason) (increase(hotswap_model_rejections_total",
        "by (reason) (rate(hotswap_records_dead_lettered_total",
    ]:
        assert needle in queries, needle
    app_id = service_environment(compose_services()["worker-1"])["HOTSWAP_APP_ID"]
    assert f'kafka_consumergroup_lag{{consumergroup="{app_id}"}}' in queries


def test_dashboard_metrics_are_exported() -> None:
    """Every metric a query selects is one the worker exports (kafka_* come from the exporter)."""
    exported: set[str] = set()
    for family in Metrics().registry.collect():
        exported.add(family.name + "_total" if family.type == "counter" else family.name)
    for name in sorted(dashboard_metric_names()):
        if name.startswith("kafka_"):
            continue  # kafka-exporter's, not the worker's
        assert base_metric_name(name) in exported, f"the dashboard queries unknown {name}"


def test_promql_metric_names() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (model, le) (rate(a_seconds_bucket{model=~"x|y"}'
        "[$__rate_interval]))) / on(model) group_left(version) max(b_info == 1) "
        "+ sum(rate(c_total[5m] offset 1h)) without (instance)"
    )
    assert promql_metric_names(expr) == {"a_seconds_bucket", "b_info", "c_total"}


# --- promtool ---------------------------------------------------------------------------------


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(PROMTOOL_MISSING)
    return path


def test_promtool_checks_the_prometheus_config() -> None:
    result = subprocess.run(
        [_promtool(), "check", "config", str(PROMETHEUS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    """Each query, Grafana's $__ variables filled in, as a recording rule promtool must parse."""
    rules = []
    for n, expr in enumerate(dashboard_queries()):
        concrete = re.sub(r"\$__(rate_interval|interval|range)", "1m", expr)
        assert "$" not in concrete, f"unhandled Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{n}", "expr": concrete})
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- quality and drift alerts ------------------------------------------------------------------

ALERTS = PROMETHEUS.parent / "alerts.yml"
ALERT_TESTS = PROMETHEUS.parent / "alerts.test.yml"


def test_promtool_checks_the_alert_rules() -> None:
    result = subprocess.run(
        [_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "6 rules found" in result.stdout


def test_promtool_unit_tests_the_alert_rules() -> None:
    """Accuracy drop against the first window, drift above 0.25, unmatched labels rising."""
    result = subprocess.run(
        [_promtool(), "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        text=True,
        cwd=ALERT_TESTS.parent,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_rules_are_loaded_and_query_exported_metrics() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    assert "alerts.yml" in config["rule_files"]
    mounts = [str(v) for v in load_compose()["services"]["prometheus"].get("volumes", [])]
    assert any(m.startswith("./deploy/prometheus/alerts.yml:") for m in mounts)
    exported = {
        f.name + "_total" if f.type == "counter" else f.name for f in Metrics().registry.collect()
    }
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} >= {
        "HotswapAccuracyDrop",
        "HotswapFeatureDrift",
        "HotswapUnmatchedLabelsRising",
    }
    for rule in rules:
        for name in promql_metric_names(rule["expr"]):
            assert base_metric_name(name) in exported, f"{rule['alert']} queries unknown {name}"


def test_dashboard_shows_quality_and_drift() -> None:
    queries = "\n".join(dashboard_queries())
    for needle in ('hotswap_model_quality{metric="accuracy"}', "hotswap_feature_drift",
                   "hotswap_labels_total"):  # fmt: skip
        assert needle in queries, needle
