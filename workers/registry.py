"""The workers the fleet runs: one declaration each (``workers/<name>/declaration.py``).

Factories are imported only when a worker is started. One that fails to import or build
(a broken catalog) stops the command that needed it: ``billing-fleet worker NAME`` and
``billing-fleet dev`` refuse to start, rather than accept events nobody will process.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final

from billing_fleet.logs import one_line
from workers.entitlement.declaration import DECLARATION as ENTITLEMENT
from workers.invoice.declaration import DECLARATION as INVOICE
from workers.notification.declaration import DECLARATION as NOTIFICATION
from workers.runtime.declaration import (
    RUNTIME_MIGRATIONS,
    WorkerBuildError,
    WorkerDeclaration,
    import_reference,
)

WORKERS: dict[str, WorkerDeclaration] = {
    declaration.name: declaration for declaration in (ENTITLEMENT, INVOICE, NOTIFICATION)
}

DECLARATION_OVERRIDE_ENV: Final = "BILLING_WORKER_DECLARATION"
"""``module:ATTRIBUTE`` naming a ``WorkerDeclaration`` that ``billing-fleet worker NAME``
runs instead of the registry's entry (tests, and trying a worker before it is registered)."""


def migration_packages(declarations: Iterable[WorkerDeclaration] | None = None) -> tuple[str, ...]:
    """What ``migrate`` applies, in order: the runtime's tables, then each worker's."""
    chosen = WORKERS.values() if declarations is None else declarations
    packages = [RUNTIME_MIGRATIONS]
    for declaration in chosen:
        packages += [p for p in declaration.migration_packages if p not in packages]
    return tuple(packages)


def with_override() -> tuple[str, ...]:
    """``migration_packages()``, plus those of ``BILLING_WORKER_DECLARATION``'s worker
    when it is set (``migrate`` before trying a worker that is not registered yet)."""
    reference = os.environ.get(DECLARATION_OVERRIDE_ENV)
    extra = [load_declaration(reference)] if reference else []
    return migration_packages([*WORKERS.values(), *extra])


def load_declaration(reference: str) -> WorkerDeclaration:
    """The declaration ``"module:ATTRIBUTE"`` names; ``WorkerBuildError`` when it is not one."""
    try:
        found = import_reference(reference, "ATTRIBUTE")
    except (ImportError, AttributeError) as exc:
        raise WorkerBuildError(f"{DECLARATION_OVERRIDE_ENV}: {one_line(exc)}") from exc
    if not isinstance(found, WorkerDeclaration):
        raise WorkerBuildError(f"{DECLARATION_OVERRIDE_ENV}: {reference} is no WorkerDeclaration")
    return found


def declaration_of(name: str) -> WorkerDeclaration:
    """The declaration ``billing-fleet worker NAME`` runs: the override's, else the
    registry's (KeyError when ``name`` is not registered)."""
    reference = os.environ.get(DECLARATION_OVERRIDE_ENV)
    if not reference:
        return WORKERS[name]
    declaration = load_declaration(reference)
    if declaration.name != name:
        raise WorkerBuildError(
            f"{DECLARATION_OVERRIDE_ENV}: {reference} declares worker {declaration.name!r}, "
            f"not {name!r}"
        )
    return declaration
