"""Merges, splits, renames and moves keep the history of what belonged where, and when."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from controller import commune_directory
from loa.timeutil import now_ms
from registry import changes as svc
from registry import queries
from registry.errors import ConflictError, InvalidInputError, NotFoundError
from registry.models import (
    Commune,
    NameHistory,
    Node,
    NodePlacement,
    Village,
    VillageMembership,
)
from tests.registry.conftest import ms


def _villages_of_as_of(s, commune_id: int, at_ms: int) -> set[str]:
    """Written straight against VillageMembership rows, independent of the query module."""
    rows = s.execute(
        select(Village.code)
        .join(VillageMembership, VillageMembership.village_id == Village.id)
        .where(
            VillageMembership.commune_id == commune_id,
            VillageMembership.valid_from_ms <= at_ms,
            (VillageMembership.valid_to_ms.is_(None)) | (VillageMembership.valid_to_ms > at_ms),
        )
    )
    return {code for (code,) in rows}


def _table_counts(s) -> dict[str, int]:
    return {
        model.__name__: s.scalar(select(func.count()).select_from(model))
        for model in (Commune, Village, VillageMembership, Node, NodePlacement, NameHistory)
    }


def test_merge_keeps_old_villages_of_the_merged_commune(small_registry):
    merge_at = ms(1, 7, 2025)
    with small_registry.session() as s:
        result = svc.merge_communes(s, "ls-doican", "ls-hoalac", merge_at)
    assert sorted(result.moved) == ["ls-doican-t01", "ls-doican-t02"]

    with small_registry.session() as s:
        doican = s.scalar(select(Commune).where(Commune.code == "ls-doican"))
        hoalac = s.scalar(select(Commune).where(Commune.code == "ls-hoalac"))
        before, after = ms(15, 6, 2025), ms(2, 7, 2025)
        # As of June, Đội Cấn still had its own two villages and Hòa Lạc only its one.
        assert _villages_of_as_of(s, doican.id, before) == {"ls-doican-t01", "ls-doican-t02"}
        assert _villages_of_as_of(s, hoalac.id, before) == {"ls-hoalac-t01"}
        # After the merge Đội Cấn has none and Hòa Lạc has all three.
        assert _villages_of_as_of(s, doican.id, after) == set()
        assert _villages_of_as_of(s, hoalac.id, after) == {
            "ls-doican-t01",
            "ls-doican-t02",
            "ls-hoalac-t01",
        }
        # The boundary is exact: [from, to) — at the merge instant the village is Hòa Lạc's.
        assert _villages_of_as_of(s, doican.id, merge_at - 1) == {"ls-doican-t01", "ls-doican-t02"}
        assert "ls-doican-t01" in _villages_of_as_of(s, hoalac.id, merge_at)
        # The old membership row was closed, not edited or deleted.
        t01 = s.scalar(select(Village).where(Village.code == "ls-doican-t01"))
        rows = s.scalars(
            select(VillageMembership)
            .where(VillageMembership.village_id == t01.id)
            .order_by(VillageMembership.valid_from_ms)
        ).all()
        assert [(r.commune_id, r.valid_from_ms, r.valid_to_ms) for r in rows] == [
            (doican.id, ms(1, 1, 2025), merge_at),
            (hoalac.id, merge_at, None),
        ]
        assert t01.commune_id == hoalac.id
        assert doican.retired_ms == merge_at and doican.merged_into_id == hoalac.id
        # The query module gives the same answer, also for the retired commune by code.
        assert [v.code for v in queries.villages_of_commune_at(s, "ls-doican", before)] == [
            "ls-doican-t01",
            "ls-doican-t02",
        ]
        assert queries.name_at(s, "commune", doican.id, before) == "Đội Cấn"
        assert queries.name_at(s, "commune", doican.id, after) is None
        # Clusters stayed in their villages.
        assert s.get(Node, "ls-doican-t01-a").village_id == t01.id


def test_merged_commune_refuses_further_changes_and_names_its_heir(small_registry):
    with small_registry.session() as s:
        svc.merge_communes(s, "ls-doican", "ls-hoalac", ms(1, 7, 2025))
    with small_registry.session() as s, pytest.raises(ConflictError) as err:
        svc.add_village(s, "ls-doican", "ls-doican-t09", "Thôn Mới")
    assert "đã ngừng từ 01/07/2025" in err.value.message
    assert "Hòa Lạc" in err.value.message


def test_failed_merge_changes_nothing(small_registry):
    with small_registry.session() as s:
        before = _table_counts(s)
    # Before the villages even existed: refused after nothing was written.
    with small_registry.session() as s, pytest.raises(InvalidInputError):
        svc.merge_communes(s, "ls-doican", "ls-hoalac", ms(1, 6, 2024))
    with small_registry.session() as s, pytest.raises(InvalidInputError):
        svc.merge_communes(s, "ls-doican", "ls-doican", ms(1, 7, 2025))
    with small_registry.session() as s, pytest.raises(NotFoundError):
        svc.merge_communes(s, "ls-doican", "khong-co", ms(1, 7, 2025))
    with small_registry.session() as s, pytest.raises(InvalidInputError) as err:
        svc.merge_communes(s, "ls-doican", "ls-hoalac", now_ms() + 86_400_000)
    assert "tương lai" in err.value.message
    with small_registry.session() as s:
        assert _table_counts(s) == before
        assert s.scalar(select(Commune).where(Commune.code == "ls-doican")).retired_ms is None


def test_rename_keeps_the_old_name_in_name_history(small_registry):
    rename_at = ms(1, 8, 2025)
    with small_registry.session() as s:
        svc.rename_commune(s, "ls-doican", "Đội Cấn Mới", rename_at)
        svc.rename_village(s, "ls-doican-t01", "Thôn Nà Pàn Trên", rename_at)
    with small_registry.session() as s:
        commune = s.scalar(select(Commune).where(Commune.code == "ls-doican"))
        assert commune.name == "Đội Cấn Mới" and commune.name_folded == "doi can moi"
        names = s.scalars(
            select(NameHistory)
            .where(NameHistory.entity == "commune", NameHistory.entity_id == commune.id)
            .order_by(NameHistory.valid_from_ms)
        ).all()
        assert [(n.name, n.valid_from_ms, n.valid_to_ms) for n in names] == [
            ("Đội Cấn", ms(1, 1, 2025), rename_at),
            ("Đội Cấn Mới", rename_at, None),
        ]
        village = s.scalar(select(Village).where(Village.code == "ls-doican-t01"))
        assert queries.name_at(s, "village", village.id, rename_at - 1) == "Thôn Nà Pàn"
        assert queries.name_at(s, "village", village.id, rename_at) == "Thôn Nà Pàn Trên"
        # The commune detail shows the history, dated for people.
        detail = commune_directory.commune_detail(s, commune.id)
        assert [(n.name, n.valid_from, n.valid_to) for n in detail.names] == [
            ("Đội Cấn", "01/01/2025", "01/08/2025"),
            ("Đội Cấn Mới", "01/08/2025", None),
        ]


def test_rename_refuses_same_name_and_time_before_current_name(small_registry):
    with small_registry.session() as s, pytest.raises(InvalidInputError) as err:
        svc.rename_commune(s, "ls-doican", "Đội  Cấn")  # spacing differences are the same name
    assert "đã mang tên" in err.value.message
    with small_registry.session() as s, pytest.raises(InvalidInputError) as err:
        svc.rename_commune(s, "ls-doican", "Đội Cấn Mới", ms(1, 6, 2024))
    assert "sớm hơn" in err.value.message


def test_merge_village_moves_its_clusters_with_history(small_registry):
    at = ms(1, 9, 2025)
    with small_registry.session() as s:
        result = svc.merge_villages(s, "ls-doican-t02", "ls-doican-t01", at)
    assert result.moved == ["ls-doican-t02-a"]
    with small_registry.session() as s:
        t01 = s.scalar(select(Village).where(Village.code == "ls-doican-t01"))
        t02 = s.scalar(select(Village).where(Village.code == "ls-doican-t02"))
        assert t02.retired_ms == at and t02.merged_into_id == t01.id
        assert queries.nodes_of_village_at(s, t02.id, at - 1) == ["ls-doican-t02-a"]
        assert queries.nodes_of_village_at(s, t02.id, at) == []
        assert queries.nodes_of_village_at(s, t01.id, at) == [
            "ls-doican-t01-a",
            "ls-doican-t01-b",
            "ls-doican-t02-a",
        ]
        assert s.get(Node, "ls-doican-t02-a").village_id == t01.id
        doican = s.scalar(select(Commune).where(Commune.code == "ls-doican"))
        assert [v.code for v in queries.villages_of_commune_at(s, doican.id, at)] == [
            "ls-doican-t01"
        ]
        assert queries.village_of_node_at(s, "ls-doican-t02-a", at - 1).code == "ls-doican-t02"


def test_split_moves_chosen_villages_to_a_new_commune(small_registry):
    at = ms(1, 10, 2025)
    with small_registry.session() as s:
        new = svc.split_commune(s, "ls-doican", "ls-khaubang", "Khau Bang", ["ls-doican-t02"], at)
        new_id = new.id
    with small_registry.session() as s:
        new = s.get(Commune, new_id)
        assert new.created_ms == at and new.district_id is not None  # keeps the district
        assert [v.code for v in queries.villages_of_commune_at(s, new_id, at)] == ["ls-doican-t02"]
        assert [v.code for v in queries.villages_of_commune_at(s, "ls-doican", at - 1)] == [
            "ls-doican-t01",
            "ls-doican-t02",
        ]
        assert queries.commune_of_village_at(s, "ls-doican-t02", at - 1).code == "ls-doican"
    with small_registry.session() as s, pytest.raises(ConflictError):
        svc.split_commune(s, "ls-doican", "ls-x", "X", ["ls-hoalac-t01"], at)


def test_move_and_retire_node_close_placements(small_registry):
    with small_registry.session() as s:
        svc.move_node(s, "ls-doican-t01-b", "ls-doican-t02", ms(1, 3, 2025))
        svc.retire_node(s, "ls-doican-t01-a", ms(1, 4, 2025))
    with small_registry.session() as s:
        rows = s.scalars(
            select(NodePlacement)
            .where(NodePlacement.node_id == "ls-doican-t01-b")
            .order_by(NodePlacement.valid_from_ms)
        ).all()
        assert [r.valid_to_ms for r in rows] == [ms(1, 3, 2025), None]
        retired = s.get(Node, "ls-doican-t01-a")
        assert retired.retired_ms == ms(1, 4, 2025) and retired.village_id is None
        assert queries.village_of_node_at(s, "ls-doican-t01-a", ms(2, 4, 2025)) is None
        assert queries.village_of_node_at(s, "ls-doican-t01-a", ms(1, 2, 2025)).code == (
            "ls-doican-t01"
        )
    with small_registry.session() as s, pytest.raises(ConflictError) as err:
        svc.add_node(s, "ls-doican-t01-a", "ls-doican-t01")
    assert "đã ngừng sử dụng" in err.value.message


def test_retire_refuses_units_that_still_have_members(small_registry):
    with small_registry.session() as s, pytest.raises(ConflictError) as err:
        svc.retire_commune(s, "ls-doican")
    assert "còn 2 thôn" in err.value.message
    with small_registry.session() as s, pytest.raises(ConflictError) as err:
        svc.retire_village(s, "ls-hoalac-t01")
    assert "còn 1 cụm loa" in err.value.message
    with small_registry.session() as s:
        svc.retire_node(s, "ls-hoalac-t01-a", ms(1, 5, 2025))
        svc.retire_village(s, "ls-hoalac-t01", ms(2, 5, 2025))
        svc.retire_commune(s, "ls-hoalac", ms(3, 5, 2025))
    with small_registry.session() as s:
        hoalac = s.scalar(select(Commune).where(Commune.code == "ls-hoalac"))
        assert hoalac.retired_ms == ms(3, 5, 2025)
        assert queries.name_at(s, "commune", hoalac.id, ms(1, 5, 2025)) == "Hòa Lạc"


def test_bad_fields_are_refused_in_vietnamese(small_registry):
    cases = [
        (
            lambda s: svc.add_node(s, "ab", "ls-doican-t01"),
            "mã cụm 'ab' không hợp lệ (3-64 ký tự A-Z a-z 0-9 _ -)",
        ),
        (lambda s: svc.add_node(s, "ls-x-1", "ls-doican-t01", speakers=9), "số loa '9'"),
        (lambda s: svc.add_commune(s, "ls-x", "  ", "LS"), "thiếu tên xã"),
        (lambda s: svc.add_commune(s, "ls-x", "X", "LS", station_kind="am"), "loại đài 'am'"),
        (
            lambda s: svc.add_commune(s, "ls-x", "X", "LS", lat=123.0),
            "vĩ độ 123 nằm ngoài khoảng -90..90",
        ),
        (lambda s: svc.add_commune(s, "ls-doican", "X", "LS"), "Mã xã 'ls-doican' đã có"),
        (lambda s: svc.add_village(s, "ls-x", "ls-x-t01", "X"), "Không tìm thấy xã 'ls-x'"),
        (
            lambda s: svc.add_village(s, "ls-doican", "ls-doican-t09", '=HYPERLINK("x")'),
            "tên thôn không được bắt đầu bằng dấu =, +, -, @",
        ),
    ]
    for action, message in cases:
        with (
            small_registry.session() as s,
            pytest.raises((InvalidInputError, ConflictError, NotFoundError)) as err,
        ):
            action(s)
        assert message in err.value.message
