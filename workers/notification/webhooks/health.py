"""The newest outcome per endpoint, kept in memory between two writes to the table (a
write per send would cost a round trip on every webhook)."""

from __future__ import annotations

from datetime import datetime

from workers.notification.webhooks.state import Health
from workers.runtime.deliveries.model import SendResult


class HealthBuffer:
    def __init__(self) -> None:
        self._pending: dict[str, Health] = {}

    def __bool__(self) -> bool:
        return bool(self._pending)

    def note(self, endpoint_id: str, result: SendResult, at: datetime) -> None:
        """One attempt's outcome at ``at``: a success, or a failure with its code and text."""
        if result.outcome == "sent":
            self._merge(Health(endpoint_id, last_success_at=at))
        else:
            text = " ".join(part for part in (result.code, result.detail) if part)
            self._merge(Health(endpoint_id, last_failure_at=at, last_failure=text or None))

    def take(self) -> list[Health]:
        """Everything noted since the last ``take``; ``keep`` it again if not written."""
        taken, self._pending = list(self._pending.values()), {}
        return taken

    def keep(self, health: list[Health]) -> None:
        for item in health:
            self._merge(item)

    def _merge(self, new: Health) -> None:
        old = self._pending.get(new.endpoint_id)
        if old is None:
            self._pending[new.endpoint_id] = new
            return
        success = _later(old.last_success_at, new.last_success_at)
        newer_failure = new.last_failure_at is not None and (
            old.last_failure_at is None or new.last_failure_at >= old.last_failure_at
        )
        failure = (new if newer_failure else old).last_failure_at
        text = (new if newer_failure else old).last_failure
        self._pending[new.endpoint_id] = Health(new.endpoint_id, success, failure, text)


def _later(a: datetime | None, b: datetime | None) -> datetime | None:
    if a is None or b is None:
        return a or b
    return max(a, b)
