"""One alert's proof as a download (alerts.proof): the same facts as the page, and text that
came from outside (a rejection reason, CAP fields) never runs as a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import json

from alerts.proof import HEADER, proof_csv, proof_json
from loa.text import spreadsheet_text
from tests.alerts import capdocs as d


def _rows(body: bytes) -> list[dict[str, str]]:
    text = body.decode("utf-8")
    assert text.startswith("\ufeff")  # spreadsheets read the diacritics as UTF-8
    return list(csv.DictReader(io.StringIO(text[1:])))


def test_aired_alert_proof_lists_steps_figures_and_every_cluster_not_started(env):
    out = env.alerts.receive(d.flood(communes=["c0", "c1"]), source="api", trusted_source=True)
    report = env.alerts.report(env.province, out["id"])
    rows = _rows(proof_csv(report))
    assert list(rows[0]) == HEADER
    steps = [r["action"] for r in rows if r["section"] == "step"]
    assert steps[:3] == ["received", "area_matched", "aired"]
    [bid] = out["broadcast_ids"]
    airing = {
        r["action"]: r
        for r in rows
        if r["section"] == f"airing {bid}" and r["action"] != "not_started"
    }
    assert airing["targeted"]["value"] == "5" and airing["started"]["value"] == "0"
    assert airing["p99"]["value"] == "" and airing["p99"]["label"] == "99 % cụm loa đã phát"
    # Nothing has played in this test (no fleet): each targeted cluster is listed with why.
    missing = sorted(r["node_id"] for r in rows if r["action"] == "not_started")
    assert missing == sorted(["hvt-01", "hvt-02", "hvt-03", "mp-01", "mp-02"])
    assert all(r["detail"] for r in rows if r["action"] == "not_started")
    assert {r["commune"] for r in rows if r["action"] == "not_started"} == {
        "Hoàng Văn Thụ",
        "Mai Pha",
    }
    # JSON is the page's report, whole.
    assert json.loads(proof_json(report))["proof"]["targeted"] == 5


def test_formula_like_text_is_written_as_text(env):
    out = env.alerts.receive(
        d.flood(communes=["c0"], sender="other@example.org"), source="api", trusted_source=True
    )
    hostile = '=HYPERLINK("http://x","bấm")'
    env.alerts.reject(env.province, out["id"], hostile)
    rows = _rows(proof_csv(env.alerts.report(env.province, out["id"])))
    [rejected] = [r for r in rows if r["action"] == "rejected"]
    assert rejected["detail"].startswith("'" + hostile)  # shown as text, read back whole
    assert spreadsheet_text(rejected["detail"]).startswith(hostile)
    assert all(not v.startswith(("=", "+", "@")) for r in rows for v in r.values() if v)
