"""What the API needs from the running system, handed to routes through ``app.state.ctx``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loa.db import Database
from loa.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    db: Database
    # In-process controller services when the API runs beside them (demo, tests); None when
    # the API runs as its own process and reads only the database.
    services: dict[str, Any] = field(default_factory=dict)
