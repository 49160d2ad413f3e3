"""The content store: metadata, content-addressed files, listing, node URLs, retention."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from urllib.parse import parse_qs, urlparse

import pytest

from broadcasts.errors import AudioRejected, ContentError, ContentNotFound
from broadcasts.models import Content
from broadcasts.store import ContentStore
from broadcasts.tokens import node_token
from scheduler.lifecycle import content_in_use
from scheduler.models import Broadcast

from .conftest import decode, make_tone

DAY_MS = 86_400_000


@pytest.fixture
def stored(tmp_path, store: ContentStore):
    src = make_tone(tmp_path / "Thông báo.m4a", 2.5)
    return store.add_file(
        src, filename=src.name, title="  Thông báo   tiêm phòng ", language="vi", creator="canbo.xa"
    )


def test_added_file_has_truthful_metadata(store: ContentStore, stored):
    path = store.path(stored.id)
    assert path.parent.parent == store.files_dir and path.stem == stored.sha256
    assert hashlib.sha256(path.read_bytes()).hexdigest() == stored.sha256
    assert path.stat().st_size == stored.bytes
    d = decode(path)
    assert abs(d.duration_s * 1000 - stored.duration_ms) < 60
    assert stored.title == "Thông báo tiêm phòng"
    assert (stored.mime, stored.language, stored.source, stored.creator) == (
        "audio/mpeg",
        "vi",
        "upload",
        "canbo.xa",
    )
    assert store.get(stored.id) == stored
    details = store.details(stored.id)
    assert details.channels == 1 and details.sample_rate == 44100
    assert abs(details.loudness_lufs - d.integrated_lufs) < 0.2
    assert details.original_filename == "Thông báo.m4a"
    assert details.source_format.startswith("mov/aac")
    # Nothing is left in the work folder.
    assert not [p for p in store.tmp_dir.rglob("*") if p.is_file()]


def test_the_same_recording_twice_is_stored_once(tmp_path, store: ContentStore, stored):
    src = make_tone(tmp_path / "Thông báo.m4a", 2.5)
    again = store.add_file(src, filename="ban-sao.m4a", title="Bản sao")
    assert again.id != stored.id and again.sha256 == stored.sha256
    assert len(list(store.files_dir.rglob("*.mp3"))) == 1


def test_unknown_ids_and_bad_fields(tmp_path, store: ContentStore):
    for bad in ("ct" + "0" * 24, "../../etc/passwd", ""):
        with pytest.raises(ContentNotFound):
            store.get(bad)
    src = make_tone(tmp_path / "a.wav", 1.0)
    for kwargs, code in (
        ({"title": "  "}, "empty_title"),
        ({"title": "x", "language": "fr"}, "bad_language"),
        ({"title": "x", "source": "email"}, "bad_source"),
    ):
        with pytest.raises(ContentError) as info:
            store.add_file(src, filename="a.wav", **kwargs)
        assert info.value.code == code
    # A refusal from the pipeline leaves neither a row nor a file.
    empty = tmp_path / "rong.mp3"
    empty.write_bytes(b"")
    with pytest.raises(AudioRejected):
        store.add_file(empty, filename="rong.mp3", title="Rỗng")
    assert store.list()[1] == 0 and not list(store.files_dir.rglob("*.mp3"))


def _clone(store: ContentStore, meta, **changes) -> str:
    """Another item over the same file (cheaper than running the pipeline again)."""
    row = store._load(meta.id)
    new_id = "ct" + hashlib.sha256(repr(changes).encode()).hexdigest()[:24]
    fields = {c.name: getattr(row, c.name) for c in Content.__table__.columns}
    fields.update(id=new_id, **changes)
    with store.db.session() as s:
        s.add(Content(**fields))
    return new_id


def test_list_is_newest_first_paged_and_searchable_without_diacritics(store, stored):
    _clone(
        store,
        stored,
        title="Bản tin tiếng Tày",
        title_folded="ban tin tieng tay",
        language="tay",
        created_ms=stored.created_ms + 1000,
    )
    _clone(
        store,
        stored,
        title="Lịch cắt điện",
        title_folded="lich cat dien",
        created_ms=stored.created_ms + 2000,
    )
    items, total = store.list(limit=2)
    assert total == 3 and [d.meta.title for d in items] == ["Lịch cắt điện", "Bản tin tiếng Tày"]
    items, total = store.list(offset=2, limit=2)
    assert total == 3 and [d.meta.id for d in items] == [stored.id]
    assert [d.meta.title for d in store.list(q="tiem phong")[0]] == ["Thông báo tiêm phòng"]
    assert [d.meta.language for d in store.list(language="tay")[0]] == ["tay"]
    assert store.list(q="100%_")[1] == 0  # LIKE wildcards are escaped


def test_node_url_carries_a_token_bound_to_node_and_content(store, stored, settings):
    url = store.node_url(stored.id, "lso-dc-001", "http://loa.example:8080/")
    parsed = urlparse(url)
    assert parsed.path == f"/media/{stored.id}.mp3"
    qs = parse_qs(parsed.query)
    assert qs["node"] == ["lso-dc-001"]
    expires = int(qs["token"][0].split(".")[0])
    assert qs["token"] == [
        node_token(settings.resolved_secret_key(), "lso-dc-001", stored.id, expires)
    ]
    assert store.token_ok(stored.id, "lso-dc-001", qs["token"][0])
    assert not store.token_ok(stored.id, "lso-dc-002", qs["token"][0])
    with pytest.raises(ContentNotFound):
        store.node_url("ct" + "f" * 24, "lso-dc-001", "http://x")


def test_purge_keeps_what_a_live_broadcast_needs(store: ContentStore, stored, db):
    old = stored.created_ms - 400 * DAY_MS
    in_draft = _clone(store, stored, title="Nháp", created_ms=old)
    in_schedule = _clone(store, stored, title="Đã lên lịch", created_ms=old)
    aired = _clone(store, stored, title="Đã phát", created_ms=old)
    orphan = _clone(store, stored, title="Không dùng", created_ms=old)
    with db.session() as s:
        for cid, status in ((in_draft, "draft"), (in_schedule, "scheduled"), (aired, "aired")):
            s.add(Broadcast(title=status, content_id=cid, targets={}, status=status))
    report = store.purge(in_use=content_in_use, now=stored.created_ms + 1000)
    assert sorted(report.removed_ids) == sorted([aired, orphan])
    assert sorted(report.kept_in_use) == sorted([in_draft, in_schedule])
    # The file stays: recent and kept items still point at it.
    assert store.path(stored.id).exists() and store.path(in_draft).exists()
    with pytest.raises(ContentNotFound):
        store.get(orphan)


def test_purge_deletes_a_file_once_no_item_refers_to_it(store: ContentStore, stored):
    path = store.path(stored.id)
    report = store.purge(
        in_use=content_in_use, now=stored.created_ms + 10 * 400 * DAY_MS, retention_days=30
    )
    assert report.removed_ids == [stored.id]
    # Young files are protected for an hour (an upload may be landing); later they go.
    assert path.exists()
    os.utime(path, (path.stat().st_atime - 7200, path.stat().st_mtime - 7200))
    report = store.purge(
        in_use=content_in_use, now=stored.created_ms + 10 * 400 * DAY_MS, retention_days=30
    )
    assert report.removed_files == 1 and not path.exists()


def test_meta_is_a_frozen_value(stored):
    with pytest.raises(AttributeError):
        stored.title = "khác"  # type: ignore[misc]
    assert replace(stored, title="khác").title == "khác"
