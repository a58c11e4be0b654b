"""The README documents what the code offers."""

from __future__ import annotations

from pathlib import Path

from tests.fleet_settings import FleetSettings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    missing = [f"BILLING_{name.upper()}" for name in FleetSettings.model_fields]
    missing = [var for var in missing if f"`{var}`" not in README]
    assert missing == []


def test_readme_starts_with_the_two_commands() -> None:
    first_block = README.split("```")[1]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:] if line]
    assert commands == ["python3 tasks.py dev", "python3 tasks.py test"]
