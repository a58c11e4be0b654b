"""All configuration, read from the environment (prefix ``BILLING_``) by pydantic-settings.

``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` are also accepted unprefixed, the names
every platform already exports.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BILLING_", extra="ignore")

    # -- servers ---------------------------------------------------------------------------
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices("BILLING_KAFKA_BOOTSTRAP_SERVERS", "KAFKA_BOOTSTRAP_SERVERS"),
        description="Kafka bootstrap servers; unset means `dev` starts the embedded broker.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("BILLING_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL DSN; unset means `dev` starts the embedded PostgreSQL.",
    )

    # -- Kafka producer ----------------------------------------------------------------------
    kafka_enable_idempotence: bool = Field(
        default=False,
        description="Idempotent producer; on in production, off for brokers without it (Tansu).",
    )
    kafka_publish_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How long the ingress waits for the broker's ack before answering 503.",
    )
    kafka_topic_partitions: int = Field(
        default=6, ge=1, description="Partitions for topics the fleet creates."
    )
    kafka_topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor for topics the fleet creates."
    )

    # -- Stripe webhook ingress ----------------------------------------------------------------
    stripe_webhook_secrets: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated webhook signing secrets; any may match (secret rolling).",
    )
    stripe_webhook_tolerance_seconds: int = Field(
        default=300, ge=1, description="Maximum age of a Stripe-Signature timestamp."
    )
    stripe_api_version: str = Field(
        default="2025-11-17.clover",
        description="API version pinned on the webhook endpoint; others are counted.",
    )
    webhook_max_body_bytes: int = Field(
        default=1_048_576, ge=1024, description="Larger webhook bodies are refused with 413."
    )

    # -- HTTP ----------------------------------------------------------------------------------
    gateway_host: str = Field(default="127.0.0.1", description="Gateway bind address.")
    gateway_port: int = Field(default=8000, description="Gateway port.")

    # -- dev -----------------------------------------------------------------------------------
    dev_data_dir: Path = Field(
        default=Path(".billing-fleet"),
        description="Where `dev` keeps the embedded PostgreSQL data.",
    )
    dev_kafka_port: int = Field(default=9092, description="Port of the embedded broker in dev.")

    log_level: str = Field(default="INFO", description="Log level of every process.")

    @field_validator("stripe_webhook_secrets", mode="before")
    @classmethod
    def _split_secrets(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
