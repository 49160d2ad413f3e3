"""The content and TTS API over HTTP (FastAPI TestClient on the real app), including the
node-facing download with Range, ETag and per-node tokens."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient

from broadcasts.settings import ContentSettings
from broadcasts.store import ContentStore
from dashboard.app import create_app
from dashboard.security import create_user, issue_token
from system.root import api_context
from tests.factories import make_registry

from .conftest import decode, make_silence, make_tone

NODE = "lso-hd-001"


@pytest.fixture
def api(settings, db, content_settings):
    make_registry(db, communes={"Hoàng Đồng": {"Thôn Nà Pàn": [NODE, "lso-hd-002"]}})
    with db.session() as s:
        user = create_user(s, "tinh.admin", "mat-khau-dai-123", "province")
        raw, _ = issue_token(s, user, "api")
    ctx = api_context(settings, db, content=ContentStore(settings, db, content_settings))
    with TestClient(create_app(ctx)) as client:
        client.headers["Authorization"] = f"Bearer {raw}"
        client.store = ctx.content  # type: ignore[attr-defined]
        yield client


def _reconfigure(api, **content_settings) -> None:
    """Swap in a store with a province's own content settings."""
    ctx = api.app.state.ctx
    store = ContentStore(ctx.settings, ctx.db, ContentSettings(chime=False, **content_settings))
    ctx.content = api.store = store


def _upload(api, path, **fields):
    with path.open("rb") as fh:
        return api.post(
            "/api/v1/content", files={"file": (path.name, fh, "audio/mpeg")}, data=fields
        )


@pytest.fixture
def uploaded(api, tmp_path):
    r = _upload(api, make_tone(tmp_path / "Lịch tiêm phòng.mp3", 2.0), title="Lịch tiêm phòng")
    assert r.status_code == 201, r.text
    return r.json()


def test_upload_returns_the_stored_item(api, uploaded):
    assert uploaded["title"] == "Lịch tiêm phòng" and uploaded["source"] == "province"
    assert uploaded["creator"] == "tinh.admin" and uploaded["language"] == "vi"
    assert uploaded["channels"] == 1 and uploaded["mime"] == "audio/mpeg"
    assert abs(uploaded["loudness_lufs"] - -16) <= 1
    assert uploaded["duration"].endswith("giây") and uploaded["created"].count("/") == 2
    got = api.get(f"/api/v1/content/{uploaded['id']}")
    # The item's own page adds what the library shows (owner, in_use, can_manage).
    assert got.status_code == 200 and {k: got.json()[k] for k in uploaded} == uploaded
    listed = api.get("/api/v1/content", params={"limit": 10}).json()
    assert listed["total"] == 1 and listed["items"][0]["id"] == uploaded["id"]
    assert api.get("/api/v1/content", params={"q": "lich tiem"}).json()["total"] == 1
    assert api.get("/api/v1/content", params={"language": "dao"}).json()["total"] == 0


def test_content_api_needs_a_login(api, uploaded):
    anonymous = {"Authorization": ""}
    assert api.get("/api/v1/content", headers=anonymous).status_code == 401
    assert api.get(f"/api/v1/content/{uploaded['id']}", headers=anonymous).status_code == 401


def test_refusals_are_4xx_with_their_own_vietnamese_message(api, tmp_path):
    corrupt = make_tone(tmp_path / "good.mp3", 3.0)
    data = bytearray(corrupt.read_bytes())
    data[len(data) // 3 : len(data) // 3 + 3000] = bytes(range(256)) * 11 + bytes(184)
    (tmp_path / "hong.mp3").write_bytes(bytes(data))
    (tmp_path / "vanban.mp3").write_text("không phải âm thanh " * 100, encoding="utf-8")
    cases = {
        "hong.mp3": (422, "corrupt"),
        "vanban.mp3": (415, "not_audio"),
        "im-lang.mp3": (422, "silent"),
        "qua-dai.flac": (413, "too_long"),
    }
    make_silence(tmp_path / "im-lang.mp3", 3.0)
    make_tone(tmp_path / "qua-dai.flac", 6.0)
    _reconfigure(api, max_duration_s=5)  # a province's own limit
    messages = set()
    for name, (status, code) in cases.items():
        r = _upload(api, tmp_path / name)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
        messages.add(r.json()["detail"])
    assert len(messages) == len(cases)
    r = api.post("/api/v1/content", files={"file": ("../../x.mp3", b"ID3abc", "audio/mpeg")})
    assert r.status_code == 400 and r.json()["code"] == "bad_filename"
    r = api.post("/api/v1/content", data={"title": "không có tệp"})
    assert r.status_code in (400, 415) and r.json()["code"] in {"missing_file", "not_multipart"}
    r = api.post("/api/v1/content", files={"file": ("rong.mp3", b"", "audio/mpeg")})
    assert r.status_code == 400 and r.json()["code"] == "empty"
    assert api.get("/api/v1/content").json()["total"] == 0  # nothing half-stored


def test_size_cap_is_enforced_while_streaming(api, tmp_path):
    _reconfigure(api, max_upload_bytes=200_000)
    boundary = "loa-test-boundary"

    def body():  # chunked: no Content-Length, so only the streaming check can stop it
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="lon.wav"\r\nContent-Type: audio/wav\r\n\r\n'
        ).encode()
        for _ in range(100):  # 6.4 MB if it were all read
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    r = api.post(
        "/api/v1/content",
        content=body(),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert r.status_code == 413 and r.json()["code"] == "too_large"
    assert not [p for p in api.store.tmp_dir.rglob("*") if p.is_file()]
    # A declared length over the cap is refused before reading anything.
    r = api.post(
        "/api/v1/content",
        content=b"x" * 10,
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Content-Length": "900000000",
        },
    )
    assert r.status_code == 413


def test_node_download_supports_range_and_etag(api, uploaded):
    store: ContentStore = api.store
    url = store.node_url(uploaded["id"], NODE, "http://testserver")
    path = url.removeprefix("http://testserver")
    whole = store.path(uploaded["id"]).read_bytes()
    anonymous = {"Authorization": ""}  # nodes do not log in: the token is the credential

    full = api.get(path, headers=anonymous)
    assert full.status_code == 200 and full.content == whole
    assert full.headers["content-type"] == "audio/mpeg"
    assert full.headers["etag"] == f'"{uploaded["sha256"]}"'
    assert full.headers["accept-ranges"] == "bytes"
    assert hashlib.sha256(full.content).hexdigest() == uploaded["sha256"]

    part = api.get(path, headers={**anonymous, "Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == whole[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(whole)}"
    tail = api.get(path, headers={**anonymous, "Range": "bytes=-500"})
    assert tail.status_code == 206 and tail.content == whole[-500:]

    assert (
        api.get(path, headers={**anonymous, "If-None-Match": full.headers["etag"]}).status_code
        == 304
    )
    head = api.head(path, headers=anonymous)
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(whole)
    assert decode_bytes_ok(whole, tmp_dir=store.tmp_dir)


def decode_bytes_ok(data: bytes, tmp_dir) -> bool:
    tmp_dir.mkdir(parents=True, exist_ok=True)
    p = tmp_dir / "downloaded.mp3"
    p.write_bytes(data)
    try:
        return decode(p).channels == 1
    finally:
        p.unlink()


def test_node_download_refuses_without_a_valid_token(api, uploaded):
    store: ContentStore = api.store
    cid = uploaded["id"]
    good = store.node_token(cid, NODE)
    anonymous = {"Authorization": ""}
    assert api.get(f"/media/{cid}.mp3", headers=anonymous).status_code == 401
    assert api.get(f"/media/{cid}.mp3", params={"node": NODE}, headers=anonymous).status_code == 401
    # Someone else's token, a forged one, an unknown node, another item: all forbidden, with
    # one answer (whether a node id exists is not told).
    other = store.node_token(cid, "lso-hd-002")
    answers = set()
    for node, token in ((NODE, other), (NODE, "0" * 64), ("lso-unknown-9", good)):
        r = api.get(f"/media/{cid}.mp3", params={"node": node, "token": token}, headers=anonymous)
        assert r.status_code == 403, (node, r.text)
        answers.add(r.json()["detail"])
    assert len(answers) == 1
    missing = "ct" + "a" * 24
    r = api.get(
        f"/media/{missing}.mp3",
        params={"node": NODE, "token": store.node_token(missing, NODE)},
        headers=anonymous,
    )
    assert r.status_code == 404


def test_tts_preview_gives_the_spoken_form_and_playable_audio(api):
    r = api.post("/api/v1/tts/preview", json={"text": "UBND xã họp lúc 17h30 ngày 30/6/2025."})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["spoken"].startswith("ủy ban nhân dân xã họp lúc mười bảy giờ ba mươi phút")
    assert body["engine"] == "espeak" and body["fallback_reason"] is None
    audio = api.get(body["audio_url"])
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/mpeg"
    assert abs(len(audio.content) - 0) > 1000
    r = api.post("/api/v1/tts/preview", json={"text": "   "})
    assert r.status_code == 400 and r.json()["code"] == "empty_text"
    r = api.post("/api/v1/tts/normalize", json={"text": "có 09/13 xã đạt 100%"})
    assert r.json() == {"spoken": "có chín trên mười ba xã đạt một trăm phần trăm"}
    assert api.get("/api/v1/tts/preview/../../secret_key").status_code == 404


def test_typed_bulletin_becomes_content(api):
    r = api.post(
        "/api/v1/content/tts",
        json={"text": "Thông báo lịch cắt điện ngày 02/7.", "title": "Lịch cắt điện"},
    )
    assert r.status_code == 201, r.text
    item = r.json()
    assert item["source"] == "tts" and item["tts_engine"] == "espeak"
    assert "ngày mồng hai tháng bảy" in item["spoken_text"]
    r = api.post(
        "/api/v1/content/tts", json={"text": "Pỉ noọng", "title": "Tày", "language": "tay"}
    )
    assert r.status_code == 422 and r.json()["code"] == "no_voice_for_language"


def test_browser_form_upload_with_session_cookie_and_csrf_field(api, settings, db, tmp_path):
    """A plain HTML form (no JavaScript header): the CSRF token travels as a form field, so
    the auth layer reads the form first; the upload must still arrive whole, and the CSRF
    check must still bite."""
    from dashboard.security import CSRF_FIELD, SESSION_COOKIE, find_user, sign_session

    with db.session() as s:
        raw, token = issue_token(s, find_user(s, "tinh.admin"), "session")
        csrf = token.csrf_token
    cookie = sign_session(settings.resolved_secret_key(), raw)
    browser = {"Authorization": "", "Cookie": f"{SESSION_COOKIE}={cookie}"}
    src = make_tone(tmp_path / "form.wav", 1.5)
    with src.open("rb") as fh:
        r = api.post(
            "/api/v1/content",
            headers=browser,
            files={"file": (src.name, fh, "audio/wav")},
            data={"title": "Từ biểu mẫu", CSRF_FIELD: csrf},
        )
    assert r.status_code == 201, r.text
    assert r.json()["title"] == "Từ biểu mẫu"
    with src.open("rb") as fh:
        r = api.post(
            "/api/v1/content",
            headers=browser,
            files={"file": (src.name, fh, "audio/wav")},
            data={"title": "x"},
        )
    assert r.status_code == 403


def test_node_download_tokens_expire_but_outlive_a_scheduled_slot(api, uploaded):
    """Issue 17, finding 12: /media tokens used never to expire. A token is minted when the
    play command is built (dispatch_lead_s before start_at); it must still work for the
    whole slot (the longest content, the slot grace) and stop working after its lifetime."""
    import time
    from urllib.parse import parse_qs, urlparse

    from scheduler.config import SchedulerSettings

    store: ContentStore = api.store
    cid = uploaded["id"]
    anonymous = {"Authorization": ""}
    sched = SchedulerSettings()
    minted = time.time()
    token = parse_qs(urlparse(store.node_url(cid, NODE, "http://testserver")).query)["token"][0]
    slot_end = minted + sched.dispatch_lead_s + store.cfg.max_duration_s + sched.slot_grace_s
    assert store.token_status(cid, NODE, token, now_s=slot_end) == "ok"
    assert (
        store.token_status(cid, NODE, token, now_s=minted + store.cfg.media_token_ttl_s + 61)
        == "expired"
    )
    old = store.node_token(cid, NODE, now_s=minted - store.cfg.media_token_ttl_s - 120)
    r = api.get(f"/media/{cid}.mp3", params={"node": NODE, "token": old}, headers=anonymous)
    assert r.status_code == 403 and "hết hạn" in r.json()["detail"]
    # Changing the expiry written in the token breaks its signature.
    forged = str(int(old.split(".")[0]) + 10 * 86400) + "." + old.split(".")[1]
    r = api.get(f"/media/{cid}.mp3", params={"node": NODE, "token": forged}, headers=anonymous)
    assert r.status_code == 403 and "hết hạn" not in r.json()["detail"]
    fresh = api.get(f"/media/{cid}.mp3", params={"node": NODE, "token": token}, headers=anonymous)
    assert fresh.status_code == 200
