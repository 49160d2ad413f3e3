"""Per-node download tokens for content URLs.

token = ``{expires_s}.{hex}``, hex = HMAC-SHA256(secret, node_id + content_id + "|" +
expires_s). A node can fetch exactly the content it was told to play, until the token
expires, with no session or login; leaking one URL exposes one file to one node id for a
few hours. The concatenation is unambiguous because content ids have a fixed length
(``CONTENT_ID_LENGTH``): the node id is everything before them.

Tokens are minted when a play command is built (``dispatch_lead_s`` before ``start_at``, and
again when an airing is reloaded), so their lifetime (``ContentSettings.media_token_ttl_s``,
6 h by default) must exceed the lead, the longest content and the slot grace; expiries are
rounded up to the minute so every URL of one dispatch shares one expiry."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Literal

CONTENT_ID_PREFIX = "ct"
CONTENT_ID_LENGTH = 26  # "ct" + 24 hex digits
CONTENT_ID_RE = re.compile(r"^ct[0-9a-f]{24}$")
_TOKEN_RE = re.compile(r"^(\d{1,12})\.([0-9a-f]{64})$")


def token_expiry(now_s: float, ttl_s: int) -> int:
    """``now + ttl`` rounded up to the minute."""
    return -(-int(now_s + ttl_s) // 60) * 60


def node_token(secret: str, node_id: str, content_id: str, expires_s: int) -> str:
    mac = hmac.new(
        secret.encode("utf-8"), f"{node_id}{content_id}|{expires_s}".encode(), hashlib.sha256
    ).hexdigest()
    return f"{expires_s}.{mac}"


def token_status(
    secret: str, node_id: str, content_id: str, token: str, now_s: float
) -> Literal["ok", "expired", "bad"]:
    """ "expired" only for a token this secret made (so it says nothing to a guesser)."""
    m = _TOKEN_RE.match(token or "")
    if m is None:
        return "bad"
    expires_s = int(m.group(1))
    if not hmac.compare_digest(node_token(secret, node_id, content_id, expires_s), token):
        return "bad"
    return "ok" if now_s < expires_s else "expired"


def token_ok(secret: str, node_id: str, content_id: str, token: str, now_s: float) -> bool:
    return token_status(secret, node_id, content_id, token, now_s) == "ok"
