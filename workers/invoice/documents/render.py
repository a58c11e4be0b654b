"""Receipt HTML from Jinja2 templates: the shipped ones, or an operator's overrides.

``BILLING_INVOICE_TEMPLATES_DIR`` is searched first, then the package's ``templates/``,
so an override replaces a shipped file of the same name and may add its own partials.
Undefined names raise (``StrictUndefined``) instead of rendering as empty text, and every
value is HTML-escaped. ``check_templates`` tries them all at the worker's startup.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Final

from babel.dates import format_date
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    TemplateSyntaxError,
)

from billing_fleet.logs import one_line
from billing_fleet.money import currency_code, format_money
from workers.invoice.documents.document import ReceiptDocument, Seller, sample_documents
from workers.invoice.settings import InvoiceSettings

RECEIPT_TEMPLATE: Final = "receipt.html.j2"
TEMPLATE_SUFFIX: Final = ".j2"
"""Files of a templates dir that are templates (an override dir may hold others)."""
LOCALE: Final = "en"
"""The locale receipts are written in (amounts, dates)."""


class TemplateCheckError(RuntimeError):
    """A receipt template that does not compile or render; the message names it."""


def template_environment(templates_dir: Path | None) -> Environment:
    """The receipts' Jinja2 environment: ``templates_dir`` (when set) in front of the
    shipped templates, strict about undefined names, autoescaping everything."""
    loaders: list[BaseLoader] = [FileSystemLoader(templates_dir)] if templates_dir else []
    loaders.append(PackageLoader("workers.invoice.documents", "templates"))
    environment = Environment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=True,
        auto_reload=False,  # templates are read once; a changed override needs a restart
    )
    environment.filters["money"] = _money
    environment.filters["currency_code"] = currency_code
    environment.filters["date"] = _date
    return environment


class ReceiptRenderer:
    """Renders ``ReceiptDocument`` values to HTML with the configured templates."""

    def __init__(self, settings: InvoiceSettings) -> None:
        self.seller = Seller.from_settings(settings)
        self._environment = template_environment(settings.invoice_templates_dir)

    def html(self, document: ReceiptDocument) -> str:
        return self._environment.get_template(RECEIPT_TEMPLATE).render(receipt=document)


def check_templates(settings: InvoiceSettings) -> None:
    """Compile every receipt template and render each with sample receipts (one with
    every optional field, one with none): ``TemplateCheckError`` naming the template and
    the reason when one fails, so a broken override stops the worker at startup."""
    templates_dir = settings.invoice_templates_dir
    if templates_dir is not None and not templates_dir.is_dir():
        raise TemplateCheckError(
            f"BILLING_INVOICE_TEMPLATES_DIR {templates_dir} is not a directory"
        )
    environment = template_environment(templates_dir)
    names = environment.list_templates(filter_func=lambda name: name.endswith(TEMPLATE_SUFFIX))
    if RECEIPT_TEMPLATE not in names:  # the shipped one is always there unless broken
        raise TemplateCheckError(f"receipt template {RECEIPT_TEMPLATE} not found")
    for name in names:
        where = _origin(templates_dir, name)
        try:
            template = environment.get_template(name)
        except TemplateSyntaxError as exc:
            raise TemplateCheckError(
                f"receipt template {name} ({where}) line {exc.lineno}: {exc.message}"
            ) from exc
        for sample in sample_documents():
            try:
                template.render(receipt=sample)
            except Exception as exc:  # any error a real receipt would meet too
                raise TemplateCheckError(
                    f"receipt template {name} ({where}) does not render: "
                    f"{type(exc).__name__}: {one_line(exc)}"
                ) from exc


def _origin(templates_dir: Path | None, name: str) -> str:
    if templates_dir is not None and (templates_dir / name).is_file():
        return f"in {templates_dir}"
    return "shipped"


def _money(amount_minor: int, currency: str) -> str:
    return format_money(amount_minor, currency, LOCALE)


def _date(moment: datetime) -> str:
    """The date of ``moment`` as its own time zone has it (UTC for the ledger's)."""
    return format_date(moment, format="long", locale=LOCALE)
