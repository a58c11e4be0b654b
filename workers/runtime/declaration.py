"""A worker declared once: what the registry, ``dev``, ``migrate``, ``worker NAME``, topic
creation, AsyncAPI and the README's worker table derive from.

A declaration is cheap to import (settings class, topic names, strings): the factory, and
with it the worker's handler and its dependencies, is imported only when the worker starts.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, cast

from billing_fleet.logs import one_line
from billing_fleet.settings import CoreSettings, compose
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import OutageCheck, WorkerSpec

RUNTIME_MIGRATIONS: Final = "workers.runtime"
"""The runtime's own tables (processed events, outbox, dead-letter replays)."""

Factory = Callable[[Any], WorkerSpec]
"""``build(settings) -> WorkerSpec``; ``settings`` is an instance of the declaration's
settings class composed with the runtime's."""


class WorkerBuildError(RuntimeError):
    """A worker's factory failed to import or build; the message is one line naming it."""


@dataclass(frozen=True)
class WorkerDeclaration:
    name: str
    """Consumer group, ``processed_events.consumer``, the metrics label, ``worker NAME``."""
    factory: str
    """``"module:build"``, imported only when the worker starts."""
    settings: type[CoreSettings]
    """The worker's own settings (``RuntimeSettings`` is composed in where it runs)."""
    migrations: str | None
    """The package whose ``migrations/`` folder holds the worker's tables; None: none."""
    consumes: tuple[str, ...]
    emits: tuple[str, ...] = ()
    is_outage: OutageCheck | None = None
    """Errors of this worker's own dependencies (beyond PostgreSQL and Kafka) that are
    outages, not poison. The spec may name its own too (``WorkerSpec.is_outage``): an
    error either one names is an outage."""

    @property
    def topics(self) -> tuple[str, ...]:
        """Every topic the worker reads or writes (its dead-letter topics aside)."""
        return (*self.consumes, *(t for t in self.emits if t not in self.consumes))

    @property
    def migration_packages(self) -> tuple[str, ...]:
        """What ``worker NAME`` requires migrated: the runtime's and the worker's own."""
        return (RUNTIME_MIGRATIONS, *([self.migrations] if self.migrations else []))

    def settings_class(self) -> type[RuntimeSettings]:
        """The settings ``worker NAME`` reads: the runtime's and this worker's, no more."""
        return cast(
            "type[RuntimeSettings]",
            compose(f"{self.name.title()}WorkerSettings", RuntimeSettings, self.settings),
        )

    def load_factory(self) -> Factory:
        """The factory, imported now; ``WorkerBuildError`` when it is not there."""
        try:
            return cast(Factory, import_reference(self.factory, "factory"))
        except (ImportError, AttributeError) as exc:
            raise WorkerBuildError(f"worker {self.name}: {one_line(exc)}") from exc

    def build(self, settings: CoreSettings, factory: Factory | None = None) -> WorkerSpec:
        """``factory(settings)`` checked against this declaration; any failure (a broken
        catalog, a spec that disagrees with the declaration) as ``WorkerBuildError``."""
        spec = build_spec(self.name, factory or self.load_factory(), settings)
        try:
            self.check(spec)
        except WorkerBuildError:
            from workers.runtime.deliveries.run import discard_senders

            discard_senders(spec)  # the spec will not run: close its HTTP clients
            raise
        is_outage = either(spec.is_outage, self.is_outage)
        if is_outage is spec.is_outage:
            return spec
        return dataclasses.replace(spec, is_outage=is_outage)

    def check(self, spec: WorkerSpec) -> None:
        """``WorkerBuildError`` unless ``spec`` is the worker declared here: its name, the
        topics it consumes in the declared order (the first one's consumer group and
        idempotency rows are the bare worker name: ``WorkerSpec.consumer_key``), and the
        topics it emits (in any order)."""
        wrong = []
        if spec.name != self.name:
            wrong.append(f"name {spec.name!r} (declared: {self.name!r})")
        if spec.topics != self.consumes:
            found = f"consumes {list(spec.topics)} (declared: {list(self.consumes)})"
            if sorted(spec.topics) == sorted(self.consumes):
                found += ": the same topics in another order; keep the declared order"
            wrong.append(found)
        if set(spec.emits) != set(self.emits):
            wrong.append(f"emits {sorted(spec.emits)} (declared: {sorted(self.emits)})")
        if wrong:
            raise WorkerBuildError(
                f"worker {self.name}: its factory built a worker that disagrees with its "
                f"declaration: {'; '.join(wrong)}"
            )


def either(first: OutageCheck | None, second: OutageCheck | None) -> OutageCheck | None:
    """One outage check that consults both (the spec's and the declaration's)."""
    if first is None or second is None or first is second:
        return first or second

    def is_outage(exc: BaseException) -> bool:
        return first(exc) or second(exc)

    return is_outage


def import_reference(reference: str, attribute: str) -> object:
    """What ``"module:attribute"`` names, imported now; ``ImportError`` or
    ``AttributeError`` (one line each) when it is not there."""
    module_name, _, name = reference.partition(":")
    if not name or not module_name:
        raise ImportError(f"{reference!r} is not of the form module:{attribute}")
    return getattr(importlib.import_module(module_name), name)


def build_spec(name: str, factory: Factory, settings: CoreSettings) -> WorkerSpec:
    """``factory(settings)``; any failure (a broken catalog) as ``WorkerBuildError``."""
    try:
        return factory(settings)
    except Exception as exc:  # whatever the factory raises, it cannot run: say so, once
        raise WorkerBuildError(f"worker {name}: {one_line(exc)}") from exc
