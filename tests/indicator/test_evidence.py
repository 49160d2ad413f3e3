"""Evidence others can recompute (issue 16): ``loa report ... --evidence DIR`` writes the raw
rows as CSV with a SHA-256 manifest; ``loa report verify DIR`` recomputes every verdict from
the folder alone, says they match, and catches a changed row."""

from __future__ import annotations

import csv
import hashlib
import subprocess

from system.cli import main
from tests.indicator.world import DAY, ict, small_province

Q3_START, Q3_END = ict(2026, 7, 1), ict(2026, 10, 1)


def _loa(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def _rewrite(path, change) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    change(rows)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def test_evidence_folder_recomputes_and_detects_tampering(world, db, tmp_path, capsys):
    small_province(world, Q3_START, Q3_END)
    # A watch gap and a bridged node, so coverage and continuity are in the evidence too.
    world.continuity("a1-n", Q3_START + 10 * DAY, Q3_START + 11 * DAY)
    folder = tmp_path / "bang-chung"
    code, out, err = _loa(
        capsys, "report", "8.3", "--period", "2026-Q3", "--db", db.url, "--evidence", str(folder)
    )
    assert code == 0, err
    assert "MANIFEST.sha256" in out
    names = sorted(p.name for p in folder.iterdir())
    for expected in (
        "MANIFEST.sha256",
        "airings.csv",
        "attestations.csv",
        "criteria.csv",
        "transitions.csv",
        "verdicts.csv",
        "watch.csv",
        "watch_gaps.csv",
    ):
        assert expected in names
    # The manifest is what sha256sum checks.
    check = subprocess.run(
        ["sha256sum", "-c", "MANIFEST.sha256"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr

    code, out, _ = _loa(capsys, "report", "verify", str(folder))
    assert code == 0, out
    assert out.startswith("Khớp: tính lại 3 xã từ dữ liệu gốc cho cùng kết quả")

    # A changed transition (Bản Cắm's outage erased) is caught by the manifest...
    transitions = folder / "transitions.csv"
    _rewrite(
        transitions,
        lambda rows: rows.__setitem__(
            slice(None), [r for r in rows if not (r[0] == "b1-n" and r[3] == "0")]
        ),
    )
    code, out, _ = _loa(capsys, "report", "verify", str(folder))
    assert code == 3
    assert "transitions.csv khác mã SHA-256 đã ghi" in out
    # ... and, with a manifest forged to match, by the recomputation itself.
    manifest = folder / "MANIFEST.sha256"
    lines = [
        (
            f"{hashlib.sha256(transitions.read_bytes()).hexdigest()}  transitions.csv"
            if line.endswith("  transitions.csv")
            else line
        )
        for line in manifest.read_text().splitlines()
    ]
    manifest.write_text("\n".join(lines) + "\n")
    code, out, _ = _loa(capsys, "report", "verify", str(folder))
    assert code == 3
    assert "KHÔNG khớp" in out and "verdict ghi 'fail', tính lại 'pass'" in out


def test_verify_refuses_a_folder_that_is_not_evidence(tmp_path, capsys):
    code, _, err = _loa(capsys, "report", "verify", str(tmp_path))
    assert code == 1 and "không có MANIFEST.sha256" in err
