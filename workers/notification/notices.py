"""The notices the worker sends, and the channels it delivers them through."""

from __future__ import annotations

from typing import Final, Literal, get_args

NoticeKind = Literal[
    "receipt",
    "payment_failed",
    "trial_ending",
    "cancellation_scheduled",
    "subscription_ended",
    "access_granted",
    "access_revoked",
]
NOTICES: Final[tuple[NoticeKind, ...]] = get_args(NoticeKind)

TRANSACTIONAL: Final[frozenset[NoticeKind]] = frozenset({"receipt", "payment_failed"})
"""Notices a customer cannot opt out of (a receipt, a failed payment): they never carry
``List-Unsubscribe``. Every other notice is optional and carries it when an unsubscribe
link is configured."""

EMAIL_CHANNEL: Final = "email"
WEBHOOK_CHANNEL: Final = "webhook"


class UnknownNotice(ValueError):
    """``notification_enabled`` names a notice this worker does not know."""


def enabled_notices(names: list[str]) -> frozenset[NoticeKind]:
    """``names`` (the ``notification_enabled`` setting) as notice kinds; ``UnknownNotice``
    for a name that is none, so a typo stops the start instead of silencing a notice."""
    unknown = sorted(set(names) - set(NOTICES))
    if unknown:
        raise UnknownNotice(
            f"BILLING_NOTIFICATION_ENABLED names unknown notices {unknown} "
            f"(known: {', '.join(NOTICES)})"
        )
    return frozenset(kind for kind in NOTICES if kind in names)
