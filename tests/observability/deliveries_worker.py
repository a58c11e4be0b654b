"""A worker with deliveries for the real-Prometheus test (none in the registry has them):
one outbound webhook per billing event to ``OBS_DELIVERY_URL``, so the deliveries panels
and alerts have series. ``BILLING_WORKER_DECLARATION=tests.observability.deliveries_worker:
DECLARATION billing-fleet worker notify`` runs it."""

from __future__ import annotations

import os

from billing_fleet.settings import CoreSettings
from contracts import BILLING_EVENTS
from tests.deliveries_toy import webhook_spec
from tests.fleet_settings import FleetSettings
from workers.runtime.declaration import WorkerDeclaration
from workers.runtime.spec import WorkerSpec

NAME = "notify"

DECLARATION = WorkerDeclaration(
    name=NAME,
    factory="tests.observability.deliveries_worker:build",
    settings=CoreSettings,
    migrations=None,
    consumes=(BILLING_EVENTS,),
)


def build(settings: FleetSettings) -> WorkerSpec:
    return webhook_spec(NAME, BILLING_EVENTS, os.environ["OBS_DELIVERY_URL"])
