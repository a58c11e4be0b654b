"""Label values from outside input: a known value, else ``other``; and the known sets."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from api_gateway.metrics import STRIPE_API_VERSIONS, STRIPE_EVENT_TYPES
from api_gateway.normalize import HANDLED_TYPES, normalize
from contracts import BILLING_EVENT_TYPES
from contracts.labels import LABEL_LIMIT, LOG_VALUE_LIMIT, OTHER, bounded_label, log_value
from tests.fleet_settings import FleetSettings
from tests.stripe_fixtures import fixture_files, load_event
from workers.runtime.processing import event_type


def test_known_value_is_kept_anything_else_is_other() -> None:
    known = frozenset({"a.b", "x" * LABEL_LIMIT, "y" * (LABEL_LIMIT + 1)})
    assert bounded_label("a.b", known) == "a.b"
    assert bounded_label("x" * LABEL_LIMIT, known) == "x" * LABEL_LIMIT
    assert bounded_label("a.c", known) == OTHER
    assert bounded_label("", known) == OTHER
    assert bounded_label("y" * (LABEL_LIMIT + 1), known) == OTHER  # over the cap


def test_log_value_is_capped() -> None:
    assert log_value("evt_1") == "evt_1"
    capped = log_value("z" * 500_000)
    assert len(capped) == LOG_VALUE_LIMIT and capped.endswith("…")


def test_known_stripe_values_come_from_stripe_python() -> None:
    # An SDK upgrade that changed the shape of its lists would empty these sets and turn
    # every label into "other": this catches it.
    assert HANDLED_TYPES <= STRIPE_EVENT_TYPES
    assert {"product.created", "invoice.upcoming", "account.updated"} <= STRIPE_EVENT_TYPES
    assert "*" not in STRIPE_EVENT_TYPES
    pinned = FleetSettings.model_fields["stripe_api_version"].default
    assert {"2014-11-05", pinned} <= STRIPE_API_VERSIONS
    assert all(len(value) <= LABEL_LIMIT for value in STRIPE_EVENT_TYPES | STRIPE_API_VERSIONS)


def test_worker_type_label_is_a_contract_type_other_or_unknown() -> None:
    # Every type the gateway publishes for the fixtures is known to the workers.
    published = set()
    for path in fixture_files():
        event = load_event(path.stem)
        if event["type"] in HANDLED_TYPES:
            published.add(normalize(event).type)
    assert len(published) > 10
    assert published <= BILLING_EVENT_TYPES

    def record(headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
        return ConsumerRecord("t", 0, 0, 0, 0, b"k", b"v", None, 1, 1, headers)

    assert event_type(record([("ce_type", b"invoice.paid")])) == "invoice.paid"
    assert event_type(record([("ce_type", b"made.up")])) == OTHER
    assert event_type(record([("ce_type", b"\xff" * 100_000)])) == OTHER
    assert event_type(record([])) == "unknown"
