"""Who may aim a broadcast where, and which loudspeakers a target means right now.

Targets are stored as the officer chose them (the province, communes, villages, single
clusters, saved groups) and turned into nodes only when a slot is dispatched, so a village
that gained a cluster or moved to another commune since scheduling is served as it is today.
A commune or village merged away by decree is followed to what it was merged into.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import Commune, Node, Village
from scheduler.errors import Forbidden, InvalidBroadcast, NotFound
from scheduler.models import SavedGroup

ROLES = ("province", "technician", "commune")
TARGET_KEYS = ("province", "communes", "villages", "nodes", "groups")
MAX_ID = 2**63 - 1  # database integer keys; larger numbers are refused, not overflowed
MAX_TARGET_ITEMS = 10_000


@dataclass(frozen=True)
class Actor:
    """The person acting, as far as scheduling cares: a role (province / technician / commune)
    and the communes they answer for (None = the whole province). Routes build it from the
    logged-in user, the CLI from its arguments."""

    role: str
    commune_ids: frozenset[int] | None = None
    username: str = ""

    @property
    def is_province(self) -> bool:
        return self.role == "province"

    @property
    def whole_province(self) -> bool:
        return self.is_province or self.commune_ids is None

    def covers_commune(self, commune_id: int | None) -> bool:
        if self.whole_province:
            return True
        return commune_id is not None and commune_id in (self.commune_ids or ())


@dataclass(frozen=True, slots=True)
class NodeTarget:
    node_id: str
    village_id: int | None
    commune_id: int | None


def _id_list(raw: Any, key: str, kind: type[int] | type[str]) -> list[int | str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidBroadcast(f"«targets.{key}» phải là một danh sách.")
    if len(raw) > MAX_TARGET_ITEMS:
        raise InvalidBroadcast(f"«targets.{key}» có quá {MAX_TARGET_ITEMS} mục.")
    out: list[int | str] = []
    for item in raw:
        if kind is int:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise InvalidBroadcast(f"Mã không hợp lệ trong «targets.{key}»: {item!r}.")
            try:
                value = int(item)
            except ValueError:
                raise InvalidBroadcast(
                    f"Mã không hợp lệ trong «targets.{key}»: {item!r}."
                ) from None
            if not 0 < value <= MAX_ID:
                raise InvalidBroadcast(f"Mã không hợp lệ trong «targets.{key}»: {item!r}.")
            out.append(value)
        else:
            if not isinstance(item, str) or not item.strip() or len(item) > 64:
                raise InvalidBroadcast(f"Mã cụm loa không hợp lệ: {item!r}.")
            out.append(item.strip())
    return sorted(set(out), key=str)


def normalize_targets(raw: Any) -> dict[str, Any]:
    """Validate the shape of ``targets``; an empty selection is refused."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidBroadcast("«targets» phải là một đối tượng {communes, villages, nodes}.")
    unknown = sorted(set(raw) - set(TARGET_KEYS))
    if unknown:
        raise InvalidBroadcast(f"Loại nơi phát không rõ: {', '.join(unknown)}.")
    province = raw.get("province", False)
    if not isinstance(province, bool):
        raise InvalidBroadcast("«targets.province» phải là true hoặc false.")
    targets = {
        "province": province,
        "communes": _id_list(raw.get("communes"), "communes", int),
        "villages": _id_list(raw.get("villages"), "villages", int),
        "nodes": _id_list(raw.get("nodes"), "nodes", str),
        "groups": _id_list(raw.get("groups"), "groups", int),
    }
    if not (province or any(targets[k] for k in TARGET_KEYS[1:])):
        raise InvalidBroadcast("Chưa chọn nơi phát: hãy chọn ít nhất một xã, thôn hoặc cụm loa.")
    return targets


def _current_commune(session: Session, commune_id: int) -> Commune | None:
    seen: set[int] = set()
    commune = session.get(Commune, commune_id)
    while commune is not None and commune.merged_into_id and commune.id not in seen:
        seen.add(commune.id)
        commune = session.get(Commune, commune.merged_into_id)
    return commune


def _current_village(session: Session, village_id: int) -> Village | None:
    seen: set[int] = set()
    village = session.get(Village, village_id)
    while village is not None and village.merged_into_id and village.id not in seen:
        seen.add(village.id)
        village = session.get(Village, village.merged_into_id)
    return village


def _node_commune(session: Session, node: Node) -> tuple[int | None, int | None]:
    if node.village_id is None:
        return None, None
    village = session.get(Village, node.village_id)
    return node.village_id, (village.commune_id if village else None)


def check_targets(session: Session, targets: dict[str, Any], actor: Actor) -> None:
    """Every id must exist, a commune officer may aim only inside their own communes, and a
    whole commune is never named together with one of its own villages or clusters."""
    if targets["province"] and not actor.whole_province:
        raise Forbidden("Chỉ cán bộ cấp tỉnh được phát cho toàn tỉnh.")
    for cid in targets["communes"]:
        commune = session.get(Commune, cid)
        if commune is None:
            raise InvalidBroadcast(f"Không tìm thấy xã có mã {cid}.")
        if not actor.covers_commune(cid):
            raise Forbidden(f"Xã «{commune.name}» không thuộc phạm vi quản lý của bạn.")
    for vid in targets["villages"]:
        village = session.get(Village, vid)
        if village is None:
            raise InvalidBroadcast(f"Không tìm thấy thôn có mã {vid}.")
        if not actor.covers_commune(village.commune_id):
            raise Forbidden(f"Thôn «{village.name}» không thuộc xã bạn quản lý.")
    for nid in targets["nodes"]:
        node = session.get(Node, nid)
        # Out of scope answers as not found: node ids are not enumerable.
        if (
            node is None
            or node.retired_ms is not None
            or not actor.covers_commune(_node_commune(session, node)[1])
        ):
            raise InvalidBroadcast(f"Không tìm thấy cụm loa «{nid}».")
    for gid in targets["groups"]:
        group = session.get(SavedGroup, gid)
        if group is None:
            raise InvalidBroadcast(f"Không tìm thấy nhóm nơi phát có mã {gid}.")
        if not actor.is_province and not (
            group.owner_commune_id is not None and actor.covers_commune(group.owner_commune_id)
        ):
            raise Forbidden(f"Nhóm «{group.name}» không thuộc xã bạn quản lý.")
        inner = normalize_targets(group.targets)
        if inner["groups"]:
            raise InvalidBroadcast("Nhóm nơi phát không được chứa nhóm khác.")
        check_targets(session, inner, actor)
    check_exclusive(session, targets)


def live_nodes(session: Session) -> list[NodeTarget]:
    """Every registered, not retired cluster with its current village and commune."""
    rows = session.execute(
        select(Node.id, Node.village_id, Village.commune_id)
        .join(Village, Village.id == Node.village_id, isouter=True)
        .where(Node.retired_ms.is_(None))
    ).all()
    return [NodeTarget(r[0], r[1], r[2]) for r in rows]


def resolve_nodes(
    session: Session, targets: dict[str, Any], *, nodes_now: list[NodeTarget] | None = None
) -> list[NodeTarget]:
    """The clusters a target selection means now, each with its current village and commune.

    ``nodes_now`` lets a caller resolving many selections (conflict checks) load the registry
    once."""
    targets = normalize_targets(targets)
    group_parts = [
        normalize_targets(g.targets)
        for gid in targets["groups"]
        if (g := session.get(SavedGroup, gid)) is not None
    ]
    province = targets["province"] or any(g["province"] for g in group_parts)
    communes: set[int] = set()
    villages: set[int] = set()
    nodes: set[str] = set()
    for part in [targets, *group_parts]:
        for cid in part["communes"]:
            if (c := _current_commune(session, cid)) is not None:
                communes.add(c.id)
        for vid in part["villages"]:
            if (v := _current_village(session, vid)) is not None:
                villages.add(v.id)
        nodes.update(part["nodes"])

    chosen = [
        t
        for t in (nodes_now if nodes_now is not None else live_nodes(session))
        if province
        or t.node_id in nodes
        or t.village_id in villages
        or (t.commune_id is not None and t.commune_id in communes)
    ]
    return sorted(chosen, key=lambda t: t.node_id)


def target_communes(session: Session, targets: dict[str, Any]) -> set[int]:
    """The communes a selection touches: whole communes named, and the communes of the villages
    and clusters named (for inboxes and ownership)."""
    targets = normalize_targets(targets)
    if targets["province"]:
        return set(session.scalars(select(Commune.id).where(Commune.retired_ms.is_(None))))
    out = {c.id for cid in targets["communes"] if (c := _current_commune(session, cid)) is not None}
    for vid in targets["villages"]:
        if (v := _current_village(session, vid)) is not None:
            out.add(v.commune_id)
    for gid in targets["groups"]:
        if (g := session.get(SavedGroup, gid)) is not None:
            out |= target_communes(session, g.targets)
    if targets["nodes"]:
        out |= {
            t.commune_id
            for t in resolve_nodes(session, {"nodes": targets["nodes"]})
            if t.commune_id is not None
        }
    return out


class ReachCache:
    """The communes each province broadcast reaches, kept for ``ttl_s``.

    A commune officer's broadcast list shows the province's broadcasts that touch their
    communes; resolving every one's targets on every request made the list cost a few
    queries per broadcast ever sent. A broadcast's targets never change (an edit makes a
    new broadcast), so the resolution is kept; the time limit lets a registry change (a
    village moved, communes merged) show within minutes. Bounded: the oldest half goes when
    it is full."""

    def __init__(
        self,
        ttl_s: float = 300.0,
        max_entries: int = 20_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self._reach: dict[int, tuple[float, frozenset[int]]] = {}

    def reaching(
        self, session: Session, rows: Iterable[tuple[int, dict[str, Any]]], commune_ids: set[int]
    ) -> list[int]:
        """Ids among ``rows`` (broadcast id, targets) whose targets touch ``commune_ids``."""
        now = self.clock()
        out = []
        for broadcast_id, targets in rows:
            kept = self._reach.get(broadcast_id)
            if kept is None or now - kept[0] > self.ttl_s:
                if len(self._reach) >= self.max_entries:
                    for key in list(self._reach)[: self.max_entries // 2]:
                        del self._reach[key]
                kept = (now, frozenset(target_communes(session, targets)))
                self._reach[broadcast_id] = kept
            if kept[1] & commune_ids:
                out.append(broadcast_id)
        return out


def node_commune_id(session: Session, node_id: str) -> int | None:
    return session.scalar(
        select(Village.commune_id)
        .join(Node, Node.village_id == Village.id)
        .where(Node.id == node_id)
    )


def check_node_access(session: Session, actor: Actor, node_id: str) -> None:
    """A node command (volume, self-test, stop) only on a node in the actor's scope."""
    node = session.get(Node, node_id)
    # A node outside the actor's scope gets the answer of one that does not exist, so node
    # ids cannot be enumerated (403 vs 404).
    if (
        node is None
        or node.retired_ms is not None
        or not actor.covers_commune(node_commune_id(session, node_id))
    ):
        raise NotFound(f"Không tìm thấy cụm loa «{node_id}».")


# --------------------------------------------------------------------------- exclusivity


def check_exclusive(session: Session, targets: dict[str, Any]) -> None:
    """A whole commune and one of its villages (or clusters) in the same request is
    ambiguous: did the officer mean the village only, or everybody? Loa refuses rather than
    widen a village choice to the whole commune (the "Toàn xã" box ticked by default was
    exactly this trust bug)."""
    if targets["province"] and any(targets[k] for k in ("communes", "villages", "nodes", "groups")):
        raise InvalidBroadcast(
            "Đã chọn cả «Toàn tỉnh» và từng xã, thôn hoặc cụm loa: không rõ "
            "phát cho cả tỉnh hay chỉ những nơi đã chọn. Hãy chọn một trong "
            "hai."
        )
    communes = {
        cid: c for cid in targets["communes"] if (c := _current_commune(session, cid)) is not None
    }
    if not communes:
        return
    by_id = {c.id: c for c in communes.values()}
    for vid in targets["villages"]:
        village = _current_village(session, vid)
        if village is not None and village.commune_id in by_id:
            raise InvalidBroadcast(
                f"Đã chọn cả «Toàn xã {by_id[village.commune_id].name}» và «{village.name}» của "
                "xã đó: không rõ phát cho cả xã hay chỉ thôn. Hãy chọn «Toàn xã» hoặc từng "
                "thôn, không chọn cả hai."
            )
    for nid in targets["nodes"]:
        node = session.get(Node, nid)
        if node is None:
            continue
        _, commune_id = _node_commune(session, node)
        if commune_id in by_id:
            raise InvalidBroadcast(
                f"Đã chọn cả «Toàn xã {by_id[commune_id].name}» và cụm loa «{nid}» của xã đó: "
                "không rõ phát cho cả xã hay chỉ cụm loa. Hãy chọn một trong hai."
            )


# --------------------------------------------------------------------------- describing


def describe_places(
    session: Session,
    targets: dict[str, Any],
    nodes: list[NodeTarget] | None = None,
    *,
    counts: bool = True,
) -> dict[str, Any]:
    """Where a selection plays, in words an officer checks before sending: the villages by
    name (or "Toàn xã …" / "Toàn tỉnh"), how many clusters, and how many of them are not
    reachable right now (offline or never heard from)."""
    from controller.models import NodeLive

    targets = normalize_targets(targets)
    parts: list[str] = []
    if targets["province"]:
        parts.append("Toàn tỉnh")
    commune_names = {}
    for cid in targets["communes"]:
        if (c := _current_commune(session, cid)) is not None:
            commune_names[c.id] = c.name
            parts.append(f"Toàn xã {c.name}")
    villages: list[str] = []
    for vid in targets["villages"]:
        if (v := _current_village(session, vid)) is not None:
            villages.append(v.name)
    parts += sorted(villages)
    if targets["nodes"]:
        rows = session.execute(
            select(Node.id, Node.label, Village.name)
            .join(Village, Village.id == Node.village_id, isouter=True)
            .where(Node.id.in_(targets["nodes"]))
        ).all()
        parts += sorted(place_name(village, label, node_id) for node_id, label, village in rows)
    for gid in targets["groups"]:
        if (g := session.get(SavedGroup, gid)) is not None:
            parts.append(f"Nhóm «{g.name}»")
    out = {
        "text": ", ".join(parts) or "–",
        "villages": sorted(villages),
        "communes": sorted(commune_names.values()),
    }
    if not counts:  # a list of bulletins needs the words only, not a fleet scan each
        return out
    nodes = resolve_nodes(session, targets) if nodes is None else nodes
    # One scan of the reachable set rather than an IN list of every targeted id (a province
    # emergency aims at up to 100,000 clusters).
    reachable = (
        set(
            session.scalars(
                select(NodeLive.node_id).where(NodeLive.state.in_(("online", "degraded")))
            )
        )
        if nodes
        else set()
    )
    unreachable = sum(1 for t in nodes if t.node_id not in reachable)
    return {**out, "clusters": len(nodes), "offline": unreachable}


def place_name(village: str | None, label: str | None, node_id: str) -> str:
    """ "Thôn Nà Pàn – Nhà văn hóa": how a cluster is named to people; the id only when the
    register knows nothing better."""
    if village and label:
        return f"{village} – {label}"
    return village or label or node_id


def place_names(session: Session, node_ids: list[str]) -> dict[str, str]:
    """``place_name`` for many clusters at once."""
    out: dict[str, str] = {}
    ids = sorted(set(node_ids))
    for i in range(0, len(ids), 500):
        for nid, label, village in session.execute(
            select(Node.id, Node.label, Village.name)
            .join(Village, Village.id == Node.village_id, isouter=True)
            .where(Node.id.in_(ids[i : i + 500]))
        ):
            out[nid] = place_name(village, label, nid)
    return out
