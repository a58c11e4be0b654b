"""The notification worker's templates and mails: every shipped template renders, a broken
override stops the start with one line, locales and amounts, and the message read back
with the standard library's parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from billing_fleet.money import _format_money
from tests.notification_support import NOW, mail_parts
from workers.notification.facts import ReceiptFacts
from workers.notification.mail import MailIdentity, compose
from workers.notification.notices import NOTICES, NoticeKind
from workers.notification.settings import NotificationSettings
from workers.notification.templates import (
    SAMPLE_CUSTOMERS,
    CustomerView,
    NoticeTemplates,
    check_templates,
    sample_facts,
)
from workers.notification.worker import common_context
from workers.registry import WORKERS
from workers.runtime.declaration import WorkerBuildError
from workers.runtime.deliveries.mail import message_id_for

SHIPPED = Path(__file__).resolve().parents[2] / "workers" / "notification" / "templates"
LINKS = {"account": "https://app.example.test/billing", "unsubscribe": "https://app.example.test/u"}
COMMON = {"company": "Acme <GmbH>", "links": LINKS}


def build_with(**settings: Any) -> None:
    notification = WORKERS["notification"]
    notification.build(notification.settings_class()(**settings))


def shipped_cases() -> list[tuple[NoticeKind, str]]:
    templates = NoticeTemplates(None)
    return [(kind, locale) for kind in NOTICES for locale in sorted(templates.locales[kind])]


def test_the_shipped_templates_cover_every_notice_in_english_and_receipts_in_german() -> None:
    templates = NoticeTemplates(None)
    assert all("en" in templates.locales[kind] for kind in NOTICES)
    assert {"de"} <= templates.locales["receipt"] and {"de"} <= templates.locales["payment_failed"]
    check_templates(templates, COMMON)
    check_templates(templates, {"company": "x", "links": {}})  # no links configured at all


@pytest.mark.parametrize(("kind", "locale"), shipped_cases())
def test_every_shipped_template_renders_every_sample(kind: NoticeKind, locale: str) -> None:
    templates = NoticeTemplates(None)
    for facts in sample_facts(kind):
        for customer in SAMPLE_CUSTOMERS:
            rendered = templates.render(kind, (locale,), facts, customer, COMMON)
            assert rendered.locale == locale
            assert rendered.subject and "\n" not in rendered.subject
            assert "Acme <GmbH>" in rendered.subject
            assert "Acme <GmbH>" in rendered.text  # plain text is not escaped
            assert "Acme &lt;GmbH&gt;" in rendered.html and "<GmbH>" not in rendered.html
            assert "\n\n\n" not in rendered.text
            if customer.name:
                assert customer.name in rendered.text


def test_html_escapes_what_customers_wrote() -> None:
    templates = NoticeTemplates(None)
    [facts, _] = sample_facts("receipt")
    customer = CustomerView(name='<img src=x onerror="alert(1)">', email="x@example.test")

    rendered = templates.render("receipt", (), facts, customer, COMMON)

    assert "<img" not in rendered.html and "&lt;img src=x" in rendered.html
    assert '<img src=x onerror="alert(1)">' in rendered.text


def test_optional_notices_link_the_unsubscribe_page_and_receipts_do_not() -> None:
    templates = NoticeTemplates(None)
    customer = SAMPLE_CUSTOMERS[0]
    for kind in NOTICES:
        rendered = templates.render(kind, (), sample_facts(kind)[0], customer, COMMON)
        assert (LINKS["unsubscribe"] in rendered.text) == (
            kind not in ("receipt", "payment_failed")
        ), kind


# -- amounts and locales -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preferred", "amount", "currency", "shown", "subject_word"),
    [
        ((), 1500, "jpy", "¥1,500", "receipt"),
        ((), 1234, "kwd", "KWD1.234", "receipt"),
        (("de",), 1500, "jpy", "1.500\xa0¥", "Quittung"),
        (("de",), 1234, "kwd", "1,234\xa0KWD", "Quittung"),
        (("de-ch",), 1234, "kwd", "KWD\xa01.234", "Quittung"),  # Swiss digits, German words
        (("fr",), 2380, "eur", "€23.80", "receipt"),  # no French templates: English
    ],
)
def test_amounts_are_written_in_the_recipient_s_locale(
    preferred: tuple[str, ...], amount: int, currency: str, shown: str, subject_word: str
) -> None:
    [full, _] = ReceiptFacts.samples()
    facts = ReceiptFacts(
        number=full.number,
        amount=amount,
        currency=currency,
        paid_at=full.paid_at,
        invoice_number=None,
        description=None,
        lines=(),
        hosted_invoice_url=None,
        pdf_url=None,
        payment_method_type=None,
        card_brand=None,
        card_last4=None,
    )
    rendered = NoticeTemplates(None).render(
        "receipt", preferred, facts, SAMPLE_CUSTOMERS[0], COMMON
    )
    assert subject_word in rendered.subject
    assert shown in rendered.text and shown in rendered.html


def test_dates_are_written_in_the_recipient_s_locale() -> None:
    [facts, _] = sample_facts("payment_failed")
    templates = NoticeTemplates(None)
    german = templates.render("payment_failed", ("de",), facts, SAMPLE_CUSTOMERS[0], COMMON)
    english = templates.render("payment_failed", (), facts, SAMPLE_CUSTOMERS[0], COMMON)
    assert "1. März 2026" in german.text and "March 1, 2026" in english.text
    swiss = templates.render("payment_failed", ("de-ch",), facts, SAMPLE_CUSTOMERS[0], COMMON)
    assert "1. März 2026" in swiss.text


def test_a_notice_formats_each_of_its_amounts_once() -> None:
    """A receipt shows its total in the text and the HTML: format_money keeps what it
    wrote, so each distinct amount is formatted once."""
    [facts, _] = sample_facts("receipt")
    assert isinstance(facts, ReceiptFacts)
    _format_money.cache_clear()
    NoticeTemplates(None).render("receipt", (), facts, SAMPLE_CUSTOMERS[0], COMMON)
    used = _format_money.cache_info()
    assert used.misses == len({facts.amount, *(line.amount for line in facts.lines)})
    assert used.hits >= 2  # the total, again, at least in the text and in the HTML


# -- overrides -------------------------------------------------------------------------------------


def test_an_override_replaces_a_shipped_template_and_adds_a_locale(tmp_path: Path) -> None:
    (tmp_path / "receipt.en.subject.j2").write_text("Paid: {{ receipt.number }}")
    for part in ("subject", "txt", "html"):
        (tmp_path / f"receipt.fr.{part}.j2").write_text(
            "Reçu {{ receipt.number }} : {{ receipt.amount | money(receipt.currency) }}"
        )
    templates = NoticeTemplates(tmp_path)
    check_templates(templates, COMMON)
    [facts, _] = sample_facts("receipt")

    assert templates.render("receipt", (), facts, SAMPLE_CUSTOMERS[0], COMMON).subject == (
        "Paid: R-2026-000123"
    )
    french = templates.render("receipt", ("fr",), facts, SAMPLE_CUSTOMERS[0], COMMON)
    assert french.text == "Reçu R-2026-000123 : 23,80\xa0€\n"
    build_with(notification_templates_dir=tmp_path)


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (
            {"receipt.en.html.j2": "{% extends '_layout.html.j2' %}{% block content %}{{ }}"},
            r"receipt\.en\.html\.j2 \(in .*\) line 1: ",
        ),
        (
            {"trial_ending.en.txt.j2": "{{ subscription.trial_end }}"},
            r"trial_ending\.en\.txt\.j2 \(in .*\) does not render: "
            r"UndefinedError: .*has no attribute 'trial_end'",
        ),
        (
            {"receipt.en.subject.j2": "{{ invoice.number }}"},
            r"receipt\.en\.subject\.j2 \(in .*\) does not render: UndefinedError: "
            r"'invoice' is undefined",
        ),
        (
            {"receipt.de.subject.j2": "{{ receipt.amount | money }}"},
            r"receipt\.de\.subject\.j2 .* does not render: TypeError: ",
        ),
        (
            {"receipt.it.subject.j2": "Ricevuta", "receipt.it.txt.j2": "x"},
            r"of receipt in it: receipt\.it\.html\.j2 missing",
        ),
        (
            {"reciept.en.subject.j2": "x"},
            r"reciept\.en\.subject\.j2 \(in .*\): no notice 'reciept'",
        ),
        ({"receipt.j2": "x"}, r"receipt\.j2 \(in .*\) is neither a notice's template"),
        (
            {"access_granted.en.subject.j2": "  "},
            r"access_granted\.en\.subject\.j2 .* empty subject",
        ),
    ],
)
def test_a_broken_override_stops_the_start_with_one_line(
    tmp_path: Path, files: dict[str, str], says: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)

    with pytest.raises(
        WorkerBuildError, match=r"^worker notification: notification templates? " + says
    ) as caught:
        build_with(notification_templates_dir=tmp_path)
    assert "\n" not in str(caught.value)


def test_a_templates_dir_that_is_not_there_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(WorkerBuildError, match=r"TEMPLATES_DIR .*/nothing is not a directory"):
        build_with(notification_templates_dir=tmp_path / "nothing")


def test_a_from_address_that_is_none_stops_the_start() -> None:
    with pytest.raises(WorkerBuildError, match="BILLING_NOTIFICATION_MAIL_FROM 'billing' is not"):
        build_with(notification_mail_from="billing")


def test_the_shipped_templates_pass_the_build_s_check_with_the_configured_links() -> None:
    settings = NotificationSettings(notification_links=LINKS)
    check_templates(NoticeTemplates(None), common_context(settings))


# -- the message -----------------------------------------------------------------------------------


IDENTITY = MailIdentity(
    sender="billing@acme.test",
    display_name="Acme GmbH",
    reply_to="support@acme.test",
    unsubscribe_url="https://acme.test/u",
)


def _compose(optional: bool, identity: MailIdentity = IDENTITY) -> bytes:
    return compose(
        identity=identity,
        to_address="jane@example.test",
        to_name="Jane Doe, Müller",
        subject="Ihre Quittung R-1 über 23,80 €",
        text="Hallo Jane,\nvielen Dank.\n",
        html="<p>Hallo Jane,</p>",
        idempotency_key="receipt:ev1:cus_1",
        optional=optional,
        date=NOW,
    )


def test_a_mail_is_text_then_html_with_its_headers() -> None:
    payload = _compose(optional=False)
    message, text, html = mail_parts(payload)

    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert text == "Hallo Jane,\nvielen Dank.\n" and html.strip() == "<p>Hallo Jane,</p>"
    assert message["From"] == "Acme GmbH <billing@acme.test>"
    assert message["To"].addresses[0].addr_spec == "jane@example.test"
    assert message["To"].addresses[0].display_name == "Jane Doe, Müller"
    assert message["Reply-To"] == "support@acme.test"
    assert message["Subject"] == "Ihre Quittung R-1 über 23,80 €"
    assert message["Message-ID"] == message_id_for("receipt:ev1:cus_1", "acme.test")
    assert message["Date"].datetime == NOW
    assert message["Auto-Submitted"] == "auto-generated"
    assert "List-Unsubscribe" not in message
    assert b"\r\n" in payload and b"\n" not in payload.replace(b"\r\n", b"")


def test_only_optional_notices_carry_list_unsubscribe() -> None:
    message = mail_parts(_compose(optional=True))[0]
    assert message["List-Unsubscribe"] == "<https://acme.test/u>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    no_link = MailIdentity("billing@acme.test", "Acme", None, None)
    bare = mail_parts(_compose(optional=True, identity=no_link))[0]
    assert "List-Unsubscribe" not in bare and "Reply-To" not in bare
