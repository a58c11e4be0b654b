"""The README documents what the code offers."""

from __future__ import annotations

import re
from pathlib import Path

from api_gateway.settings import GatewaySettings
from billing_fleet.settings import CoreSettings
from fleet.settings import DevSettings
from workers.registry import WORKERS
from workers.runtime.declaration import WorkerDeclaration
from workers.runtime.settings import RuntimeSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def section(heading: str) -> str:
    """The text under ``heading`` up to the next heading of its level or above."""
    level = heading.split(" ")[0]
    start = README.index(f"\n{heading}\n")
    rest = README[start + len(heading) + 2 :]
    end = re.search(rf"^#{{1,{len(level)}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def own_variables(cls: type[CoreSettings]) -> set[str]:
    """The variables ``cls`` adds to the core's (all of them for the core)."""
    inherited = set() if cls is CoreSettings else set(CoreSettings.model_fields)
    return {f"BILLING_{name.upper()}" for name in cls.model_fields if name not in inherited}


def components() -> dict[str, type[CoreSettings]]:
    """Every component's settings class, by its sub-heading in the configuration table."""
    return {
        "core": CoreSettings,
        "gateway": GatewaySettings,
        "worker runtime": RuntimeSettings,
        **{f"{name} worker": d.settings for name, d in WORKERS.items()},
        "dev": DevSettings,
    }


def configuration_groups() -> dict[str, set[str]]:
    """The configuration table's variables under each of its sub-heading rows."""
    groups: dict[str, set[str]] = {}
    current: set[str] | None = None
    for line in section("## Configuration").splitlines():
        if heading := re.match(r"^\| \*\*(.+?)\*\* \|", line):
            current = groups.setdefault(heading[1], set())
        elif line.startswith("| `") and current is not None:
            first_cell = line.split("|")[1]
            # The prefixed name: `DATABASE_URL` or `BILLING_DATABASE_URL` lists both.
            current.update(re.findall(r"`(BILLING_[A-Z0-9_]+)`", first_cell))
    return groups


def test_every_setting_of_every_component_is_documented_under_it_and_nothing_else() -> None:
    expected = {heading: own_variables(cls) for heading, cls in components().items()}
    assert configuration_groups() == expected


def worker_table() -> list[list[str]]:
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section("### Registered workers").splitlines()
        if line.startswith("| `")
    ]
    return rows


def declared_row(declaration: WorkerDeclaration) -> list[str]:
    def names(values: tuple[str, ...]) -> str:
        return ", ".join(f"`{value}`" for value in values) or "none"

    return [
        f"`{declaration.name}`",
        names(declaration.consumes),
        names(declaration.emits),
        f"`{declaration.migrations}`" if declaration.migrations else "none",
        f"`{declaration.settings.__module__}.{declaration.settings.__name__}`",
    ]


def test_the_worker_table_is_the_registry() -> None:
    assert worker_table() == [declared_row(d) for d in WORKERS.values()]


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line]
    assert commands == ["python3 tasks.py dev", "python3 tasks.py test"]
