"""``Idempotency-Key`` on CAP intake (issue 15): the same key with the same document answers
with the alert it created (one alert, one broadcast); the same key with another document is
refused with 409 in Vietnamese and nothing of it is stored; a malformed key is refused."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from alerts.models import CapAlert
from loa.idempotency import IdempotencyKeyInvalid, IdempotencyKeyReused
from tests.alerts import capdocs as d


def alerts_stored(env) -> int:
    with env.db.session() as s:
        return s.scalar(select(func.count()).select_from(CapAlert))


def test_the_same_key_receives_once_and_another_document_is_refused(env):
    doc = d.flood(communes=["c0"])
    first = env.alerts.receive(
        doc, source="api", source_ref="so-vhtt", trusted_source=True, client_key="cap-2f6a91d0"
    )
    again = env.alerts.receive(
        doc, source="api", source_ref="so-vhtt", trusted_source=True, client_key="cap-2f6a91d0"
    )
    assert first["result"] == "accepted"
    assert again["result"] == "duplicate" and again["replayed"] is True
    assert again["id"] == first["id"]
    assert alerts_stored(env) == 1 and len(env.broadcasts_all()) == 1

    other = d.flood("KTTV-LS-2026-002", communes=["c1"])
    with pytest.raises(IdempotencyKeyReused) as err:
        env.alerts.receive(
            other,
            source="api",
            source_ref="so-vhtt",
            trusted_source=True,
            client_key="cap-2f6a91d0",
        )
    assert err.value.status == 409 and "yêu cầu khác" in err.value.message
    assert alerts_stored(env) == 1
    with pytest.raises(IdempotencyKeyInvalid, match="8–80 ký tự"):
        env.alerts.receive(
            other, source="api", source_ref="so-vhtt", trusted_source=True, client_key="ngắn"
        )
    # Another sender's keys are their own.
    env.alerts.receive(
        other,
        source="api",
        source_ref="he-thong-tinh",
        trusted_source=True,
        client_key="cap-2f6a91d0",
    )
    assert alerts_stored(env) == 2
