"""Warning tones per event type (issue 19, item 4): the province chooses on each event's
template whether and how the warning tone sounds; NULL = the "*" template's, else the
setting; "" = no tone. Airing (node-made and baked-in tones), repeats, the all-clear, the
preview, the alert's report, the API and the web form all follow it.

Real parts: the real alert and broadcast services on the test database (SQLite, and
PostgreSQL in that pass), the real content pipeline; the web form through the real app."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from alerts.errors import AlertError
from alerts.models import AlertTemplate
from dashboard.models import AuditLog
from tests.alerts import capdocs as d
from tests.alerts.conftest import make_env

FLOOD_TONE = {"hz": 1200, "on_ms": 2000, "off_ms": 1000, "count": 2}
DEFAULT_TONE = {"hz": 880, "on_ms": 1000, "off_ms": 500, "count": 3}


def storm(identifier: str, communes: list[str]) -> bytes:
    """The flood document with another event type: a storm warning ("Bão")."""
    return d.flood(identifier, communes=communes).replace("Lũ quét".encode(), "Bão".encode())


@pytest.fixture
def toned(db, settings):
    from dashboard.security import alerts_audit

    env = make_env(db, settings, tone_pattern="3x1/0.5", tone_hz=880)
    env.alerts.audit = alerts_audit  # as system/root.py wires it
    return env


def test_each_event_sounds_its_own_tone_and_other_events_the_default(toned):
    env = toned
    saved = env.alerts.set_template(
        env.province, "Lũ quét", "{tieu_de}", tone_pattern="2x2/1", tone_hz=1200
    )
    assert saved["tone_pattern"] == "2x2/1" and saved["tone"]["label"] == (
        "2 hồi 2 giây, nghỉ 1 giây"
    )
    flood = env.alerts.receive(d.flood("F-1", communes=["c0"]), source="api", trusted_source=True)
    other = env.alerts.receive(storm("S-1", ["c2"]), source="api", trusted_source=True)
    assert env.broadcast(flood["broadcast_ids"][0]).tone == FLOOD_TONE
    assert env.broadcast(other["broadcast_ids"][0]).tone == DEFAULT_TONE
    # The airtime counts the event's own tone: 2 x 2 s + 1 s gap + 1 s pause.
    b = env.broadcast(flood["broadcast_ids"][0])
    assert b.duration_ms == 6_000 + env.alerts.content.store.get(b.content_id).duration_ms
    # The alert's report says which tone sounded, and from where.
    rep = env.alerts.report(env.province, flood["id"])
    assert rep["tone"]["pattern"] == "2x2/1" and rep["tone"]["source"] == "lu quet"
    assert env.alerts.report(env.province, other["id"])["tone"]["source"] == "default"
    # The save is audited with the tone.
    with env.db.session() as s:
        [detail] = s.scalars(
            select(AuditLog.detail).where(AuditLog.action == "alert.template_saved")
        ).all()
    assert "2x2/1" in str(detail)


def test_star_template_tone_then_setting_and_empty_means_no_tone(toned):
    env = toned
    # "*" sets a province-wide tone; an event template without its own keeps it.
    env.alerts.set_template(env.province, "*", "{tieu_de}", tone_pattern="1x5/0")
    env.alerts.set_template(env.province, "Lũ quét", "{tieu_de}")
    out = env.alerts.receive(d.flood("F-1", communes=["c0"]), source="api", trusted_source=True)
    assert env.broadcast(out["broadcast_ids"][0]).tone == {
        "hz": 880,
        "on_ms": 5000,
        "off_ms": 0,
        "count": 1,
    }
    # "" = no tone for this event (a minor event), even with a default set.
    env.alerts.set_template(env.province, "Bão", "{tieu_de}", tone_pattern="")
    quiet = env.alerts.receive(storm("S-1", ["c2"]), source="api", trusted_source=True)
    b = env.broadcast(quiet["broadcast_ids"][0])
    assert b.tone is None and b.tts_text
    rep = env.alerts.report(env.province, quiet["id"])
    assert rep["tone"]["pattern"] == "" and rep["tone"]["label"] == "không có"
    listed = {t["event_key"]: t for t in env.alerts.templates()}
    assert listed["bao"]["tone_pattern"] == "" and listed["bao"]["tone"]["count"] is None
    assert listed["lu quet"]["tone_pattern"] is None
    assert listed["lu quet"]["tone"]["pattern"] == "1x5/0"  # from "*"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"tone_pattern": "ba hồi"}, "tone_pattern"),
        ({"tone_pattern": "20x20/10"}, "tone_pattern"),
        ({"tone_pattern": "3x20/10", "tone_hz": 20}, "tone_hz"),
    ],
)
def test_a_bad_tone_is_refused_naming_the_field_and_nothing_is_saved(toned, kwargs, field):
    env = toned
    env.alerts.set_template(env.province, "Lũ quét", "Cũ: {tieu_de}", tone_pattern="2x2/1")
    with pytest.raises(AlertError) as err:
        env.alerts.set_template(env.province, "Lũ quét", "Mới: {tieu_de}", **kwargs)
    assert err.value.code == "bad_tone" and err.value.status == 422
    assert f"«{field}»" in err.value.message and field in err.value.message_en
    with env.db.session() as s:
        row = s.get(AlertTemplate, "lu quet")
        assert (row.template, row.tone_pattern) == ("Cũ: {tieu_de}", "2x2/1")
    with pytest.raises(AlertError):  # nothing new either
        env.alerts.set_template(env.province, "Bão", "{tieu_de}", **kwargs)
    with env.db.session() as s:
        assert s.get(AlertTemplate, "bao") is None


def test_the_all_clear_never_sounds_the_alarm_and_repeats_keep_the_first_tone(db, settings):
    env = make_env(db, settings, tone_pattern="3x1/0.5", repeat_every_min=1)
    env.alerts.set_template(env.province, "Lũ quét", "{tieu_de}", tone_pattern="2x2/1")
    doc = d.flood("F-1", communes=["c0"])
    alert = env.alerts.receive(doc, source="api", trusted_source=True)
    # The province changes the tone while the alert is on air: the repeat keeps the first.
    env.alerts.set_template(env.province, "Lũ quét", "{tieu_de}", tone_pattern="")
    base = env.alerts.clock()
    env.alerts.clock = lambda: base + 61_000
    assert env.alerts.tick()["repeated"] == 1
    first, repeat = env.alerts.summary(alert["id"])["broadcast_ids"]
    assert env.broadcast(first).tone == env.broadcast(repeat).tone
    assert env.broadcast(repeat).tone["count"] == 2
    env.alerts.receive(d.cancel("C-1", references=d.ref_of(doc)), source="api", trusted_source=True)
    clear = env.broadcast(env.alerts.summary(alert["id"])["all_clear_broadcast_id"])
    assert "bãi bỏ" in clear.tts_text and clear.tone is None and clear.priority != "emergency"


def test_file_mode_bakes_the_event_tone_and_none_when_the_event_has_none(db, settings):
    env = make_env(db, settings, tone_pattern="3x1/0.5", tone_mode="file")
    env.alerts.set_template(env.province, "Lũ quét", "{tieu_de}", tone_pattern="1x1/0")
    env.alerts.set_template(env.province, "Bão", "{tieu_de}", tone_pattern="")
    flood = env.alerts.receive(d.flood("F-1", communes=["c0"]), source="api", trusted_source=True)
    quiet = env.alerts.receive(storm("S-1", ["c2"]), source="api", trusted_source=True)
    store = env.alerts.content.store
    baked = env.broadcast(flood["broadcast_ids"][0])
    assert baked.tone is None and baked.content_id and baked.tts_text is None
    # One 1 s blast then 1 s of quiet before the speech, where the default (3x1/0.5)
    # would sound its second blast: decoded back from the stored file.
    from pydub import AudioSegment

    audio = AudioSegment.from_file(store.path(baked.content_id))
    blast, pause = audio[200:800], audio[1550:1900]
    assert blast.dBFS > -30 and pause.dBFS < blast.dBFS - 30, (blast.dBFS, pause.dBFS)
    plain = env.broadcast(quiet["broadcast_ids"][0])
    assert plain.tone is None and plain.tts_text  # no tone: the scheduler speaks the text


def test_preview_shows_the_tone_that_would_sound(toned):
    env = toned
    env.alerts.set_template(env.province, "Lũ quét", "{tieu_de}", tone_pattern="2x20/10")
    tone = env.alerts.preview(d.flood(communes=["c0"]))["tone"]
    assert tone["pattern"] == "2x20/10" and tone["label"] == "2 hồi 20 giây, nghỉ 10 giây"
    assert env.alerts.preview(storm("S-1", ["c2"]))["tone"]["source"] == "default"


def test_the_web_form_keeps_recordings_it_cannot_show(toned):
    """The page's form has no recordings field: saving the words or tone there keeps the
    pre-recorded messages saved through the API (before, they were silently dropped)."""
    from tests.alerts.conftest import tone_speech

    env = toned
    tay = tone_speech(env.alerts.content.store, "", title="Lũ quét tiếng Tày", language="tay")
    env.alerts.set_template(env.province, "Lũ quét", "{tieu_de}", [tay.id])
    out = env.alerts.set_template(
        env.province, "Lũ quét", "Mới: {tieu_de}", tone_pattern="", keep_recordings=True
    )
    assert out["recordings"] == [tay.id] and out["tone_pattern"] == ""
    assert {t["event_key"]: t for t in env.alerts.templates()}["lu quet"]["recordings"] == [tay.id]


@pytest.fixture
def app_client(db, settings):
    from dashboard.app import create_app
    from dashboard.security import create_user, issue_token
    from system.root import api_context

    env = make_env(db, settings, tone_pattern="3x1/0.5")
    with db.session() as s:
        user = create_user(s, "so-vhtt", "mat-khau-dai-123", "province")
        token, _ = issue_token(s, user, "api")
    ctx = api_context(settings, db)
    ctx.alerts, ctx.broadcasts = env.alerts, env.broadcasts
    with TestClient(create_app(ctx)) as client:
        yield client, token


def test_api_round_trip_and_bad_pattern_refused_in_vietnamese(app_client):
    client, token = app_client
    auth = {"Authorization": f"Bearer {token}"}
    body = {"event": "Lũ quét", "template": "{tieu_de}", "tone_pattern": "2x20/10"}
    r = client.put("/api/v1/alerts/templates", json={**body, "tone_hz": 1000}, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["tone"]["label"] == "2 hồi 20 giây, nghỉ 10 giây"
    r = client.put("/api/v1/alerts/templates", json={**body, "tone_pattern": "3 hồi"}, headers=auth)
    assert r.status_code == 422 and r.json()["code"] == "bad_tone"
    assert "«tone_pattern»" in r.json()["detail"] and "tone_pattern" in r.json()["detail_en"]
    r = client.put("/api/v1/alerts/templates", json={**body, "tone_pattern": 3}, headers=auth)
    assert r.status_code == 422 and "tone_pattern" in r.text
    answer = client.get("/api/v1/alerts/templates", headers=auth).json()
    listed = {t["event_key"]: t for t in answer}
    assert listed["lu quet"]["tone_pattern"] == "2x20/10" and listed["lu quet"]["tone_hz"] == 1000
    assert listed["*"]["tone_pattern"] is None and listed["*"]["tone"]["source"] == "default"
