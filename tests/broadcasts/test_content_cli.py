"""``loa tts`` and ``loa content`` as an operator runs them."""

from __future__ import annotations

import pytest

from loa.settings import get_settings
from system import cli

from .conftest import decode, make_tone


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("LOA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOA_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("LOA_CONTENT_CHIME", "false")
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def content_env(env, monkeypatch, databases):
    """``env`` with the run's database, empty (the CLI creates its tables), for the
    commands that store content."""
    database = databases.create(env / "content.db", schema=False)
    monkeypatch.setenv("LOA_DATABASE_URL", database.url)
    get_settings.cache_clear()
    yield env
    get_settings.cache_clear()
    databases.drop(database)


def test_tts_normalize_prints_the_spoken_form(env, capsys):
    assert cli.main(["tts", "normalize", "UBND xã: 09/13 thôn đạt 100% lúc 17h30"]) == 0
    assert capsys.readouterr().out.strip() == (
        "ủy ban nhân dân xã: chín trên mười ba thôn đạt một trăm phần trăm lúc mười bảy giờ "
        "ba mươi phút"
    )


def test_tts_say_writes_a_playable_file(env, capsys):
    out = env / "ban-tin.mp3"
    assert (
        cli.main(
            [
                "tts",
                "say",
                "Kính thưa bà con, ngày 5/7 có lịch tiêm phòng.",
                "-o",
                str(out),
                "--engine",
                "gtts",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "gtts không dùng được" in captured.err  # no internet here: offline voice used
    d = decode(out)
    assert d.codec == "mp3" and d.channels == 1 and abs(d.integrated_lufs - -16) <= 1
    assert cli.main(["tts", "say", "   ", "-o", str(env / "x.mp3")]) == 1
    assert "trống" in capsys.readouterr().err


def test_content_add_and_list(content_env, capsys):
    env = content_env
    src = make_tone(env / "Họp thôn.flac", 1.5)
    assert (
        cli.main(["content", "add", str(src), "--title", "Họp thôn Nà Pàn", "--language", "tay"])
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("Đã thêm ct") and "LUFS" in out
    assert cli.main(["content", "list", "--search", "hop thon"]) == 0
    listing = capsys.readouterr().out
    assert "Họp thôn Nà Pàn" in listing and "tay" in listing and "— 1/1 mục" in listing
    bad = env / "hong.mp3"
    bad.write_text("không phải âm thanh", encoding="utf-8")
    assert cli.main(["content", "add", str(bad), "--title", "Hỏng"]) == 1
    assert "không phải là tệp âm thanh" in capsys.readouterr().err
