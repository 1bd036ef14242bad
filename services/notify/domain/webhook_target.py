"""Where a webhook may be sent: public addresses only, unless the operator allows more.

A subscriber's ``webhook_url`` is user data, and notify POSTs to it from inside the network: an
unchecked URL would let any caller reach loopback, the cluster's private services or the cloud's
metadata endpoint through notify. A target is refused when its address is loopback, private (RFC
1918, IPv6 unique-local), link-local, shared address space (CGNAT, 100.64.0.0/10), multicast,
unspecified, a cloud metadata endpoint, or otherwise not globally reachable (the IANA
special-purpose registries) — IPv4 and IPv6 alike. An IPv6 address carrying an IPv4 one (mapped
``::ffff:a.b.c.d``, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``) is judged by the IPv4 address as
well.

The operator's allow-list (``NOTIFY_WEBHOOK_ALLOW_LIST``) names networks (CIDR, or one
address) and ``host:port`` endpoints that are allowed anyway. A metadata address is allowed only
when the list names that very address, never by a wider range that happens to contain it.

The rules apply twice: to the URL when a subscriber is created or its URL changes
(:func:`url_refusal`: a literal address in any notation, and names that are loopback by
definition such as ``localhost``; no DNS), and to every address the host resolves to when a
webhook is sent (:func:`address_refusal`; services/notify/adapters/channels.py then connects to the
address it checked, so a DNS answer cannot change between the check and the connection).
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass, field
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

METADATA = frozenset(
    ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean ... instance metadata
        "169.254.170.2",  # AWS ECS task metadata
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure platform (wire server); a public address
        "192.0.0.192",  # Oracle Cloud
    )
)
_CGNAT = ip_network("100.64.0.0/10")
_NAT64 = ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"[0-9a-fA-FxX.]+")
_LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
SCHEMES = {"http": 80, "https": 443}


def _embedded_ipv4(ip: IPAddress) -> IPv4Address | None:
    if isinstance(ip, IPv4Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _kind(ip: IPAddress) -> str | None:
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if isinstance(ip, IPv4Address) and ip in _CGNAT:
        return "a shared (CGNAT) address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or not ip.is_global:
        return "a reserved address"
    return None


def classify(ip: IPAddress) -> str | None:
    """What makes ``ip`` unfit for a webhook ("a loopback address"), or None if it is public."""
    embedded = _embedded_ipv4(ip)
    return (_kind(embedded) if embedded is not None else None) or _kind(ip)


@dataclass(frozen=True)
class WebhookAllowList:
    """The operator's exceptions: networks, and ``(host, port)`` endpoints where the host is a
    name (allowed whatever it resolves to) or an address."""

    networks: tuple[IPNetwork, ...] = ()
    endpoints: frozenset[tuple[str, int]] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, text: str) -> WebhookAllowList:
        """Entries separated by commas or spaces: ``10.20.0.0/16``, ``127.0.0.1``,
        ``hooks.internal:8443``, ``[fd00::5]:443``. ValueError names a bad entry."""
        networks: list[IPNetwork] = []
        endpoints: set[tuple[str, int]] = set()
        for entry in re.split(r"[,\s]+", text.strip()):
            if not entry:
                continue
            try:
                networks.append(ip_network(entry))
                continue
            except ValueError:
                pass
            host, colon, port = entry.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"{entry!r} is neither a network (10.0.0.0/8, 127.0.0.1) nor host:port"
                )
            endpoints.add((_normal_host(host), int(port)))
        return cls(tuple(networks), frozenset(endpoints))

    def allows(self, ip: IPAddress, port: int, host: str = "") -> bool:
        if (_normal_host(host), port) in self.endpoints or (str(ip), port) in self.endpoints:
            return True
        candidates = [ip]
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            candidates.append(embedded)
        for candidate in candidates:
            for net in self.networks:
                if net.version != candidate.version or candidate not in net:
                    continue
                if candidate not in METADATA or net.num_addresses == 1:
                    return True
        return False

    def allows_name(self, host: str, port: int) -> bool:
        return (_normal_host(host), port) in self.endpoints


def _normal_host(host: str) -> str:
    host = host.lower().rstrip(".")
    try:
        return str(ip_address(host))
    except ValueError:
        return host


def address_refusal(ip: IPAddress, port: int, host: str, allow: WebhookAllowList) -> str | None:
    """Why a webhook must not connect to ``ip``:``port`` (reached through ``host``), or None."""
    kind = classify(ip)
    if kind is None or allow.allows(ip, port, host):
        return None
    return f"{kind}, which webhooks may not reach unless the operator allow-lists it"


def literal_address(host: str) -> IPAddress | None:
    """The address a URL's host names without DNS: ``[::1]``, ``127.0.0.1``, and the numeric
    forms resolvers also accept (``127.1``, ``2130706433``, ``0x7f000001``)."""
    try:
        return ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host):
        try:
            return IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def url_refusal(url: str, allow: WebhookAllowList) -> str | None:
    """What is wrong with ``url`` as a webhook target, as far as can be told without DNS."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname:
        return "is not an http(s) URL"
    try:
        port = parts.port or SCHEMES[parts.scheme]
    except ValueError:
        return "has an invalid port"
    host = parts.hostname.rstrip(".")
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        if allow.allows_name(host, port):
            return None
        return (
            "names localhost, a loopback address, which webhooks may not reach unless the "
            "operator allow-lists it"
        )
    ip = literal_address(host)
    if ip is None:
        return None  # a name: its addresses are checked when the webhook is sent
    refusal = address_refusal(ip, port, host, allow)
    return None if refusal is None else f"points at {refusal}"
