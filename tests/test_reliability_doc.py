"""docs/reliability.md cannot drift from the suite: every test it cites exists, and after a
run the outcome of each cited test is written to tests/artifacts/reliability.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "reliability.md"
CITED = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def cited_tests() -> list[tuple[str, str]]:
    return CITED.findall(DOC.read_text())


def test_every_test_the_reliability_doc_cites_exists():
    cited = cited_tests()
    assert len(cited) >= 30
    missing = []
    for path, name in cited:
        file = REPO / path
        if not file.exists():
            missing.append(f"{path} (no such file)")
            continue
        names = {
            n.name
            for n in ast.walk(ast.parse(file.read_text()))
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in names:
            missing.append(f"{path}::{name}")
    assert not missing, "docs/reliability.md cites tests that do not exist: " + ", ".join(missing)


def test_every_dependency_is_pinned_in_the_lock_file():
    import tomllib

    lock = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    names = {
        re.split(r"[<>=\[ ;]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in wanted
    }
    assert not names - lock, f"not pinned in requirements.lock: {sorted(names - lock)}"
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "-c requirements.lock" in setup
