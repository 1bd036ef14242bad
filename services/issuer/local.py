"""A development issuer as a process next to the services: ``make run``, ``make demo``, the
process tests and the benchmarks start one the same way, hand its settings to the services
and mint their own tokens from its keys."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import REPO_ROOT
from services.issuer.issuer import DEV_ORGANISATION, Issuer

DEFAULT_LISTEN = "127.0.0.1:50050"
DEFAULT_DIR = REPO_ROOT / "var" / "issuer"


class DevIssuerSettings(BaseSettings):
    """Where `make run`'s development issuer keeps its keys (``ISSUER_DIR``) and, when it
    creates them, where it will listen (``ISSUER_LISTEN``; afterwards the URL stored with the
    keys holds). `make token` reads the same, so its tokens are the running issuer's; tests
    point both at a directory and a free port of their own."""

    model_config = SettingsConfigDict(env_prefix="ISSUER_", frozen=True)

    dir: Path = DEFAULT_DIR
    listen: str = DEFAULT_LISTEN


def development_issuer() -> Issuer:
    """The issuer `make run` serves and `make token` signs with (var/issuer/ by default)."""
    settings = DevIssuerSettings()
    return Issuer.load_or_create(settings.dir, f"http://{settings.listen}")


class LocalIssuer:
    def __init__(self, directory: Path | None = None, listen: str | None = None) -> None:
        """The issuer kept in ``directory`` (created there, to be served on ``listen``, the
        first time); by default where DevIssuerSettings say."""
        settings = DevIssuerSettings()
        self.directory = directory or settings.dir
        self.issuer = Issuer.load_or_create(self.directory, f"http://{listen or settings.listen}")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return self.issuer.url

    @property
    def listen(self) -> str:
        """host:port of the URL the issuer serves."""
        return self.url.split("://", 1)[1].rstrip("/")

    def start(self, output: IO[bytes] | int | None = None, timeout: float = 30) -> None:
        """``python -m services.issuer serve`` on its URL's port, until it answers."""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "services.issuer", "--dir", str(self.directory), "serve"],
            stdout=output,
            stderr=None if output is None else subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{self.url}/jwks.json", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the development issuer did not start at {self.url}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> LocalIssuer:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    def service_environment(self) -> dict[str, str]:
        return self.issuer.service_environment()

    def token(self, role: str, organisation: str = DEV_ORGANISATION) -> str:
        return self.issuer.role_token(role, organisation)
