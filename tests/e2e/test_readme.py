"""Every command and code example of README.md's "Calling the services" runs as written against
services started the way `make run` starts them (``python -m demo.run``, demo centre
loaded). The one change is the addresses: the services here listen on free ports, so the
README's default addresses are replaced by those. The Python examples run twice, in one
interpreter each time, to show they can be run again. The grpcurl block runs where grpcurl is
installed; elsewhere the test checks only that the README says how to get it."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.settings import DEFAULT_PORTS, REPO_ROOT
from tests.e2e.make_run import Launcher, make_run

pytestmark = pytest.mark.e2e

README = REPO_ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def blocks(language: str) -> list[str]:
    found = FENCE.findall(section("Calling the services"))
    return [code for lang, code in found if lang == language]


def shell_blocks(grpcurl: bool) -> list[str]:
    return [code for code in blocks("sh") if ("grpcurl " in code) == grpcurl]


def on_ports(code: str, launcher: Launcher) -> str:
    for name, port in DEFAULT_PORTS.items():
        code = code.replace(f"127.0.0.1:{port}", launcher.addresses[name])
    return code


@pytest.fixture(scope="module")
def launcher(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Launcher]:
    with make_run(tmp_path_factory.mktemp("make-run")) as running:
        yield running


def run_shell(code: str, launcher: Launcher) -> subprocess.CompletedProcess[str]:
    """As a user would in the repository, with the launcher's environment (so `make token`
    signs with the issuer that run started)."""
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=REPO_ROOT,
        env=launcher.env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_readme_has_examples_to_run() -> None:
    assert len(shell_blocks(grpcurl=False)) >= 1
    assert len(shell_blocks(grpcurl=True)) >= 1
    assert len(blocks("python")) >= 3


def test_the_buf_curl_examples_run_with_the_projects_buf(launcher: Launcher) -> None:
    assert (REPO_ROOT / "node_modules/.bin/buf").exists(), "make run installs buf (npm)"
    for code in shell_blocks(grpcurl=False):
        done = run_shell(on_ports(code, launcher), launcher)
        assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
        out = done.stdout
        assert "infusion.inventory.v1.InventoryService" in out  # --list-services
        assert '"code": "gammagard-liquid"' in out  # ListProducts
        assert '"status": "SERVING"' in out  # health
        assert '"displayName": "Demo infusion centre"' in out  # ListSites: the demo centre


def test_the_grpcurl_examples(launcher: Launcher) -> None:
    intro = section("Calling the services")
    assert "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest" in intro
    if shutil.which("grpcurl") is None:
        pytest.skip("grpcurl is not installed (the README says how to get it)")
    for code in shell_blocks(grpcurl=True):
        done = run_shell(on_ports(code, launcher), launcher)
        assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"


def test_the_python_examples_run_and_run_again(launcher: Launcher, tmp_path: Path) -> None:
    script = tmp_path / "readme_examples.py"
    script.write_text("\n".join(on_ports(code, launcher) for code in blocks("python")))
    for _ in range(2):
        done = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            env=launcher.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        assert "APPOINTMENT_STATUS_BOOKED" in out
        assert "lot_number: " in out  # ListLotRecipients names the patient's lot
