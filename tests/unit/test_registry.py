"""Every worker is declared once, and what derives from the declaration agrees with it."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from billing_fleet.migrate import MigrationError, discover
from billing_fleet.settings import CoreSettings
from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES
from fleet.command_settings import dev_settings_class
from fleet.dev import dev_topics
from tests import toy_worker
from tests.runtime_toy import ToyServiceDown, toy_spec
from workers.entitlement.settings import EntitlementSettings
from workers.notification.webhooks.sender import SignedWebhookSender
from workers.registry import (
    DECLARATION_OVERRIDE_ENV,
    WORKERS,
    declaration_of,
    migration_packages,
)
from workers.runtime.declaration import (
    RUNTIME_MIGRATIONS,
    Factory,
    WorkerBuildError,
    WorkerDeclaration,
)
from workers.runtime.deliveries.smtp import SmtpSender
from workers.runtime.settings import RuntimeSettings
from workers.runtime.spec import WorkerSpec

REPO = Path(__file__).resolve().parents[2]
ENTITLEMENT = WORKERS["entitlement"]


def test_migrate_applies_the_runtime_then_every_declared_package() -> None:
    assert migration_packages() == (
        RUNTIME_MIGRATIONS,
        "workers.entitlement",
        "workers.invoice",
        "workers.notification",
    )
    found = {migration.package for migration in discover(migration_packages())}
    assert found == set(migration_packages())  # each declared package has migrations


def test_a_declared_migrations_package_without_migrations_fails_loudly() -> None:
    broken = dataclasses.replace(ENTITLEMENT, migrations="contracts")  # a package, no folder

    with pytest.raises(MigrationError, match=r"^contracts is declared .* but has no migrations/"):
        discover(migration_packages([broken]))


def test_a_declared_migrations_module_fails_loudly() -> None:
    broken = dataclasses.replace(ENTITLEMENT, migrations="workers.entitlement.settings")

    with pytest.raises(MigrationError, match=r"workers\.entitlement\.settings is a module"):
        discover(migration_packages([broken]))


def test_a_declared_migrations_package_that_does_not_exist_fails_loudly() -> None:
    broken = dataclasses.replace(ENTITLEMENT, migrations="workers.nonexistent")

    with pytest.raises(MigrationError, match=r"workers\.nonexistent does not exist"):
        discover(migration_packages([broken]))


def test_a_worker_requires_only_the_runtime_s_and_its_own_migrations() -> None:
    assert ENTITLEMENT.migration_packages == (RUNTIME_MIGRATIONS, "workers.entitlement")
    toy = toy_worker.toy_declaration("toy", "toy.in")
    assert toy.migration_packages == (RUNTIME_MIGRATIONS, "tests.toy_worker")
    assert [m.name for m in discover(("tests.toy_worker",))] == [
        "0001_toy.sql",
        "0002_toy_down.sql",
    ]


def test_the_entitlement_worker_builds_as_declared() -> None:
    settings = ENTITLEMENT.settings_class()(entitlement_catalog_path=REPO / "catalog.example.yaml")
    spec = ENTITLEMENT.build(settings)

    assert (spec.name, spec.topics, spec.emits) == (
        "entitlement",
        (BILLING_EVENTS,),
        (ENTITLEMENT_CHANGES,),
    )


def test_the_invoice_worker_builds_as_declared() -> None:
    invoice = WORKERS["invoice"]
    spec = invoice.build(invoice.settings_class()())

    assert (spec.name, spec.topics, spec.emits) == ("invoice", (BILLING_EVENTS,), (INVOICES,))
    assert invoice.migration_packages == (RUNTIME_MIGRATIONS, "workers.invoice")
    assert spec.subscriptions[0].handle_batch is not None


def test_the_notification_worker_builds_as_declared() -> None:
    notification = WORKERS["notification"]
    spec = notification.build(notification.settings_class()())

    assert (spec.name, spec.topics, spec.emits) == (
        "notification",
        (BILLING_EVENTS, INVOICES, ENTITLEMENT_CHANGES),
        (),
    )
    assert notification.migration_packages == (RUNTIME_MIGRATIONS, "workers.notification")
    assert [spec.consumer_key(s) for s in spec.subscriptions] == [
        "notification",
        f"notification@{INVOICES}",
        f"notification@{ENTITLEMENT_CHANGES}",
    ]
    assert set(spec.channels) == {"email", "webhook"} and spec.periodic is not None
    # The real senders: the SMTP relay of the settings, webhooks signed per endpoint.
    assert isinstance(spec.channels["email"], SmtpSender)
    assert spec.channels["email"].limit_group == "smtp://localhost:25"
    assert isinstance(spec.channels["webhook"], SignedWebhookSender)


def test_the_notification_worker_refuses_an_smtp_timeout_as_long_as_the_lease() -> None:
    notification = WORKERS["notification"]
    settings = notification.settings_class()(
        delivery_lease_seconds=30, notification_smtp_timeout_seconds=30
    )
    with pytest.raises(WorkerBuildError, match="BILLING_NOTIFICATION_SMTP_TIMEOUT_SECONDS"):
        notification.build(settings)


def test_a_build_that_disagrees_with_its_declaration_is_refused() -> None:
    wrong = dataclasses.replace(ENTITLEMENT, emits=("somewhere.else.v1",))
    settings = wrong.settings_class()(entitlement_catalog_path=REPO / "catalog.example.yaml")

    with pytest.raises(
        WorkerBuildError,
        match=r"emits \['entitlements.changes.v1'\] \(declared: \['somewhere.else.v1'\]\)",
    ):
        wrong.build(settings)


def test_the_declaration_s_outage_classifier_reaches_the_spec() -> None:
    def is_outage(exc: BaseException) -> bool:
        return isinstance(exc, ConnectionRefusedError)

    declared = dataclasses.replace(ENTITLEMENT, is_outage=is_outage)
    settings = declared.settings_class()(entitlement_catalog_path=REPO / "catalog.example.yaml")

    assert declared.build(settings).is_outage is is_outage


def test_a_worker_reads_the_runtime_s_and_its_own_settings_only() -> None:
    cls = ENTITLEMENT.settings_class()
    assert issubclass(cls, RuntimeSettings) and issubclass(cls, EntitlementSettings)
    assert "gateway_port" not in cls.model_fields and "jwt_hs256_secret" not in cls.model_fields
    assert "worker_http_host" in cls.model_fields  # its own bind address, not the gateway's


def test_dev_reads_every_component_s_settings() -> None:
    fields = dev_settings_class().model_fields
    for declaration in WORKERS.values():
        assert set(declaration.settings.model_fields) <= set(fields)
    assert {"gateway_port", "worker_lanes", "dev_data_dir"} <= set(fields)


def test_dev_creates_every_declared_topic() -> None:
    declared = {topic for d in WORKERS.values() for topic in (*d.consumes, *d.emits)}
    assert set(dev_topics()) == declared | {BILLING_EVENTS}


@pytest.fixture
def override() -> Iterator[None]:
    os.environ[DECLARATION_OVERRIDE_ENV] = "tests.toy_worker:DECLARATION"
    try:
        yield
    finally:
        del os.environ[DECLARATION_OVERRIDE_ENV]


@pytest.mark.usefixtures("override")
def test_a_declaration_outside_the_registry_runs_by_reference() -> None:
    assert declaration_of(toy_worker.DECLARATION.name) is toy_worker.DECLARATION
    with pytest.raises(WorkerBuildError, match="declares worker 'toy', not 'entitlement'"):
        declaration_of("entitlement")


@pytest.mark.parametrize(
    ("reference", "says"),
    [
        ("tests.toy_worker", "not of the form module:ATTRIBUTE"),
        ("tests.toy_worker:NOTHING", "has no attribute 'NOTHING'"),
        ("tests.no_such_module:DECLARATION", "No module named 'tests.no_such_module'"),
        ("tests.toy_worker:MIGRATIONS", "is no WorkerDeclaration"),
    ],
)
def test_a_bad_declaration_reference_is_one_clear_error(reference: str, says: str) -> None:
    os.environ[DECLARATION_OVERRIDE_ENV] = reference
    try:
        with pytest.raises(WorkerBuildError, match=says):
            declaration_of("toy")
    finally:
        del os.environ[DECLARATION_OVERRIDE_ENV]


def test_a_declaration_is_cheap_to_build_by_hand() -> None:
    declaration = WorkerDeclaration(
        name="sample", factory="x:build", settings=CoreSettings, migrations=None, consumes=("a",)
    )
    assert declaration.topics == ("a",) and declaration.migration_packages == (RUNTIME_MIGRATIONS,)
    with pytest.raises(WorkerBuildError, match="worker sample: No module named 'x'"):
        declaration.load_factory()


def _toy_factory(name: str, topic: str, changes: str, **options: Any) -> Factory:
    def build(settings: Any) -> WorkerSpec:
        return toy_spec(name, topic, changes_topic=changes, **options)

    return build


def test_a_build_that_reorders_the_consumed_topics_is_refused() -> None:
    declaration = toy_worker.toy_declaration("toy", "toy.in", changes_topic="toy.changes")
    reordered = _toy_factory("toy", "toy.changes", "toy.in")

    with pytest.raises(
        WorkerBuildError,
        match=re.escape(
            "consumes ['toy.changes', 'toy.in'] (declared: ['toy.in', 'toy.changes']): "
            "the same topics in another order; keep the declared order"
        ),
    ):
        declaration.build(CoreSettings(), reordered)


def test_the_declaration_s_first_consumed_topic_has_the_bare_worker_name() -> None:
    declaration = toy_worker.toy_declaration("toy", "toy.in", changes_topic="toy.changes")
    spec = declaration.build(CoreSettings(), _toy_factory("toy", "toy.in", "toy.changes"))

    assert [spec.consumer_key(s) for s in spec.subscriptions] == ["toy", "toy@toy.changes"]
    assert spec.first_topic == declaration.consumes[0]


def test_the_spec_s_and_the_declaration_s_outage_checks_both_count() -> None:
    def spec_says(exc: BaseException) -> bool:
        return isinstance(exc, ToyServiceDown)

    def declaration_says(exc: BaseException) -> bool:
        return isinstance(exc, ConnectionRefusedError)

    declaration = dataclasses.replace(
        toy_worker.toy_declaration("toy", "toy.in", changes_topic="toy.changes"),
        is_outage=declaration_says,
    )
    factory = _toy_factory("toy", "toy.in", "toy.changes", is_outage=spec_says)
    is_outage = declaration.build(CoreSettings(), factory).is_outage

    assert is_outage is not None
    assert is_outage(ToyServiceDown()) and is_outage(ConnectionRefusedError())
    assert not is_outage(ValueError())
