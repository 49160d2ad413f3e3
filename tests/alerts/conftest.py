"""A small province around Lạng Sơn city with surveyed clusters, the real broadcast workflow
(scheduler.workflow) and content store, and the alert service on top.

Speech for the service tests is a generated tone run through the real content pipeline
(``ContentStore.add_file``: levelled, encoded, measured) instead of the TTS engine, which
the broadcasts tests cover and the end-to-end alert test uses for real: it keeps these tests
seconds long. What would be spoken is kept in the broadcast's ``tts_text``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from alerts.config import AlertSettings
from alerts.workflow import AlertService
from loa.db import Database
from registry.models import Node
from scheduler.config import SchedulerSettings
from scheduler.content import ContentGateway
from scheduler.models import Broadcast
from scheduler.targets import Actor
from scheduler.workflow import BroadcastService
from tests.factories import make_registry

# Commune codes from make_registry: c0, c1, c2 in this order.
COMMUNES = {
    "Hoàng Văn Thụ": {"Khối 1": ["hvt-01", "hvt-02"], "Khối 2": ["hvt-03"]},
    "Mai Pha": {"Thôn Nà Chuông": ["mp-01", "mp-02"]},
    "Đồng Đăng": {"Khu Ga": ["dd-01", "dd-02"]},
}
COORDS = {
    "hvt-01": (21.848, 106.757),
    "hvt-02": (21.852, 106.763),
    "hvt-03": (21.846, 106.771),
    "mp-01": (21.830, 106.730),
    "mp-02": (21.835, 106.745),
    "dd-01": (21.950, 106.700),
    "dd-02": (21.960, 106.710),
}
TWO_COMMUNES = ["hvt-01", "hvt-02", "hvt-03", "mp-01", "mp-02"]
TRUSTED = "canhbao@kttv.gov.vn"


def tone_speech(
    store: Any,
    text: str,
    *,
    title: str,
    language: str = "vi",
    engine: str | None = None,
    voice: str | None = None,
    creator: str = "",
    owner_commune_id: int | None = None,
    urgent: bool = False,
):
    """Stands in for the TTS engine: one second of tone through the real audio pipeline
    (``urgent`` is the pipeline's concern; a tone is levelled in one render either way)."""
    from pydub.generators import Sine

    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    path = Path(store.tmp_dir) / "tone.wav"
    Sine(660).to_audio_segment(duration=1000).export(path, format="wav")
    return store.add_file(
        path,
        filename="tone.wav",
        title=title,
        language=language,
        source="tts",
        creator=creator,
        chime=False,
        owner_commune_id=owner_commune_id,
    )


def place_clusters(db: Database, coords: dict[str, tuple[float, float]]) -> None:
    with db.session() as s:
        for node_id, (lat, lon) in coords.items():
            node = s.get(Node, node_id)
            node.lat, node.lon = lat, lon


@dataclass
class Env:
    db: Database
    ids: dict[str, int]
    alerts: AlertService
    broadcasts: BroadcastService
    province: Actor

    def officer(self, *communes: str) -> Actor:
        return Actor("commune", frozenset(self.ids[c] for c in communes), "canbo-xa")

    def broadcast(self, broadcast_id: int) -> Broadcast:
        with self.db.session() as s:
            return s.get(Broadcast, broadcast_id)

    def broadcasts_all(self) -> list[Broadcast]:
        with self.db.session() as s:
            return list(s.scalars(select(Broadcast).order_by(Broadcast.id)))

    def nodes_of(self, broadcast_id: int) -> list[str]:
        from scheduler.targets import resolve_nodes

        b = self.broadcast(broadcast_id)
        with self.db.session() as s:
            return [t.node_id for t in resolve_nodes(s, b.targets)]


def record_airing(
    env: Env,
    broadcast_id: int,
    received_ms: int,
    targets: list[tuple[str, str, int | None, str | None]],
    *,
    updated_ms: int,
) -> None:
    """An emergency airing of ``broadcast_id`` dispatched 0.5 s after the alert's reception,
    with one row per (node, phase, started at, error): what the dispatcher writes, for tests
    of the alert's proof and evidence."""
    from scheduler.models import Airing, AiringTarget

    with env.db.session() as s:
        a = Airing(
            broadcast_id=broadcast_id,
            slot_ms=received_ms + 500,
            duration_ms=60_000,
            language="vi",
            priority="emergency",
            status="dispatched",
            dispatched_ms=received_ms + 500,
            start_at_ms=received_ms + 500,
            ends_ms=received_ms + 60_500,
        )
        s.add(a)
        s.flush()
        for node, phase, started, error in targets:
            s.add(
                AiringTarget(
                    airing_id=a.id,
                    node_id=node,
                    cmd_id=f"cmd-{node}",
                    phase=phase,
                    started_at_ms=started,
                    error=error,
                    events=[],
                    updated_ms=updated_ms,
                )
            )


def make_env(db: Database, settings, **alert_settings: Any) -> Env:
    from broadcasts.store import ContentStore

    ids = make_registry(db, communes=COMMUNES)
    place_clusters(db, COORDS)
    content = ContentGateway(ContentStore(settings, db), synthesize_fn=tone_speech)
    broadcasts = BroadcastService(db, SchedulerSettings(), content=content)
    cfg = AlertSettings(**{"auto_senders": [TRUSTED], **alert_settings})
    return Env(
        db,
        ids,
        AlertService(db, broadcasts, cfg, content=content),
        broadcasts,
        Actor("province", None, "so-vhtt"),
    )


@pytest.fixture
def env(db, settings) -> Env:
    return make_env(db, settings)
