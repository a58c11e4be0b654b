"""Every component's settings in one class, as ``dev`` composes them: what the tests'
``settings`` fixture builds, so that it can be handed to any part of the fleet."""

from __future__ import annotations

from fleet.command_settings import DevFleetSettings
from workers.entitlement.settings import EntitlementSettings


class FleetSettings(DevFleetSettings, EntitlementSettings):
    pass
