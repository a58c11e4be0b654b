"""Imports point down: contracts < billing_fleet < workers | api_gateway < fleet.

Read from the source (every ``import`` statement, function-local ones included), so an
import that only runs on some path is caught too. tests/ and bench/ may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# What each package may import of ours (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "contracts": frozenset(),
    "billing_fleet": frozenset({"contracts"}),
    "workers": frozenset({"contracts", "billing_fleet"}),
    "api_gateway": frozenset({"contracts", "billing_fleet"}),
    "fleet": frozenset({"contracts", "billing_fleet", "workers", "api_gateway"}),
}


def imported_packages(source: str) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in ``source``."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.partition(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.partition(".")[0]))
    return found


def violations() -> list[str]:
    wrong: list[str] = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, target in imported_packages(path.read_text()):
                if target in ALLOWED and target != package and target not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {target}")
    return wrong


def test_imports_point_down() -> None:
    assert violations() == []


def test_the_check_sees_function_local_imports() -> None:
    source = "def serve() -> None:\n    from workers.runtime import run\n    import fleet.cli\n"
    assert imported_packages(source) == [(2, "workers"), (3, "fleet")]


def test_every_package_of_ours_is_layered() -> None:
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages - {"tests", "bench"} == set(ALLOWED)
