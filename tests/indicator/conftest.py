"""Fixtures for indicator 8.3: the hand-built register over the shared real-SQLite ``db``."""

from __future__ import annotations

import pytest

from tests.indicator.world import World


@pytest.fixture
def world(db) -> World:
    return World(db)
