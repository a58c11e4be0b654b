"""The notification worker's own settings (composed with the runtime's where it runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr

from billing_fleet.settings import CoreSettings

SmtpSecurity = Literal["none", "starttls", "tls"]


class NotificationSettings(CoreSettings):
    # -- SMTP ------------------------------------------------------------------------------
    notification_smtp_host: str = Field(default="localhost", description="SMTP relay host.")
    notification_smtp_port: int = Field(default=25, ge=1, le=65535, description="SMTP port.")
    notification_smtp_security: SmtpSecurity = Field(
        default="none",
        description="none, starttls (upgrade a plain connection) or tls (implicit TLS, 465).",
    )
    notification_smtp_username: str | None = Field(default=None, description="SMTP AUTH user.")
    notification_smtp_password: SecretStr | None = Field(
        default=None, description="SMTP AUTH password."
    )
    notification_smtp_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest one SMTP send may take (connect to answer)."
    )
    notification_smtp_cafile: str | None = Field(
        default=None, description="CA bundle the relay's certificate is checked against."
    )
    notification_smtp_connections: int = Field(
        default=16,
        ge=1,
        le=100,
        description="Connections to the relay at once (each reused for up to 100 mails), "
        "at most BILLING_DELIVERY_CONCURRENCY: the mails sent at once, whatever "
        "BILLING_DELIVERY_PER_DESTINATION_CONCURRENCY.",
    )
    notification_smtp_backoff_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0],
        min_length=1,
        description="Waits between attempts at a mail the relay did not take (down, 4xx), "
        "as JSON; after the last one the mail is dead (listed, `deliveries retry` re-queues "
        "it). A 5xx for the recipient is final at once.",
    )
    # -- what mails say ----------------------------------------------------------------------
    notification_mail_from: str = Field(
        default="billing@example.com", description="From address of every mail."
    )
    notification_reply_to: str | None = Field(default=None, description="Reply-To, if any.")
    notification_company_name: str = Field(
        default="billing-fleet", description="Company named in the mails."
    )
    notification_links: dict[str, str] = Field(
        default_factory=dict,
        description="Links the templates may use, as JSON (e.g. "
        '{"account": "https://app.example.com/billing", "unsubscribe": "..."}).',
    )
    notification_templates_dir: Path | None = Field(
        default=None,
        description="Directory whose templates override the shipped ones (same file names).",
    )
    notification_enabled: list[str] = Field(
        default_factory=lambda: [
            "receipt",
            "payment_failed",
            "trial_ending",
            "cancellation_scheduled",
            "subscription_ended",
        ],
        description="The notices that are sent (access_granted and access_revoked are off "
        "by default), as JSON.",
    )
    notification_receipt_url: str | None = Field(
        default=None,
        description="URL of our receipt PDFs with {number} in it (e.g. "
        "https://api.example.com/v1/receipts/{number}.pdf); none: only Stripe's links.",
    )
    # -- outbound webhooks --------------------------------------------------------------------
    notification_webhook_endpoints_path: Path | None = Field(
        default=None,
        description="YAML file of outbound webhook endpoints (url, secret(s), event types).",
    )
    notification_webhook_backoff_seconds: list[float] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="Waits between attempts at a webhook (Standard Webhooks' schedule after "
        "the immediate first attempt), as JSON.",
    )
    # -- privacy -------------------------------------------------------------------------------
    notification_retention_days: float = Field(
        default=30.0,
        gt=0,
        description="Days after which sent mails' addresses and bodies are masked in the "
        "delivery log.",
    )
