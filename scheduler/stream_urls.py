"""Which live-stream URLs may be handed to nodes.

A ``stream_url`` is fetched by every targeted node, so a URL pointing at a loopback,
link-local (169.254.169.254: cloud metadata; fe80::/10), private or otherwise internal address
would make the loudspeakers fetch from the network they sit in, or from the server's, for
whoever typed it. Allowed: public addresses, the system's own Icecast server (wherever it
listens), and networks the province lists in ``LOA_STREAM_ALLOWED_NETWORKS`` (its own VPN).
Which addresses are internal is ``loa.addresses`` (alarm webhooks use the same rule); the
check is made when the broadcast is created."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from loa.addresses import IpNet, endpoint, internal_reason, parse_networks
from scheduler.errors import InvalidBroadcast

__all__ = ["check_stream_url", "parse_networks"]


def _refusal(host: str, why: str) -> InvalidBroadcast:
    return InvalidBroadcast(
        f"Không dùng được địa chỉ luồng «{host}»: {why}. Cụm loa chỉ được trỏ tới máy chủ "
        "Icecast của hệ thống hoặc một địa chỉ công khai (quản trị có thể cho phép mạng riêng "
        "của tỉnh bằng LOA_STREAM_ALLOWED_NETWORKS)."
    )


def check_stream_url(
    url: str, own_bases: Iterable[str] = (), allowed_networks: Iterable[IpNet] = ()
) -> str:
    """``url`` if nodes may be sent to it; ``InvalidBroadcast`` (Vietnamese) otherwise.
    ``own_bases``: base URLs of the system's own Icecast server."""
    try:
        parts = urlsplit(url)
        host, port = endpoint(url)
    except ValueError:
        raise InvalidBroadcast("«stream_url» không phải địa chỉ hợp lệ.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise InvalidBroadcast("«stream_url» phải là địa chỉ http(s) của luồng phát trực tiếp.")
    if port is None:
        raise InvalidBroadcast("«stream_url» có cổng không hợp lệ.")
    if parts.username is not None or parts.password is not None:
        raise _refusal(host, "địa chỉ không được chứa tên đăng nhập hay mật khẩu")
    if (host, port) in {endpoint(b) for b in own_bases if b}:
        return url
    why = internal_reason(url, allowed_networks)
    if why is not None:
        raise _refusal(host, why)
    return url
