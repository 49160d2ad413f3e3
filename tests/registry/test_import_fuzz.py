"""Property-based registry imports: any text, and any mutation of a valid CSV, either
imports or is refused with the registry's own error — never a crash, never half-written."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from loa.db import Database
from registry import importer
from registry.demo import demo_yaml
from registry.errors import RegistryError
from registry.models import Commune, Node, NodePlacement, Village, VillageMembership

MODELS = (Commune, Village, VillageMembership, Node, NodePlacement)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, databases):
    db = databases.create(tmp_path_factory.mktemp("fuzz-reg") / "reg.db")
    with db.session() as s:
        importer.import_text(s, demo_yaml(), "yaml")
    with db.session() as s:
        valid_csv = importer.export_text(s, "csv")
    yield db, valid_csv
    databases.drop(db)


def counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        return {m.__name__: s.scalar(select(func.count()).select_from(m)) for m in MODELS}


def attempt(db: Database, text: str, fmt: str) -> bool:
    """True when imported, False when refused by the registry (any other error fails)."""
    try:
        with db.session() as s:
            importer.import_text(s, text, fmt)
        return True
    except RegistryError as exc:
        assert str(exc).strip(), "a refusal must say why"
        return False


cells = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        ["", "x", "ab", "-1", "200", "1e9", "maybe", "=cmd()", "<script>", "Đội Cấn", "ls-x-01"]
    ),
)


@st.composite
def mutated_csv(draw, valid: str) -> str:
    rows = list(csv.reader(io.StringIO(valid)))
    for _ in range(draw(st.integers(1, 4))):
        r = draw(st.integers(1, len(rows) - 1))
        c = draw(st.integers(0, len(rows[r]) - 1))
        rows[r][c] = draw(cells)
    if draw(st.booleans()):
        rows = rows[: draw(st.integers(1, len(rows)))]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue()


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_mutated_csv_imports_or_is_refused_without_half_writes(seeded, data):
    db, valid = seeded
    text = data.draw(mutated_csv(valid))
    before = counts(db)
    if not attempt(db, text, "csv"):
        assert counts(db) == before


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=st.text(max_size=400), fmt=st.sampled_from(["csv", "yaml"]))
def test_arbitrary_text_never_crashes_the_import(seeded, text, fmt):
    db, _ = seeded
    before = counts(db)
    if not attempt(db, text, fmt):
        assert counts(db) == before
