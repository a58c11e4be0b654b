"""Hypothesis strategies for ``billing.events.v1`` values, drawn from the contracts' JSON Schema.

``billing_events()`` draws JSON-ready dicts of every event type in the schema's
discriminator, field by field from each property's schema: strings within their
``minLength``/``maxLength`` and ``pattern`` (NUL drawn often wherever the pattern allows
it), integers within ``minimum``/``maximum`` and at those bounds (or at PostgreSQL's and
beyond when there are none), arrays from ``minItems``, timestamps with offsets over the
whole datetime range (and a realistic window), null where a field may be null. So the
draws follow the models as their constraints change.

A few fields are steered, on top of the schema, so that events meet each other and the
catalog below: item prices and purchase metadata name the catalog's prices, customer,
subscription and payment ids come from small pools (as well as from the schema),
subscription statuses are those the entitlement worker knows, and subscriptions that grant
access come up often.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from hypothesis import strategies as st

import contracts
from workers.entitlement.catalog import Catalog, parse_catalog

Strategy = st.SearchStrategy[Any]

NOW = datetime(2025, 6, 1, 12, tzinfo=UTC)
LONG_TEXT = 3000
"""Length drawn for a string whose schema sets no maximum: past PostgreSQL's index rows."""
BELOW, ABOVE = (-(2**63) - 1, -50), (2**31, 2**63, 10**30)
"""Integers drawn where a schema sets no lower or upper bound: negative, beyond
PostgreSQL's integer and bigint."""
BIGINT_MAX = 2**63 - 1

PRICES = ("price_base", "price_top", "price_addon", "price_pass")
_CATALOG = {
    "products": {
        "base": {
            "prices": ["price_base"],
            "features": {"flag": True, "calls": 2**62, "seats": {"limit": 2**40, "per_seat": True}},
        },
        "top": {
            "prices": ["price_top"],
            "features": {"calls": BIGINT_MAX, "seats": {"limit": BIGINT_MAX, "per_seat": True}},
        },
        "addon": {
            "prices": ["price_addon"],
            "addon_for": ["base", "top"],
            "one_off": True,
            "features": {"calls": BIGINT_MAX, "seats": {"limit": 3, "per_seat": True}},
        },
        "pass": {
            "prices": ["price_pass"],
            "duration_days": 30,
            "features": {"flag": True, "calls": 100, "seats": {"limit": 1, "per_seat": True}},
        },
    }
}
"""Knows every price the events name, with limits at PostgreSQL's bigint: per-seat
multiplication and add-ons go past it."""

STATUSES = ("active", "trialing", "past_due", "canceled", "unpaid", "incomplete",
            "incomplete_expired", "paused")  # fmt: skip
CUSTOMERS = ("cus_a", "cus_b")
SUBSCRIPTIONS = ("sub_a", "sub_b")
INTENTS = ("pi_a", "pi_b")
_ZONES = (UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11)))

SCHEMA = contracts.billing_event_adapter.json_schema(mode="validation")
DEFS: dict[str, Any] = SCHEMA["$defs"]
EVENT_DEFS = sorted({ref.rsplit("/", 1)[-1] for ref in SCHEMA["discriminator"]["mapping"].values()})
_FAVOURED = {"SubscriptionEvent": 6, "PaymentEvent": 3, "CheckoutEvent": 3}
_WEIGHTED = [name for name in EVENT_DEFS for _ in range(_FAVOURED.get(name, 1))]


def catalog() -> Catalog:
    return parse_catalog(_CATALOG, origin="contract property catalog")


def billing_events() -> Strategy:
    """One JSON-ready event of any type in the schema, most of them of the types the
    entitlement worker acts on."""
    return st.sampled_from(_WEIGHTED).flatmap(_object)


# -- from the schema -----------------------------------------------------------------------


@functools.cache
def _object(name: str) -> Strategy:
    definition = DEFS[name]
    required = set(definition.get("required", []))
    fields = {}
    for prop, node in definition["properties"].items():
        steer = _STEERED.get((name, prop)) or _STEERED.get(("*", prop))
        fields[prop] = steer(_node(node)) if steer else _node(node)
    return st.fixed_dictionaries(
        {p: s for p, s in fields.items() if p in required},
        optional={p: s for p, s in fields.items() if p not in required},
    )


def _node(node: dict[str, Any]) -> Strategy:
    if "$ref" in node:
        return _object(node["$ref"].rsplit("/", 1)[-1])
    if "anyOf" in node:
        return st.one_of([_node(alternative) for alternative in node["anyOf"]])
    if "const" in node:
        return st.just(node["const"])
    if "enum" in node:
        return st.sampled_from(node["enum"])
    kind: str = node["type"]
    if kind == "string" and node.get("format") == "date-time":
        return _timestamps(node)
    if kind == "string" and node.get("format") == "uuid":
        return st.uuids().map(str)
    builders: dict[str, Callable[[dict[str, Any]], Strategy]] = {
        "string": _text,
        "integer": _integers,
        "boolean": lambda _: st.booleans(),
        "null": lambda _: st.none(),
        "array": _arrays,
        "object": _mappings,
    }
    return builders[kind](node)


def _text(node: dict[str, Any]) -> Strategy:
    pattern = node.get("pattern")
    matches = re.compile(pattern).fullmatch if pattern else None
    low, high = node.get("minLength", 0), node.get("maxLength", LONG_TEXT)
    # JSON text holds no lone surrogates. NUL comes often where the pattern lets it alone
    # through, never where it refuses it (the filter below does the rest). Lists of
    # characters, not st.text: text() would merge the alphabet and draw NUL one in a million.
    nul_allowed = matches is None or matches("\x00") is not None
    char: Strategy = st.characters(codec="utf-8", exclude_characters="" if nul_allowed else "\x00")
    if nul_allowed:
        char = st.one_of(char, st.just("\x00"))
    short = st.lists(char, min_size=low, max_size=max(low, min(high, 8))).map("".join)
    # At the bound, without drawing thousands of characters one by one: a few repeated,
    # or random hex (which PostgreSQL cannot compress under its index row limit).
    repeated = st.lists(char, min_size=1, max_size=3).map(
        lambda part: ("".join(part) * high)[:high]
    )
    random = st.binary(min_size=(high + 1) // 2, max_size=(high + 1) // 2).map(
        lambda data: data.hex()[:high]
    )
    # Mostly short; one_of would give each of the three a third (and overrun the buffer).
    text = st.sampled_from([short, short, short, short, repeated, random]).flatmap(lambda s: s)
    return text if matches is None else text.filter(matches)


def _integers(node: dict[str, Any]) -> Strategy:
    low, high = node.get("minimum"), node.get("maximum")
    edges = [low] if low is not None else list(BELOW)
    edges += [high] if high is not None else list(ABOVE)
    return st.integers(min_value=low, max_value=high) | st.sampled_from(edges)


def _arrays(node: dict[str, Any]) -> Strategy:
    # Short lists: a subscription's items combine by maximum, so in a long list one bad
    # item hides behind the others.
    low = node.get("minItems", 0)
    return st.lists(_node(node.get("items", {"type": "string"})), min_size=low, max_size=low + 1)


def _mappings(node: dict[str, Any]) -> Strategy:
    keys = _text({"type": "string", **node.get("propertyNames", {})})
    values = _node(node.get("additionalProperties", {"type": "string"}))
    return st.dictionaries(keys, values, max_size=3)


def _timestamps(node: dict[str, Any]) -> Strategy:
    zones = st.sampled_from(_ZONES)
    realistic = st.datetimes(datetime(2010, 1, 1), datetime(2035, 1, 1), timezones=zones)
    first, last = _years(node.get("pattern"))
    start, end = datetime(first, 1, 1), datetime(last, 12, 31, 23, 59)
    anywhere = st.datetimes(start, end, timezones=zones)
    # The ends, with the offsets that push them furthest out in UTC.
    ends = st.sampled_from([start.replace(tzinfo=_ZONES[1]), end.replace(tzinfo=_ZONES[2])])
    return (realistic | anywhere | ends).map(lambda at: at.isoformat())


@functools.cache
def _years(pattern: str | None) -> tuple[int, int]:
    """The first and last year a date-time pattern lets through (all of them without one)."""
    if pattern is None:
        return 1, 9999
    years = [year for year in range(1, 10000) if re.match(pattern, f"{year:04d}-01-01T00:00:00")]
    return years[0], years[-1]


# -- steered fields ------------------------------------------------------------------------


def _or_pool(pool: tuple[str, ...]) -> Callable[[Strategy], Strategy]:
    return lambda drawn: st.sampled_from(pool) | drawn


_QUANTITY_TEXT = st.sampled_from(["1", "2", "999999999", "0", "-1", "abc", "7" * 40, "٣"])
_PURCHASE = st.fixed_dictionaries(
    {"price_id": st.sampled_from(PRICES)}, optional={"quantity": _QUANTITY_TEXT}
)

_STEERED: dict[tuple[str, str], Callable[[Strategy], Strategy]] = {
    ("*", "customer_id"): _or_pool(CUSTOMERS),
    ("Customer", "id"): _or_pool(CUSTOMERS),
    ("Subscription", "id"): _or_pool(SUBSCRIPTIONS),
    # Granting subscriptions (active, no pause, no cancellation) come up often.
    ("Subscription", "status"): lambda _: st.just("active") | st.sampled_from(STATUSES),
    ("Subscription", "pause_collection"): lambda drawn: st.none() | drawn,
    ("Subscription", "cancellation"): lambda drawn: st.none() | drawn,
    ("SubscriptionItem", "price_id"): lambda _: st.sampled_from(PRICES),
    ("Payment", "payment_intent_id"): _or_pool(INTENTS),
    ("Payment", "invoice_id"): lambda drawn: st.none() | drawn,
    ("Payment", "metadata"): lambda drawn: _PURCHASE | drawn,
    ("Checkout", "metadata"): lambda drawn: _PURCHASE | drawn,
    ("Checkout", "mode"): lambda drawn: st.just("payment") | drawn,
    ("Checkout", "payment_status"): lambda drawn: st.just("paid") | drawn,
    ("Checkout", "payment_intent_id"): _or_pool(INTENTS),
}
