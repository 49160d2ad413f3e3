"""Layers point down (docs/architecture.md): a test that fails on any new upward import.

Each product package has a rank; a module may import packages of a lower rank only.
``loa/`` (protocol, settings, database engine, time, text) is the floor and imports nothing
of the others; the simulator and the node agent stand on it alone; the scheduler decides
*when and what* and stands on the controller (delivery, registry) and on the content
package; the dashboard and alerts stand on the domains, and nothing stands on the dashboard.

Imports inside functions count as much as those at the top: hiding an upward import in a
function hides the cycle, it does not remove it.

``KNOWN_UPWARD`` lists the upward imports that existed when this test was written (issue 15
removes them). It only shrinks: an import not in it fails, and so does an entry that no
longer exists, so that whoever removes one also removes it from the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RANK = {
    "loa": 0,
    "broadcasts": 1,
    "registry": 1,
    "firmware_sim": 1,
    "node_agent": 1,
    "controller": 2,
    "scheduler": 3,
    "indicator": 4,
    "alerts": 4,
    "dashboard": 5,
    "system": 6,
}

# (module file, package it imports upwards or sideways): to be removed by issue 15.
KNOWN_UPWARD: set[tuple[str, str]] = set()


def _imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name.split(".")[0] for name in names} & RANK.keys()


def upward_imports() -> set[tuple[str, str]]:
    found = set()
    for package, rank in RANK.items():
        for path in sorted((REPO / package).rglob("*.py")):
            for target in _imported_packages(path):
                if target != package and RANK[target] >= rank:
                    found.add((path.relative_to(REPO).as_posix(), target))
    return found


def test_no_new_import_points_up_or_sideways():
    new = sorted(upward_imports() - KNOWN_UPWARD)
    assert not new, (
        "These modules import a package of the same or a higher layer "
        "(docs/architecture.md): " + "; ".join(f"{f} imports {p}" for f, p in new)
    )


def test_the_list_of_known_upward_imports_only_shrinks():
    gone = sorted(KNOWN_UPWARD - upward_imports())
    assert not gone, (
        "These upward imports no longer exist; remove them from KNOWN_UPWARD: "
        + "; ".join(f"{f} -> {p}" for f, p in gone)
    )


def test_every_product_package_has_a_layer():
    packages = {
        p.name
        for p in REPO.iterdir()
        if (p / "__init__.py").exists() and p.name not in {"tests", "bench", "migrations"}
    }
    assert packages <= RANK.keys(), f"give these packages a rank: {packages - RANK.keys()}"
