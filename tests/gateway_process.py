"""`billing-fleet gateway` as a subprocess, as an operator runs it."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SCRIPT = shutil.which("billing-fleet", path=str(Path(sys.executable).parent))
COMMAND = [SCRIPT] if SCRIPT else [sys.executable, "-m", "fleet.cli"]
GATEWAY = [*COMMAND, "gateway"]
UNPREFIXED = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS")


def gateway_env(**variables: str) -> dict[str, str]:
    """This environment without any fleet setting a developer exported, plus ``variables``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("BILLING_") and k not in UNPREFIXED
    }
    return {**env, **variables}
