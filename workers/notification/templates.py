"""Notice mails from Jinja2 templates: the shipped ones, or an operator's overrides.

Per notice and locale three templates, ``<notice>.<locale>.subject.j2``,
``<notice>.<locale>.txt.j2`` and ``<notice>.<locale>.html.j2`` (e.g. ``receipt.de.html.j2``);
files starting with ``_`` are partials (the HTML layout). ``notification_templates_dir`` is
searched first, then the package's ``templates/``: an override replaces a shipped file of
the same name, and a new locale is added by adding its three files. Undefined names raise
(``StrictUndefined``); only the HTML part is autoescaped (subject and text are plain text).
``check_templates`` compiles and renders every one at the worker's startup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Final

from babel.dates import format_date
from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    PackageLoader,
    StrictUndefined,
    Template,
    TemplateSyntaxError,
    pass_context,
)
from jinja2.runtime import Context

from billing_fleet.logs import one_line
from billing_fleet.money import currency_code, format_money
from workers.notification.facts import (
    AccessFacts,
    Facts,
    PaymentFailedFacts,
    ReceiptFacts,
    SubscriptionFacts,
)
from workers.notification.notices import NOTICES, NoticeKind
from workers.notification.rules import DEFAULT_LOCALE, babel_locale, choose_locale

PARTS: Final = ("subject", "txt", "html")
TEMPLATE_NAME: Final = re.compile(
    r"^(?P<notice>[a-z_]+)\.(?P<locale>[a-z]{2,3}(?:-[a-z0-9]{2,8})*)\.(?P<part>subject|txt|html)\.j2$"
)
FACTS_NAME: Final[Mapping[NoticeKind, str]] = {
    "receipt": "receipt",
    "payment_failed": "invoice",
    "trial_ending": "subscription",
    "cancellation_scheduled": "subscription",
    "subscription_ended": "subscription",
    "access_granted": "access",
    "access_revoked": "access",
}
"""The variable each notice's facts are in (``receipt.amount``, ``invoice.update_url``)."""


_BLANK_LINES: Final = re.compile(r"\n{3,}")
"""Runs of empty lines the optional parts of a text template leave: one is enough."""


class TemplateCheckError(RuntimeError):
    """A notice template that is missing, does not compile or does not render."""


@dataclass(frozen=True, slots=True)
class RenderedNotice:
    subject: str
    text: str
    html: str
    locale: str
    """The templates' locale (``de``)."""
    format_locale: str
    """The locale amounts and dates were written in (``de_CH``)."""


@dataclass(frozen=True, slots=True)
class CustomerView:
    """The recipient as templates see them."""

    name: str | None
    email: str


def template_environment(templates_dir: Path | None) -> Environment:
    loaders: list[BaseLoader] = [FileSystemLoader(templates_dir)] if templates_dir else []
    loaders.append(PackageLoader("workers.notification", "templates"))
    environment = Environment(
        loader=ChoiceLoader(loaders),
        undefined=StrictUndefined,
        autoescape=_is_html,
        auto_reload=False,  # templates are read once; a changed override needs a restart
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["money"] = _money
    environment.filters["date"] = _date
    environment.filters["currency_code"] = currency_code
    return environment


def _is_html(name: str | None) -> bool:
    """Only the HTML parts are escaped: a subject or a text part is plain text."""
    return name is not None and name.endswith(".html.j2")


@pass_context
def _money(context: Context, amount_minor: int, currency: str) -> str:
    return format_money(amount_minor, currency, context["format_locale"])


@pass_context
def _date(context: Context, moment: datetime) -> str:
    """The date of ``moment`` (UTC for Stripe's times) as the recipient's locale writes it."""
    day = moment.date() if isinstance(moment, datetime) else moment  # what Babel writes
    return _long_date(day, context["format_locale"])


@lru_cache(maxsize=1024)
def _long_date(day: date, locale: str) -> str:
    """Babel's long date, kept: a notice writes its date in the text and the HTML, and
    the notices of a day share it."""
    return format_date(day, format="long", locale=locale)


class NoticeTemplates:
    """The notice templates found, and how one notice is rendered."""

    def __init__(self, templates_dir: Path | None) -> None:
        if templates_dir is not None and not templates_dir.is_dir():
            raise TemplateCheckError(
                f"BILLING_NOTIFICATION_TEMPLATES_DIR {templates_dir} is not a directory"
            )
        self.templates_dir = templates_dir
        self.environment = template_environment(templates_dir)
        parts: dict[tuple[str, str], set[str]] = {}
        for name in self.names():
            if match := TEMPLATE_NAME.match(name):
                parts.setdefault((match["notice"], match["locale"]), set()).add(match["part"])
        self.parts = parts
        self._compiled: dict[tuple[NoticeKind, str], tuple[Template, ...]] = {}
        self.locales: dict[NoticeKind, frozenset[str]] = {
            kind: frozenset(
                locale
                for (notice, locale), found in parts.items()
                if notice == kind
                if found == set(PARTS)
            )
            for kind in NOTICES
        }

    def _parts(self, kind: NoticeKind, locale: str) -> tuple[Template, ...]:
        """The notice's compiled templates in ``PARTS``' order, looked up once (the
        environment's own lookup checks its cache and loader on every call)."""
        found = self._compiled.get((kind, locale))
        if found is None:
            found = tuple(
                self.environment.get_template(f"{kind}.{locale}.{part}.j2") for part in PARTS
            )
            self._compiled[(kind, locale)] = found
        return found

    def names(self) -> list[str]:
        return self.environment.list_templates(filter_func=lambda name: name.endswith(".j2"))

    def origin(self, name: str) -> str:
        if self.templates_dir is not None and (self.templates_dir / name).is_file():
            return f"in {self.templates_dir}"
        return "shipped"

    def render(
        self,
        kind: NoticeKind,
        preferred_locales: Iterable[str],
        facts: Facts,
        customer: CustomerView,
        common: Mapping[str, Any],
    ) -> RenderedNotice:
        """``kind``'s three parts in the first preferred locale that has them (else the
        default), with ``common`` (company, links) and the notice's facts."""
        locale, format_locale = choose_locale(preferred_locales, self.locales[kind])
        context = {
            **common,
            "notice": kind,
            "customer": customer,
            FACTS_NAME[kind]: facts,
            "locale": locale,
            "format_locale": format_locale,
        }
        subject, text, html = (template.render(context) for template in self._parts(kind, locale))
        return RenderedNotice(
            subject=" ".join(subject.split()),  # one header line, whatever the template did
            text=_BLANK_LINES.sub("\n\n", text.strip()) + "\n",
            html=html,
            locale=locale,
            format_locale=format_locale,
        )


def sample_facts(kind: NoticeKind) -> list[Facts]:
    samples: Mapping[str, list[Any]] = {
        "receipt": ReceiptFacts.samples(),
        "invoice": PaymentFailedFacts.samples(),
        "subscription": SubscriptionFacts.samples(),
        "access": AccessFacts.samples(),
    }
    return list(samples[FACTS_NAME[kind]])


SAMPLE_CUSTOMERS: Final = (
    CustomerView(name="Jane Doe", email="jane.doe@example.com"),
    CustomerView(name=None, email="billing@example.org"),
)


def check_templates(templates: NoticeTemplates, common: Mapping[str, Any]) -> None:
    """Every ``*.j2`` compiles; every notice has its default-locale templates and each
    locale all three parts; every notice template renders with sample facts (every optional
    field set, and none), sample customers (with and without a name) and ``common`` (the
    configured company and links) in the default locale and its own. ``TemplateCheckError``
    names the first template that fails and why, on one line."""
    for name in templates.names():
        try:
            templates.environment.get_template(name)
        except TemplateSyntaxError as exc:
            raise TemplateCheckError(
                f"notification template {name} ({templates.origin(name)}) line {exc.lineno}: "
                f"{exc.message}"
            ) from exc
        match = TEMPLATE_NAME.match(name)
        if match is None and not name.startswith("_"):
            raise TemplateCheckError(
                f"notification template {name} ({templates.origin(name)}) is neither a "
                "notice's template (<notice>.<locale>.<subject|txt|html>.j2) nor a partial "
                "(_name.j2)"
            )
        if match is not None and match["notice"] not in NOTICES:
            raise TemplateCheckError(
                f"notification template {name} ({templates.origin(name)}): no notice "
                f"{match['notice']!r} (known: {', '.join(NOTICES)})"
            )
    for (notice, locale), found in sorted(templates.parts.items()):
        missing = [f"{notice}.{locale}.{part}.j2" for part in PARTS if part not in found]
        if missing:
            raise TemplateCheckError(
                f"notification templates of {notice} in {locale}: {', '.join(missing)} missing"
            )
    for kind in NOTICES:
        if DEFAULT_LOCALE not in templates.locales[kind]:
            raise TemplateCheckError(
                f"notification templates of {kind}: none in the default locale {DEFAULT_LOCALE}"
            )
        for locale in sorted(templates.locales[kind]):
            _check_renders(templates, kind, locale, common)


def _check_renders(
    templates: NoticeTemplates, kind: NoticeKind, locale: str, common: Mapping[str, Any]
) -> None:
    for facts in sample_facts(kind):
        for customer in SAMPLE_CUSTOMERS:
            context = {
                **common,
                "notice": kind,
                "customer": customer,
                FACTS_NAME[kind]: facts,
                "locale": locale,
                "format_locale": babel_locale(locale) or DEFAULT_LOCALE,
            }
            for part in PARTS:
                name = f"{kind}.{locale}.{part}.j2"
                try:
                    rendered = templates.environment.get_template(name).render(context)
                except Exception as exc:  # any error a real notice would meet too
                    raise TemplateCheckError(
                        f"notification template {name} ({templates.origin(name)}) does not "
                        f"render: {type(exc).__name__}: {one_line(exc)}"
                    ) from exc
                if part == "subject" and not rendered.strip():
                    raise TemplateCheckError(
                        f"notification template {name} ({templates.origin(name)}) renders "
                        "an empty subject"
                    )
