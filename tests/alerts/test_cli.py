"""``loa alerts``: check, receive, list, show from a terminal; a bad file is a clear error."""

from __future__ import annotations

import pytest

from alerts import cli as alerts_cli
from system.cli import main
from tests.alerts import capdocs as d
from tests.alerts.conftest import make_env


@pytest.fixture
def cli_env(db, settings, monkeypatch):
    env = make_env(db, settings)
    monkeypatch.setattr(alerts_cli, "_service", lambda _args: (env.alerts, env.province))
    return env


def test_check_receive_list_show(cli_env, tmp_path, capsys):
    f = tmp_path / "lu.xml"
    f.write_bytes(d.flood(communes=["c0", "c1"]))
    assert main(["alerts", "check", str(f)]) == 0
    out = capsys.readouterr().out
    assert "tự động phát; 5 cụm loa" in out and "Mai Pha / Thôn Nà Chuông: mp-01, mp-02" in out
    assert cli_env.alerts.list(cli_env.province)["total"] == 0
    assert main(["alerts", "receive", str(f)]) == 0
    assert "Đang phát; 5 cụm loa" in capsys.readouterr().out
    assert main(["alerts", "receive", str(f)]) == 0
    assert "bỏ qua" in capsys.readouterr().out
    assert main(["alerts", "list"]) == 0
    assert "Tổng: 1 cảnh báo" in capsys.readouterr().out
    assert main(["alerts", "show", "1"]) == 0
    assert "Nhận tài liệu" in capsys.readouterr().out
    bad = tmp_path / "bad.xml"
    bad.write_bytes(b"<alert/>")
    assert main(["alerts", "receive", str(bad)]) == 1
    assert "(namespace)" in capsys.readouterr().err
    assert main(["alerts", "check", str(tmp_path / "khong-co.xml")]) == 1
    assert "Không đọc được tệp" in capsys.readouterr().err
