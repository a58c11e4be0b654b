"""The worker's hand-spelled fast paths for entitlement changes equal the reference ones:
``change_id_for`` is uuid5 of the documented name, ``entitlement_change_json`` is
``EntitlementChange(...).model_dump_json()``."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import EntitlementChange, change_id_for
from contracts.entitlements import change_id_text, entitlement_change_json
from contracts.events import EVENT_ID_NAMESPACE


@pytest.mark.parametrize(
    ("cause", "customer_id", "feature"),
    [
        ("evt_1", "cus_1", "sso"),
        ("expiry:2025-06-01T12:00:00+00:00", "cus_ü", "api_calls"),
        ("", "", ""),
    ],
)
def test_change_id_is_uuid5_of_the_name(cause: str, customer_id: str, feature: str) -> None:
    name = f"entitlement:{cause}:{customer_id}:{feature}"
    expected = uuid.uuid5(EVENT_ID_NAMESPACE, name)
    assert change_id_for(cause, customer_id, feature) == expected
    assert change_id_text(cause, customer_id, feature) == str(expected)


def test_change_json_names_every_field_of_the_model() -> None:
    annotations = entitlement_change_json.__annotations__
    assert set(annotations) - {"return"} == set(EntitlementChange.model_fields)


moments = st.datetimes(
    min_value=datetime(2000, 1, 1),
    max_value=datetime(2100, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-5))]),
)
# What events can carry: no NUL (the contract), no lone surrogate (JSON cannot hold one,
# so no parsed event does).
text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)


@given(
    fields=st.fixed_dictionaries(
        {
            "id": st.uuids(),
            "type": st.sampled_from(
                ["entitlement.granted", "entitlement.updated", "entitlement.revoked"]
            ),
            "occurred_at": moments,
            "customer_id": text,
            "user_id": st.none() | text,
            "feature": text,
            "entitled": st.booleans(),
            "limit": st.none() | st.integers(min_value=0, max_value=2**53),
            "expires_at": st.none() | moments,
            "sources": st.lists(text, max_size=3),
            "caused_by": st.none() | text,
        }
    )
)
def test_change_json_is_the_models_json(fields: dict[str, Any]) -> None:
    fast = entitlement_change_json(**fields)
    assert fast == EntitlementChange(**fields).model_dump_json().encode()
    assert entitlement_change_json(**{**fields, "id": str(fields["id"])}) == fast
    assert EntitlementChange.model_validate_json(fast) == EntitlementChange(**fields)
