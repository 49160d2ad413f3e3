"""Which live-stream URLs may be handed to nodes.

A ``stream_url`` is fetched by every targeted node, so a URL pointing at a loopback,
link-local (169.254.169.254: cloud metadata; fe80::/10), private or otherwise internal address
would make the loudspeakers fetch from the network they sit in, or from the server's, for
whoever typed it. Allowed: public addresses, the system's own Icecast server (wherever it
listens), and networks the province lists in ``LOA_STREAM_ALLOWED_NETWORKS`` (its own VPN).
Host names are refused when they are evidently internal (``localhost``, one label, ``.local``,
``.internal``, …) or resolve here to an internal address; the check is made when the
broadcast is created."""

from __future__ import annotations

import concurrent.futures
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from scheduler.errors import InvalidBroadcast

_INTERNAL_SUFFIXES = (".localhost", ".local", ".internal", ".intranet", ".lan", ".home",
                      ".home.arpa", ".localdomain", ".corp")
_RESOLVE_TIMEOUT_S = 2.0

IpNet = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddr = ipaddress.IPv4Address | ipaddress.IPv6Address


def _refusal(host: str, why: str) -> InvalidBroadcast:
    return InvalidBroadcast(
        f"Không dùng được địa chỉ luồng «{host}»: {why}. Cụm loa chỉ được trỏ tới máy chủ "
        "Icecast của hệ thống hoặc một địa chỉ công khai (quản trị có thể cho phép mạng riêng "
        "của tỉnh bằng LOA_STREAM_ALLOWED_NETWORKS).")


def parse_networks(text: str) -> list[IpNet]:
    """``"10.8.0.0/16, 2001:db8::/32"`` -> networks (a bad entry is a configuration error)."""
    return [ipaddress.ip_network(part.strip(), strict=False)
            for part in (text or "").split(",") if part.strip()]


def _internal_why(addr: IpAddr) -> str | None:
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


def _resolve(host: str) -> list[IpAddr]:
    """Addresses ``host`` has here; none when it does not resolve in time (nodes resolve it on
    their own network)."""
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    try:
        infos = pool.submit(socket.getaddrinfo, host, None).result(_RESOLVE_TIMEOUT_S)
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


def _endpoint(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = None
    return (parts.hostname or "").lower(), port


def check_stream_url(url: str, own_bases: Iterable[str] = (),
                     allowed_networks: Iterable[IpNet] = ()) -> str:
    """``url`` if nodes may be sent to it; ``InvalidBroadcast`` (Vietnamese) otherwise.
    ``own_bases``: base URLs of the system's own Icecast server."""
    try:
        parts = urlsplit(url)
        host, port = _endpoint(url)
    except ValueError:
        raise InvalidBroadcast("«stream_url» không phải địa chỉ hợp lệ.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidBroadcast("«stream_url» phải là địa chỉ http(s) của luồng phát trực tiếp.")
    if port is None:
        raise InvalidBroadcast("«stream_url» có cổng không hợp lệ.")
    if parts.username is not None or parts.password is not None:
        raise _refusal(host, "địa chỉ không được chứa tên đăng nhập hay mật khẩu")
    if (host, port) in {_endpoint(b) for b in own_bases if b}:
        return url
    networks = list(allowed_networks)
    try:
        literal: IpAddr | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        if host == "localhost" or host.endswith(_INTERNAL_SUFFIXES) or "." not in host:
            raise _refusal(host, "tên máy trong mạng nội bộ")
        addresses = _resolve(host)
    for addr in addresses:
        why = _internal_why(addr)
        if why is not None and not any(addr in net for net in networks
                                       if net.version == addr.version):
            raise _refusal(host, why)
    return url
