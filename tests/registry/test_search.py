"""Search ignores diacritics and case ("Doi Can" finds "Đội Cấn") over communes, villages and
clusters, and still leads from an old (merged) name to where the unit went."""

from __future__ import annotations

import unicodedata

import pytest
from sqlalchemy import select

from controller import commune_directory
from registry import changes as svc
from registry import queries
from registry.demo import load_demo_province
from registry.models import Commune
from tests.registry.conftest import ms


@pytest.fixture
def demo_db(db):
    load_demo_province(db)
    return db


@pytest.mark.parametrize(
    "typed",
    [
        "Doi Can",
        "doi  can",
        "ĐỘI CẤN",
        "Đội Cấn",
        unicodedata.normalize("NFD", "Đội Cấn"),
        "can doi",
    ],
)
def test_commune_found_whatever_the_diacritics(demo_db, typed):
    with demo_db.session() as s:
        result = queries.search(s, typed)
    assert [hit.name for hit in result.communes] == ["Đội Cấn"]
    assert result.communes[0].code == "ls-doican" and not result.communes[0].retired


def test_villages_and_clusters_found_by_folded_name(demo_db):
    with demo_db.session() as s:
        result = queries.search(s, "na pan")
    assert [(h.name, h.commune.name) for h in result.villages] == [("Thôn Nà Pàn", "Đội Cấn")]
    assert [h.id for h in result.nodes] == ["ls-doican-t01-a", "ls-doican-t01-b", "ls-doican-t01-c"]
    assert result.nodes[0].village.name == "Thôn Nà Pàn"
    assert result.nodes[0].commune.name == "Đội Cấn"
    assert result.communes == []


def test_search_by_code_and_no_wildcards(demo_db):
    with demo_db.session() as s:
        assert [h.id for h in queries.search(s, "LS-DOICAN-T02-A").nodes] == ["ls-doican-t02-a"]
        assert [h.code for h in queries.search(s, "ls-hoalac").communes] == ["ls-hoalac"]
        empty = queries.search(s, "%")
        assert (empty.communes, empty.villages, empty.nodes) == ([], [], [])
        assert queries.search(s, "   ").communes == []


def test_old_name_leads_to_the_commune_it_was_merged_into(demo_db):
    with demo_db.session() as s:
        svc.merge_communes(s, "ls-lienhoi", "ls-tuxuyen", ms(1, 8, 2025))
    with demo_db.session() as s:
        hits = queries.search(s, "lien hoi").communes
    assert len(hits) == 1 and hits[0].retired
    assert hits[0].merged_into.name == "Tú Xuyên"


def test_search_respects_the_users_communes(demo_db):
    with demo_db.session() as s:
        hoalac = s.scalar(select(Commune).where(Commune.code == "ls-hoalac"))
        scoped = queries.search(s, "thon", limit=100, scope=frozenset({hoalac.id}))
        assert {h.commune.code for h in scoped.villages} == {"ls-hoalac"}
        assert len(scoped.villages) == 6
        assert {h.commune.code for h in scoped.nodes} == {"ls-hoalac"}
        assert queries.search(s, "doi can", scope=frozenset({hoalac.id})).communes == []


def test_commune_list_filter_ignores_diacritics(demo_db):
    with demo_db.session() as s:
        page = commune_directory.list_communes(s, q="tu xuyen")
        assert [c.name for c in page.items] == ["Tú Xuyên"] and page.total == 1
        hoa = commune_directory.list_communes(s, q="hoa").items
        assert {c.name for c in hoa} == {"Hòa Lạc", "Hòa Cư"}
