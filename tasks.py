#!/usr/bin/env python3
"""Bootstrap and run: ``python3 tasks.py dev|test|lint|bench [args...]``.

Needs only Python 3.11+: creates ``.venv``, installs the package with the extras the
task needs (again only when pyproject.toml changed), then runs the task inside it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXTRAS = "embedded,test,lint"

TASKS = {
    "dev": [str(BIN / "billing-fleet"), "dev"],
    "test": [str(BIN / "pytest")],
    "lint": None,  # several commands, below
    "bench": [str(BIN / "python"), "-m", "bench"],
}
LINT = [
    [str(BIN / "ruff"), "check", "."],
    [str(BIN / "ruff"), "format", "--check", "."],
    [str(BIN / "mypy")],
]


def ensure_venv() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - this file must run on any python3
        sys.exit("billing-fleet needs Python 3.11 or newer")
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    stamp = VENV / f".installed-{EXTRAS.replace(',', '-')}-{digest}"
    if stamp.exists():
        return
    if not (BIN / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[{EXTRAS}]"], check=True)
    for old in VENV.glob(".installed-*"):
        old.unlink()
    stamp.touch()


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        print(__doc__)
        return 2
    task, args = sys.argv[1], sys.argv[2:]
    ensure_venv()
    os.chdir(ROOT)
    if task == "lint":
        return max(subprocess.run(cmd).returncode for cmd in LINT)
    command = TASKS[task]
    assert command is not None
    os.execv(command[0], [*command, *args])


if __name__ == "__main__":
    sys.exit(main())
