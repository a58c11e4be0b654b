"""Receipt templates: the shipped one, overrides, and the startup check that refuses a
broken one (no database, no PDF: the HTML only)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from workers.invoice.documents.document import Seller, sample_documents
from workers.invoice.documents.render import (
    RECEIPT_TEMPLATE,
    ReceiptRenderer,
    TemplateCheckError,
    check_templates,
)
from workers.invoice.settings import InvoiceSettings

FULL, MINIMAL = sample_documents()


def _settings(**values: object) -> InvoiceSettings:
    return InvoiceSettings.model_validate(values)


def _override(tmp_path: Path, text: str, name: str = RECEIPT_TEMPLATE) -> InvoiceSettings:
    (tmp_path / name).write_text(text)
    return _settings(invoice_templates_dir=tmp_path)


def test_the_shipped_template_passes_the_check() -> None:
    check_templates(_settings())


def test_the_shipped_receipt_shows_every_known_field() -> None:
    html = ReceiptRenderer(_settings()).html(FULL)
    for text in (
        "Example GmbH",
        "Example Street 1",
        "10115 Berlin",
        "Tax ID: DE123456789",
        "R-2026-000001",
        "March 1, 2026",
        "INV-0001",
        "Visa \u2022\u2022\u2022\u2022 4242",
        "Ada Lovelace",
        "ada@example.com",
        "Pro plan (monthly)",
        "€20.00",
        "€3.80",
        "€23.80",
        "Total paid (EUR)",
    ):
        assert text in html, text
    assert "Subscription update" not in html  # the lines stand in for the description


def test_without_lines_the_payment_description_is_the_line() -> None:
    document = replace(MINIMAL, description="Lifetime licence")
    html = ReceiptRenderer(_settings()).html(document)
    assert "Lifetime licence" in html and "¥1,500" in html and "Total paid (JPY)" in html
    for absent in ("Tax ID", "Billed to", "Invoice number", "Payment method", "Subtotal"):
        assert absent not in html, absent


def test_values_are_escaped() -> None:
    document = replace(MINIMAL, customer_name="<script>alert(1)</script>")
    html = ReceiptRenderer(_settings()).html(document)
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_the_seller_comes_from_the_settings() -> None:
    settings = _settings(
        invoice_seller_name="Acme Ltd",
        invoice_seller_address="1 High Street\n\n  London EC1  \n",
        invoice_seller_tax_id=" GB123 ",
    )
    assert Seller.from_settings(settings) == Seller(
        "Acme Ltd", ("1 High Street", "London EC1"), "GB123"
    )
    assert Seller.from_settings(_settings()).tax_id is None


@pytest.mark.parametrize(
    ("brand", "last4", "method", "shown"),
    [
        ("visa", "4242", "card", "Visa \u2022\u2022\u2022\u2022 4242"),
        ("amex", "0005", "card", "American Express \u2022\u2022\u2022\u2022 0005"),
        ("new_brand", None, "card", "New brand"),
        (None, None, "sepa_debit", "Sepa debit"),
        (None, None, None, None),
    ],
)
def test_payment_method(
    brand: str | None, last4: str | None, method: str | None, shown: str | None
) -> None:
    document = replace(MINIMAL, card_brand=brand, card_last4=last4, payment_method_type=method)
    assert document.payment_method == shown


def test_an_override_replaces_the_shipped_template(tmp_path: Path) -> None:
    settings = _override(
        tmp_path,
        "<p>Our receipt {{ receipt.number }}: {{ receipt.amount | money(receipt.currency) }}</p>",
    )
    check_templates(settings)
    assert ReceiptRenderer(settings).html(MINIMAL) == "<p>Our receipt R-2026-000002: ¥1,500</p>"


def test_an_override_may_include_its_own_partials(tmp_path: Path) -> None:
    (tmp_path / "_seller.html.j2").write_text("<b>{{ receipt.seller.name }}</b>")
    settings = _override(tmp_path, '{% include "_seller.html.j2" %} {{ receipt.number }}')
    check_templates(settings)
    assert ReceiptRenderer(settings).html(MINIMAL) == "<b>Example</b> R-2026-000002"


def test_a_syntax_error_fails_the_check_naming_template_and_line(tmp_path: Path) -> None:
    settings = _override(tmp_path, "<p>\n{{ receipt.number }\n</p>")
    with pytest.raises(TemplateCheckError) as raised:
        check_templates(settings)
    message = str(raised.value)
    assert f"receipt template {RECEIPT_TEMPLATE} (in {tmp_path}) line 2:" in message
    assert "unexpected '}'" in message


def test_a_broken_partial_fails_the_check(tmp_path: Path) -> None:
    (tmp_path / RECEIPT_TEMPLATE).write_text("{{ receipt.number }}")
    settings = _override(tmp_path, "{% if %}", name="footer.html.j2")
    with pytest.raises(TemplateCheckError, match=r"receipt template footer\.html\.j2 .* line 1"):
        check_templates(settings)


def test_an_unknown_variable_fails_the_check(tmp_path: Path) -> None:
    settings = _override(tmp_path, "<p>{{ receipt.number }} {{ receipt.vat_number }}</p>")
    with pytest.raises(TemplateCheckError) as raised:
        check_templates(settings)
    message = str(raised.value)
    assert f"receipt template {RECEIPT_TEMPLATE} (in {tmp_path}) does not render" in message
    assert "UndefinedError" in message and "vat_number" in message


def test_an_unknown_top_level_name_fails_the_check(tmp_path: Path) -> None:
    settings = _override(tmp_path, "<p>{{ invoice.number }}</p>")
    with pytest.raises(TemplateCheckError, match="'invoice' is undefined"):
        check_templates(settings)


def test_a_variable_only_some_receipts_lack_fails_the_check(tmp_path: Path) -> None:
    """The minimal sample has no lines: a template that assumes one is caught."""
    settings = _override(tmp_path, "{{ receipt.lines[0].amount }}")
    with pytest.raises(TemplateCheckError, match="does not render"):
        check_templates(settings)


def test_a_templates_dir_that_is_not_there_fails_the_check(tmp_path: Path) -> None:
    with pytest.raises(TemplateCheckError, match="is not a directory"):
        check_templates(_settings(invoice_templates_dir=tmp_path / "missing"))


def test_other_files_in_the_templates_dir_are_not_templates(tmp_path: Path) -> None:
    (tmp_path / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    check_templates(_settings(invoice_templates_dir=tmp_path))  # the shipped receipt
