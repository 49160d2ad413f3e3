"""``loa report verify`` recomputes the emergency alerts' figures of an evidence folder.

A forger who edits ``alert_airings.csv`` ("99 % started at 4 s") or a cluster's row of
``alert_clusters.csv`` and rewrites ``MANIFEST.sha256`` to match passes every hash: only the
recomputation (``alerts.evidence.check_alert_tables``, with the writer's own formula
``alerts.figures.start_figures``) catches it. The period is real: the alert is received and
aired by the real service, its proof-of-play rows are the dispatcher's tables, the folder is
written and checked by the ``loa`` command as the composition wires it (``system/cli``)."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pytest

from alerts.evidence import (
    AlertEvidenceError,
    check_alert_tables,
    period_lines,
    read_alert_tables,
)
from alerts.figures import start_figures
from system.cli import main
from tests.alerts import capdocs as d
from tests.alerts.conftest import record_airing

ALERT_FILES = ("alerts.csv", "alert_airings.csv", "alert_clusters.csv", "alert_steps.csv")


def _all_started(env, broadcast_id: int, received_ms: int) -> None:
    """The five targeted clusters start 2, 3, 4, 5 and 6 s after reception: 50 % at 4 s,
    99 % (the fifth) at 6 s."""
    nodes = ("hvt-01", "hvt-02", "hvt-03", "mp-01", "mp-02")
    record_airing(
        env,
        broadcast_id,
        received_ms,
        [(node, "started", received_ms + 2_000 + 1_000 * k, None) for k, node in enumerate(nodes)],
        updated_ms=received_ms + 7_000,
    )


def _rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def _write_rows(path: Path, rows: list[list[str]]) -> None:
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")


def _forge_manifest(folder: Path) -> None:
    """What a forger does after editing: every hash in the manifest made to match again."""
    manifest = folder / "MANIFEST.sha256"
    lines = []
    for line in manifest.read_text(encoding="utf-8").splitlines():
        _, _, name = line.partition("  ")
        if (folder / name).is_file():
            lines.append(f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}")
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _edit(path: Path, row_match, column: str, value: str) -> None:
    rows = _rows(path)
    col = rows[0].index(column)
    hits = [r for r in rows[1:] if row_match(r)]
    assert hits, "the row to edit is in the file"
    for r in hits:
        r[col] = value
    _write_rows(path, rows)


def _verify(capsys, folder: Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["report", "verify", str(folder)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def period(env, tmp_path, capsys):
    """An exported evidence folder of a period with one aired alert, and its ids."""
    out = env.alerts.receive(d.flood(communes=["c0", "c1"]), source="api", trusted_source=True)
    [bid] = out["broadcast_ids"]
    received = env.alerts.summary(out["id"])["received_ms"]
    _all_started(env, bid, received)
    folder = tmp_path / "ev"
    code = main(
        ["report", "8.3", "--period", "last30", "--evidence", str(folder), "--db", env.db.url]
    )
    assert code == 0, capsys.readouterr()
    return folder, out["id"], bid, received


def test_verify_recomputes_the_airing_figures_a_forger_changed(env, period, capsys):
    folder, alert_id, bid, received = period
    [airing] = list(csv.DictReader(io.StringIO((folder / "alert_airings.csv").read_text())))
    assert (airing["targeted"], airing["started"], airing["p50_s"], airing["p99_s"]) == (
        "5",
        "5",
        "4.0",
        "6.0",
    )
    # The filed report's alert line states the same figures, from the same function.
    with env.db.session() as s:
        [line] = period_lines(s, received - 1, received + 1, None)
    assert (line["targeted"], line["started"]) == (5, 5)
    assert (str(line["first_started_s"]), str(line["p99_s"])) == ("2.0", "6.0")

    code, out, err = _verify(capsys, folder)
    assert code == 0, out + err
    assert "Khớp" in out and "1 lượt phát của 1 cảnh báo khẩn cấp" in out

    # "99 % started at 4 s", manifest rewritten to match: every hash is right.
    original = (folder / "alert_airings.csv").read_bytes()
    _edit(folder / "alert_airings.csv", lambda r: r[1] == str(bid), "p99_s", "4.0")
    _forge_manifest(folder)
    code, out, err = _verify(capsys, folder)
    assert code == 3, out
    assert "KHÔNG khớp" in out and "khác mã SHA-256" not in out
    assert f"cảnh báo {alert_id} (KTTV-LS-2026-001), lượt phát {bid}, cột p99_s" in out
    assert "ghi '4.0', tính lại '6.0'" in out
    assert err == ""

    # Back to the true airing figures; now a cluster that started is made "never started"
    # in alert_clusters.csv (consistently: played 0, no start time): the airing's stated
    # figures no longer follow from the cluster rows.
    (folder / "alert_airings.csv").write_bytes(original)
    path = folder / "alert_clusters.csv"
    _edit(path, lambda r: r[2] == "mp-02", "played", "0")
    _edit(path, lambda r: r[2] == "mp-02", "started_ms", "")
    _forge_manifest(folder)
    code, out, _ = _verify(capsys, folder)
    assert code == 3, out
    assert f"lượt phát {bid}, cột started: ghi '5', tính lại '4'" in out
    assert f"lượt phát {bid}, cột p99_s: ghi '6.0', tính lại ''" in out


def test_malformed_alert_tables_are_named_not_a_traceback(period, capsys):
    folder = period[0]
    path = folder / "alert_clusters.csv"
    original = path.read_bytes()
    _edit(path, lambda r: r[2] == "hvt-01", "started_ms", "4 giây")
    _forge_manifest(folder)
    code, out, err = _verify(capsys, folder)
    assert code == 3 and err == ""
    assert "không đọc được: Tệp alert_clusters.csv, dòng 2, cột started_ms" in out
    assert "'4 giây' không phải số nguyên" in out

    path.write_bytes(original)
    airings = folder / "alert_airings.csv"
    rows = _rows(airings)
    col = rows[0].index("p99_s")
    _write_rows(airings, [r[:col] + r[col + 1 :] for r in rows])
    _forge_manifest(folder)
    code, out, err = _verify(capsys, folder)
    assert code == 3 and err == ""
    assert "Tệp alert_airings.csv thiếu cột p99_s" in out

    # A folder with one alert table gone (and the manifest rewritten without it).
    airings.unlink()
    _forge_manifest(folder)
    code, out, _ = _verify(capsys, folder)
    assert code == 3 and "Thiếu tệp alert_airings.csv" in out


def test_a_folder_without_alert_tables_verifies_as_before(period, capsys):
    folder = period[0]
    for name in ALERT_FILES:
        (folder / name).unlink()
    _forge_manifest(folder)
    code, out, _ = _verify(capsys, folder)
    assert code == 0, out
    assert out.startswith("Khớp: tính lại") and "cảnh báo" not in out


# --------------------------------------------------------------------------- pure checks


def _tables(changes: dict | None = None) -> dict[str, list[dict[str, str]]]:
    """One alert, one airing of two clusters, one started at +3 s, as the writer writes."""
    received = 1_780_000_000_000
    fig = start_figures(2, [received + 3_000], received)
    tables = {
        "alerts.csv": [
            {
                "alert_id": "7",
                "identifier": "X-1",
                "state": "airing",
                "state_label": "Đang phát",
                "received_ms": str(received),
                "received_at": "2026-05-29T03:26:40+07:00",
                "approved_ms": "",
                "approved_at": "",
                "clusters_targeted": "2",
                "broadcast_ids": "11",
            }
        ],
        "alert_airings.csv": [
            {
                "alert_id": "7",
                "broadcast_id": "11",
                **{k: "" if v is None else str(v) for k, v in fig.items()},
            }
        ],
        "alert_clusters.csv": [
            {"alert_id": "7", "broadcast_id": "11", "node_id": "a", "played": "1"}
            | {"started_ms": str(received + 3_000)},
            {"alert_id": "7", "broadcast_id": "11", "node_id": "b", "played": "0"}
            | {"started_ms": ""},
        ],
        "alert_steps.csv": [],
    }
    for (table, i, col), value in (changes or {}).items():
        tables[table][i][col] = value
    return tables


def test_check_alert_tables_accepts_what_the_writer_writes():
    assert check_alert_tables(_tables()) == []


def test_check_alert_tables_names_inconsistent_rows():
    said = check_alert_tables(_tables({("alert_clusters.csv", 1, "played"): "1"}))
    assert any("cụm loa b: cột played ghi '1' nhưng started_ms ghi ''" in m for m in said)
    said = check_alert_tables(_tables({("alerts.csv", 0, "broadcast_ids"): "11;12"}))
    assert any("cột broadcast_ids: ghi '11;12'" in m for m in said)
    said = check_alert_tables(_tables({("alerts.csv", 0, "clusters_targeted"): "9"}))
    assert any("cột clusters_targeted: ghi 9, nhiều hơn 2" in m for m in said)
    said = check_alert_tables(_tables({("alerts.csv", 0, "state_label"): "Đã hủy"}))
    assert any("cột state_label: ghi 'Đã hủy', tính lại 'Đang phát'" in m for m in said)
    said = check_alert_tables(_tables({("alerts.csv", 0, "received_at"): "hôm qua"}))
    assert any("cột received_at: ghi 'hôm qua'" in m for m in said)


def test_check_alert_tables_refuses_non_numeric_figures_with_both_languages():
    with pytest.raises(AlertEvidenceError) as err:
        check_alert_tables(_tables({("alert_airings.csv", 0, "p50_s"): "nhanh"}))
    assert "alert_airings.csv, dòng 2, cột p50_s: 'nhanh' không phải số" in err.value.message
    assert "'nhanh' is not a number" in err.value.message_en
    with pytest.raises(AlertEvidenceError, match="received_ms"):
        check_alert_tables(_tables({("alerts.csv", 0, "received_ms"): "x"}))


def test_read_alert_tables_of_a_folder_without_them_is_none(tmp_path):
    assert read_alert_tables(tmp_path) is None
    (tmp_path / "alerts.csv").write_bytes(b"\xff\xfe garbage")
    with pytest.raises(AlertEvidenceError, match="không phải văn bản UTF-8|thiếu cột|Thiếu"):
        read_alert_tables(tmp_path)
