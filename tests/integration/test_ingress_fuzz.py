"""Fuzzing the webhook endpoint: random bodies and headers never give a 5xx, never publish."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts import BILLING_EVENTS
from tests.gateway import Gateway, read_topic
from tests.stripe_fixtures import sign

pytestmark = pytest.mark.integration

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)
# JSON that looks like a Stripe event but is not one we can publish: no usable object.
event_like = st.fixed_dictionaries(
    {"id": st.text(), "object": st.just("event"), "type": st.text()},
    optional={"data": json_values, "created": json_values, "api_version": json_values},
)
# Printable ASCII without surrounding blanks: what an HTTP client can send at all.
header_values = st.text(
    alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80
).map(str.strip)


@st.composite
def requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    body = draw(
        st.binary(max_size=300)
        | json_values.map(lambda v: json.dumps(v).encode())
        | event_like.map(lambda v: json.dumps(v).encode())
    )
    headers = draw(st.dictionaries(st.sampled_from(["X-Junk", "Content-Type"]), header_values))
    signature = draw(st.sampled_from(["valid", "random", "none"]))
    if signature == "valid":
        try:
            headers["Stripe-Signature"] = sign(body)
        except UnicodeDecodeError:
            headers["Stripe-Signature"] = draw(header_values)
    elif signature == "random":
        headers["Stripe-Signature"] = draw(header_values)
    return body, headers


@pytest.fixture
async def topic_size(kafka: Any) -> int:
    return len(await read_topic(kafka.bootstrap_servers, BILLING_EVENTS))


async def test_random_requests_never_5xx_and_never_publish(
    gateway: Gateway, kafka: Any, topic_size: int
) -> None:
    statuses: set[int] = set()

    # Hypothesis drives a sync client from a thread; the gateway serves on this test's loop.
    def fuzz() -> None:
        with httpx.Client(base_url=gateway.url, timeout=10) as client:

            @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
            @given(request=requests())
            def one(request: tuple[bytes, dict[str, str]]) -> None:
                body, headers = request
                response = client.post("/webhooks/stripe", content=body, headers=headers)
                statuses.add(response.status_code)
                assert response.status_code < 500, (response.status_code, response.text)

            one()

    await asyncio.to_thread(fuzz)

    assert len(await read_topic(kafka.bootstrap_servers, BILLING_EVENTS)) == topic_size
    assert 400 in statuses
