"""The SSRF guard: which addresses a fetch may connect to.

On by default: only globally routable unicast addresses pass. ``DEEPWATCH_FETCH_ALLOW_NETWORKS``
opens chosen networks (tests, private deployments). Every address a name resolves to is checked —
one bad address refuses the name — because a resolver may hand out any of them.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deepwatch.media.errors import Blocked, NotFound, Transient

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud instance-metadata endpoints that are not already link-local or private.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254", "192.0.0.192")
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")


def refusal_reason(ip: IpAddress) -> str | None:
    """Why ``ip`` must not be fetched from, or None when it is an ordinary public address."""
    if ip.version == 6:
        # An IPv6 address that carries an IPv4 one is judged by the IPv4 address it reaches.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            reason = refusal_reason(embedded)
            return f"{reason} (embedded in {ip})" if reason else None
    if ip in METADATA_ADDRESSES:
        return "cloud metadata address"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),  # before "private": Python counts 240/4 as both
        ("private", ip.is_private),
        ("shared address space (carrier-grade NAT)", ip.version == 4 and ip in CGNAT),
    )
    for reason, hit in checks:
        if hit:
            return f"{reason} address"
    if not ip.is_global:
        return "not a globally routable address"
    return None


@dataclass(frozen=True)
class AddressPolicy:
    allow_networks: tuple[IpNetwork, ...] = ()

    @classmethod
    def from_networks(cls, networks: Iterable[IpNetwork | str]) -> AddressPolicy:
        return cls(tuple(ipaddress.ip_network(n) if isinstance(n, str) else n for n in networks))

    def refusal(self, ip: IpAddress) -> str | None:
        if any(ip.version == net.version and ip in net for net in self.allow_networks):
            return None
        return refusal_reason(ip)

    def check(self, host: str, addresses: Sequence[IpAddress]) -> None:
        """Raise :class:`Blocked` naming the first refused address of ``host``."""
        for ip in addresses:
            reason = self.refusal(ip)
            if reason:
                allow = "; DEEPWATCH_FETCH_ALLOW_NETWORKS can allow it" if reason != "cloud metadata address" else ""
                raise Blocked(f"refused {host} → {ip}: {reason}{allow}")


def resolve(host: str, port: int) -> list[IpAddress]:
    """Every address ``host`` resolves to (a literal resolves to itself)."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise NotFound(f"no such host: {host}") from None
        raise Transient(f"cannot resolve {host}: {exc}") from None
    seen: dict[IpAddress, None] = {}
    for info in infos:
        seen[ipaddress.ip_address(info[4][0].split("%")[0])] = None
    return list(seen)


def checked_addresses(host: str, port: int, policy: AddressPolicy) -> list[IpAddress]:
    """Resolve and check; the caller must connect to one of *these* addresses, not resolve again."""
    addresses = resolve(host, port)
    policy.check(host, addresses)
    return addresses
