"""deploy/ is checked without a container engine or a cluster:

- every Kubernetes manifest validates against the Kubernetes 1.30 schema (kubernetes-validate,
  strict: unknown fields fail), and the compose file against the compose-spec schema;
- the properties that matter: non-root, read-only root filesystem, gRPC probes on the plaintext
  health port, TLS files from the mounted Secret (and cert-manager issuing that Secret),
  resources, replicas, shutdown grace, every env var the services read;
- the image: the Dockerfile's COPY steps and its code generation are replayed into a temporary
  directory, and each service is started from there with ENTRYPOINT + the compose command and
  the compose environment (SQLite in a temp dir, free ports, the `tls` volume a temp dir), in
  depends_on order — the certificates first — checked with the compose health checks, called
  over mTLS, then stopped with SIGTERM.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.common import tls
from services.common.health import wait_serving
from services.common.settings import DEFAULT_PORTS, SettingsError, load
from tests.deploy_support import (
    DEPLOY,
    K8S,
    REPO,
    SERVICES,
    ImageTree,
    Stage,
    compose_environment,
    compose_schema,
    env_names,
    interpolate,
    k8s_documents,
    load_compose,
    parse_dockerfile,
    pod_specs,
    replay_copies,
    settings_class,
    settings_names,
    start_order,
)
from tests.e2e.harness import free_port

K8S_VERSION = "1.30.0"
TLS_DIR = "/etc/infusion/tls"  # where the images' certificates are (compose and Kubernetes)
TLS_PARTS = ("CERT_FILE", "KEY_FILE", "CLIENT_CA_FILE", "CA_FILE")
# The variables deploy/ may set besides those the services read: Python's own.
PYTHON_VARS = {"PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "PATH"}

K8S_DOCS = list(k8s_documents())
DEPLOYMENTS = {d["metadata"]["name"]: d for _, d in K8S_DOCS if d["kind"] == "Deployment"}
K8S_SERVICES = {d["metadata"]["name"]: d for _, d in K8S_DOCS if d["kind"] == "Service"}
CONFIGMAP = next(d for _, d in K8S_DOCS if d["kind"] == "ConfigMap")
COMPOSE = load_compose()
ARGS, STAGES = parse_dockerfile((DEPLOY / "Dockerfile").read_text())
RUNTIME: Stage = STAGES[-1]


def runtime(keyword: str) -> str:
    """The last ``keyword`` instruction of the runtime stage (USER, ENTRYPOINT, CMD)."""
    instruction = RUNTIME.last(keyword)
    assert instruction is not None, keyword
    return instruction.value


def runtime_exec(keyword: str) -> list[str]:
    instruction = RUNTIME.last(keyword)
    assert instruction is not None, keyword
    return instruction.exec_form()


UID = int(runtime("USER").split(":")[0])


def seconds(value: str | int | float) -> float:
    """Compose durations as used here: '30s', '1m30s', or a number."""
    if isinstance(value, int | float):
        return float(value)
    total = 0.0
    for amount, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value):
        total += float(amount) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def container(name: str) -> dict[str, Any]:
    spec = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    (only,) = spec["containers"]
    return dict(only)


# ---- schemas ---------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest() -> None:
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    present = sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == present


@pytest.mark.parametrize(
    "doc",
    [d for _, d in K8S_DOCS],
    ids=[f"{f}:{d['kind']}/{d['metadata']['name']}" for f, d in K8S_DOCS],
)
def test_manifest_validates_against_kubernetes_schema(doc: dict[str, Any]) -> None:
    assert kubernetes_validate.validate(doc, K8S_VERSION, strict=True) == "1.30"


def test_kubernetes_validation_is_not_vacuous() -> None:
    bad = copy.deepcopy(DEPLOYMENTS["scheduler"])
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["prot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)
    bad = copy.deepcopy(DEPLOYMENTS["scheduler"])
    bad["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_compose_validates_against_compose_spec() -> None:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(COMPOSE)]
    assert errors == []
    # and it is not vacuous: a misspelt key or value fails
    bad = copy.deepcopy(COMPOSE)
    bad["services"]["scheduler"]["depends_on"]["inventory"]["condition"] = "service_happy"
    assert any("service_happy" in e.message for e in validator.iter_errors(bad))
    bad = copy.deepcopy(COMPOSE)
    bad["services"]["notify"]["healthcheck"]["intervall"] = "5s"
    assert any("intervall" in e.message for e in validator.iter_errors(bad))


# ---- Kubernetes: what matters ----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(dict(pod_specs())))
def test_pods_run_non_root_read_only_with_limits(name: str) -> None:
    spec = dict(pod_specs())[name]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == UID != 0
    assert spec["automountServiceAccountToken"] is False
    tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert any(m["mountPath"] == "/tmp" and m["name"] in tmp_volumes for m in c["volumeMounts"])
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) == {"cpu", "memory"}, (name, kind)
        assert c["image"].startswith("infusion-platform:")


@pytest.mark.parametrize("name", SERVICES)
def test_deployment_probes_ports_and_replicas(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    c = container(name)
    listen_port = int(CONFIGMAP["data"][f"{name.upper()}_LISTEN"].rpartition(":")[2])
    assert listen_port == DEFAULT_PORTS[name]
    metrics_port = int(CONFIGMAP["data"][f"{name.upper()}_METRICS_LISTEN"].rpartition(":")[2])
    health_port = int(CONFIGMAP["data"][f"{name.upper()}_HEALTH_LISTEN"].rpartition(":")[2])
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [
        ("grpc", listen_port),
        ("metrics", metrics_port),
        ("health", health_port),
    ]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(metrics_port)
    assert annotations["prometheus.io/scheme"] == "https"  # /metrics speaks TLS
    # the kubelet's gRPC probe cannot do TLS: it asks the plaintext health-only listener
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"] == {"port": health_port}, probe
    # migrations run while NOT_SERVING: the startup probe must allow for them
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # the container runs the Dockerfile's entrypoint with this service's module
    assert c["args"][0] == f"services.{name}"
    assert "command" not in c
    # more than one replica, rolled one new pod at a time (the first one migrates)
    assert deployment["spec"]["replicas"] > 1
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert (rolling["maxSurge"], rolling["maxUnavailable"]) == (1, 0)
    # the Service and the peers' address point at the same port
    service = K8S_SERVICES[name]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    port, metrics = service["spec"]["ports"]
    assert port["port"] == listen_port and port["targetPort"] == "grpc"
    assert (metrics["name"], metrics["port"], metrics["targetPort"]) == (
        "metrics",
        metrics_port,
        "metrics",
    )
    assert CONFIGMAP["data"][f"{name.upper()}_ADDRESS"] == f"{name}:{listen_port}"


@pytest.mark.parametrize("name", SERVICES)
def test_termination_grace_exceeds_the_services_drain(name: str) -> None:
    spec = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    pause = float(container(name)["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = float(CONFIGMAP["data"][f"{name.upper()}_SHUTDOWN_GRACE_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] >= pause + grace + 10


@pytest.mark.parametrize("name", SERVICES)
def test_pods_serve_mutual_tls_from_their_mounted_secret(name: str) -> None:
    """The ConfigMap's TLS paths are the files of the Secret the pod mounts (whole, read-only,
    not by subPath, which the kubelet never updates: renewals would not reach the service)."""
    prefix = name.upper()
    config = CONFIGMAP["data"]
    spec = DEPLOYMENTS[name]["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == f"{name}-tls"
    (mount,) = [m for m in container(name)["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True and "subPath" not in mount
    directory = mount["mountPath"]
    assert config[f"{prefix}_TLS_CERT_FILE"] == f"{directory}/tls.crt"
    assert config[f"{prefix}_TLS_KEY_FILE"] == f"{directory}/tls.key"
    # client certificates required, and peers verified, against the CA of the same Secret
    assert config[f"{prefix}_TLS_CLIENT_CA_FILE"] == f"{directory}/ca.crt"
    assert config[f"{prefix}_TLS_CA_FILE"] == f"{directory}/ca.crt"
    assert config[f"{prefix}_INSECURE_LISTEN"] == "false"
    assert spec["securityContext"]["fsGroup"] == UID  # the key file is group-readable only
    assert volume["secret"]["defaultMode"] == 0o440


CERT_MANAGER = K8S / "cert-manager"
CERT_MANAGER_DOCS = [
    d
    for name in yaml.safe_load((CERT_MANAGER / "kustomization.yaml").read_text())["resources"]
    for d in yaml.safe_load_all((CERT_MANAGER / name).read_text())
    if d
]


def test_cert_manager_issues_what_the_pods_mount() -> None:
    """deploy/k8s/cert-manager: a CA Issuer backed by a CA certificate, and a certificate per
    service into the Secret its pods mount, naming the Service its peers call (the name they
    check) and usable as server and client certificate."""
    assert {d["apiVersion"] for d in CERT_MANAGER_DOCS} == {"cert-manager.io/v1"}
    issuers = {d["metadata"]["name"]: d["spec"] for d in CERT_MANAGER_DOCS if d["kind"] == "Issuer"}
    certificates = {
        d["spec"]["secretName"]: d["spec"] for d in CERT_MANAGER_DOCS if d["kind"] == "Certificate"
    }
    for name in SERVICES:
        spec = certificates[f"{name}-tls"]
        host = CONFIGMAP["data"][f"{name.upper()}_ADDRESS"].rpartition(":")[0]
        assert name in spec["dnsNames"] and host in spec["dnsNames"]
        assert f"{name}.infusion.svc.cluster.local" in spec["dnsNames"]
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["privateKey"]["rotationPolicy"] == "Always"
        issuer = issuers[spec["issuerRef"]["name"]]
        ca = certificates[issuer["ca"]["secretName"]]
        assert ca["isCA"] is True and ca["issuerRef"]["name"] in issuers
    assert "client auth" in certificates["prometheus-client-tls"]["usages"]
    assert all(d["metadata"]["namespace"] == "infusion" for d in CERT_MANAGER_DOCS)


@pytest.mark.parametrize("name", SERVICES)
def test_every_env_var_is_provided_in_kubernetes(name: str) -> None:
    c = container(name)
    provided = set(CONFIGMAP["data"]) | {e["name"] for e in c.get("env", [])}
    assert [r["configMapRef"]["name"] for r in c["envFrom"]] == [CONFIGMAP["metadata"]["name"]]
    assert env_names(name) - provided == set()
    # database URLs come from a Secret the operator creates; nothing secret ships here
    database = next(e for e in c["env"] if e["name"] == f"{name.upper()}_DATABASE_URL")
    assert database["valueFrom"]["secretKeyRef"]["name"] == "infusion-database"
    assert not any(d["kind"] == "Secret" for _, d in K8S_DOCS)
    assert not any(k.endswith(("_PASSWORD", "_TOKEN", "_SECRET")) for k in CONFIGMAP["data"])
    # the service's client secret (its identity towards its peers) comes from a Secret too
    secret = next(e for e in c["env"] if e["name"] == f"{name.upper()}_CLIENT_SECRET")
    assert secret["valueFrom"]["secretKeyRef"]["name"] == "infusion-auth"


def test_database_connections_fit_postgres_default_max_connections() -> None:
    """A process opens up to 2 x DB_POOL_SIZE connections (services.common.db: pool_size
    plus max_overflow of the same size); count every pod a rollout may run at once."""
    total = 0
    for name, deployment in DEPLOYMENTS.items():
        if name not in SERVICES:  # the console has no database
            continue
        pods = (
            deployment["spec"]["replicas"]
            + deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
        )
        total += pods * 2 * int(CONFIGMAP["data"][f"{name.upper()}_DB_POOL_SIZE"])
    assert total <= 100


def test_configmap_sets_only_variables_the_services_read() -> None:
    read = set().union(*(env_names(s) for s in SERVICES))
    assert set(CONFIGMAP["data"]) - read == set()


def test_operations_doc_lists_every_env_var() -> None:
    doc = (REPO / "docs" / "operations.md").read_text()
    read = set().union(*(env_names(s) for s in SERVICES))
    assert {name for name in read if f"`{name}`" not in doc} == set()


def test_seed_job_runs_inventory_seed() -> None:
    job = next(d for _, d in K8S_DOCS if d["kind"] == "Job")
    (c,) = job["spec"]["template"]["spec"]["containers"]
    assert c["args"] == COMPOSE["services"]["inventory-seed"]["command"]
    assert {e["name"] for e in c["env"]} == {"INVENTORY_DATABASE_URL"}


# ---- compose: what matters -------------------------------------------------------------------

APP_SERVICES = [n for n in COMPOSE["services"] if n != "postgres"]
# what the operator gives compose (docs/operations.md); the services start without reaching the
# issuer (keys and tokens are fetched on first need), so any URL does for these checks
COMPOSE_VARIABLES = {
    "POSTGRES_PASSWORD": "pw",
    "AUTH_ISSUER": "http://127.0.0.1:9/realms/infusion",
    "SCHEDULER_CLIENT_SECRET": "unused",
    "INVENTORY_CLIENT_SECRET": "unused",
    "CONSOLE_SESSION_SECRET": "unused",
}


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_services_are_locked_down(name: str) -> None:
    service = COMPOSE["services"][name]
    assert int(service["user"].split(":")[0]) == UID
    assert service["read_only"] is True
    assert "/tmp" in service["tmpfs"]
    assert service["cap_drop"] == ["ALL"]
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    if name not in ("certs", "console"):  # these need no database
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"


@pytest.mark.parametrize("name", SERVICES)
def test_compose_service_env_health_and_grace(name: str) -> None:
    service = COMPOSE["services"][name]
    env = compose_environment(service, COMPOSE_VARIABLES)
    # the shape every service reads (settings.py) is set, and nothing the services don't read
    assert settings_names(name) - set(env) == set()
    assert set(env) - env_names(name) == set()
    assert env[f"{name.upper()}_DATABASE_URL"].endswith(f"@postgres:5432/{name}")
    listen_port = int(env[f"{name.upper()}_LISTEN"].rpartition(":")[2])
    metrics_port = int(env[f"{name.upper()}_METRICS_LISTEN"].rpartition(":")[2])
    assert service["ports"] == [
        f"127.0.0.1:{listen_port}:{listen_port}",
        f"127.0.0.1:{metrics_port}:{metrics_port}",
    ]
    assert f"{metrics_port}" in runtime("EXPOSE").split()
    assert env["LOG_FORMAT"] == "json"
    for peer in SERVICES:
        if peer != name:
            assert env[f"{peer.upper()}_ADDRESS"] == f"{peer}:{DEFAULT_PORTS[peer]}"
    assert service["healthcheck"]["test"][0] == "CMD"
    assert seconds(service["stop_grace_period"]) > float(
        env[f"{name.upper()}_SHUTDOWN_GRACE_SECONDS"]
    )
    for dependency, condition in service["depends_on"].items():
        one_shot = COMPOSE["services"][dependency].get("restart") == "no"
        expected = "service_completed_successfully" if one_shot else "service_healthy"
        assert condition == {"condition": expected}
    # mTLS from the certificates the `certs` step made in the shared volume, read-only
    assert service["depends_on"]["certs"] == {"condition": "service_completed_successfully"}
    (volume,) = service["volumes"]
    assert volume == f"tls:{TLS_DIR}:ro"
    assert COMPOSE["services"]["certs"]["volumes"] == [f"tls:{TLS_DIR}"]
    assert COMPOSE["services"]["certs"]["command"] == ["services.issuer", "certs", TLS_DIR]
    prefix = name.upper()
    assert env[f"{prefix}_TLS_CERT_FILE"] == f"{TLS_DIR}/{name}/tls.crt"
    assert env[f"{prefix}_TLS_KEY_FILE"] == f"{TLS_DIR}/{name}/tls.key"
    assert env[f"{prefix}_TLS_CLIENT_CA_FILE"] == env[f"{prefix}_TLS_CA_FILE"]
    assert env[f"{prefix}_TLS_CA_FILE"] == f"{TLS_DIR}/{name}/ca.crt"
    assert env[f"{prefix}_INSECURE_LISTEN"] == "false"
    # the health check asks the plaintext health listener, inside the container only
    assert tls.is_loopback(env[f"{prefix}_HEALTH_LISTEN"])
    assert f"os.environ['{prefix}_HEALTH_LISTEN']" in service["healthcheck"]["test"][-1]


@pytest.mark.parametrize("name", SERVICES)
def test_the_insecure_compose_override_is_explicit(name: str) -> None:
    """deploy/compose.insecure.yaml turns TLS off for a service only together with its
    INSECURE_LISTEN switch; so merged, the service accepts listening and calling off loopback
    in plaintext (and without the override, with TLS off, it refuses)."""
    override = yaml.safe_load((DEPLOY / "compose.insecure.yaml").read_text())
    schema = compose_schema()
    assert list(jsonschema.validators.validator_for(schema)(schema).iter_errors(override)) == []
    base = compose_environment(COMPOSE["services"][name], COMPOSE_VARIABLES)
    merged = {**base, **compose_environment(override["services"][name], {})}
    prefix = name.upper()
    assert merged[f"{prefix}_INSECURE_LISTEN"] == "true"
    assert not any(merged[f"{prefix}_TLS_{part}"] for part in TLS_PARTS)
    settings = settings_class(name)
    insecure = load(settings, merged)
    assert tls.server_tls(insecure) is None
    for peer in SERVICES:
        if peer != name:
            assert tls.ClientTls.to_peer(insecure, peer) is None
    refused = load(settings, {**merged, f"{prefix}_INSECURE_LISTEN": "false"})
    with pytest.raises(SettingsError):
        tls.server_tls(refused)


def test_compose_databases_are_created_by_the_init_script() -> None:
    init = COMPOSE["services"]["postgres"]["volumes"][1].split(":")[0]
    sql = (DEPLOY / init).read_text()
    assert sorted(re.findall(r"CREATE DATABASE (\w+);", sql)) == sorted(SERVICES)
    with pytest.raises(KeyError):  # the password must be given: none ships
        compose_environment(COMPOSE["services"]["postgres"], {})


# ---- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_without_compilers() -> None:
    assert [s.name for s in STAGES] == ["builder", "runtime"]
    assert all(s.base == "python:3.11-slim" for s in STAGES)
    user = RUNTIME.last("USER")
    assert user is not None and user.value.split(":")[0].isdigit()
    assert int(user.value.split(":")[0]) != 0
    runtime_runs = " ".join(i.value for i in RUNTIME.all("RUN"))
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in runtime_runs
    assert runtime_exec("ENTRYPOINT") == ["python", "-m"]
    assert runtime_exec("CMD") == ["services.scheduler"]


def test_dockerfile_generates_code_as_the_makefile_does() -> None:
    makefile = (REPO / "Makefile").read_text()
    recipe = makefile.split("$(GEN_STAMP):", 1)[1].split("\n\n", 1)[0]
    make_protoc = re.search(r"-m grpc_tools\.protoc(.*?)\$\(PROTOS\)", recipe, re.S)
    assert make_protoc is not None
    (gen_run,) = [i.value for i in STAGES[0].all("RUN") if "grpc_tools.protoc" in i.value]
    docker_protoc = re.search(r"-m grpc_tools\.protoc(.*?)\$\(find protos", gen_run)
    assert docker_protoc is not None
    make_words = [w for w in make_protoc.group(1).split() if w != "\\"]
    assert make_words == docker_protoc.group(1).split()
    assert "find protos -name '*.proto'" in gen_run  # PROTOS := $(shell find protos -name ...)
    assert "find gen -type d -exec touch {}/__init__.py" in gen_run


# ---- the image's commands, run as processes -------------------------------------------------


def build_tree(tmp: Path) -> tuple[ImageTree, Path]:
    """Replay the Dockerfile into ``tmp``: every COPY, then the builder's code generation."""
    tree = ImageTree({s.name: tmp / s.name for s in STAGES})
    builder = STAGES[0]
    # COPYs of the builder first, then generate, then the runtime's COPYs (some from builder)
    replay_copies([builder], tree)
    (gen_run,) = [i.value for i in builder.all("RUN") if "grpc_tools.protoc" in i.value]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    subprocess.run(
        ["sh", "-c", gen_run],
        cwd=tree.host(builder.name, builder.workdir()),
        env={"PATH": path},
        check=True,
    )
    replay_copies([RUNTIME], tree)
    return tree, tree.host(RUNTIME.name, RUNTIME.workdir())


def image_env(tree: ImageTree) -> dict[str, str]:
    """The runtime stage's ENV with its paths moved under the tree (PATH: this interpreter)."""
    env = {k: v for k, v in RUNTIME.env().items() if k != "PATH"}
    env["PYTHONPATH"] = os.pathsep.join(
        str(tree.host(RUNTIME.name, p)) for p in env["PYTHONPATH"].split(":")
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


def argv(words: list[str]) -> list[str]:
    return [sys.executable if w == "python" else w for w in words]


@pytest.fixture
def postgres_databases(postgres_server_url: str) -> Iterator[dict[str, str]]:
    """One fresh schema per service on the test server (one database each in deploy/)."""
    suffix = uuid.uuid4().hex[:8]
    schemas = {name: f"deploy_{name}_{suffix}" for name in SERVICES}
    admin = create_engine(postgres_server_url)
    with admin.begin() as conn:
        for schema in schemas.values():
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        urls = {}
        for name, schema in schemas.items():
            url = make_url(postgres_server_url)
            query = {**url.query, "options": f"-csearch_path={schema}"}
            urls[name] = url.set(query=query).render_as_string(hide_password=False)
        yield urls
    finally:
        with admin.begin() as conn:
            for schema in schemas.values():
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    if request.param == "postgres":
        return dict(request.getfixturevalue("postgres_databases"))
    return {name: f"sqlite:///{tmp_path / 'data' / name}.db" for name in SERVICES}


@pytest.mark.e2e
def test_image_entrypoints_start_serve_and_drain(tmp_path: Path, databases: dict[str, str]) -> None:
    tree, workdir = build_tree(tmp_path / "image")
    base = image_env(tree)
    entrypoint = runtime_exec("ENTRYPOINT")

    # the code runs from the image tree, not from this checkout
    probe = subprocess.run(
        argv(
            [
                "python",
                "-c",
                "import services.scheduler.__main__ as m, "
                "infusion.notify.v1.notify_pb2 as p; print(m.__file__); print(p.__file__)",
            ]
        ),
        cwd=workdir,
        env=base,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(line.startswith(str(tmp_path)) for line in probe.stdout.split()), probe.stdout

    ports = {name: free_port() for name in SERVICES}
    metrics_ports = {name: free_port() for name in SERVICES}
    health_ports = {name: free_port() for name in SERVICES}
    console_port = free_port()
    certificates = tmp_path / "tls"  # the `tls` volume: the certs step writes it
    services = {n: s for n, s in COMPOSE["services"].items() if n != "postgres"}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    envs: dict[str, dict[str, str]] = {}
    logs = tmp_path / "logs"
    logs.mkdir()
    try:
        for name in [n for n in start_order(COMPOSE["services"]) if n in services]:
            service = services[name]
            env = {**base, **compose_environment(service, COMPOSE_VARIABLES)}
            for key in list(env):
                prefix, _, setting = key.partition("_")
                owner = prefix.lower()
                if owner in ports and setting == "DATABASE_URL":
                    env[key] = databases[owner]
                elif owner in ports and setting in ("LISTEN", "ADDRESS"):
                    env[key] = f"127.0.0.1:{ports[owner]}"
                elif owner in ports and setting == "METRICS_LISTEN":
                    env[key] = f"127.0.0.1:{metrics_ports[owner]}"
                elif owner in ports and setting == "HEALTH_LISTEN":
                    env[key] = f"127.0.0.1:{health_ports[owner]}"
                elif key == "CONSOLE_LISTEN":
                    env[key] = f"127.0.0.1:{console_port}"
                env[key] = env[key].replace(TLS_DIR, str(certificates))
            assert "@postgres:" not in " ".join(env.values())
            envs[name] = env
            for dependency, rule in service.get("depends_on", {}).items():
                if dependency == "postgres":
                    continue
                if rule["condition"] == "service_completed_successfully":
                    assert procs[dependency].wait(timeout=120) == 0, dependency
                else:
                    assert rule["condition"] == "service_healthy"
                    assert healthy(services[dependency], envs[dependency], workdir), dependency
            command = [
                word.replace(TLS_DIR, str(certificates))
                for word in entrypoint + service.get("command", runtime_exec("CMD"))
            ]
            with (logs / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen(
                    argv(command), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
                )
        client = certificates / "client"  # what the certs step made for tools
        https = ssl.create_default_context(cafile=client / "ca.crt")
        https.check_hostname = False  # the certificate names the service, not 127.0.0.1
        https.load_cert_chain(client / "tls.crt", client / "tls.key")
        for name in SERVICES:
            assert healthy(services[name], envs[name], workdir), name
            address = f"127.0.0.1:{ports[name]}"
            assert not wait_serving(address, timeout=1)  # no plaintext,
            tls_client = tls.ClientTls(str(client / "ca.crt"), server_name=name)
            assert not wait_serving(address, timeout=1, tls=tls_client)  # no anonymous TLS,
            assert wait_serving(  # a client certificate of the certs step's CA
                address,
                timeout=5,
                tls=tls.ClientTls(
                    str(client / "ca.crt"), str(client / "tls.crt"), str(client / "tls.key"), name
                ),
            )
            # the health checks were calls: the metrics endpoint counts them
            url = f"https://127.0.0.1:{metrics_ports[name]}/metrics"
            with urllib.request.urlopen(url, timeout=5, context=https) as reply:
                scraped = reply.read().decode()
            assert 'grpc_service="grpc.health.v1.Health"' in scraped, name
            assert "db_pool_max_connections" in scraped, name
        # the console reaches all three over mTLS with the certs step's client certificate
        assert healthy(services["console"], envs["console"], workdir), (
            logs / "console.log"
        ).read_text()[-3000:]
        for name in reversed(start_order(COMPOSE["services"])):
            if name in SERVICES:
                procs[name].send_signal(signal.SIGTERM)
        for name in SERVICES:
            grace = seconds(services[name]["stop_grace_period"])
            assert procs[name].wait(timeout=grace) == 0, name
            output = (logs / f"{name}.log").read_text()
            assert "received SIGTERM: draining" in output and f"{name} stopped" in output
        assert "product catalogue:" in (logs / "inventory-seed.log").read_text()
        assert "issued scheduler, inventory, notify, client" in (logs / "certs.log").read_text()
        for name in SERVICES:
            log = (logs / f"{name}.log").read_text()
            assert "(TLS, client certificates required)" in log, name
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def healthy(service: dict[str, Any], env: dict[str, str], workdir: Path) -> bool:
    """Run the compose health check command until it passes (or its start period ends)."""
    check = service["healthcheck"]
    assert check["test"][0] == "CMD"
    deadline = time.monotonic() + seconds(check["start_period"]) + seconds(check["interval"])
    while time.monotonic() < deadline:
        result = subprocess.run(
            argv(check["test"][1:]),
            cwd=workdir,
            env=env,
            capture_output=True,
            timeout=seconds(check["timeout"]) + 5,
        )
        if result.returncode == 0:
            return True
        time.sleep(0.5)
    return False


def test_interpolation_forms() -> None:
    assert interpolate("a${X:-d}b", {}) == "adb"
    assert interpolate("${X:-d}", {"X": "v"}) == "v"
    assert interpolate("${X}", {"X": "v"}) == "v"
    with pytest.raises(KeyError):
        interpolate("${X:?missing}", {})


@pytest.mark.e2e
@pytest.mark.postgres
def test_replicas_starting_together_on_an_empty_database_all_come_up(
    tmp_path: Path, postgres_databases: dict[str, str]
) -> None:
    """docs/operations.md, "Migrations": two replicas of each service start at once on an empty
    database. Migrations take a per-service advisory lock: one replica migrates, the other
    waits and finds the schema at head; none exits (a restart, as the kubelet would do, is
    recorded and fails the test)."""
    tree, workdir = build_tree(tmp_path / "image")
    base = image_env(tree)
    entrypoint = runtime_exec("ENTRYPOINT")
    logs = tmp_path / "logs"
    logs.mkdir()
    replicas: list[tuple[str, list[str], dict[str, str], str]] = []
    for name in SERVICES:
        for replica in range(2):
            prefix = name.upper()
            address = f"127.0.0.1:{free_port()}"
            env = {
                **base,
                f"{prefix}_DATABASE_URL": postgres_databases[name],
                f"{prefix}_LISTEN": address,
                f"{prefix}_JOBS": "0",  # this test is about start-up only
                "AUTH_ISSUER": COMPOSE_VARIABLES["AUTH_ISSUER"],
                f"{prefix}_CLIENT_SECRET": "unused",
            }
            replicas.append((f"{name}-{replica}", entrypoint + [f"services.{name}"], env, address))

    def start(label: str, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (logs / f"{label}.log").open("ab") as log:
            return subprocess.Popen(
                argv(command), cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT
            )

    procs = {label: start(label, command, env) for label, command, env, _ in replicas}
    restarted: list[str] = []
    try:
        for label, command, env, address in replicas:
            deadline = time.monotonic() + 60
            while not wait_serving(address, timeout=0.5):
                code = procs[label].poll()
                if code is not None:
                    assert code != 0 and label not in restarted, label
                    restarted.append(label)
                    procs[label] = start(label, command, env)
                assert time.monotonic() < deadline, label
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for label, proc in procs.items():
            assert proc.wait(timeout=30) == 0, label
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name in SERVICES:
        engine = create_engine(postgres_databases[name])
        try:
            with engine.connect() as conn:
                versions = conn.execute(text(f"SELECT version_num FROM alembic_version_{name}"))
                assert len(versions.all()) == 1
        finally:
            engine.dispose()
    assert restarted == []


# ---- the staff console (services/console, docs/console.md) ---------------------------------


def console_names() -> set[str]:
    from services.console.settings import ConsoleSettings

    return ConsoleSettings.variables()


def test_console_deployment_probes_http_and_mounts_its_client_certificate() -> None:
    deployment = DEPLOYMENTS["console"]
    c = container("console")
    assert c["args"] == ["services.console"] and "command" not in c
    assert [(p["name"], p["containerPort"]) for p in c["ports"]] == [("http", 8080)]
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert c["startupProbe"]["httpGet"] == {"path": "/livez", "port": "http"}
    assert deployment["spec"]["replicas"] > 1
    env = {e["name"]: e for e in c["env"]}
    # every variable the console sets itself is one it reads
    assert set(env) <= console_names()
    assert env["CONSOLE_SESSION_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "infusion-console"
    assert env["CONSOLE_SECURE_COOKIES"]["value"] == "true"
    # what it needs from the ConfigMap is there: the services' addresses and the issuer
    for name in ("SCHEDULER_ADDRESS", "INVENTORY_ADDRESS", "NOTIFY_ADDRESS", "AUTH_ISSUER"):
        assert name in CONFIGMAP["data"]
    spec = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in spec["volumes"] if "secret" in v]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    assert env["CONSOLE_TLS_CA_FILE"]["value"] == f"{mount['mountPath']}/ca.crt"
    assert env["CONSOLE_TLS_CERT_FILE"]["value"] == f"{mount['mountPath']}/tls.crt"
    certificates = {
        d["spec"]["secretName"]: d["spec"] for d in CERT_MANAGER_DOCS if d["kind"] == "Certificate"
    }
    assert "client auth" in certificates[volume["secret"]["secretName"]]["usages"]
    service = K8S_SERVICES["console"]
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]


def test_compose_console_env_health_and_tls() -> None:
    service = COMPOSE["services"]["console"]
    env = compose_environment(service, COMPOSE_VARIABLES)
    assert set(env) <= console_names()
    from services.console.settings import load_settings as console_settings

    settings = console_settings(env)
    assert settings.client_tls("scheduler") is not None  # mTLS to the services
    assert settings.address("scheduler") == "scheduler:50051"
    assert service["ports"] == ["127.0.0.1:8080:8080"]
    for dependency in ("scheduler", "inventory", "notify"):
        assert service["depends_on"][dependency]["condition"] == "service_healthy"
    override = yaml.safe_load((DEPLOY / "compose.insecure.yaml").read_text())
    assert override["services"]["console"]["environment"]["CONSOLE_INSECURE_LISTEN"] == "true"
    without = {k: v for k, v in COMPOSE_VARIABLES.items() if k != "CONSOLE_SESSION_SECRET"}
    with pytest.raises(KeyError):  # compose refuses to start without a session secret
        compose_environment(service, without)
