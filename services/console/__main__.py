"""``python -m services.console``: serve the console with uvicorn on ``CONSOLE_LISTEN``
(default 127.0.0.1:8080), printing ``console SERVING on http://...`` once it listens."""

from __future__ import annotations

import logging
import socket
import sys

import uvicorn

from services.common.settings import SettingsError
from services.console.app import create_app
from services.console.settings import load_settings


def main() -> int:
    try:
        settings = load_settings()
        app = create_app(settings)
    except SettingsError as error:
        print(error, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        proxy_headers=True,
        server_header=False,
    )
    Serving(config, settings.listen).run()
    return 0


class Serving(uvicorn.Server):
    """uvicorn's server, saying so once it listens (the launcher waits for that line)."""

    def __init__(self, config: uvicorn.Config, listen: str) -> None:
        super().__init__(config)
        self.listen = listen

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"console SERVING on http://{self.listen}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
