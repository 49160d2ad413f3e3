"""A small register and its telemetry built by hand, so each indicator test states the exact
history (times to the millisecond) it judges."""

from __future__ import annotations

from datetime import datetime
from itertools import count

from controller.models import ControllerWatch, NodeContinuity, NodeTransition
from loa.db import Database
from loa.text import fold
from loa.timeutil import ICT
from registry.models import (
    Commune,
    District,
    NameHistory,
    Node,
    NodePlacement,
    Province,
    Village,
    VillageMembership,
)
from scheduler.models import Airing, AiringTarget, Broadcast

HOUR = 3_600_000
ALWAYS_MS = 4_102_444_800_000  # 01/01/2100
DAY = 24 * HOUR


def ict(y: int, mo: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> int:
    """Epoch ms of a wall-clock time in Asia/Ho_Chi_Minh."""
    return int(datetime(y, mo, d, h, mi, s, tzinfo=ICT).timestamp() * 1000)


class World:
    """Writes a register and its telemetry the way the ingest and scheduler would."""

    def __init__(self, db: Database, *, watched: bool = True) -> None:
        """``watched``: a controller watched all the time (one span 1970-2100), as the
        tests written before the watch existed assume; False to state the watch by hand."""
        self.db = db
        self._ids = count(1)
        with db.session() as s:
            self.province = Province(code="LS", name="Lạng Sơn")
            s.add(self.province)
            s.flush()
            self.province_id = self.province.id
        if watched:
            self.watch(0, ALWAYS_MS)

    def watch(self, start_ms: int, end_ms: int, controller_id: str = "ctl-test") -> None:
        """A span during which a controller ran connected to the broker."""
        with self.db.session() as s:
            s.add(
                ControllerWatch(
                    controller_id=controller_id, start_ms=start_ms, end_ms=end_ms, end_cause="stop"
                )
            )

    def continuity(self, node_id: str, from_ms: int, to_ms: int, boot_id: str = "b1") -> None:
        with self.db.session() as s:
            s.add(
                NodeContinuity(
                    node_id=node_id,
                    from_ms=from_ms,
                    to_ms=to_ms,
                    boot_id=boot_id,
                    uptime_s=(to_ms - from_ms) // 1000 + 60,
                )
            )

    @staticmethod
    def _broadcast(s) -> int:
        """A broadcast of its own per call: (broadcast, slot) is unique in ``airing``."""
        b = Broadcast(title="Bản tin", targets={"province": True}, status="aired")
        s.add(b)
        s.flush()
        return b.id

    def district(self, code: str, name: str) -> int:
        with self.db.session() as s:
            d = District(code=code, name=name, province_id=self.province_id)
            s.add(d)
            s.flush()
            return d.id

    def commune(
        self,
        code: str,
        name: str,
        *,
        station_kind: str = "ip",
        district_id: int | None = None,
        created_ms: int = 0,
        retired_ms: int | None = None,
    ) -> int:
        with self.db.session() as s:
            c = Commune(
                code=code,
                name=name,
                name_folded=fold(name),
                province_id=self.province_id,
                district_id=district_id,
                station_kind=station_kind,
                created_ms=created_ms,
                retired_ms=retired_ms,
            )
            s.add(c)
            s.flush()
            return c.id

    def village(
        self, code: str, name: str, commune_id: int, *, from_ms: int = 0, to_ms: int | None = None
    ) -> int:
        with self.db.session() as s:
            v = Village(
                code=code,
                name=name,
                name_folded=fold(name),
                commune_id=commune_id,
                created_ms=from_ms,
            )
            s.add(v)
            s.flush()
            s.add(
                VillageMembership(
                    village_id=v.id, commune_id=commune_id, valid_from_ms=from_ms, valid_to_ms=to_ms
                )
            )
            return v.id

    def move_village(self, village_id: int, commune_id: int, at_ms: int) -> None:
        with self.db.session() as s:
            for m in s.query(VillageMembership).filter_by(village_id=village_id, valid_to_ms=None):
                m.valid_to_ms = at_ms
            s.add(
                VillageMembership(
                    village_id=village_id,
                    commune_id=commune_id,
                    valid_from_ms=at_ms,
                    valid_to_ms=None,
                )
            )
            s.get(Village, village_id).commune_id = commune_id

    def rename(self, entity: str, entity_id: int, new_name: str, at_ms: int) -> None:
        model = {"commune": Commune, "village": Village}[entity]
        with self.db.session() as s:
            row = s.get(model, entity_id)
            s.add(
                NameHistory(
                    entity=entity,
                    entity_id=entity_id,
                    name=row.name,
                    valid_from_ms=row.created_ms or 0,
                    valid_to_ms=at_ms,
                )
            )
            row.name, row.name_folded = new_name, fold(new_name)

    def retire_commune(self, commune_id: int, into_id: int, at_ms: int) -> None:
        with self.db.session() as s:
            c = s.get(Commune, commune_id)
            c.retired_ms, c.merged_into_id = at_ms, into_id

    def node(
        self, node_id: str, village_id: int, *, from_ms: int = 0, to_ms: int | None = None
    ) -> str:
        with self.db.session() as s:
            if s.get(Node, node_id) is None:
                s.add(Node(id=node_id, village_id=village_id, registered_ms=from_ms))
                s.flush()
            s.add(
                NodePlacement(
                    node_id=node_id, village_id=village_id, valid_from_ms=from_ms, valid_to_ms=to_ms
                )
            )
        return node_id

    def transitions(self, node_id: str, changes: list[tuple[int, bool]]) -> None:
        """``(at_ms, available)`` pairs; state names follow the flag."""
        with self.db.session() as s:
            prev = "unknown"
            for at, available in changes:
                to = "online" if available else "offline"
                s.add(
                    NodeTransition(
                        node_id=node_id,
                        at_ms=at,
                        from_state=prev,
                        to_state=to,
                        available=available,
                        cause="test",
                    )
                )
                prev = to

    def airing(
        self,
        slot_ms: int,
        targets: dict[str, str],
        *,
        duration_ms: int = 10 * 60_000,
        language: str = "vi",
        status: str = "aired",
    ) -> int:
        """One airing with a phase per node; "finished"/"preempted" get start times."""
        with self.db.session() as s:
            a = Airing(
                broadcast_id=self._broadcast(s),
                slot_ms=slot_ms,
                duration_ms=duration_ms,
                language=language,
                status=status,
            )
            s.add(a)
            s.flush()
            for node_id, phase in targets.items():
                started = slot_ms if phase in ("finished", "preempted", "started") else None
                if phase == "preempted-before-start":
                    phase, started = "preempted", None
                s.add(
                    AiringTarget(
                        airing_id=a.id,
                        node_id=node_id,
                        phase=phase,
                        started_at_ms=started,
                        finished_at_ms=slot_ms + duration_ms if phase == "finished" else None,
                        cmd_id=f"c{next(self._ids)}",
                    )
                )
            return a.id

    def daily_airings(
        self,
        start_ms: int,
        end_ms: int,
        nodes: list[str],
        *,
        phase: str = "finished",
        hours_ict: tuple[int, ...] = (6, 17),
        record: bool = False,
    ) -> int:
        """Airings at the given ICT hours every day of ``[start, end)``; returns how many.
        ``start`` is a midnight ICT (period starts are). ``record`` writes each target's
        village and commune at the slot, as the dispatcher does; without it the evaluation
        attributes targets through the register."""
        with self.db.session() as s:
            broadcast_id = self._broadcast(s)
            slots = [
                day + h * HOUR
                for day in range(start_ms, end_ms, DAY)
                for h in hours_ict
                if start_ms <= day + h * HOUR < end_ms
            ]
            airings = [
                Airing(
                    broadcast_id=broadcast_id,
                    slot_ms=slot,
                    duration_ms=10 * 60_000,
                    language="vi",
                    status="aired",
                )
                for slot in slots
            ]
            s.add_all(airings)
            s.flush()  # one batched INSERT ... RETURNING gives every id
            where = self._attribution(s, nodes) if record else None
            s.add_all(
                [
                    AiringTarget(
                        airing_id=a.id,
                        node_id=node_id,
                        phase=phase,
                        started_at_ms=a.slot_ms,
                        finished_at_ms=a.slot_ms + 600_000,
                        cmd_id=f"c{next(self._ids)}",
                        **(where(node_id, a.slot_ms) if where else {}),
                    )
                    for a in airings
                    for node_id in nodes
                ]
            )
        return len(slots)

    @staticmethod
    def _attribution(s, nodes: list[str]):
        placements = [
            (p.node_id, p.village_id, p.valid_from_ms, p.valid_to_ms)
            for p in s.query(NodePlacement).filter(NodePlacement.node_id.in_(nodes))
        ]
        memberships = [
            (m.village_id, m.commune_id, m.valid_from_ms, m.valid_to_ms)
            for m in s.query(VillageMembership)
        ]

        def at(node_id: str, t: int) -> dict:
            def inside(lo, hi):
                return lo <= t and (hi is None or t < hi)

            village = next(v for n, v, lo, hi in placements if n == node_id and inside(lo, hi))
            commune = next(c for v, c, lo, hi in memberships if v == village and inside(lo, hi))
            return {"village_id": village, "commune_id": commune}

        return at


def small_province(world: World, start_ms: int, end_ms: int) -> dict[str, str]:
    """Three communes judged over ``[start, end)``: Đội Cấn passes (evening bulletins in Tày,
    a village name with markup to prove escaping), Quốc Khánh fails on Bản Cắm's
    availability (a 15-day outage), Vũ Lễ is an FM station passed by an attestation."""
    from datetime import timedelta

    from indicator.manual_inputs import add_attestation
    from loa.timeutil import ms_to_dt

    district = world.district("TD", "Tràng Định")
    a = world.commune("ls-doican", "Đội Cấn", district_id=district)
    b = world.commune("ls-quockhanh", "Quốc Khánh", district_id=district)
    c = world.commune("ls-vule", "Vũ Lễ", station_kind="fm")
    a1 = world.village("a1", "Nà <b>Pàn</b>", a)
    a2 = world.village("a2", "Thôn Khau Bang", a)
    b1 = world.village("b1", "Bản Cắm", b)
    b2 = world.village("b2", "Thôn Pò Mã", b)
    world.village("c1", "Thôn Nà Sao", c)
    for node, vid in (("a1-n", a1), ("a2-n", a2), ("b1-n", b1), ("b2-n", b2)):
        world.node(node, vid)
        changes = [(start_ms - DAY, True)]
        if node == "b1-n":
            changes += [(start_ms + 30 * DAY, False), (start_ms + 45 * DAY, True)]
        world.transitions(node, changes)
    world.daily_airings(start_ms, end_ms, ["a1-n", "a2-n"], hours_ict=(6,))
    world.daily_airings(start_ms, end_ms, ["b1-n", "b2-n"])
    with world.db.session() as s:
        from scheduler.models import Airing

        for airing in s.query(Airing).all():  # Sunday bulletins are in Tày
            if ms_to_dt(airing.slot_ms).weekday() == 6:
                airing.language = "tay"
        first = ms_to_dt(start_ms).date()
        add_attestation(
            s,
            "ls-vule",
            inspector="Hoàng Văn Thắng",
            attested_on=first,
            valid_until=first + timedelta(days=400),
            note="Đài FM hoạt động tốt",
            at_ms=end_ms,
        )
    return {"pass": "ls-doican", "fail": "ls-quockhanh", "manual": "ls-vule"}
