"""The controller process: one MQTT connection feeding the ingest, the sweeper, the batch
flusher, and the command publisher, with reconnects that lose nothing.

Alone (the default), the MQTT session is persistent (``clean_session=False``, fixed client
id), so QoS 1 events published while the controller reconnects are queued by the broker and
delivered after, and the fleet-wide roles (scheduler, alarms) simply run here.

With ``shared_subscription_group`` set, several controller processes share the fleet
(``controller.cluster``): heartbeats and events arrive through shared subscriptions, each node
has one owner among the live controllers, and the fleet-wide roles run on whichever holds
the ``leader`` lease (``controller.lease``). The session is then a clean one: Mosquitto keeps
dealing a disconnected persistent session its turn of a shared subscription, so a dead
controller would silently swallow its share.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from controller.cluster import (
    CLIENT_ID_RE,
    ClusterRouter,
    Membership,
    presence_payload,
    process_client_id,
)
from controller.command_publisher import CommandPublisher
from controller.ingest import Ingest
from controller.lease import Lease
from controller.mqtt_transport import (
    direct_delivery,
    skip_topic_callbacks,
    stay_connected,
    use_buffered_reads,
)
from controller.node_commands import NodeCommands
from controller.schedule_wake import Wake, decode_wake, wake_topic
from controller.watch import WatchRecorder
from loa.db import Database
from loa.files import write_json_atomically
from loa.settings import Settings
from loa.timeutil import now_ms

log = logging.getLogger("loa.controller")

LEADER_LEASE = "leader"
DEFAULT_CLIENT_ID = Settings.model_fields["controller_client_id"].default


def _never() -> bool:
    return False


@dataclass(slots=True)
class LeaderRole:
    """A fleet-wide duty that must run in exactly one controller (the scheduler, alarms,
    the alert timer): started when this controller leads (at once when it runs alone),
    stopped when it stops leading."""

    name: str
    start: Callable[[], Awaitable[object]]
    stop: Callable[[], Awaitable[object]]
    # Whether the duty needs other controllers' node states right now (the dispatcher does
    # while airings run); reading 100,000 rows for nothing is waste.
    needs_fleet_mirror: Callable[[], bool] = _never


class ControllerService:
    def __init__(self, settings: Settings, db: Database, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self.client_id = client_id or settings.controller_client_id
        self.clustered = bool(settings.shared_subscription_group)
        if self.clustered and client_id is None and self.client_id == DEFAULT_CLIENT_ID:
            # Two replicas under one client id would knock each other off the broker.
            self.client_id = process_client_id(DEFAULT_CLIENT_ID)
        elif client_id is None and self.client_id == DEFAULT_CLIENT_ID and settings.mqtt_username:
            # The provisioned broker makes the user name the client id
            # (use_username_as_clientid): use it ourselves, so the persistent session has the
            # same name with and without that option.
            self.client_id = settings.mqtt_username
        self.connected = asyncio.Event()
        self.started_at = time.time()
        self.reconnects = 0
        self._last_reload = time.monotonic()
        self._registry_fingerprint: tuple[object, ...] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.leader_roles: list[LeaderRole] = []
        self._wake_listeners: list[Callable[[Wake], None]] = []
        self._wake_topic = wake_topic(settings.topic_root)
        self.is_leader = False
        self.leader_term = 0
        self._client_ref: aiomqtt.Client | None = None
        self.membership: Membership | None = None
        if self.clustered:
            # A controller is gone when the broker publishes its will: at once for a dead
            # connection, after 1.5 x keepalive for a frozen process. Silence alone counts
            # only beyond that, so a controller slowed by a burst is not dropped (dropping it
            # would move its nodes back and forth).
            self.membership = Membership(
                self.client_id,
                int((1.5 * settings.keepalive_s + 2 * settings.controller_presence_s) * 1000),
            )
        # See Ingest.will_hold_ms: a broker's own shutdown closes our connection right after
        # the wills it sends on the same TCP stream, well within 200 ms.
        self.ingest = Ingest(
            settings,
            db,
            will_hold_ms=200,
            **({"owns": self.membership.owns} if self.membership else {}),
        )
        self.commands = CommandPublisher(self.ingest.topics)
        # A node's events reach only the leader of several controllers.
        self.node_commands = NodeCommands(
            db, self.commands, answers_elsewhere=lambda: self.clustered and not self.is_leader
        )
        self.ingest.observe(self.node_commands)
        self.router: ClusterRouter | None = None
        self._owned: set[str] = set()  # nodes owned after the last membership change
        self.lease: Lease | None = None
        # When this process observed the fleet (running and connected): controller.watch.
        self.watch = WatchRecorder(db, self.client_id)
        if self.clustered:
            if not CLIENT_ID_RE.match(self.client_id):
                raise ValueError(
                    f"Mã bộ điều khiển không hợp lệ: {self.client_id!r} "
                    "(chỉ chữ, số, '.', '_', '-')"
                )
            assert self.membership is not None
            self.router = ClusterRouter(
                self.ingest.topics,
                self.membership,
                self.ingest.handle,
                self._publish_raw,
                self._on_membership_change,
            )
            self.lease = Lease(
                db, LEADER_LEASE, self.client_id, int(settings.leader_lease_s * 1000)
            )
            if db.engine.dialect.name == "sqlite":
                # Works (the tests do it), but writes and lease renewals queue for one file
                # lock; docs/deploy.md section 6.3 asks for PostgreSQL here.
                log.warning(
                    "Nhiều bộ điều khiển dùng chung một tệp SQLite sẽ phải chờ nhau "
                    "khi ghi; khi chạy nhiều bộ điều khiển hãy dùng PostgreSQL"
                )

    def add_leader_role(self, role: LeaderRole) -> None:
        """Run ``role`` while this controller leads (the composition root adds them)."""
        self.leader_roles.append(role)

    def on_schedule_wake(self, listener: Callable[[Wake], None]) -> None:
        """Call ``listener`` (on the event loop) for each scheduler wake an API process sends
        (``controller.schedule_wake``); the scheduler registers itself here."""
        self._wake_listeners.append(listener)

    async def start(self) -> None:
        self.ingest.pause()  # nothing is observed until the broker connection is up
        await self._reload_registry()
        if self.membership is not None:  # alone until others are heard: every node is ours
            self._owned = set(self.ingest.fleet.nodes)
        self._tasks = [
            asyncio.create_task(self._mqtt_loop(), name="loa-mqtt"),
            asyncio.create_task(self._periodic(self._sweep_once, 0.5), name="loa-sweeper"),
            asyncio.create_task(self._flush_loop(), name="loa-flusher"),
            asyncio.create_task(
                self._periodic(self._maybe_reload_registry, 2.0), name="loa-registry"
            ),
            asyncio.create_task(self._periodic(self._release_wills, 0.05), name="loa-wills"),
            asyncio.create_task(
                self._periodic(self._extend_watch, self.settings.watch_extend_s), name="loa-watch"
            ),
        ]
        if self.settings.controller_stats_file:
            self._tasks.append(
                asyncio.create_task(
                    self._periodic(self._write_stats, self.settings.controller_stats_interval_s),
                    name="loa-stats",
                )
            )
        if self.clustered:
            self._tasks += [
                asyncio.create_task(self._leadership_loop(), name="loa-leadership"),
                asyncio.create_task(
                    self._periodic(self._announce, self.settings.controller_presence_s),
                    name="loa-presence",
                ),
                asyncio.create_task(self._periodic(self._mirror_states, 5.0), name="loa-mirror"),
            ]
        else:
            self._tasks.append(asyncio.create_task(self._lead(), name="loa-leader"))

    async def wait_connected(self, timeout_s: float = 15.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def stop(self) -> None:
        """Stop receiving, then let the flusher finish its write and flush the rest: a
        write is never cut off half-way. A leader hands its lease back so a standby takes
        over at its next try instead of waiting for expiry."""
        self._stopping.set()
        await self._leave()
        flusher = [t for t in self._tasks if t.get_name() == "loa-flusher"]
        for t in self._tasks:
            if t not in flusher:
                t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        await self._step_down()
        await asyncio.to_thread(self.watch.close, now_ms(), "stop")
        await self.ingest.flush()
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.lease.release)
        if self._stats_path() is not None:
            with contextlib.suppress(Exception):
                await self._write_stats()

    # ------------------------------------------------------------------ leadership

    async def _lead(self) -> None:
        """Alone: this controller is the leader for as long as it runs."""
        self.is_leader = True
        for role in self.leader_roles:
            await self._start_role(role)

    async def _start_role(self, role: LeaderRole) -> None:
        try:
            await role.start()
        except Exception:
            log.exception("Không khởi động được %s", role.name)

    async def _step_down(self) -> None:
        if not self.is_leader:
            return
        self.is_leader = False
        if self.membership is not None:
            self.membership.i_lead = False
        for role in reversed(self.leader_roles):
            try:
                await role.stop()
            except Exception:
                log.exception("Không dừng được %s", role.name)

    async def _leadership_loop(self) -> None:
        """Hold or wait for the leader lease. A leader that cannot renew (database down)
        steps down before its lease can run out, so two never lead at once."""
        assert self.lease is not None and self.membership is not None
        renew_s, lease_ms = self.settings.leader_renew_s, self.lease.ttl_ms
        held_until = 0
        while True:
            now = now_ms()
            try:
                state = await asyncio.to_thread(self.lease.try_hold, now)
                held = state.held
                if held:
                    held_until = now + lease_ms
            except Exception as exc:
                log.warning("Không gia hạn được quyền điều phối: %s", exc)
                held = self.is_leader and now_ms() < held_until - int(renew_s * 2000)
                state = None
            if held and not self.is_leader:
                self.is_leader = True
                self.membership.i_lead = True
                self.leader_term = state.term if state else self.leader_term
                log.info(
                    "Bộ điều khiển %s điều phối lịch phát (nhiệm kỳ %d)",
                    self.client_id,
                    self.leader_term,
                )
                self._announce_soon()
                for role in self.leader_roles:
                    await self._start_role(role)
            elif not held and self.is_leader:
                log.warning("Bộ điều khiển %s thôi điều phối lịch phát", self.client_id)
                await self._step_down()
                self._announce_soon()
            await asyncio.sleep(renew_s)

    # ------------------------------------------------------------------ cluster

    def _publish_raw(self, topic: str, payload: bytes, qos: int) -> None:
        """Forward a message unchanged, synchronously, from the message callback: paho's
        own publish is thread-safe and queues without waiting (aiomqtt's would need a task
        per message)."""
        client = self._client_ref
        if client is None:
            raise aiomqtt.MqttError("not connected")
        info = client._client.publish(topic, payload, qos=qos)  # noqa: SLF001
        if info.rc != 0:
            raise aiomqtt.MqttError(f"publish failed rc={info.rc}")

    def _presence(self) -> bytes:
        return presence_payload(
            self.client_id,
            leader=self.is_leader,
            at_ms=now_ms(),
            started_ms=int(self.started_at * 1000),
        )

    async def _announce(self) -> None:
        """Renew our retained presence and forget controllers that fell silent."""
        assert self.membership is not None and self.router is not None
        client = self._client_ref
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(
                    self.router.cluster_topics.presence(self.client_id),
                    self._presence(),
                    qos=1,
                    retain=True,
                )
        if self.membership.expire(now_ms()):
            self._on_membership_change()

    async def _leave(self) -> None:
        """A clean stop: remove our presence now (the will only covers a dead connection)."""
        client = self._client_ref
        if self.router is None or client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                client.publish(
                    self.router.cluster_topics.presence(self.client_id), b"", qos=1, retain=True
                ),
                2,
            )

    def _announce_soon(self) -> None:
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(self._announce())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _on_membership_change(self) -> None:
        """Nodes may have changed owner: take over the state of those that are now ours."""
        assert self.membership is not None
        log.info(
            "Các bộ điều khiển: %s; điều phối: %s",
            ", ".join(self.membership.members),
            self.membership.leader() or "chưa có",
        )
        owned = {n for n in self.ingest.fleet.nodes if self.membership.owns(n)}
        gained, self._owned = list(owned - self._owned), owned
        with contextlib.suppress(RuntimeError):
            task = asyncio.get_running_loop().create_task(self._adopt(gained))

            def log_failure(t: asyncio.Task[None]) -> None:
                if not t.cancelled() and t.exception():
                    log.error("adoption failed: %s", t.exception())

            task.add_done_callback(log_failure)

    async def _adopt(self, node_ids: list[str]) -> None:
        if not node_ids:
            return
        rows = await asyncio.to_thread(self.ingest.writer.load_live, node_ids)
        owned = {n: r for n, r in rows.items() if self.ingest.owns(n)}
        self.ingest.adopt(owned)

    async def _mirror_states(self) -> None:
        """The leader's scheduler asks whether any node is online and how skewed its clock
        is; for nodes other controllers own, their last written state answers."""
        if self.is_leader and any(role.needs_fleet_mirror() for role in self.leader_roles):
            self.ingest.mirror(await asyncio.to_thread(self.ingest.writer.load_states))

    # ------------------------------------------------------------------ periodic work

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.flush_interval_s)
            try:
                await self.ingest.flush()
            except Exception:
                log.exception("flush failed")

    async def _release_wills(self) -> None:
        self.ingest.release_wills()

    async def _extend_watch(self) -> None:
        if self.connected.is_set():
            await asyncio.to_thread(self.watch.extend, now_ms())

    async def _sweep_once(self) -> None:
        self.ingest.sweep()

    async def _reload_registry(self) -> None:
        self.ingest.unknown_seen = False
        self._last_reload = time.monotonic()
        self._registry_fingerprint = await asyncio.to_thread(self.ingest.registry_fingerprint)
        # Read in a thread, applied here: the loop iterates the node table.
        self.ingest.apply_registry(await asyncio.to_thread(self.ingest.read_registry))

    async def _maybe_reload_registry(self) -> None:
        """Within 2 s of hearing an id we do not know (just approved or imported
        elsewhere), re-read the registry; otherwise every 30 s, when it changed."""
        if self.ingest.unknown_seen:
            await self._reload_registry()
        elif time.monotonic() - self._last_reload > 30:
            self._last_reload = time.monotonic()
            if (
                await asyncio.to_thread(self.ingest.registry_fingerprint)
                != self._registry_fingerprint
            ):
                await self._reload_registry()

    async def reload_registry(self) -> None:
        """Call after registry changes so new nodes are accepted at once."""
        await self._reload_registry()

    async def _periodic(self, fn: Callable[[], Awaitable[object]], interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    def _stats_path(self) -> Path | None:
        return (
            Path(self.settings.controller_stats_file)
            if self.settings.controller_stats_file
            else None
        )

    def stats(self) -> dict[str, Any]:
        """This process's figures (also written to ``controller_stats_file``)."""
        ing = self.ingest
        owned = [rt for rt in ing.fleet.nodes.values() if ing.owns(rt.node_id)]
        router = self.router
        return {
            "client_id": self.client_id,
            "at_ms": now_ms(),
            "cluster": self.clustered,
            "leader": self.is_leader,
            "leader_term": self.leader_term,
            "members": list(self.membership.members) if self.membership else [self.client_id],
            "owned_nodes": len(owned),
            "online_nodes": sum(1 for rt in owned if rt.state in ("online", "degraded")),
            "accepted": dict(ing.accepted),
            "rejected": dict(ing.rejected),
            "received": router.received if router else sum(ing.accepted.values()),
            "forwarded": router.forwarded if router else 0,
            "heartbeat_lag_ms": ing.heartbeat_lag.as_dict(),
            "flushes": ing.writer.flushes,
            "flush_errors": ing.writer.flush_errors,
            "connected": self.connected.is_set(),
            "reconnects": self.reconnects,
        }

    async def _write_stats(self) -> None:
        path = self._stats_path()
        if path is not None:
            await asyncio.to_thread(write_json_atomically, path, self.stats())

    # ------------------------------------------------------------------ MQTT

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        will = None
        if self.router is not None:
            # An empty retained message deletes our presence the moment the broker notices
            # the connection is dead.
            will = aiomqtt.Will(
                self.router.cluster_topics.presence(self.client_id), b"", qos=1, retain=True
            )
        client = skip_topic_callbacks(
            use_buffered_reads(
                aiomqtt.Client(
                    s.mqtt_host,
                    s.mqtt_port,
                    identifier=self.client_id,
                    username=s.mqtt_username,
                    password=s.mqtt_password,
                    clean_session=self.clustered,
                    keepalive=s.keepalive_s,
                    will=will,
                    queue_type=direct_delivery(self._on_message),
                    max_inflight_messages=100,
                )
            )
        )
        # A province-wide dispatch has thousands of publishes in flight; aiomqtt warns
        # above its default of 10.
        client.pending_calls_threshold = 10_000
        return client

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        if message.topic.value == self._wake_topic:
            self._wake(bytes(payload))
            return
        if self.router is not None:
            self.router.route(message.topic.value, payload, now_ms(), retained=message.retain)
        else:
            self.ingest.handle(message.topic.value, payload)

    async def _subscribe(self, client: aiomqtt.Client) -> None:
        if self.router is not None:
            topics = self.router.cluster_topics
            # Presence first: its retained messages arrive before the statuses, so every
            # node's owner is known when its status comes in.
            await client.publish(
                topics.presence(self.client_id), self._presence(), qos=1, retain=True
            )
            await client.subscribe(topics.presence_filter, qos=1)
            await client.subscribe(topics.forward_filter(self.client_id), qos=1)
        for topic in self.ingest.topics.uplink_filters(self.settings.shared_subscription_group):
            await client.subscribe(topic, qos=1)
        # Plain, not shared: every controller hears it and the leader's scheduler acts.
        await client.subscribe(self._wake_topic, qos=1)

    def _wake(self, payload: bytes) -> None:
        wake = decode_wake(payload)
        if wake is None:
            return
        for listener in self._wake_listeners:
            try:
                listener(wake)
            except Exception:  # one listener's fault must not reach the MQTT loop
                log.exception("scheduler wake %s failed", wake)

    async def _mqtt_loop(self) -> None:
        await stay_connected(
            self._client, self._connected_to, self._disconnected, self._stopping, on_lost=self._lost
        )

    async def _connected_to(self, client: aiomqtt.Client) -> None:
        self._client_ref = client
        now = now_ms()
        # Before subscribing: retained statuses arrive during the subscription and must
        # find every node already in its fresh grace.
        self.ingest.resume(now)
        await asyncio.to_thread(self.watch.open, now)
        await self._subscribe(client)
        self.commands.attach(client)
        self.connected.set()
        log.info("Đã kết nối broker %s:%s", self.settings.mqtt_host, self.settings.mqtt_port)

    def _disconnected(self) -> None:
        self.ingest.pause()
        # One single-row UPDATE, synchronous on purpose: the span must end before any
        # reconnection opens the next one.
        self.watch.close(now_ms(), "stop" if self._stopping.is_set() else "broker_lost")
        self._client_ref = None
        self.commands.attach(None)
        self.connected.clear()

    def _lost(self, exc: Exception) -> None:
        self.reconnects += 1
        log.warning("Mất kết nối broker (%s); đang thử lại", exc)
