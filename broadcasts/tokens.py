"""Per-node download tokens for content URLs.

token = HMAC-SHA256(secret, node_id + content_id), hex. A node can fetch exactly the
content it was told to play and nothing else, with no session or login; leaking one URL
exposes one file to one node id. The plain concatenation is unambiguous because content ids
have a fixed length (``CONTENT_ID_LENGTH``): the node id is everything before them."""

from __future__ import annotations

import hashlib
import hmac
import re

CONTENT_ID_PREFIX = "ct"
CONTENT_ID_LENGTH = 26  # "ct" + 24 hex digits
CONTENT_ID_RE = re.compile(r"^ct[0-9a-f]{24}$")


def node_token(secret: str, node_id: str, content_id: str) -> str:
    return hmac.new(secret.encode("utf-8"), (node_id + content_id).encode("utf-8"),
                    hashlib.sha256).hexdigest()


def token_ok(secret: str, node_id: str, content_id: str, token: str) -> bool:
    return hmac.compare_digest(node_token(secret, node_id, content_id), token or "")
