"""The composed settings of the commands that run several components.

A process validates only what it runs: ``gateway`` reads ``GatewaySettings``, ``worker
NAME`` the runtime's and that worker's (``WorkerDeclaration.settings_class``), ``dev``
the gateway's, the runtime's, every registered worker's and its own. Imported only by
those commands (it loads the gateway's and the workers' settings).
"""

from __future__ import annotations

from typing import cast

from api_gateway.settings import GatewaySettings
from billing_fleet.settings import compose
from fleet.settings import DevSettings
from workers.registry import WORKERS
from workers.runtime.settings import RuntimeSettings


class SendTestEventSettings(GatewaySettings, DevSettings):
    """``send-test-event``: the gateway's address and secrets, or a running dev's."""


class DevFleetSettings(GatewaySettings, RuntimeSettings, DevSettings):
    """``dev`` without its workers' own settings (``dev_settings_class`` adds them)."""


def dev_settings_class() -> type[DevFleetSettings]:
    """What ``dev`` reads: the gateway's, the runtime's, every registered worker's, dev's."""
    workers = [declaration.settings for declaration in WORKERS.values()]
    return cast("type[DevFleetSettings]", compose("DevProcessSettings", DevFleetSettings, *workers))
