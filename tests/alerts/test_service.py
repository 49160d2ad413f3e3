"""What Loa does with each kind of CAP message: which clusters, automatic or approved, never
an expired/Ack/System alert, drills only on drill groups, Update and Cancel chains, repeats,
escalation, and the refused document kept with its reason."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from alerts.errors import AlertForbidden, CapRefused
from alerts.models import AlertStep, CapMessage
from scheduler.models import SavedGroup
from tests.alerts import capdocs as d
from tests.alerts.conftest import TRUSTED, TWO_COMMUNES, make_env


def test_trusted_extreme_flood_for_two_communes_airs_at_once_on_exactly_their_clusters(env):
    out = env.alerts.receive(
        d.flood(communes=["c0", "c1"]),
        source="api",
        source_ref="he-thong-tinh",
        trusted_source=True,
    )
    assert out["result"] == "accepted"
    assert out["state"] == "airing" and out["decision"] == "auto"
    assert out["clusters"] == 5
    [bid] = out["broadcast_ids"]
    b = env.broadcast(bid)
    assert b.priority == "emergency" and b.status == "scheduled"
    assert b.volume == 100
    assert sorted(env.nodes_of(bid)) == TWO_COMMUNES  # none in Đồng Đăng
    # Vietnamese text from the Vietnamese info block, through the template.
    assert b.tts_text.startswith("Thông báo khẩn cấp về Lũ quét.")
    assert "Bà con không đi qua ngầm tràn" in b.tts_text
    assert "Khu vực ảnh hưởng: Xã c0, Xã c1" in b.tts_text
    assert "Cảnh báo có hiệu lực đến" in b.tts_text and "Flash flood" not in b.tts_text
    # The spoken form went through the normaliser: numbers read out.
    assert "mười hai" in out["spoken"] or "tháng" in out["spoken"]
    assert not any(ch.isdigit() for ch in out["spoken"].split("Nguồn tin")[0])


def test_duplicate_is_recorded_and_ignored(env):
    doc = d.flood(communes=["c0"])
    first = env.alerts.receive(doc, source="api", trusted_source=True)
    again = env.alerts.receive(doc, source="feed", source_ref="http://x/feed", trusted_source=True)
    assert again["result"] == "duplicate" and again["alert_id"] == first["id"]
    assert len(env.broadcasts_all()) == 1
    with env.db.session() as s:
        outcomes = [m.outcome for m in s.scalars(select(CapMessage).order_by(CapMessage.id))]
    assert outcomes == ["accepted", "duplicate"]


def test_untrusted_sender_waits_for_approval_and_commune_officer_limits(env):
    out = env.alerts.receive(
        d.flood(communes=["c0", "c1"], sender="other@example.org"),
        source="api",
        trusted_source=True,
    )
    assert out["state"] == "pending_approval" and out["broadcast_ids"] == []
    # An officer of one of the two communes may not air it in the other.
    with pytest.raises(AlertForbidden):
        env.alerts.approve(env.officer("Hoàng Văn Thụ"), out["id"])
    approved = env.alerts.approve(env.province, out["id"])
    assert approved["state"] == "airing" and approved["approved_by"] == "so-vhtt"
    assert approved["approved_at"] is not None
    # A moderate alert from the trusted sender also needs approval.
    mod = env.alerts.receive(
        d.flood("M-1", communes=["c0"], severity="Moderate"), source="api", trusted_source=True
    )
    assert mod["state"] == "pending_approval"
    ok = env.alerts.approve(env.officer("Hoàng Văn Thụ"), mod["id"])
    assert ok["state"] == "airing"


@pytest.mark.parametrize(
    "maker,state,words",
    [
        (lambda: d.flood(communes=["c0"], status="System"), "not_aired", "System"),
        (lambda: d.flood(communes=["c0"], status="Draft"), "not_aired", "Draft"),
        (lambda: d.flood(communes=["c0"], expires_in_min=-5), "expired", "hết hiệu lực"),
        (lambda: d.ack(), "info", "không bao giờ phát"),
        (lambda: d.flood(communes=["khong-co"]), "not_aired", "Không có cụm loa"),
    ],
)
def test_what_never_airs(env, maker, state, words):
    out = env.alerts.receive(maker(), source="api", trusted_source=True)
    assert out["state"] == state, out
    assert words in out["state_reason"]
    assert env.broadcasts_all() == []


def test_exercise_airs_only_on_drill_groups(db, settings):
    env = make_env(db, settings)
    out = env.alerts.receive(
        d.flood(communes=["c0", "c1"], status="Exercise"), source="api", trusted_source=True
    )
    assert out["state"] == "not_aired" and "diễn tập" in out["state_reason"]
    with db.session() as s:
        g = SavedGroup(
            name="Nhóm diễn tập",
            targets={"nodes": ["hvt-01", "dd-01"]},
            created_by="so",
            created_ms=0,
        )
        s.add(g)
        s.flush()
        gid = g.id
    env.alerts.settings.drill_group_ids = [gid]
    out = env.alerts.receive(
        d.flood("EX-2", communes=["c0", "c1"], status="Test"), source="api", trusted_source=True
    )
    assert out["state"] == "airing" and out["drill"]
    [bid] = out["broadcast_ids"]
    assert env.nodes_of(bid) == ["hvt-01"]  # in the drill group AND in the area
    b = env.broadcast(bid)
    assert b.tts_text.startswith("Đây là tin diễn tập") and b.title.startswith("[Diễn tập]")


def test_update_supersedes_and_stops_the_earlier_alert(env):
    first_doc = d.flood("F-1", communes=["c0"])
    first = env.alerts.receive(first_doc, source="api", trusted_source=True)
    upd = env.alerts.receive(
        d.flood("F-2", communes=["c0", "c1"], msg_type="Update", references=d.ref_of(first_doc)),
        source="api",
        trusted_source=True,
    )
    assert upd["state"] == "airing" and upd["references"] == [first["id"]]
    old = env.alerts.summary(first["id"])
    assert old["state"] == "superseded" and old["closed_by_id"] == upd["id"]
    assert env.broadcast(first["broadcast_ids"][0]).status == "cancelled"
    assert sorted(env.nodes_of(upd["broadcast_ids"][0])) == TWO_COMMUNES
    # An earthquake report Update whose reference is unknown still stores, never fails.
    eq = env.alerts.receive(
        d.earthquake_update(references="trinet@caltech.edu,TRI1,2003-06-11T20:30:00-07:00"),
        source="api",
        trusted_source=True,
    )
    assert eq["references"] == [] and eq["state"] == "pending_approval"


def test_cancel_stops_it_and_schedules_all_clear(env):
    doc = d.flood("C-1", communes=["c0", "c1"])
    alert = env.alerts.receive(doc, source="api", trusted_source=True)
    out = env.alerts.receive(
        d.cancel("C-2", references=d.ref_of(doc)), source="api", trusted_source=True
    )
    assert out["state"] == "info" and "Đã hủy 1" in out["state_reason"]
    old = env.alerts.summary(alert["id"])
    assert old["state"] == "cancelled" and old["next_repeat_at"] is None
    assert env.broadcast(alert["broadcast_ids"][0]).status == "cancelled"
    clear = env.broadcast(old["all_clear_broadcast_id"])
    assert clear.priority == "priority" and "bãi bỏ" in clear.tts_text
    assert sorted(env.nodes_of(clear.id)) == TWO_COMMUNES
    # A second Cancel of the same alert changes nothing.
    again = env.alerts.receive(
        d.cancel("C-3", references=d.ref_of(doc)), source="api", trusted_source=True
    )
    assert "Không có cảnh báo" in again["state_reason"]


def test_repeats_until_expiry_and_reuses_the_audio(db, settings):
    env = make_env(db, settings, repeat_every_min=1)
    out = env.alerts.receive(
        d.flood(communes=["c0"], expires_in_min=3), source="api", trusted_source=True
    )
    base = env.alerts.clock()
    env.alerts.clock = lambda: base + 61_000
    assert env.alerts.tick()["repeated"] == 1
    ids = env.alerts.summary(out["id"])["broadcast_ids"]
    assert len(ids) == 2
    assert env.broadcast(ids[1]).content_id == env.broadcast(ids[0]).content_id
    env.alerts.clock = lambda: base + 62_000
    assert env.alerts.tick()["repeated"] == 0  # next one is a minute later
    env.alerts.clock = lambda: base + 4 * 60_000
    assert env.alerts.tick()["expired"] == 1
    assert env.alerts.summary(out["id"])["state"] == "expired"


def test_unapproved_alert_escalates_to_the_province(db, settings):
    env = make_env(db, settings, approval_timeout_s=60)
    out = env.alerts.receive(
        d.flood(communes=["c0"], sender="x@y.vn"), source="api", trusted_source=True
    )
    base = env.alerts.clock()
    env.alerts.clock = lambda: base + 61_000
    assert env.alerts.tick()["escalated"] == 1
    s = env.alerts.summary(out["id"])
    assert s["state"] == "escalated" and s["escalated_at"]
    assert env.alerts.approve(env.province, out["id"])["state"] == "airing"


def test_polygon_and_circle_select_clusters_by_coordinates(db, settings):
    env = make_env(db, settings, auto_senders=["KSTO@NWS.NOAA.GOV"])
    storm = env.alerts.receive(d.thunderstorm(), source="api", trusted_source=True)
    assert storm["state"] == "airing"
    assert sorted(env.nodes_of(storm["broadcast_ids"][0])) == TWO_COMMUNES
    quake = env.alerts.receive(
        d.earthquake_update(references="a,b,2003-06-11T20:30:00-07:00", circle="21.85,106.76 1"),
        source="api",
        trusted_source=True,
    )
    rep = env.alerts.report(env.province, quake["id"])
    assert sorted(c["node_id"] for c in rep["clusters_detail"]) == ["hvt-01", "hvt-02"]


def test_geocode_by_administrative_code_map(db, settings):
    env = make_env(db, settings, geocode_map={"06040": "c2"})
    out = env.alerts.receive(d.flood(communes=["06040"]), source="api", trusted_source=True)
    assert sorted(env.nodes_of(out["broadcast_ids"][0])) == ["dd-01", "dd-02"]


def test_province_template_per_event(env):
    from alerts.errors import AlertError

    with pytest.raises(AlertError) as err:
        env.alerts.set_template(env.province, "Lũ quét", "Có {khong_ton_tai}")
    assert "khong_ton_tai" in err.value.message
    env.alerts.set_template(
        env.province, "Lũ quét", "Khẩn cấp! {tieu_de}\nHướng dẫn: {huong_dan}\nLiên hệ: {noi_gui}"
    )
    out = env.alerts.receive(d.flood(communes=["c0"]), source="api", trusted_source=True)
    assert env.broadcast(out["broadcast_ids"][0]).tts_text.startswith(
        "Khẩn cấp! Cảnh báo lũ quét, sạt lở đất cấp 3. Hướng dẫn: Bà con"
    )


def test_refused_document_is_stored_with_its_reason_and_nothing_airs(env):
    bad = d.flood(communes=["c0"]).replace(b"<status>Actual", b"<status>Real")
    with pytest.raises(CapRefused) as err:
        env.alerts.receive(bad, source="api", source_ref="he-thong-tinh", trusted_source=True)
    assert err.value.code == "schema" and err.value.status == 422
    unsigned = d.flood(communes=["c0"])
    with pytest.raises(CapRefused) as err:
        env.alerts.receive(unsigned, source="feed", trusted_source=False)
    assert err.value.code == "unsigned"
    with env.db.session() as s:
        rows = s.scalars(select(CapMessage).order_by(CapMessage.id)).all()
        assert [(m.outcome, m.reason_code) for m in rows] == [
            ("refused", "schema"),
            ("refused", "unsigned"),
        ]
        assert rows[0].raw == bad and "Real" in rows[0].reason
        assert s.scalar(select(AlertStep.id)) is None
    assert env.broadcasts_all() == []


def test_warning_tones_are_sent_for_the_nodes_to_make(db, settings):
    """Default ``tone_mode`` "node": the broadcast is the speech alone plus the tone's
    parameters, which every ``play`` carries; its airtime counts the tone."""
    env = make_env(db, settings, tone_pattern="3x1/0.5", tone_hz=1000)
    out = env.alerts.receive(d.flood(communes=["c0"]), source="api", trusted_source=True)
    b = env.broadcast(out["broadcast_ids"][0])
    assert b.tone == {"hz": 1000, "on_ms": 1000, "off_ms": 500, "count": 3}
    assert b.tts_text and b.content_id
    meta = env.alerts.content.store.get(b.content_id)
    # 3 x 1 s blasts + 2 x 0.5 s gaps + 1 s pause, then the speech alone.
    assert b.duration_ms == 5_000 + meta.duration_ms
    assert meta.duration_ms < 3_000  # tone_speech's one second, not tones baked in
    # A province officer's edit (a corrected title) keeps the tone in the new version.
    new = env.broadcasts.edit(
        env.province, b.id, {"title": "Cảnh báo lũ quét (sửa)", "confirm": True}
    )
    assert env.broadcast(new["id"]).tone == b.tone


def test_warning_tones_are_generated_before_the_speech(db, settings):
    """``tone_mode`` "file" (nodes without the ``tone`` field): three 1-second blasts, 0.5 s
    apart, then the speech: one stored item, decoded back."""
    import subprocess

    env = make_env(db, settings, tone_pattern="3x1/0.5", tone_hz=1000, tone_mode="file")
    store = env.alerts.content.store
    out = env.alerts.receive(d.flood(communes=["c0"]), source="api", trusted_source=True)
    b = env.broadcast(out["broadcast_ids"][0])
    assert b.content_id and b.tts_text is None and b.tone is None
    meta = store.get(b.content_id)
    path = store.path(b.content_id)
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    # 3 x 1 s tones + 2 x 0.5 s gaps + 1 s pause = 5 s before a few seconds of speech.
    assert meta.duration_ms > 6_000
    assert abs(float(probe.stdout) * 1000 - meta.duration_ms) < 300
    from pydub import AudioSegment

    audio = AudioSegment.from_file(path)
    blast, gap = audio[200:800], audio[1150:1350]
    assert blast.dBFS > -30 and gap.dBFS < blast.dBFS - 30, (blast.dBFS, gap.dBFS)
    from alerts.errors import AlertError
    from alerts.speech import parse_tone_pattern

    assert parse_tone_pattern("3x20/10") == (3, 20.0, 10.0)
    with pytest.raises(AlertError):
        parse_tone_pattern("ba hồi")


def test_preview_shows_clusters_by_village_and_changes_nothing(env):
    out = env.alerts.preview(d.flood(communes=["c0", "c1"]))
    assert out["clusters"] == 5 and out["decision"] == "auto"
    assert [(v["commune"], v["village"]) for v in out["by_village"]] == [
        ("Hoàng Văn Thụ", "Khối 1"),
        ("Hoàng Văn Thụ", "Khối 2"),
        ("Mai Pha", "Thôn Nà Chuông"),
    ]
    assert out["by_village"][0]["clusters"][0]["lat"] == 21.848
    assert out["text"].startswith("Thông báo khẩn cấp về Lũ quét.")
    assert env.alerts.list(env.province)["total"] == 0 and env.broadcasts_all() == []
    with pytest.raises(CapRefused):
        env.alerts.preview(b"<alert/>")


def test_prerecorded_ethnic_language_messages_follow_the_vietnamese(env):
    from alerts.errors import AlertError
    from tests.alerts.conftest import tone_speech

    store = env.alerts.content.store
    tay = tone_speech(store, "", title="Cảnh báo lũ quét tiếng Tày", language="tay")
    dao = tone_speech(store, "", title="Cảnh báo lũ quét tiếng Dao", language="dao")
    with pytest.raises(AlertError) as err:
        env.alerts.set_template(env.province, "Lũ quét", "{tieu_de}", ["c_khong_co"])
    assert err.value.code == "bad_recordings"
    env.alerts.set_template(env.province, "Lũ quét", "{tieu_de}", [tay.id, dao.id])
    out = env.alerts.receive(d.flood(communes=["c0"]), source="api", trusted_source=True)
    speech_id, tay_id, dao_id = out["broadcast_ids"]
    assert env.broadcast(speech_id).tts_text == "Cảnh báo lũ quét, sạt lở đất cấp 3."
    assert [env.broadcast(b).content_id for b in (tay_id, dao_id)] == [tay.id, dao.id]
    assert all(env.broadcast(b).priority == "emergency" for b in (tay_id, dao_id))
    assert env.nodes_of(tay_id) == env.nodes_of(speech_id)


def test_the_same_alert_arriving_twice_at_once_airs_once(env):
    from concurrent.futures import ThreadPoolExecutor

    doc = d.flood("RACE-1", communes=["c0"])
    with ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda src: env.alerts.receive(doc, source=src, trusted_source=True),
                ["api", "feed", "upload", "api"],
            )
        )
    assert sorted(r["result"] for r in results) == [
        "accepted",
        "duplicate",
        "duplicate",
        "duplicate",
    ]
    assert len(env.broadcasts_all()) == 1


def test_per_sender_rules(db, settings):
    env = make_env(db, settings, auto_rules={"dieuhanh@langson.gov.vn": ["Moderate"], TRUSTED: []})
    out = env.alerts.receive(
        d.flood("R-1", communes=["c0"], sender="dieuhanh@langson.gov.vn", severity="Moderate"),
        source="api",
        trusted_source=True,
    )
    assert out["decision"] == "auto" and out["state"] == "airing"
    # The rule for the hydro-met sender overrides the general list: everything is approved.
    out = env.alerts.receive(d.flood("R-2", communes=["c0"]), source="api", trusted_source=True)
    assert out["state"] == "pending_approval"


def test_a_long_list_of_areas_is_read_short():
    from alerts import cap, speech

    _, a = cap.load(d.flood(communes=[f"c{i}" for i in range(9)]))
    text = speech.compose(a, a.info_for(), speech.DEFAULT_TEMPLATE, drill=False)
    assert "Khu vực ảnh hưởng: Xã c0, Xã c1, Xã c2, Xã c3, Xã c4, Xã c5 và 3 khu vực khác." in text
