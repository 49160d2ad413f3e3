"""The alerts of a report period in its evidence folder and its filed report (issue 19,
item 6), through the ``loa`` command as the composition wires it (``system/cli``).

The alert is received and aired by the real service; the proof-of-play rows of its airing
are the ones the dispatcher writes (``Airing``/``AiringTarget`` with phases and start times,
as tests/scheduler seeds them), so every outcome a cluster can have is present at once."""

from __future__ import annotations

import csv
import io
import subprocess

from docx import Document

from system.cli import main
from tests.alerts import capdocs as d
from tests.alerts.conftest import record_airing


def _proof_rows(env, broadcast_id: int, received_ms: int) -> None:
    """hvt-01/hvt-02 started 2 s and 4 s after reception, mp-01 failed to fetch, hvt-03
    acknowledged and never started, mp-02 never got the command."""
    record_airing(
        env,
        broadcast_id,
        received_ms,
        [
            ("hvt-01", "started", received_ms + 2_000, None),
            ("hvt-02", "finished", received_ms + 4_000, None),
            ("mp-01", "failed", None, "tải âm thanh: HTTP 503"),
            ("hvt-03", "acked", None, None),
        ],
        updated_ms=received_ms + 5_000,
    )


def _csv(path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_period_evidence_holds_every_alert_and_verify_checks_it(env, tmp_path, capsys):
    out = env.alerts.receive(d.flood(communes=["c0", "c1"]), source="api", trusted_source=True)
    [bid] = out["broadcast_ids"]
    received = env.alerts.summary(out["id"])["received_ms"]
    _proof_rows(env, bid, received)
    folder = tmp_path / "ev"
    code = main(
        ["report", "8.3", "--period", "last30", "--evidence", str(folder), "--db", env.db.url]
    )
    assert code == 0, capsys.readouterr()

    [alert] = _csv(folder / "alerts.csv")
    assert alert["alert_id"] == str(out["id"]) and alert["state"] == "airing"
    assert alert["headline"] == "Cảnh báo lũ quét, sạt lở đất cấp 3"
    assert alert["received_ms"] == str(received) and alert["decision"] == "auto"
    assert alert["clusters_targeted"] == "5"
    [airing] = _csv(folder / "alert_airings.csv")
    assert (airing["targeted"], airing["started"]) == ("5", "2")
    assert airing["first_started_ms"] == str(received + 2_000)
    assert airing["first_started_s"] == "2.0"
    assert airing["p50_s"] == "" and airing["p99_s"] == ""  # 2 of 5 is not half
    clusters = {r["node_id"]: r for r in _csv(folder / "alert_clusters.csv")}
    assert sorted(clusters) == ["hvt-01", "hvt-02", "hvt-03", "mp-01", "mp-02"]
    assert {n for n, r in clusters.items() if r["played"] == "1"} == {"hvt-01", "hvt-02"}
    assert clusters["hvt-02"]["started_ms"] == str(received + 4_000)
    assert clusters["mp-01"]["reason"] == "failed: tải âm thanh: HTTP 503"
    assert clusters["hvt-03"]["reason"] == "acked"
    assert clusters["mp-02"]["reason"].startswith("Chưa được gửi lệnh")
    assert clusters["mp-01"]["commune"] == "Mai Pha" and clusters["hvt-03"]["village"] == "Khối 2"
    steps = [r["action"] for r in _csv(folder / "alert_steps.csv")]
    assert steps[:3] == ["received", "area_matched", "aired"]

    manifest = (folder / "MANIFEST.sha256").read_text(encoding="utf-8")
    for name in ("alerts.csv", "alert_airings.csv", "alert_clusters.csv", "alert_steps.csv"):
        assert f"  {name}\n" in manifest
    check = subprocess.run(
        ["sha256sum", "-c", "MANIFEST.sha256"], cwd=folder, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    capsys.readouterr()
    assert main(["report", "verify", str(folder)]) == 0
    assert "Khớp" in capsys.readouterr().out
    # A cluster's "not played" turned into "played": the hash no longer matches.
    path = folder / "alert_clusters.csv"
    path.write_text(
        path.read_text(encoding="utf-8").replace(
            ",mp-01,Thôn Nà Chuông,Mai Pha,0,", ",mp-01,Thôn Nà Chuông,Mai Pha,1,"
        ),
        encoding="utf-8",
    )
    assert main(["report", "verify", str(folder)]) == 3
    said = capsys.readouterr().out
    assert "alert_clusters.csv khác mã SHA-256 đã ghi" in said
    path.unlink()
    assert main(["report", "verify", str(folder)]) == 3
    assert "thiếu alert_clusters.csv" in capsys.readouterr().out


def test_commune_scope_keeps_only_alerts_reaching_it(env, tmp_path, capsys):
    env.alerts.receive(d.flood(communes=["c0"]), source="api", trusted_source=True)
    for scope, expected in (("commune:c2", 0), ("commune:c0", 1), ("province", 1)):
        folder = tmp_path / scope.replace(":", "-")
        args = ["report", "8.3", "--period", "last30", "--scope", scope]
        assert main([*args, "--evidence", str(folder), "--db", env.db.url]) == 0
        assert len(_csv(folder / "alerts.csv")) == expected, scope
    assert main(["report", "verify", str(tmp_path / "commune-c2")]) == 0
    capsys.readouterr()


def test_filed_report_lists_the_alerts_of_the_period(env, tmp_path, capsys):
    out = env.alerts.receive(d.flood(communes=["c0", "c1"]), source="api", trusted_source=True)
    [bid] = out["broadcast_ids"]
    _proof_rows(env, bid, env.alerts.summary(out["id"])["received_ms"])
    docx = tmp_path / "bao-cao.docx"
    pdf = tmp_path / "bao-cao.pdf"
    for path in (docx, pdf):
        assert (
            main(["report", "8.3", "--period", "last30", "-o", str(path), "--db", env.db.url]) == 0
        )
    doc = Document(str(docx))
    texts = [p.text for p in doc.paragraphs]
    assert "V. CẢNH BÁO KHẨN CẤP TRONG KỲ" in texts
    table = next(t for t in doc.tables if t.rows[0].cells[0].text == "Nhận lúc")
    row = [c.text for c in table.rows[1].cells]
    assert row[1:6] == ["Cảnh báo lũ quét, sạt lở đất cấp 3", "Extreme", "Đang phát", "5", "2"]
    assert row[6] == "2" and row[7] == "—"
    text = subprocess.run(
        ["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "V. CẢNH BÁO KHẨN CẤP TRONG KỲ" in text
    assert "Cảnh báo lũ quét, sạt lở đất cấp 3" in text
    capsys.readouterr()
