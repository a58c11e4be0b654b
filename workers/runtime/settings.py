"""The worker runtime's settings: batches, retries, timeouts and its HTTP server."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode

from billing_fleet.settings import CoreSettings, split_commas


class RuntimeSettings(CoreSettings):
    worker_batch_max_records: int = Field(
        default=500, ge=1, description="Most messages a worker applies in one transaction."
    )
    worker_max_attempts: int = Field(
        default=3, ge=1, description="Attempts at a failing message before it is dead-lettered."
    )
    worker_retry_backoff_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.2, 1.0, 5.0],
        description="Comma-separated waits between attempts at a failing message.",
    )
    worker_dependency_backoff_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Longest wait between retries while PostgreSQL or Kafka is down.",
    )
    worker_database_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest one worker transaction (connection, batch, commit) may take before "
        "it is abandoned and retried as an outage; keep it under a third of the shutdown timeout.",
    )
    worker_http_host: str = Field(
        default="127.0.0.1",
        description="Bind address of a worker's /healthz, /readyz and /metrics.",
    )
    worker_http_port: int = Field(
        default=9100, description="Port of a worker's /healthz, /readyz and /metrics."
    )
    worker_shutdown_timeout_seconds: float = Field(
        default=20.0, gt=0, description="How long SIGTERM waits for in-flight work."
    )
    worker_lanes: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Transactions a worker runs at once on a batch, each over its own keys "
        "(customers): one computes while another waits for PostgreSQL.",
    )
    worker_fetch_wait_ms: int = Field(
        default=40,
        ge=1,
        le=5000,
        description="Longest wait of an idle fetch at the broker (the consumer's own polls "
        "wait at most 10 ms of it).",
    )
    worker_session_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="Kafka group session timeout: how soon a dead worker's partitions move.",
    )

    # -- deliveries (effects beyond Kafka) ------------------------------------------------
    delivery_concurrency: int = Field(
        default=32, ge=1, le=1000, description="Sends a worker's delivery dispatcher runs at once."
    )
    delivery_per_destination_concurrency: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Of those, sends to one HTTP destination (a URL's scheme, host and "
        "port) at once: an endpoint that hangs until the timeout holds only these. A mail "
        "relay's cap is its channel's connections.",
    )
    delivery_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="How long a claimed delivery stays leased to its dispatcher; a crashed "
        "dispatcher's rows are sent again after it. Longer than any channel's timeout.",
    )
    delivery_poll_seconds: float = Field(
        default=1.0, gt=0, description="Longest wait of an idle dispatcher between two claims."
    )
    delivery_http_backoff_seconds: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [1.0, 5.0, 30.0, 120.0, 600.0],
        description="Comma-separated waits between attempts at an HTTP delivery whose "
        "endpoint is out (the last repeats; a longer Retry-After wins).",
    )
    delivery_http_max_attempts: int = Field(
        default=10, ge=1, description="Attempts at an HTTP delivery before it is dead."
    )
    delivery_http_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Longest one HTTP delivery may take (connect to answer)."
    )

    @field_validator("worker_retry_backoff_seconds", "delivery_http_backoff_seconds", mode="before")
    @classmethod
    def _split_backoff(cls, value: object) -> object:
        return split_commas(value)

    @field_validator("delivery_http_backoff_seconds")
    @classmethod
    def _not_negative(cls, value: list[float]) -> list[float]:
        if not value or any(wait < 0 for wait in value):
            raise ValueError("must be one or more waits, none negative")
        return value

    @model_validator(mode="after")
    def _lease_outlasts_send(self) -> RuntimeSettings:
        if self.delivery_lease_seconds <= self.delivery_http_timeout_seconds:
            raise ValueError(
                "BILLING_DELIVERY_LEASE_SECONDS must be longer than "
                "BILLING_DELIVERY_HTTP_TIMEOUT_SECONDS (a send would outlive its lease)"
            )
        return self
