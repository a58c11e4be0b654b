"""The HTTP channel's classification, Retry-After, a row's next state, delivery checks."""

from __future__ import annotations

import asyncio
import email.utils
from typing import Any

import pytest

from billing_fleet.settings import CoreSettings
from contracts import BILLING_EVENTS
from workers.runtime.declaration import WorkerBuildError, WorkerDeclaration
from workers.runtime.deliveries.dispatcher import _next_state
from workers.runtime.deliveries.http import (
    RETRY_AFTER_MAX_SECONDS,
    HttpSender,
    classify,
    parse_retry_after,
)
from workers.runtime.deliveries.model import Delivery, InvalidDelivery, RetryPolicy, SendResult
from workers.runtime.spec import WorkerSpec


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "sent"),
        (204, "sent"),
        (301, "failed"),
        (400, "failed"),
        (404, "failed"),
        (410, "failed"),
        (408, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
    ],
)
def test_http_status_classification(status: int, outcome: str) -> None:
    result = classify(status)
    assert (result.outcome, result.code) == (outcome, str(status))


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert classify(503, "7").retry_after == 7.0
    now = 1_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == 30.0
    assert parse_retry_after("999999999") == RETRY_AFTER_MAX_SECONDS
    assert parse_retry_after(email.utils.formatdate(now - 5, usegmt=True), now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_next_state_follows_the_channel_policy() -> None:
    sender = HttpSender(RetryPolicy((1.0, 10.0), 3))
    try:
        assert _next_state(sender, 1, SendResult("sent", "200")) == ("sent", 0.0)
        assert _next_state(sender, 1, SendResult("failed", "410")) == ("failed", 0.0)
        status, wait = _next_state(sender, 2, SendResult("retry", "503"))
        assert status == "pending" and 8.0 <= wait <= 12.0  # the second wait, jittered
        status, wait = _next_state(sender, 1, SendResult("retry", "429", retry_after=120.0))
        assert (status, wait) == ("pending", 120.0)  # the receiver's Retry-After wins
        assert _next_state(sender, 3, SendResult("retry", "503")) == ("dead", 0.0)
    finally:
        await sender.aclose()


@pytest.mark.parametrize(
    ("channel", "destination", "key"),
    [
        ("", "http://x", "k"),
        ("http", "http://x", ""),
        ("http", "http://x", "a\x00b"),
        ("http", "", "k"),
        ("http", "http://x", "k" * 256),
    ],
)
def test_delivery_refuses_what_the_table_cannot_hold(
    channel: str, destination: str, key: str
) -> None:
    with pytest.raises(InvalidDelivery):
        Delivery(channel, destination, key, b"")


def test_json_delivery_sets_its_content_type() -> None:
    delivery = Delivery.json("http", "http://x", "k", {"a": 1}, headers={"x-extra": "1"})
    assert delivery.payload == b'{"a":1}'
    assert delivery.headers == {"content-type": "application/json", "x-extra": "1"}


@pytest.mark.parametrize(
    "headers",
    [
        {"x-bad\r\nname": "1"},
        {"x bad": "1"},
        {"": "1"},
        {"x-ok": "a\r\nx-injected: 1"},
        {"x-ok": "a\nb"},
        {"x-ok": "a\x00b"},
    ],
)
def test_delivery_refuses_headers_http_cannot_send(headers: dict[str, str]) -> None:
    with pytest.raises(InvalidDelivery, match="header"):
        Delivery("http", "http://x", "k", b"", headers)


async def test_a_build_that_fails_its_declaration_closes_its_channels() -> None:
    sender = HttpSender(RetryPolicy((1.0,), 1))

    def factory(settings: CoreSettings) -> WorkerSpec:
        return WorkerSpec.single("other-name", _handle, channels={"http": sender})

    declaration = WorkerDeclaration("toy", "x:y", CoreSettings, None, (BILLING_EVENTS,))
    with pytest.raises(WorkerBuildError, match="disagrees with its declaration"):
        declaration.build(CoreSettings(), factory)
    await asyncio.sleep(0)  # the close runs in the background of this loop
    await asyncio.sleep(0)
    assert sender.closed


async def _handle(conn: Any, event: Any) -> list[Any]:
    return []
