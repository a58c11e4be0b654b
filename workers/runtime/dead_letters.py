"""Dead letters: the original message, unchanged, plus headers saying why and from where.

Value and key are the original bytes. Original headers are kept; FastStream publishes
header values as text, so a value that is not UTF-8 (no producer of the fleet writes
one) is carried with replacement characters.

Each dead letter carries its own id (``dlt_id``): a broker that starts again empty (dev's
in-memory Tansu) reuses partitions and offsets, so only the id tells a new letter from one
replayed before.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from aiokafka import ConsumerRecord

DLT_PREFIX: Final = "dlt_"
DLT_ID: Final = "dlt_id"
MESSAGE_LIMIT: Final = 1000  # characters of the error message kept in dlt_error_message


@dataclass
class FailureLog:
    """The failures of one message, kept while its batch is being retried."""

    attempts: int = 0
    first_at: datetime | None = None
    last_at: datetime | None = None
    last_error: BaseException | None = None
    dead_lettered: bool = field(default=False)
    letter_id: str | None = None

    def record(self, exc: BaseException) -> None:
        now = datetime.now(UTC)
        self.attempts += 1
        self.first_at = self.first_at or now
        self.last_at, self.last_error = now, exc

    def dead_letter_id(self) -> str:
        """The id of this message's dead letter: made on first use, then the same on every
        retry of its publish (an unacknowledged publish may still have landed)."""
        if self.letter_id is None:
            self.letter_id = str(uuid.uuid4())
        return self.letter_id


def original_headers(record: ConsumerRecord[bytes, bytes]) -> dict[str, str]:
    """The record's own headers (earlier ``dlt_*`` headers dropped), as text."""
    return {
        name: value.decode(errors="replace")
        for name, value in record.headers
        if not name.startswith(DLT_PREFIX)
    }


def dead_letter_headers(
    record: ConsumerRecord[bytes, bytes], failure: FailureLog, consumer_group: str
) -> dict[str, str]:
    error = failure.last_error
    message = str(error) if error is not None else ""
    if len(message) > MESSAGE_LIMIT:
        message = message[: MESSAGE_LIMIT - 1] + "…"
    return {
        **original_headers(record),
        DLT_ID: failure.dead_letter_id(),
        "dlt_error_class": _qualified_name(error),
        "dlt_error_message": message,
        "dlt_attempts": str(failure.attempts),
        "dlt_first_failure_at": _iso(failure.first_at),
        "dlt_last_failure_at": _iso(failure.last_at),
        "dlt_origin_topic": record.topic,
        "dlt_origin_partition": str(record.partition),
        "dlt_origin_offset": str(record.offset),
        "dlt_consumer_group": consumer_group,
    }


def _qualified_name(error: BaseException | None) -> str:
    if error is None:
        return ""
    cls = type(error)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat().replace("+00:00", "Z") if moment else ""
