"""``change_id_for`` is uuid5 of the documented name (it spells uuid5 out for speed)."""

from __future__ import annotations

import uuid

import pytest

from contracts import change_id_for
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
    assert change_id_for(cause, customer_id, feature) == uuid.uuid5(EVENT_ID_NAMESPACE, name)
