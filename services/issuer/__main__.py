"""``python -m services.issuer serve`` runs the development issuer (``make run`` does);
``python -m services.issuer token ROLE [--org ORG] [--sites a,b]`` prints a fresh token for a
role as its last line (``make token``). Both use the issuer kept under var/issuer/ (created on
first use). ``python -m services.issuer certs DIR`` makes (or renews) a development CA and TLS
certificates for the three services and a client under DIR (``make certs``)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path
from types import FrameType
from urllib.parse import urlparse

from services.issuer.certificates import SERVICES, development_certificates
from services.issuer.endpoints import make_server
from services.issuer.issuer import DEV_ORGANISATION, Issuer
from services.issuer.local import DevIssuerSettings


def serve(issuer: Issuer) -> int:
    address = urlparse(issuer.url)
    server = make_server(issuer, address.hostname or "127.0.0.1", address.port or 80)

    def stop(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    print(f"issuer SERVING on {issuer.url} (development only)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.issuer")
    settings = DevIssuerSettings()
    parser.add_argument("--dir", type=Path, default=settings.dir, help="the issuer's keys")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="serve discovery, keys and client credentials over HTTP")
    token = commands.add_parser("token", help="print a fresh token for a role (last line)")
    token.add_argument("role")
    token.add_argument("--org", default=DEV_ORGANISATION, help="the organisation (claim org)")
    token.add_argument("--sites", default="*", help="comma-separated site ids, or * (all)")
    certs = commands.add_parser(
        "certs",
        help="a development CA and TLS certificates (DIR/<name>/tls.crt, tls.key, ca.crt) for "
        "the services and a client; issues again what is missing or expires within 30 days",
    )
    certs.add_argument("directory", type=Path)
    certs.add_argument(
        "--dns", default="", help="comma-separated extra names for the services' certificates"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.command == "certs":
        extra = [n for n in args.dns.split(",") if n]
        issued = development_certificates(args.directory, SERVICES, dns_names=extra)
        print(f"certificates in {args.directory}: issued {', '.join(issued) or 'none (all valid)'}")
        return 0
    issuer = Issuer.load_or_create(args.dir, f"http://{settings.listen}")
    if args.command == "serve":
        return serve(issuer)
    sites = "*" if args.sites == "*" else [s for s in args.sites.split(",") if s]
    try:
        minted = issuer.role_token(args.role, args.org or DEV_ORGANISATION, sites)
    except KeyError as error:
        print(error.args[0], file=sys.stderr)
        return 2
    print(f"# {args.role} of {args.org} at sites {args.sites}, issued by {issuer.url}")
    print(minted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
