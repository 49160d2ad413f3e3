"""The "Phát trực tiếp" page without a live server: Vietnamese first, English on request, no
CDN, no source address; the microphone feed of a broadcast that does not exist is a 404
whatever the process runs (not a 503 that would tell a caller which ids exist), and it
refuses anonymous and technician callers."""

from __future__ import annotations

import re


def test_live_page_languages_and_refusals(stack):
    c, csrf = stack.login_client("commune")
    try:
        page = c.get("/live")
        assert page.status_code == 200
        html = page.text
        assert "Phát trực tiếp" in html and "Xem lại trước khi phát" in html
        assert "Thôn Nà Pàn" in html and "Toàn xã" in html
        assert "icecast://" not in html
        # Local assets only: every script and stylesheet comes from this server.
        for src in re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html):
            assert src.startswith("/static/"), src
        c.cookies.set("loa_lang", "en")
        en = c.get("/live").text
        assert "Review before going live" in en and "Microphone level" in en
        assert "Stop broadcast" in en
        c.cookies.delete("loa_lang")
        r = c.post("/api/v1/broadcasts/1/mic?seq=0", content=b"x", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 404, r.text
        assert r.json()["detail"] == "Không tìm thấy bản tin số 1."
    finally:
        c.close()
    with stack.client() as anon:
        assert anon.get("/live").status_code in (302, 303, 401)
        assert anon.post("/api/v1/broadcasts/1/mic?seq=0", content=b"x").status_code == 401
    tech, _ = stack.login_client("technician")
    try:
        assert tech.get("/live").status_code in (302, 303, 403)
    finally:
        tech.close()
