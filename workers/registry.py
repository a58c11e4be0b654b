"""The workers the fleet runs: name → ``"module:factory"``, factory ``build(settings)``.

Factories are imported only when a worker is started, so a worker that is missing or
broken does not stop the others (``billing-fleet dev`` skips it).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Final, cast

from billing_fleet.settings import Settings
from workers.runtime.spec import WorkerSpec

Factory = Callable[[Settings], WorkerSpec]

WORKERS: dict[str, str] = {
    "entitlement": "workers.entitlement.worker:build",
}

FACTORY_OVERRIDE_ENV: Final = "BILLING_WORKER_FACTORY"
"""``module:factory`` that ``billing-fleet worker NAME`` runs instead of the registry's
entry (tests, and trying a worker before it is registered)."""


def load_factory(reference: str) -> Factory:
    """Import ``"module:attribute"``; ImportError/AttributeError when it is not there."""
    module_name, _, attribute = reference.partition(":")
    if not attribute:
        raise ImportError(f"{reference!r} is not of the form module:factory")
    return cast(Factory, getattr(importlib.import_module(module_name), attribute))


def build_worker(name: str, settings: Settings) -> WorkerSpec:
    """The spec of worker ``name`` (KeyError when it is not registered)."""
    reference = os.environ.get(FACTORY_OVERRIDE_ENV) or WORKERS[name]
    return load_factory(reference)(settings)
