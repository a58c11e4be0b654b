"""The notification worker's own metrics (the runtime counts its deliveries)."""

from prometheus_client import Counter

NOTIFICATIONS_SKIPPED = Counter(
    "billing_notifications_skipped_total",
    "Notices that could not be sent, recorded in notification_skips, by notice and reason "
    "(no_email, customer_deleted, invalid_email); counted when recorded, so a transaction "
    "retried after an outage may count one twice (the table is the record).",
    ["notice", "reason"],
)
