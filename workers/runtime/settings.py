"""The worker runtime's settings: batches, retries, timeouts and its HTTP server."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
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
        default=10,
        ge=1,
        le=5000,
        description="Longest wait of an idle fetch, at the broker and between empty polls.",
    )
    worker_session_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        description="Kafka group session timeout: how soon a dead worker's partitions move.",
    )

    @field_validator("worker_retry_backoff_seconds", mode="before")
    @classmethod
    def _split_backoff(cls, value: object) -> object:
        return split_commas(value)
