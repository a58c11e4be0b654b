"""A dead letter's id: one per dead-lettering, the same on every retry of its publish."""

from __future__ import annotations

import uuid

from aiokafka import ConsumerRecord

from workers.runtime.dead_letters import DLT_ID, FailureLog, dead_letter_headers
from workers.runtime.spec import Poison


def record(headers: list[tuple[str, bytes]]) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("billing.events.v1", 2, 41, 0, 0, b"cus_1", b"{}", None, 5, 2, headers)


def test_id_is_made_once_per_failure_and_kept_across_publish_retries() -> None:
    failure = FailureLog()
    failure.record(Poison("not in the catalog"))
    message = record([("ce_type", b"invoice.paid")])

    first = dead_letter_headers(message, failure, "entitlement")
    retry = dead_letter_headers(message, failure, "entitlement")  # the publish timed out
    other = FailureLog()
    other.record(Poison("not in the catalog"))

    assert uuid.UUID(first[DLT_ID])
    assert retry[DLT_ID] == first[DLT_ID]
    assert dead_letter_headers(message, other, "entitlement")[DLT_ID] != first[DLT_ID]


def test_a_replayed_letter_that_fails_again_gets_a_new_id() -> None:
    # Replays drop the dlt_* headers; should one still carry them, they are not kept.
    failure = FailureLog()
    failure.record(Poison("still not in the catalog"))
    message = record([("ce_type", b"invoice.paid"), (DLT_ID, b"old-id")])

    headers = dead_letter_headers(message, failure, "entitlement")

    assert headers[DLT_ID] != "old-id"
    assert headers["ce_type"] == "invoice.paid"
