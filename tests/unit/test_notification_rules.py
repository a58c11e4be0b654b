"""The notification worker's pure decisions: which notice an event makes (from the Stripe
fixtures as the gateway normalizes them, and from invoices.v1 and entitlement changes
built on the contract models), the recipient, the locale and the keys."""

from __future__ import annotations

from datetime import timedelta
from email.headerregistry import Address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import Customer
from tests.notification_support import (
    NOW,
    at,
    customer_event,
    entitlement_change,
    fixture_event,
    ledger_invoice_event,
    receipt_issued,
)
from workers.notification.facts import PaymentFailedFacts, ReceiptFacts, SubscriptionFacts
from workers.notification.keys import address_digest, notice_key, webhook_key
from workers.notification.notices import NOTICES, UnknownNotice, enabled_notices
from workers.notification.rules import (
    _DOT_ATOMS,
    Contact,
    Notice,
    Recipient,
    Skip,
    billing_notices,
    change_notices,
    choose_locale,
    customer_update,
    email_offer,
    ledger_notices,
    preferred_locales_of,
    recipient_for,
    valid_address,
)

ALL = frozenset(NOTICES)
DEFAULTS = enabled_notices(
    ["receipt", "payment_failed", "trial_ending", "cancellation_scheduled", "subscription_ended"]
)


# -- which notice ------------------------------------------------------------------------------


def test_a_receipt_issued_is_a_receipt_with_its_facts_and_our_pdf_link() -> None:
    event = receipt_issued("R-2026-000001", customer_id="cus_1", email="a@example.test")

    [notice] = ledger_notices(event, DEFAULTS, "https://api.example.test/v1/receipts/{number}.pdf")

    assert (notice.kind, notice.event_id, notice.customer_id, notice.email) == (
        "receipt",
        str(event.id),
        "cus_1",
        "a@example.test",
    )
    assert isinstance(notice.facts, ReceiptFacts)
    assert notice.facts.number == "R-2026-000001" and notice.facts.amount == 2000
    assert notice.facts.pdf_url == "https://api.example.test/v1/receipts/R-2026-000001.pdf"
    assert ledger_notices(event, DEFAULTS, None)[0].facts.pdf_url is None  # type: ignore[union-attr]


def test_a_failed_payment_is_dunning_with_the_next_retry_and_the_update_link() -> None:
    retry = NOW + timedelta(days=3)
    event = ledger_invoice_event(
        "invoice.payment_failed", "in_1", customer_id="cus_1", email=None, next_attempt=retry
    )

    [notice] = ledger_notices(event, DEFAULTS, None)

    assert notice.kind == "payment_failed"
    assert notice.facts == PaymentFailedFacts(
        invoice_id="in_1",
        invoice_number="INV-in_1",
        amount_due=2000,
        currency="eur",
        attempt_count=1,
        next_payment_attempt=retry,
        update_url="https://invoice.stripe.test/in_1",
    )


@pytest.mark.parametrize(
    "event_type", ["invoice.created", "invoice.finalized", "invoice.paid", "invoice.updated"]
)
def test_other_ledger_invoice_changes_make_no_notice(event_type: str) -> None:
    event = ledger_invoice_event(event_type, "in_1", customer_id="cus_1", email=None)  # type: ignore[arg-type]
    assert ledger_notices(event, ALL, None) == []


def test_trial_will_end_is_trial_ending_at_the_trial_s_end() -> None:
    event = fixture_event("customer.subscription.trial_will_end__nijikokun__1", "cus_t")

    [notice] = billing_notices(event, DEFAULTS)

    assert (notice.kind, notice.customer_id, notice.event_id) == (
        "trial_ending",
        "cus_t",
        event.source.stripe_event_id,
    )
    assert isinstance(notice.facts, SubscriptionFacts)
    assert notice.facts.ends_at == at("2015-10-05T23:42:41")


def test_an_update_that_schedules_the_cancellation_is_cancellation_scheduled() -> None:
    event = fixture_event("customer.subscription.updated__drfstripe__1", "cus_c")

    [notice] = billing_notices(event, DEFAULTS)

    assert notice.kind == "cancellation_scheduled"
    assert notice.facts.ends_at == at("2023-01-14T08:56:57")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "fixture",
    [
        "customer.subscription.updated__drfstripe__2",  # the cancellation taken back
        "customer.subscription.updated__drfstripe__3",  # a plan change
        "customer.subscription.updated__syncengine__1",  # metadata
        "customer.subscription.created__syncengine__1",
    ],
)
def test_other_subscription_changes_make_no_notice(fixture: str) -> None:
    assert billing_notices(fixture_event(fixture, "cus_c"), ALL) == []


def test_an_update_of_a_subscription_already_set_to_cancel_is_no_second_notice() -> None:
    scheduled = fixture_event("customer.subscription.updated__drfstripe__1", "cus_c")
    sub = scheduled.subscription  # type: ignore[union-attr]
    later = scheduled.model_copy(
        update={"subscription": sub.model_copy(update={"changed_fields": ["metadata"]})}
    )
    assert billing_notices(later, ALL) == []


def test_a_deleted_subscription_is_subscription_ended() -> None:
    event = fixture_event("customer.subscription.deleted__rubymock__1", "cus_e")

    [notice] = billing_notices(event, DEFAULTS)

    assert notice.kind == "subscription_ended"
    assert notice.facts.ends_at == at("2022-03-26T18:41:37")  # type: ignore[union-attr]


def test_access_notices_are_off_by_default_and_updates_make_none() -> None:
    granted = entitlement_change("entitlement.granted", "cus_a", "sso")
    revoked = entitlement_change("entitlement.revoked", "cus_a", "sso")
    updated = entitlement_change("entitlement.updated", "cus_a", "api_calls", limit=5)

    assert change_notices(granted, DEFAULTS) == change_notices(revoked, DEFAULTS) == []
    assert [n.kind for n in change_notices(granted, ALL)] == ["access_granted"]
    assert [n.kind for n in change_notices(revoked, ALL)] == ["access_revoked"]
    assert change_notices(updated, ALL) == []


def test_a_disabled_notice_is_not_made() -> None:
    event = receipt_issued("R-1", customer_id="cus_1", email="a@example.test")
    assert ledger_notices(event, DEFAULTS - {"receipt"}, None) == []


def test_an_unknown_enabled_notice_stops_the_start() -> None:
    with pytest.raises(UnknownNotice, match=r"unknown notices \['reciept'\]"):
        enabled_notices(["reciept"])


# -- the directory's inputs ----------------------------------------------------------------------


def test_checkouts_invoices_and_receipts_offer_their_address() -> None:
    checkout = fixture_event("checkout.session.completed__rubymock__1", "cus_o")
    ledger = ledger_invoice_event("invoice.created", "in_o", customer_id="cus_o", email="i@x.test")
    receipt = receipt_issued("R-o", customer_id="cus_o", email="r@x.test")

    offers = [email_offer(e) for e in (checkout, ledger, receipt)]

    assert [(o.customer_id, o.email) for o in offers if o] == [
        ("cus_o", "stripe@example.com"),
        ("cus_o", "i@x.test"),
        ("cus_o", "r@x.test"),
    ]
    guest = receipt_issued("R-g", customer_id=None, email="guest@x.test")
    assert email_offer(guest) is None  # nobody to file it under
    assert email_offer(fixture_event("customer.subscription.created__syncengine__1", "c")) is None


def test_a_deletion_carries_no_contact_data() -> None:
    deleted = customer_event(
        "cus_d", email="d@x.test", name="D", occurred_at=NOW, event_type="customer.deleted"
    )
    update = customer_update(deleted)
    assert update.deleted and update.email is None and update.name is None
    assert update.mark_rank == 2


def test_preferred_locales_come_from_the_customer_s_metadata() -> None:
    def locales(metadata: dict[str, str]) -> tuple[str, ...]:
        return preferred_locales_of(
            Customer(id="c", email=None, name=None, user_id=None, metadata=metadata, deleted=False)
        )

    assert locales({"preferred_locales": "de_CH, fr  en,de-ch"}) == ("de-ch", "fr", "en")
    assert locales({"locale": "FR"}) == ("fr",)
    assert locales({"preferred_locales": "<script>, 12"}) == ()
    assert locales({}) == ()


# -- recipients ------------------------------------------------------------------------------------


def _notice(customer_id: str | None = "cus_1", email: str | None = None) -> Notice:
    event = receipt_issued("R-1", customer_id=customer_id, email=email)
    [notice] = ledger_notices(event, ALL, None)
    return notice


def _contact(
    email: str | None = None, fallback: str | None = None, erased: bool = False
) -> Contact:
    return Contact("cus_1", email, "Jane\n Doe", ("de",), fallback, erased)


def test_the_customer_event_s_address_wins_then_the_event_s_then_the_fallback() -> None:
    notice = _notice(email="event@x.test")
    chosen = recipient_for(notice, _contact(email="cust@x.test", fallback="fb@x.test"))
    assert chosen == Recipient("cust@x.test", "Jane Doe", ("de",), "cus_1")
    assert recipient_for(notice, _contact(fallback="fb@x.test")).address == "event@x.test"  # type: ignore[union-attr]
    assert recipient_for(_notice(), _contact(fallback="fb@x.test")).address == "fb@x.test"  # type: ignore[union-attr]
    assert recipient_for(notice, None).address == "event@x.test"  # type: ignore[union-attr]


def test_no_address_a_deleted_customer_or_a_bad_address_is_a_skip_with_its_reason() -> None:
    assert recipient_for(_notice(), None) == Skip("no_email", "cus_1")
    assert recipient_for(_notice(), _contact()) == Skip("no_email", "cus_1")
    erased = _contact(erased=True)
    assert recipient_for(_notice(email="e@x.test"), erased) == Skip("customer_deleted", "cus_1")
    for bad in ("not-an-address", "a b@x.test", "jö@x.test", "x@"):
        assert recipient_for(_notice(email=bad), None) == Skip("invalid_email", "cus_1")
    assert recipient_for(_notice(customer_id=None), None) == Skip("no_email", "")


def test_a_guest_is_named_by_a_digest_of_the_address_not_the_address() -> None:
    chosen = recipient_for(_notice(customer_id=None, email="Guest@X.test"), None)
    assert isinstance(chosen, Recipient)
    assert chosen.key == address_digest("guest@x.test") and "@" not in chosen.key


# -- locales --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preferred", "chosen"),
    [
        ((), ("en", "en")),
        (("de",), ("de", "de")),
        (("de-ch", "en"), ("de", "de_CH")),  # de's templates, Swiss amounts and dates
        (("ja", "de"), ("de", "de")),  # the first preference that has templates
        (("ja",), ("en", "en")),
        (("en-gb", "de"), ("en", "en_GB")),
        (("de-zz",), ("de", "de")),  # a region Babel does not know: the language's
    ],
)
def test_the_locale_is_the_first_preferred_one_with_templates(
    preferred: tuple[str, ...], chosen: tuple[str, str]
) -> None:
    assert choose_locale(preferred, {"en", "de"}) == chosen


# -- keys ------------------------------------------------------------------------------------


def test_keys_name_the_notice_the_event_and_the_recipient_within_the_key_limit() -> None:
    assert notice_key("receipt", "3f2a", "cus_1") == "receipt:3f2a:cus_1"
    assert webhook_key("crm", "3f2a") == "webhook:crm:3f2a"
    long = notice_key("trial_ending", "evt_" + "x" * 250, "cus_" + "y" * 250)
    assert len(long) <= 255 and long.startswith("trial_ending:sha256:")
    assert long == notice_key("trial_ending", "evt_" + "x" * 250, "cus_" + "y" * 250)
    assert long != notice_key("trial_ending", "evt_" + "x" * 250, "cus_" + "z" * 250)


# -- addresses -------------------------------------------------------------------------------


def _the_parser_takes(address: str) -> bool:
    """valid_address as it was before its shortcut: the email package's parser, always."""
    if not address.isascii():
        return False
    try:
        parsed = Address(addr_spec=address)
    except Exception:
        return False
    return bool(parsed.username and parsed.domain)


@settings(max_examples=100, deadline=None)
@given(st.from_regex(_DOT_ATOMS, fullmatch=True))
def test_a_dot_atom_address_is_one_the_parser_takes(address: str) -> None:
    assert valid_address(address) and _the_parser_takes(address)


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from(list("aZ9.@-_+ \"'()<>[],;:\\\t\r\nä!#$%&*/=?^`{|}~")), max_size=30))
def test_valid_address_agrees_with_the_parser(address: str) -> None:
    assert valid_address(address) == _the_parser_takes(address)
