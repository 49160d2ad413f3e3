"""Optional modules: packages contribute models, routers, commands and services by module
name, and a module that is not part of this build is skipped — but a broken import inside
one that is present still fails loudly."""

from __future__ import annotations

import importlib
from types import ModuleType


def import_optional(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            return None
        raise
