"""The toy worker, declared as a production worker is (see README "Adding a worker").

Its handler is ``tests.runtime_toy.toy_spec``; its tables are ``migrations/``. Tests run
it under unique names and topics, so its declaration reads them from ``TOY_NAME``,
``TOY_TOPIC``, ``TOY_OUT_TOPIC`` and ``TOY_CHANGES_TOPIC`` (a production worker names
its topics from ``contracts``):
``BILLING_WORKER_DECLARATION=tests.toy_worker:DECLARATION billing-fleet worker
$TOY_NAME`` runs it although it is not in the registry.

The real workers on a test's own topics (``*_ON_TOPIC``) take ``TOY_NAME`` too: their
consumer group is their name, and the broker of the tests stalls a group's join when
earlier members of that group consumed other topics, so each test's worker gets a group
of its own.
"""

from __future__ import annotations

import dataclasses
import os

from billing_fleet.settings import CoreSettings
from contracts import BILLING_EVENTS, ENTITLEMENT_CHANGES, INVOICES
from workers.entitlement.declaration import DECLARATION as ENTITLEMENT
from workers.invoice.declaration import DECLARATION as INVOICE
from workers.notification.declaration import DECLARATION as NOTIFICATION
from workers.runtime.declaration import WorkerDeclaration
from workers.runtime.spec import WorkerSpec

MIGRATIONS = "tests.toy_worker"


def toy_declaration(
    name: str, topic: str, out_topic: str | None = None, changes_topic: str | None = None
) -> WorkerDeclaration:
    return WorkerDeclaration(
        name=name,
        factory="tests.runtime_toy:build",
        settings=CoreSettings,  # the toy has no settings of its own
        migrations=MIGRATIONS,
        consumes=(topic, *([changes_topic] if changes_topic else [])),
        emits=(out_topic,) if out_topic else (),
    )


DECLARATION = toy_declaration(
    os.environ.get("TOY_NAME", "toy"),
    os.environ.get("TOY_TOPIC", BILLING_EVENTS),
    os.environ.get("TOY_OUT_TOPIC") or None,
    os.environ.get("TOY_CHANGES_TOPIC") or None,
)

ENTITLEMENT_ON_TOPIC = dataclasses.replace(
    ENTITLEMENT,
    name=os.environ.get("TOY_NAME", ENTITLEMENT.name),
    factory="tests.runtime_toy:build_entitlement",
    consumes=(os.environ.get("TOY_TOPIC", BILLING_EVENTS),),
)
"""The real entitlement worker consuming ``TOY_TOPIC`` (a test's own input topic)."""

INVOICE_ON_TOPIC = dataclasses.replace(
    INVOICE,
    name=os.environ.get("TOY_NAME", INVOICE.name),
    factory="tests.invoice_support:build_on_topic",
    consumes=(os.environ.get("TOY_TOPIC", BILLING_EVENTS),),
)
"""The real invoice worker consuming ``TOY_TOPIC``, its receipt documents recorded."""

NOTIFICATION_ON_TOPIC = dataclasses.replace(
    NOTIFICATION,
    name=os.environ.get("TOY_NAME", NOTIFICATION.name),
    factory="tests.notification_support:build_on_topics",
    consumes=(
        os.environ.get("TOY_TOPIC", BILLING_EVENTS),
        os.environ.get("TOY_INVOICES_TOPIC", INVOICES),
        os.environ.get("TOY_CHANGES_TOPIC", ENTITLEMENT_CHANGES),
    ),
)
"""The real notification worker consuming ``TOY_TOPIC``, ``TOY_INVOICES_TOPIC`` and
``TOY_CHANGES_TOPIC``, its mails and webhooks recorded, every event type announced to
one endpoint."""

NOTIFICATION_REAL_ON_TOPIC = dataclasses.replace(
    NOTIFICATION_ON_TOPIC, factory="tests.notification_support:build_real_on_topics"
)
"""The real notification worker on the same test topics with its real channels: mails to
the ``BILLING_NOTIFICATION_SMTP_*`` relay, signed webhooks to the endpoints file's
endpoints."""


def named_as_toy(spec: WorkerSpec) -> WorkerSpec:
    """``spec`` (a ``*_ON_TOPIC`` factory's) under the name ``TOY_NAME`` when set."""
    return dataclasses.replace(spec, name=os.environ.get("TOY_NAME", spec.name))
