"""Every Vietnamese string the pages and scripts show has an English entry, and pages follow
the language cookie."""

from __future__ import annotations

import re
from pathlib import Path

from dashboard.i18n import EN, JS_STRINGS, translate

DASHBOARD = Path(__file__).resolve().parents[2] / "dashboard"
CALL = re.compile(r"""\b_\(\s*(["'])(.+?)\1""")


def _template_strings() -> set[str]:
    found = set()
    for path in (DASHBOARD / "templates").rglob("*.html"):
        found |= {m.group(2) for m in CALL.finditer(path.read_text())}
    return found


def _script_strings() -> set[str]:
    found = set()
    for path in (DASHBOARD / "static").rglob("*.js"):
        found |= {m.group(2) for m in CALL.finditer(path.read_text())}
    return found


def test_every_template_string_has_english():
    strings = _template_strings()
    assert len(strings) > 50
    missing = sorted(s for s in strings if s not in EN)
    assert missing == []


def test_every_script_string_is_sent_to_the_browser_and_translated():
    strings = _script_strings()
    assert strings, "scripts use _()"
    assert sorted(strings - set(JS_STRINGS)) == []
    assert sorted(s for s in JS_STRINGS if s not in EN) == []


def test_translate_with_values():
    msg = "Đăng nhập sai quá nhiều lần. Vui lòng thử lại sau {minutes} phút."
    assert translate("vi", msg, minutes=4) == (
        "Đăng nhập sai quá nhiều lần. Vui lòng thử lại sau 4 phút."
    )
    assert translate("en", msg, minutes=4) == "Too many failed logins. Try again in 4 minutes."
    assert translate("en", "chuỗi lạ") == "chuỗi lạ"  # falls back to Vietnamese


def test_language_cookie_switches_pages(stack):
    with stack.client() as c:
        assert "Đăng nhập" in c.get("/login").text
        r = c.get("/lang/en?next=/login")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        page = c.get("/login").text
        assert "Log in" in page and 'lang="en"' in page
        # Only same-site paths are followed after switching.
        assert c.get("/lang/vi?next=https://evil.example").headers["location"] == "/"


def test_every_flash_message_has_english():
    from dashboard.routes.ui import FLASH

    assert sorted(m for m, _kind in FLASH.values() if m not in EN) == []


def test_a_flash_takes_only_small_counts_from_the_url():
    """A redirect may name a message and, for a self-test, two speaker counts; anything else
    in the URL (text, a huge or negative number) shows no message at all."""
    from starlette.requests import Request

    from dashboard.routes.ui import flash_message

    def flash(query: str, lang: str = "vi"):
        return flash_message(
            Request({"type": "http", "query_string": query.encode(), "headers": []}), lang
        )

    assert flash("ok=selftest_pass&sp=2&st=2") == ("Tự kiểm tra đạt: 2/2 loa hoạt động.", "ok")
    assert flash("ok=selftest_fail&sp=1&st=2", "en") == (
        "Self-test failed: 1/2 speakers working.",
        "error",
    )
    assert flash("ok=cmd_pending")[1] == "error"
    for bad in (
        "ok=selftest_pass",
        "ok=selftest_pass&sp=x&st=2",
        "ok=selftest_pass&sp=-1&st=2",
        "ok=selftest_pass&sp=2&st=99999",
        "ok=Bạn đã bị hack",
        "ok=",
    ):
        assert flash(bad) is None, bad


def test_node_events_read_as_sentences_in_both_languages():
    from dashboard.i18n import EVENT_LABELS, FAULT_LABELS, PHASE_LABELS, describe_event

    for labels in (EVENT_LABELS, FAULT_LABELS, PHASE_LABELS):
        assert sorted(m for m in labels.values() if m not in EN) == []
    ack = {"type": "cmd_ack", "ts": 1, "cmd_id": "8fc9a91d8d17", "ok": True}
    assert describe_event("vi", ack) == "Đã thực hiện lệnh (8fc9a91d)"
    refused = {**ack, "ok": False, "error": "expired"}
    assert describe_event("en", refused) == "Command refused: the command expired (8fc9a91d)"
    st = {
        "type": "selftest",
        "ok": False,
        "speakers_ok": 1,
        "speakers_total": 2,
        "detail": "loa 2 hở mạch",
    }
    assert describe_event("vi", st) == "Không đạt: 1/2 loa hoạt động — loa 2 hở mạch"
    failed = {
        "type": "playback",
        "broadcast_id": "b-12",
        "phase": "failed",
        "error": "sha256 mismatch",
    }
    assert describe_event("vi", failed) == "Phát lỗi «b-12»: tệp tải về bị hỏng (sai mã kiểm tra)"
    # Issue 18: the node's error codes and the wire id read as words and the bulletin's title.
    stream = {"type": "playback", "broadcast_id": "b29-a3469", "phase": "failed", "error": "stream"}
    assert describe_event("vi", stream, {"b29-a3469": "Họp thôn"}) == (
        "Phát lỗi «Họp thôn»: không nhận được luồng phát trực tiếp"
    )
    assert describe_event("en", stream) == (
        "Playback failed «b29-a3469»: could not receive the live stream"
    )
    assert describe_event("en", {"type": "fault", "code": "power_lost"}) == "Mains power lost"
    # A type this version does not know keeps its fields rather than vanishing.
    assert describe_event("vi", {"type": "x_vendor", "ts": 1, "temp": 71}) == "temp: 71"
