"""As-of queries over the register's validity intervals, and proof that evaluating a
province costs a fixed number of queries (no query per commune, village or cluster)."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import event

from indicator.evaluate import evaluate
from indicator.periods import parse_period
from registry import history
from tests.indicator.world import DAY, ict

JUL, OCT = ict(2026, 7, 1), ict(2026, 10, 1)
MERGE = ict(2026, 8, 15)


def _merged(world):
    a = world.commune("A", "Xã Bắc Xa")
    b = world.commune("B", "Xã Bính Xá")
    v1 = world.village("A-1", "Nà Pàn", a)
    v2 = world.village("B-1", "Khau Bang", b)
    world.node("n1", v1)
    world.node("n2", v1, from_ms=ict(2026, 9, 1))
    world.move_village(v1, b, MERGE)
    world.retire_commune(a, b, MERGE)
    world.rename("commune", b, "Xã Đình Lập", MERGE)
    world.rename("village", v1, "Thôn Nà Pàn Mới", MERGE)
    return a, b, v1, v2


def test_villages_of_a_commune_over_a_period(world, db):
    a, b, v1, v2 = _merged(world)
    with db.session() as s:
        assert [
            (x.member_id, x.start_ms, x.end_ms) for x in history.villages_of_commune(s, a, JUL, OCT)
        ] == [(v1, JUL, MERGE)]
        assert sorted(
            (x.member_id, x.start_ms, x.end_ms) for x in history.villages_of_commune(s, b, JUL, OCT)
        ) == sorted([(v2, JUL, OCT), (v1, MERGE, OCT)])
        assert history.villages_of_commune(s, a, MERGE, OCT) == []
        bulk = history.villages_by_commune(s, JUL, OCT)
        assert {k: len(v) for k, v in bulk.items()} == {a: 1, b: 2}
        assert [x.owner_id for x in history.communes_of_village(s, v1, JUL, OCT)] in (
            [a, b],
            [b, a],
        )


def test_nodes_of_a_village_over_a_period(world, db):
    _a, _b, v1, _v2 = _merged(world)
    with db.session() as s:
        spans = history.nodes_of_village(s, v1, JUL, OCT)
        assert sorted((x.member_id, x.start_ms, x.end_ms) for x in spans) == [
            ("n1", JUL, OCT),
            ("n2", ict(2026, 9, 1), OCT),
        ]
        assert [x.member_id for x in history.nodes_of_village(s, v1, JUL, JUL + DAY)] == ["n1"]
        assert set(history.nodes_by_village(s, JUL, OCT)) == {v1}


def test_names_as_they_were(world, db):
    a, b, v1, _v2 = _merged(world)
    with db.session() as s:
        assert history.name_at(s, "commune", b, MERGE - 1) == "Xã Bính Xá"
        assert history.name_at(s, "commune", b, MERGE) == "Xã Đình Lập"
        assert history.name_at(s, "commune", a, MERGE + DAY) == "Xã Bắc Xa"  # never renamed
        assert history.names_at(s, "village", [v1], JUL) == {v1: "Nà Pàn"}
        assert history.names_at(s, "village", [v1], OCT) == {v1: "Thôn Nà Pàn Mới"}
        assert history.name_at(s, "village", 999, JUL) is None
        alive = [c.code for c in history.communes_existing(s, MERGE, OCT)]
        assert alive == ["B"]
        assert [c.code for c in history.communes_existing(s, JUL, OCT)] == ["A", "B"]


@contextmanager
def _count_queries(db):
    statements: list[str] = []

    def before(_conn, _cursor, statement, *_args):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", before)
    try:
        yield statements
    finally:
        event.remove(db.engine, "before_cursor_execute", before)


def _province(world, n: int, prefix: str) -> None:
    for i in range(n):
        cid = world.commune(f"{prefix}{i}", f"Xã {prefix}{i}")
        for j in range(3):
            vid = world.village(f"{prefix}{i}-{j}", f"Thôn {j}", cid)
            node = world.node(f"{prefix}{i}-{j}-n", vid)
            world.transitions(
                node, [(JUL - DAY, True), (JUL + 5 * DAY, False), (JUL + 6 * DAY, True)]
            )
            world.airing(JUL + (i * 3 + j) * DAY, {node: "finished"})


def test_evaluation_query_count_does_not_grow_with_the_province(world, db):
    period = parse_period("2026-Q3", now_ms=OCT + DAY)
    _province(world, 2, "S")
    with db.session() as s, _count_queries(db) as small:
        assert len(evaluate(s, period, now=OCT + DAY).communes) == 2
    _province(world, 10, "L")
    with db.session() as s, _count_queries(db) as large:
        assert len(evaluate(s, period, now=OCT + DAY).communes) == 12
    assert len(large) == len(small) <= 20
