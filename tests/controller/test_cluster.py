"""Several controllers on one fleet (issue #7): ownership, forwarding, the leader lease, and
three real `loa controller` processes on Debian mosquitto splitting heartbeats so that each
is processed exactly once, also after one of them is killed."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter

import paho.mqtt.client as paho
import pytest
from sqlalchemy import select

from controller.cluster import ClusterRouter, ClusterTopics, Membership, rendezvous_owner
from controller.ingest import Ingest
from controller.lease import Lease
from controller.models import NodeLive, NodeTransition
from controller.stats import quantile_ms
from loa.protocol import Heartbeat, Status, Topics, encode
from loa.timeutil import now_ms
from tests.cluster_support import demo_login, read_stats, start_api, start_controller, stop_all
from tests.factories import make_registry
from tests.scheduler.conftest import wait_for

TOPICS = Topics()


def heartbeat(seq: int, ts: int | None = None) -> bytes:
    return encode(
        Heartbeat(
            seq=seq,
            ts=ts or now_ms(),
            uptime_s=60,
            volume=70,
            amp="ok",
            speakers_ok=2,
            speakers_total=2,
            power="mains",
            net="4g",
            rssi_dbm=-80,
            temp_c=30.0,
            playing=None,
        )
    )


# --------------------------------------------------------------------------- ownership


def test_rendezvous_moves_only_the_nodes_of_the_member_that_left():
    nodes = [f"n-{i:04d}" for i in range(3000)]
    three = {n: rendezvous_owner(n, ("c1", "c2", "c3")) for n in nodes}
    two = {n: rendezvous_owner(n, ("c1", "c3")) for n in nodes}
    shares = Counter(three.values())
    assert all(900 < shares[c] < 1100 for c in ("c1", "c2", "c3")), shares
    moved = [n for n in nodes if three[n] != two[n]]
    assert moved and all(three[n] == "c2" for n in moved)
    assert {n for n in nodes if three[n] == "c2"} == set(moved)


def test_membership_follows_presence_wills_and_silence():
    m = Membership("c1", expire_ms=3000)
    now = 1_000_000
    doc = json.dumps({"at_ms": now, "leader": True}).encode()
    assert m.on_presence("c2", doc, now, retained=False)
    assert m.members == ("c1", "c2") and m.leader() == "c2"
    assert not m.on_presence("c2", doc, now + 10, retained=False)  # a renewal changes nothing
    # A retained presence written long ago by a controller that died with the broker.
    stale = json.dumps({"at_ms": now - 60_000, "leader": False}).encode()
    assert not m.on_presence("c9", stale, now, retained=True)
    assert m.on_presence("c3", json.dumps({"at_ms": now}).encode(), now, retained=True)
    assert m.members == ("c1", "c2", "c3")
    assert m.on_presence("c2", b"", now + 20, retained=False)  # its Last Will
    assert m.members == ("c1", "c3") and m.leader() is None
    assert m.expire(now + 5000) and m.members == ("c1",)
    assert not m.on_presence("c2", b"not json", now, retained=False)


def test_router_applies_its_own_nodes_and_forwards_the_others(db, settings):
    make_registry(db, communes={"Xã A": {"Thôn 1": [f"r-{i:02d}" for i in range(40)]}})
    m = Membership("c1", expire_ms=60_000)
    ingest = Ingest(settings, db, owns=m.owns)
    ingest.load_registry()
    sent: list[tuple[str, bytes, int]] = []
    router = ClusterRouter(
        TOPICS, m, ingest.handle, lambda t, p, q: sent.append((t, p, q)), lambda: None
    )
    now = now_ms()
    router.route(ClusterTopics().presence("c2"), json.dumps({"at_ms": now}).encode(), now)
    mine = [n for n in ingest.fleet.nodes if m.owns(n)]
    theirs = [n for n in ingest.fleet.nodes if not m.owns(n)]
    assert mine and theirs
    for n in ingest.fleet.nodes:
        router.route(TOPICS.heartbeat(n), heartbeat(1), now_ms())
        router.route(TOPICS.status(n), encode(Status(online=True)), now_ms())
    assert ingest.accepted["heartbeat"] == len(mine) and ingest.accepted["status"] == len(mine)
    assert sorted(t for t, _, _ in sent) == sorted(
        ClusterTopics().forward("c2", n, "heartbeat") for n in theirs
    )
    assert {q for _, _, q in sent} == {0}
    # What c2 hands back on our forward topic is applied here, whoever owns it.
    router.route(ClusterTopics().forward("c1", theirs[0], "heartbeat"), heartbeat(2), now_ms())
    assert ingest.fleet.nodes[theirs[0]].heartbeat.seq == 2
    # Events go to the leader: nobody leads, so we keep them; then c2 leads.
    router.route(TOPICS.events(theirs[0]), b'{"type": "fault", "ts": 1, "code": "amp_fault"}', now)
    assert ingest.accepted["events"] == 1
    router.route(
        ClusterTopics().presence("c2"), json.dumps({"at_ms": now, "leader": True}).encode(), now
    )
    router.route(TOPICS.events(mine[0]), b'{"type": "fault", "ts": 1, "code": "amp_fault"}', now)
    assert sent[-1][0] == ClusterTopics().forward("c2", mine[0], "events") and sent[-1][2] == 1
    # Only nodes this controller owns are swept offline.
    assert ingest.sweep(now + 10 * 3600_000) == len(mine)
    assert router.forwarded == len(theirs) + 1 and router.received == 2 * 40 + 2


# --------------------------------------------------------------------------- lease


def test_lease_has_one_holder_and_passes_on_when_it_runs_out(db):
    a = Lease(db, "leader", "c1", ttl_ms=10_000)
    b = Lease(db, "leader", "c2", ttl_ms=10_000)
    t = 1_000_000
    first = a.try_hold(t)
    assert first.held and first.term == 1
    assert not b.try_hold(t + 1).held
    assert a.try_hold(t + 5_000).held  # renewal, same term
    assert not b.try_hold(t + 14_000).held  # renewed at +5 s: good until +15 s
    taken = b.try_hold(t + 15_001)
    assert taken.held and taken.holder == "c2" and taken.term == 2
    assert not a.try_hold(t + 15_002).held  # the old leader learns it lost
    b.release()
    assert a.try_hold(t + 15_003).held and a.read().term == 3


# --------------------------------------------------------------------------- processes


class Publisher:
    """Heartbeats with QoS 1, so that 'published' is an exact count to compare with."""

    def __init__(self, port: int, nodes: list[str]) -> None:
        self.nodes = nodes
        self.sent = 0
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="cluster-pub")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        for n in nodes:
            self.client.publish(
                TOPICS.status(n), encode(Status(online=True)), qos=1, retain=True
            ).wait_for_publish(5)

    async def rounds(self, count: int, every_s: float) -> None:
        for r in range(count):
            infos = [
                self.client.publish(TOPICS.heartbeat(n), heartbeat(r), qos=1) for n in self.nodes
            ]
            for info in infos:
                await asyncio.to_thread(info.wait_for_publish, 5)
            self.sent += len(infos)
            await asyncio.sleep(every_s)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def offline_transitions(db, since_ms: int) -> list[tuple[str, str]]:
    with db.session() as s:
        return [
            tuple(r)
            for r in s.execute(
                select(NodeTransition.node_id, NodeTransition.cause).where(
                    NodeTransition.to_state == "offline", NodeTransition.at_ms >= since_ms
                )
            )
        ]


async def test_three_controllers_process_each_heartbeat_once_and_survive_a_kill(
    tmp_path, mosquitto_broker, db
):
    nodes = [f"cl-{i:02d}" for i in range(30)]
    make_registry(db, communes={"Xã Chi Lăng": {"Thôn Đồng Mỏ": nodes}}, heartbeat_s=2)
    names = ["ctl-a", "ctl-b", "ctl-c"]
    procs = {n: start_controller(n, db.url, mosquitto_broker.port, tmp_path) for n in names}
    pub = None
    try:

        def all_see(k: int, among=names):
            stats = [read_stats(tmp_path, n) for n in among]
            return all(len(s.get("members", [])) == k and s.get("connected") for s in stats)

        await wait_for(lambda: all_see(3), 30, "three controllers to see each other", interval=0.2)
        await wait_for(
            lambda: (
                sum(s.get("leader", False) for s in (read_stats(tmp_path, n) for n in names)) == 1
            ),
            15,
            "one leader",
            interval=0.2,
        )
        started = now_ms()
        pub = Publisher(mosquitto_broker.port, nodes)
        await pub.rounds(8, 1.0)

        def processed(among=names) -> int:
            return sum(
                read_stats(tmp_path, n).get("accepted", {}).get("heartbeat", 0) for n in among
            )

        await wait_for(lambda: processed() >= pub.sent, 20, "every heartbeat processed")
        await asyncio.sleep(1.0)  # anything processed twice would show up now
        stats = {n: read_stats(tmp_path, n) for n in names}
        assert processed() == pub.sent == 240
        assert all(s["accepted"].get("heartbeat", 0) > 0 for s in stats.values()), stats
        assert sum(s["forwarded"] for s in stats.values()) > 0
        assert sum(s["owned_nodes"] for s in stats.values()) == len(nodes)
        assert sum(s["online_nodes"] for s in stats.values()) == len(nodes)
        merged = [
            sum(c)
            for c in zip(*(s["heartbeat_lag_ms"]["counts"] for s in stats.values()), strict=True)
        ]
        assert sum(merged) == 240
        assert (
            quantile_ms(
                {"bounds": stats["ctl-a"]["heartbeat_lag_ms"]["bounds"], "counts": merged}, 0.5
            )
            is not None
        )

        # Kill -9 a controller that does not lead: its nodes move to the two others, none
        # is declared offline, and every heartbeat is still processed exactly once.
        victim = next(n for n in names if not stats[n]["leader"])
        survivors = [n for n in names if n != victim]
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        await wait_for(lambda: all_see(2, survivors), 20, "the survivors to notice", interval=0.2)
        before = processed(survivors)
        await pub.rounds(8, 1.0)
        await wait_for(
            lambda: processed(survivors) - before >= 240,
            20,
            "every heartbeat after the kill processed",
        )
        await asyncio.sleep(1.0)
        assert processed(survivors) - before == 240
        after = {n: read_stats(tmp_path, n) for n in survivors}
        assert sum(s["owned_nodes"] for s in after.values()) == len(nodes)
        assert sum(s["online_nodes"] for s in after.values()) == len(nodes)
        assert offline_transitions(db, started) == []
        with db.session() as s:
            states = Counter(s.scalars(select(NodeLive.state).where(NodeLive.node_id.in_(nodes))))
        assert states == {"online": len(nodes)}
    finally:
        if pub is not None:
            pub.close()
        stop_all(procs.values())


@pytest.mark.parametrize("n", [2])
async def test_a_clean_stop_hands_nodes_and_leadership_over_at_once(
    tmp_path, mosquitto_broker, db, n
):
    nodes = [f"hs-{i:02d}" for i in range(12)]
    make_registry(db, communes={"Xã Hữu Lũng": {"Thôn Na Hoa": nodes}}, heartbeat_s=2)
    names = [f"ctl-{i}" for i in range(n)]
    procs = {}
    for name in names:  # in turn, so the first one leads
        procs[name] = start_controller(name, db.url, mosquitto_broker.port, tmp_path, lease_s=30)
        await wait_for(
            lambda name=name: read_stats(tmp_path, name).get("connected"),
            30,
            f"{name} to connect",
            interval=0.2,
        )
    pub = None
    try:
        await wait_for(
            lambda: read_stats(tmp_path, names[0]).get("leader"),
            15,
            "the first controller to lead",
            interval=0.2,
        )
        pub = Publisher(mosquitto_broker.port, nodes)
        await pub.rounds(3, 1.0)
        held = Lease(db, "leader", names[0], 0).read()
        assert held.held
        procs[names[0]].send_signal(signal.SIGTERM)
        assert procs[names[0]].wait(20) == 0, procs[names[0]].stderr.read().decode()[-2000:]
        await wait_for(
            lambda: read_stats(tmp_path, names[1]).get("leader"),
            10,
            "the other controller to lead",
            interval=0.1,
        )
        # Released on a clean stop: taken at the next try, not when the 30 s lease ran out.
        taken = Lease(db, "leader", names[1], 0).read()
        assert taken.held and taken.term == held.term + 1
        with db.session() as s:
            from controller.models import ControllerLease

            assert s.get(ControllerLease, "leader").acquired_ms < held.expires_ms
        await pub.rounds(3, 1.0)
        await wait_for(
            lambda: read_stats(tmp_path, names[1]).get("owned_nodes") == len(nodes),
            10,
            "all nodes owned by the survivor",
        )
        assert offline_transitions(db, 0) == []
    finally:
        if pub is not None:
            pub.close()
        stop_all(procs.values())


async def test_a_controller_that_does_not_lead_gets_the_answers_to_its_commands(
    tmp_path, mosquitto_broker, db, settings
):
    """A technician's self-test sent through a controller that does not lead: the node's
    answer goes to the leader (events follow the leader), and the sender still reports it,
    read from the event log the leader writes."""
    from controller.process import ControllerService
    from firmware_sim.fleet import Fleet
    from loa.protocol import Channel
    from tests.conftest import settings_for

    node = "ans-01"
    make_registry(db, communes={"Xã Tân Lập": {"Thôn Đồng Tâm": [node]}}, heartbeat_s=1)
    leader = start_controller("ctl-lead", db.url, mosquitto_broker.port, tmp_path, lease_s=30)
    fleet = Fleet(
        mosquitto_broker.host,
        mosquitto_broker.port,
        heartbeat_s=1,
        keepalive_s=3,
        connect_rate=500,
        seed=7,
    )
    service = None
    try:
        await wait_for(
            lambda: read_stats(tmp_path, "ctl-lead").get("leader"),
            30,
            "the process controller to lead",
            interval=0.2,
        )
        local = settings_for(
            settings,
            mosquitto_broker,
            shared_subscription_group="loa",
            controller_client_id="ctl-api",
            controller_presence_s=1,
            leader_lease_s=30,
            leader_renew_s=1,
        )
        service = ControllerService(local, db)
        await service.start()
        await service.wait_connected()
        await wait_for(
            lambda: len(service.membership.members) == 2,
            15,
            "the two controllers to see each other",
            interval=0.1,
        )
        await fleet.start([node])
        await wait_for(
            lambda: (
                read_stats(tmp_path, "ctl-lead").get("accepted", {}).get("heartbeat", 0)
                + service.ingest.accepted[Channel.HEARTBEAT]
                >= 2
            ),
            15,
            "the node's heartbeats",
            interval=0.2,
        )
        assert not service.is_leader and service.node_commands.answers_elsewhere()

        result = await service.node_commands.send(node, "selftest", wait_s=8)

        assert result["sent"] is True and result["acked"] is True, result
        assert result["selftest"] is not None and result["selftest"]["speakers_total"] >= 1
        # Applied where the leader is, not here: the answer came from the event log.
        assert service.ingest.accepted[Channel.EVENTS] == 0
        volume = await service.node_commands.send(node, "volume", level=40, wait_s=8)
        assert volume["acked"] is True, volume
    finally:
        await fleet.stop()
        if service is not None:
            await service.stop()
        stop_all([leader])


async def test_an_api_only_process_sends_node_commands_and_reports_the_answers(
    tmp_path, mosquitto_broker, db
):
    """As docker-compose runs it: the dashboard is `loa serve --no-controller` beside two
    controllers. A technician's self-test and volume go out through the API process's own
    MQTT link, and the answers come back from the event log the leader writes; a node that
    is away is reported as not answering, not as done."""
    import httpx

    from dashboard.security import ensure_demo_accounts
    from firmware_sim.fleet import Fleet
    from loa.broker import free_port
    from tests.scheduler.test_kill9 import up

    make_registry(
        db, communes={"Xã Tân Lập": {"Thôn Đồng Tâm": ["api-01", "api-02"]}}, heartbeat_s=1
    )
    ensure_demo_accounts(db)
    http_port = free_port()
    api = start_api(db.url, mosquitto_broker.port, http_port, tmp_path / "api")
    procs = [api] + [
        start_controller(name, db.url, mosquitto_broker.port, tmp_path, lease_s=30)
        for name in ("ctl-a", "ctl-b")
    ]
    fleet = Fleet(
        mosquitto_broker.host,
        mosquitto_broker.port,
        heartbeat_s=1,
        keepalive_s=3,
        connect_rate=500,
        seed=7,
    )
    try:
        await up(http_port)
        await wait_for(
            lambda: any(read_stats(tmp_path, n).get("leader") for n in ("ctl-a", "ctl-b")),
            30,
            "a controller to lead",
            interval=0.2,
        )
        await fleet.start(["api-01"])  # api-02 stays away
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}", timeout=30) as c:
            auth = await demo_login(c, "technician")

            async def online() -> bool:
                r = await c.get("/api/v1/nodes/api-01", headers=auth)
                return r.status_code == 200 and r.json()["state"] in ("online", "degraded")

            await wait_for(online, 20, "api-01 online", interval=0.3)

            st = await c.post("/api/v1/nodes/api-01/selftest", headers=auth)
            assert st.status_code == 200, st.text
            body = st.json()
            assert body["acked"] is True, body
            assert body["selftest"]["speakers_total"] >= 1
            vol = await c.post("/api/v1/nodes/api-01/volume", json={"level": 40}, headers=auth)
            assert vol.status_code == 200 and vol.json()["acked"] is True, vol.text

            away = await c.post("/api/v1/nodes/api-02/selftest", headers=auth)
            assert away.status_code == 200, away.text
            assert away.json()["sent"] is True and away.json()["acked"] is None
    finally:
        await fleet.stop()
        stop_all(procs)
    assert b"Traceback" not in api.stderr.read()
