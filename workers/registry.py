"""The workers the fleet runs: name → ``"module:factory"``, factory ``build(settings)``.

Factories are imported only when a worker is started. One that fails to import or build
(a broken catalog) stops the command that needed it: ``billing-fleet worker NAME`` and
``billing-fleet dev`` refuse to start, rather than accept events nobody will process.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Final, cast

from billing_fleet.logs import one_line
from billing_fleet.settings import Settings
from workers.runtime.spec import WorkerSpec

Factory = Callable[[Settings], WorkerSpec]


class WorkerBuildError(RuntimeError):
    """A worker's factory failed to import or build; the message is one line naming it."""


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


def build(name: str, factory: Factory, settings: Settings) -> WorkerSpec:
    """``factory(settings)``; any failure (a broken catalog) as ``WorkerBuildError``."""
    try:
        return factory(settings)
    except Exception as exc:  # whatever the factory raises, it cannot run: say so, once
        raise WorkerBuildError(f"worker {name}: {one_line(exc)}") from exc


def factory_of(name: str, reference: str) -> Factory:
    """``load_factory(reference)``, failures as ``WorkerBuildError`` naming worker ``name``."""
    try:
        return load_factory(reference)
    except (ImportError, AttributeError) as exc:
        raise WorkerBuildError(f"worker {name}: {one_line(exc)}") from exc


def build_worker(name: str, settings: Settings) -> WorkerSpec:
    """The spec of worker ``name`` (KeyError when it is not registered, else
    ``WorkerBuildError`` when it does not build)."""
    reference = os.environ.get(FACTORY_OVERRIDE_ENV) or WORKERS[name]
    return build(name, factory_of(name, reference), settings)
