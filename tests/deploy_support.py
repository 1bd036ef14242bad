"""Readers for deploy/: the Dockerfile, the compose file and the Kubernetes manifests, plus the
names of the environment variables the services read (for tests/test_deploy.py)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from services.common.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SERVICES = ("scheduler", "inventory", "notify")

# Variables read directly from os.environ rather than through a settings loader.
_DIRECT_READ = re.compile(r"""\b(?:environ|env)\.get\(\s*["']([A-Z][A-Z0-9_]+)["']""")


# ---- environment variables the services read ---------------------------------------------


def settings_class(service: str) -> type[ServiceSettings]:
    from services.inventory.settings import InventorySettings
    from services.notify.settings import NotifySettings
    from services.scheduler.settings import SchedulerSettings

    classes: dict[str, type[ServiceSettings]] = {
        "scheduler": SchedulerSettings,
        "inventory": InventorySettings,
        "notify": NotifySettings,
    }
    return classes[service]


def settings_names(service: str) -> set[str]:
    """The shape every service shares (DATABASE_URL, LISTEN, ... and the peers' *_ADDRESS);
    not the unprefixed LOG_LEVEL and AUTH_* (defaults that hold for every service)."""
    cls = settings_class(service)
    shared = {
        cls.variable(f)
        for f in ServiceSettings.model_fields
        if f not in ("peers", "log_level") and not f.startswith("auth_")
    }
    return shared | {f"{p.upper()}_ADDRESS" for p in SERVICES if p != service}


def _direct_names(service: str) -> set[str]:
    names: set[str] = set()
    for folder in ("common", service):
        for path in (REPO / "services" / folder).rglob("*.py"):
            names.update(_DIRECT_READ.findall(path.read_text()))
    return {n for n in names if not n.startswith(tuple(f"{s.upper()}_" for s in SERVICES))} | {
        n for n in names if n.startswith(f"{service.upper()}_")
    }


def env_names(service: str) -> set[str]:
    """Every environment variable ``python -m services.<service>`` reads."""
    return settings_class(service).variables() | _direct_names(service)


# ---- Dockerfile ------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str

    def exec_form(self) -> list[str]:
        """The JSON array of ENTRYPOINT/CMD (shell form is not accepted: signals would go to
        /bin/sh instead of Python)."""
        parsed = json.loads(self.value)
        assert isinstance(parsed, list) and all(isinstance(x, str) for x in parsed), self.value
        return parsed


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for pair in shlex.split(instruction.value):
                key, _, value = pair.partition("=")
                values[key] = value
        return values

    def workdir(self) -> str:
        last = self.last("WORKDIR")
        return last.value if last else "/"


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages). Continuation lines are joined; comments dropped."""
    logical: list[str] = []
    buffer = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if buffer and line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1].strip() + " "
            continue
        logical.append(buffer + line)
        buffer = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword, value = keyword.upper(), value.strip()
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            args[name] = default
        elif keyword == "FROM":
            parts = value.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else str(len(stages))
            stages.append(Stage(base, name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, value))
    return args, stages


@dataclass
class ImageTree:
    """The image's files laid out under a temporary directory: one root per stage."""

    roots: dict[str, Path]

    def host(self, stage: str, container_path: str, workdir: str = "/") -> Path:
        path = PurePosixPath(workdir) / container_path
        return self.roots[stage] / str(path).lstrip("/")


def copy_into(source: Path, target: Path, *, into_dir: bool) -> None:
    """COPY semantics: a directory's contents go into the target; a file goes into a target
    ending in '/' (into_dir) or becomes it. __pycache__ is left out (Dockerfile.dockerignore)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    if source.is_dir():
        shutil.copytree(source, target, dirs_exist_ok=True, ignore=ignore)
    else:
        destination = target / source.name if into_dir else target
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)


def replay_copies(stages: list[Stage], tree: ImageTree) -> None:
    """Carry out every COPY of every stage: from the build context (the repository) or from an
    earlier stage's tree."""
    for stage in stages:
        workdir = "/"
        for instruction in stage.instructions:
            if instruction.keyword == "WORKDIR":
                workdir = instruction.value
                tree.host(stage.name, workdir).mkdir(parents=True, exist_ok=True)
            if instruction.keyword != "COPY":
                continue
            words = instruction.value.split()
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            *sources, dest = paths
            origin = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            target = tree.host(stage.name, dest, workdir)
            for source in sources:
                if origin is None:
                    host_source = REPO / source
                elif origin in tree.roots:
                    host_source = tree.host(origin, source)
                else:
                    continue  # an earlier stage's file we did not build (e.g. /opt/venv)
                if not host_source.exists():
                    continue
                copy_into(host_source, target, into_dir=dest.endswith("/"))


# ---- compose ---------------------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} (the forms deploy/ uses)."""

    def replace(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        current = variables.get(name)
        if op in (":-", "-"):
            return current if current else arg
        if op in (":?", "?") and not current:
            raise KeyError(f"{name}: {arg}")
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(data, dict)
    return data


def compose_environment(service: Mapping[str, Any], variables: Mapping[str, str]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v), variables) for k, v in env.items()}


def compose_schema() -> dict[str, Any]:
    """The compose-spec JSON schema as vendored by check-jsonschema (its wheel, so offline)."""
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor")
        .joinpath("compose-spec.json")
        .read_text()
    )
    schema = json.loads(text)
    assert isinstance(schema, dict)
    return schema


def start_order(services: Mapping[str, Any]) -> list[str]:
    """Services in an order that satisfies every depends_on."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        assert name not in path, f"depends_on cycle: {path + (name,)}"
        if name in order:
            return
        for dependency in services[name].get("depends_on", {}):
            visit(dependency, path + (name,))
        order.append(name)

    for name in services:
        visit(name, ())
    return order


# ---- Kubernetes ------------------------------------------------------------------------------


def k8s_documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """(file name, document) for every resource the kustomization applies."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((K8S / name).read_text()):
            if document:
                yield name, document


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment and Job."""
    for _, doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]
