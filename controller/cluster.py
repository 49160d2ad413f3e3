"""Several controllers sharing one fleet: who is alive, who owns which node, where a message goes.

MQTT shared subscriptions (``$share/<group>/…``) split the nodes' heartbeats and events across
the controllers, so each message is taken from the broker by exactly one of them. Mosquitto
hands them out message by message, though, not node by node, and a node's state (online,
degraded, offline after 3 missed heartbeats) only makes sense where *all* of its messages are
seen. So every node has one owner, chosen by rendezvous hashing over the live controllers
(a member joining or leaving moves only its share of nodes), and a controller that takes a
message for a node it does not own forwards it, unchanged, to the owner's forward topic. Each
message is therefore applied exactly once, by the owner, wherever it entered.

* Membership is MQTT-native: each controller keeps a retained presence message under
  ``{root}/controllers/{id}`` (renewed every few seconds, removed by its Last Will), so a
  killed controller leaves the set as soon as the broker notices the dead connection.
* Statuses are retained, and the broker never delivers retained messages to a shared
  subscription, so every controller subscribes to them plainly and applies only its own.
* Events (acks, proof of play) go to the controller that runs the scheduler, the leader,
  because the airings they complete live there.

These topics are the controllers' own (docs/protocol.md, "Controller cluster topics"); the
provisioned ACL gives nodes no access to them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass

from loa.protocol import Channel, Topics

CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def process_client_id(prefix: str) -> str:
    """``prefix-host-pid`` in the characters ``CLIENT_ID_RE`` allows: an MQTT client id no
    other process uses, so two replicas never knock each other off the broker."""
    return re.sub(r"[^A-Za-z0-9_.-]", "-", f"{prefix}-{socket.gethostname()}-{os.getpid()}")[:100]


@dataclass(frozen=True, slots=True)
class ClusterTopics:
    root: str = "loa/v1"

    @property
    def presence_filter(self) -> str:
        return f"{self.root}/controllers/+"

    def presence(self, client_id: str) -> str:
        return f"{self.root}/controllers/{client_id}"

    def forward(self, client_id: str, node_id: str, channel: Channel | str) -> str:
        return f"{self.root}/controllers/{client_id}/fwd/{node_id}/{channel}"

    def forward_filter(self, client_id: str) -> str:
        return f"{self.root}/controllers/{client_id}/fwd/#"

    def parse_presence(self, topic: str) -> str | None:
        head = f"{self.root}/controllers/"
        if not topic.startswith(head):
            return None
        rest = topic[len(head) :]
        return rest if rest and "/" not in rest else None

    def parse_forward(self, topic: str, client_id: str) -> tuple[str, str] | None:
        """``…/controllers/{me}/fwd/{node}/{channel}`` -> (node, channel)."""
        head = f"{self.root}/controllers/{client_id}/fwd/"
        if not topic.startswith(head):
            return None
        node_id, sep, channel = topic[len(head) :].partition("/")
        return (node_id, channel) if sep and node_id and "/" not in channel else None


def rendezvous_owner(node_id: str, members: tuple[str, ...]) -> str:
    """The member with the highest hash of (member, node): stable, and a change of members
    moves only the nodes of the member that came or went."""
    best, best_score = members[0], b""
    for member in members:
        score = hashlib.blake2b(f"{member}\x00{node_id}".encode(), digest_size=8).digest()
        if score > best_score:
            best, best_score = member, score
    return best


def presence_payload(client_id: str, *, leader: bool, at_ms: int, started_ms: int) -> bytes:
    return json.dumps(
        {"client_id": client_id, "leader": leader, "at_ms": at_ms, "started_ms": started_ms}
    ).encode()


@dataclass(slots=True)
class _Member:
    seen_ms: int
    leader: bool


class Membership:
    """The live controllers as this one sees them, and the owner of each node."""

    def __init__(self, me: str, expire_ms: int) -> None:
        self.me = me
        self.expire_ms = expire_ms
        self._others: dict[str, _Member] = {}
        self.i_lead = False
        self.members: tuple[str, ...] = (me,)
        self._owner_cache: dict[str, str] = {}
        self.changes = 0

    def on_presence(self, client_id: str, payload: bytes, now_ms: int, *, retained: bool) -> bool:
        """Apply one presence message; True when the member set or the leader changed."""
        if client_id == self.me:
            return False
        if not payload:  # its Last Will, or a clean stop: gone
            return self._set(self._others.pop(client_id, None) is not None)
        try:
            doc = json.loads(payload)
            at_ms, leader = int(doc.get("at_ms", 0)), bool(doc.get("leader", False))
        except (ValueError, TypeError, AttributeError):
            return False
        # A retained presence may be a dead controller's (its will was never published, e.g.
        # the broker went down first): judge it by when it was written, not when it arrived.
        seen = min(now_ms, at_ms) if retained else now_ms
        if now_ms - seen > self.expire_ms:
            return False
        before = self._others.get(client_id)
        self._others[client_id] = _Member(seen, leader)
        return self._set(before is None or before.leader != leader)

    def expire(self, now_ms: int) -> bool:
        """Forget controllers not heard from within the expiry (a frozen process)."""
        gone = [cid for cid, m in self._others.items() if now_ms - m.seen_ms > self.expire_ms]
        for cid in gone:
            del self._others[cid]
        return self._set(bool(gone))

    def _set(self, changed: bool) -> bool:
        if changed:
            self.members = tuple(sorted({self.me, *self._others}))
            self._owner_cache.clear()
            self.changes += 1
        return changed

    def leader(self) -> str | None:
        if self.i_lead:
            return self.me
        leaders = sorted(cid for cid, m in self._others.items() if m.leader)
        return leaders[0] if leaders else None

    def owner(self, node_id: str) -> str:
        owner = self._owner_cache.get(node_id)
        if owner is None:
            owner = self._owner_cache[node_id] = rendezvous_owner(node_id, self.members)
        return owner

    def owns(self, node_id: str) -> bool:
        return self.owner(node_id) == self.me


Publish = Callable[[str, bytes, int], None]


class ClusterRouter:
    """Decides, per message taken from MQTT, whether this controller applies it or forwards it.

    ``apply`` is the ingest's ``handle``; ``publish`` sends raw bytes (topic, payload, qos)."""

    def __init__(
        self,
        topics: Topics,
        membership: Membership,
        apply: Callable[[str, bytes], bool],
        publish: Publish,
        on_change: Callable[[], None],
    ) -> None:
        self.topics = topics
        self.cluster_topics = ClusterTopics(topics.root)
        self.membership = membership
        self.apply = apply
        self.publish = publish
        self.on_change = on_change
        self.received = 0
        self.forwarded = 0
        self.forward_errors = 0

    def route(self, topic: str, payload: bytes, now_ms: int, *, retained: bool = False) -> None:
        me = self.membership.me
        fwd = self.cluster_topics.parse_forward(topic, me)
        if fwd is not None:  # handed to us by another controller: ours, never passed on
            self.apply(self.topics.root + f"/nodes/{fwd[0]}/{fwd[1]}", payload)
            return
        peer = self.cluster_topics.parse_presence(topic)
        if peer is not None:
            if self.membership.on_presence(peer, payload, now_ms, retained=retained):
                self.on_change()
            return
        self.received += 1
        parsed = self.topics.parse(topic)
        if parsed is None:  # not a node topic: the ingest counts it as bad_topic
            self.apply(topic, payload)
            return
        node_id, channel = parsed
        if channel is Channel.STATUS:
            # Every controller gets every status; the owner alone applies it.
            if self.membership.owns(node_id):
                self.apply(topic, payload)
            return
        target = (
            (self.membership.leader() or me)
            if channel is Channel.EVENTS
            else self.membership.owner(node_id)
        )
        if target == me:
            self.apply(topic, payload)
            return
        try:
            self.publish(
                self.cluster_topics.forward(target, node_id, channel),
                payload,
                1 if channel is Channel.EVENTS else 0,
            )
            self.forwarded += 1
        except Exception:  # not connected right now: apply here rather than lose it
            self.forward_errors += 1
            self.apply(topic, payload)
