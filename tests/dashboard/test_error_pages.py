"""404 and 500 answer people in Vietnamese (English with the cookie), the API in JSON; a
crash never shows "Internal Server Error" or a traceback."""

from __future__ import annotations

from fastapi.testclient import TestClient

from dashboard.app import create_app
from system.root import api_context

HTML = {"Accept": "text/html"}


def test_missing_pages_and_crashes_answer_in_the_users_language(settings, db):
    app = create_app(api_context(settings, db))

    def boom() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/boom", boom)
    app.add_api_route("/api/v1/boom", boom)
    client = TestClient(app, raise_server_exceptions=False)
    r = client.get("/khong-co", headers=HTML)
    assert r.status_code == 404 and "Không tìm thấy trang này." in r.text
    assert "Lỗi 404" in r.text and "Not Found" not in r.text
    r = client.get("/boom", headers=HTML)
    assert r.status_code == 500 and "Máy chủ gặp lỗi" in r.text
    assert "secret internals" not in r.text and "Internal Server Error" not in r.text
    r = client.get("/api/v1/boom")
    assert r.status_code == 500 and r.json() == {
        "detail": "Máy chủ gặp lỗi; đã ghi lại để kỹ thuật viên xem. Hãy thử lại sau."
    }
    client.cookies.set("loa_lang", "en")
    r = client.get("/khong-co", headers=HTML)
    assert "This page does not exist." in r.text and "Error 404" in r.text
