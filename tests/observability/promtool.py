"""Debian's ``prometheus`` package binaries (promtool and the server), found or refused:
a missing binary skips locally and fails under ``CI=true`` (``.ci/run`` installs it)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


def require(binary: str) -> str:
    found = shutil.which(binary)
    if found:
        return found
    message = f"{binary} is not installed (apt-get install -y prometheus)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
