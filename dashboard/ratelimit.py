"""Per-client request rate limits (issue 17, finding 2): one browser, script or attacker
cannot take the whole API for itself.

A token bucket per client: ``burst`` requests at once, refilled at ``per_s``. Beyond it the
answer is 429 with ``Retry-After`` and a Vietnamese message, before any body is read, any
session opened or any thread used. Clients are:
- anonymous requests: their address (the TCP peer; a proxy's X-Forwarded-For only when the
  proxy is trusted, see ``loa.settings.Settings.trusted_proxies``);
- requests with a bearer token or session cookie that the API has accepted before: that
  credential, with the larger logged-in budget. A credential not yet seen to work counts
  against its address, so random made-up tokens cannot buy fresh buckets.

In memory, per process: a limit for one server, not a shared quota. Idle buckets are dropped
so a scan from many addresses cannot grow the table without bound."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Node downloads are exempt: nodes behind one carrier NAT share an address, a province-wide
# dispatch fetches from all of them at once, and a node does not retry a 4xx. Each download
# needs its node's HMAC token, and its database work still waits for a slot (dashboard.deps).
EXEMPT_PREFIXES = ("/static/", "/api/v1/health/live", "/media/")
MAX_CLIENTS = 50_000
MSG_TOO_MANY = "Quá nhiều yêu cầu từ máy này. Vui lòng thử lại sau {seconds} giây."
MSG_TOO_MANY_EN = "Too many requests from this client. Try again in {seconds} s."


@dataclass(frozen=True)
class Rate:
    burst: int
    per_s: float


class Bucket:
    __slots__ = ("tokens", "at")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.at = now

    def take(self, rate: Rate, now: float) -> float:
        """Take one token; 0 when allowed, else the seconds until one is back."""
        self.tokens = min(rate.burst, self.tokens + (now - self.at) * rate.per_s)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / rate.per_s


class RateLimiter:
    """The buckets; separate from the middleware so tests and benchmarks can drive it."""

    def __init__(self, anon: Rate, user: Rate, clock: Callable[[], float] = time.monotonic):
        self.anon, self.user, self.clock = anon, user, clock
        self.buckets: dict[str, Bucket] = {}
        self.known: dict[str, float] = {}  # credential digest -> last time it was accepted
        self.refused = 0

    def check(self, address: str, credential: str | None) -> float:
        now = self.clock()
        if credential is not None and credential in self.known:
            key, rate = "u:" + credential, self.user
        else:
            key, rate = "a:" + address, self.anon
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_CLIENTS:
                self._prune(now)
            bucket = self.buckets[key] = Bucket(rate.burst, now)
        wait = bucket.take(rate, now)
        if wait:
            self.refused += 1
        return wait

    def outcome(self, credential: str | None, accepted: bool, checked: bool = True) -> None:
        """After the answer: a credential the API accepted earns the logged-in budget, one it
        refused loses it. A request whose route never looked at the credential (a health
        check, a static file) says nothing about it, so the budget stays as it was."""
        if credential is None or not checked:
            return
        if not accepted:
            self.known.pop(credential, None)
        else:
            if len(self.known) >= MAX_CLIENTS:
                self.known.pop(next(iter(self.known)))
            self.known[credential] = self.clock()

    def _prune(self, now: float) -> None:
        """Forget full buckets (a client idle long enough to be back at its burst)."""
        for key, b in list(self.buckets.items()):
            rate = self.user if key.startswith("u:") else self.anon
            if b.tokens + (now - b.at) * rate.per_s >= rate.burst:
                del self.buckets[key]
        while len(self.buckets) >= MAX_CLIENTS:  # all busy: drop the oldest
            self.buckets.pop(next(iter(self.buckets)))


def _credential(scope: dict) -> str | None:
    raw = ""
    for name, value in scope.get("headers") or ():
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                raw = "b:" + token.strip()
                break
        elif name == b"cookie" and not raw:
            for part in value.decode("latin-1").split(";"):
                key, _, val = part.strip().partition("=")
                if key == "loa_session" and val:
                    raw = "c:" + val
    return hashlib.sha256(raw.encode()).hexdigest() if raw else None


class RateLimitMiddleware:
    """Plain ASGI, outermost: a refused request costs a dictionary lookup, nothing more."""

    def __init__(self, app: Any, limiter: RateLimiter) -> None:
        self.app = app
        self.limiter = limiter

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"].startswith(EXEMPT_PREFIXES):
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        credential = _credential(scope)
        wait = self.limiter.check(client[0] if client else "", credential)
        if wait:
            await _too_many(send, wait)
            return
        state = scope.setdefault("state", {})
        try:
            await self.app(scope, receive, send)
        finally:
            # ``dashboard.security.optional_user`` leaves the actor there once it has checked
            # the credential; a route open to everyone answering 200 proves nothing.
            self.limiter.outcome(
                credential,
                bool(state.get("loa_actor")),
                checked=bool(state.get("loa_credential_checked")),
            )


async def _too_many(send: Callable, wait: float) -> None:
    seconds = max(1, math.ceil(wait))
    body = json.dumps(
        {
            "detail": MSG_TOO_MANY.format(seconds=seconds),
            "detail_en": MSG_TOO_MANY_EN.format(seconds=seconds),
            "retry_after": seconds,
        },
        ensure_ascii=False,
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json; charset=utf-8"),
                (b"retry-after", str(seconds).encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def install(app: Any, settings: Any) -> RateLimiter:
    limiter = RateLimiter(
        Rate(settings.rate_anon_burst, settings.rate_anon_per_s),
        Rate(settings.rate_user_burst, settings.rate_user_per_s),
    )
    app.add_middleware(RateLimitMiddleware, limiter=limiter)
    app.state.rate_limiter = limiter
    return limiter
