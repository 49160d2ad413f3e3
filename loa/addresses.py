"""Whether a URL points into an internal network: a link Loa hands to someone who will fetch
it blindly (a live-stream URL that every node fetches; an alarm webhook the server posts to)
must not reach loopback, link-local (169.254.169.254: cloud metadata), private or otherwise
internal addresses for whoever typed it, unless the province lists the network.

Host names are refused when they are evidently internal (``localhost``, one label,
``.local``, ``.internal``, …) or resolve here to an internal address."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

INTERNAL_SUFFIXES = (
    ".localhost",
    ".local",
    ".internal",
    ".intranet",
    ".lan",
    ".home",
    ".home.arpa",
    ".localdomain",
    ".corp",
)
RESOLVE_TIMEOUT_S = 2.0

IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(text: str) -> list[IpNet]:
    """``"10.8.0.0/16, 2001:db8::/32"`` -> networks (a bad entry is a configuration error)."""
    return [
        ipaddress.ip_network(part.strip(), strict=False)
        for part in (text or "").split(",")
        if part.strip()
    ]


def internal_why(addr: IpAddr) -> str | None:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_loopback:
        return "địa chỉ loopback (chính máy chủ)"
    if addr.is_link_local:
        return "địa chỉ link-local"
    if addr.is_unspecified or addr.is_multicast or addr.is_reserved:
        return "địa chỉ không dùng để phát"
    if addr.is_private or not addr.is_global:
        return "địa chỉ mạng nội bộ"
    return None


def resolve(host: str) -> list[IpAddr]:
    """Addresses ``host`` has here; none when it does not resolve in time (nodes resolve it on
    their own network)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        infos = pool.submit(socket.getaddrinfo, host, None).result(RESOLVE_TIMEOUT_S)
    except (OSError, UnicodeError, concurrent.futures.TimeoutError):
        return []
    finally:
        pool.shutdown(wait=False)
    out = []
    for info in infos:
        try:
            out.append(ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
        except ValueError:
            continue
    return out


def endpoint(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


def internal_reason(url: str, allowed_networks: Iterable[IpNet] = ()) -> str | None:
    """Why ``url``'s host is internal (Vietnamese, for the refusal), or None when it may be
    used: a public address, or one inside ``allowed_networks``."""
    host, _port = endpoint(url)
    networks = list(allowed_networks)
    try:
        literal: IpAddr | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        if host == "localhost" or host.endswith(INTERNAL_SUFFIXES) or "." not in host:
            return "tên máy trong mạng nội bộ"
        addresses = resolve(host)
    for addr in addresses:
        why = internal_why(addr)
        if why is not None and not any(
            addr in net for net in networks if net.version == addr.version
        ):
            return why
    return None
