"""Configuration, read from the environment (prefix ``BILLING_``) by pydantic-settings.

The core's fields live here; each component's in its own package (``api_gateway.settings``,
``workers.runtime.settings``, ``workers.<name>.settings``, ``fleet.settings``).
``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` are also accepted unprefixed, the names
every platform already exports.
"""

from __future__ import annotations

from typing import Final, cast
from urllib.parse import parse_qs, urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from billing_fleet.kafka_security import Mechanism, Protocol, check_combination

POSTGRES_SCHEMES: Final = ("postgresql", "postgres")


class CoreSettings(BaseSettings):
    """What every process reads: its servers, the Kafka producer and topic defaults, logs.

    Each component (the gateway, the worker runtime, each worker, dev) subclasses it with
    its own fields; a process composes the classes of what it runs (``compose``) and so
    validates only those.
    """

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
        description="Longest wait for the broker's ack of one publish, in every process: the "
        "ingress answers 503 after it (aiokafka's request timeout; the gateway's own bound "
        "is 1 s more), a worker's dead-letter publish is retried as an outage after it, and "
        "a worker's outbox relay waits twice as long for a batch's acks.",
    )
    kafka_topic_partitions: int = Field(
        default=6, ge=1, description="Partitions for topics the fleet creates."
    )
    kafka_topic_replication_factor: int = Field(
        default=1, ge=1, description="Replication factor for topics the fleet creates."
    )

    # -- Kafka security (every client: producers, consumers, admin) ----------------------------
    kafka_security_protocol: Protocol = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.",
    )
    kafka_ssl_cafile: str | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the brokers' certificates; unset: "
        "the system's CAs.",
    )
    kafka_ssl_certfile: str | None = Field(
        default=None, description="PEM client certificate (mutual TLS); unset: none."
    )
    kafka_ssl_keyfile: str | None = Field(
        default=None, description="PEM key of the client certificate; unset: in the certfile."
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of the client key, if it is encrypted."
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True,
        description="Compare the broker's certificate with its host name (the chain is "
        "verified either way).",
    )
    kafka_sasl_mechanism: Mechanism = Field(
        default="PLAIN", description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512."
    )
    kafka_sasl_username: str | None = Field(default=None, description="SASL username.")
    kafka_sasl_password: SecretStr | None = Field(default=None, description="SASL password.")

    # -- migrations --------------------------------------------------------------------------
    migrate_lock_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Longest `migrate` waits for a lock (the migration lock another "
        "migrate holds, a table a migration alters) before it stops with exit 1.",
    )

    log_level: str = Field(default="INFO", description="Log level of every process.")

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None:
            check_postgres_url(value)
        return value

    @model_validator(mode="after")
    def _kafka_security(self) -> CoreSettings:
        check_combination(self)
        return self


def split_commas(value: object) -> object:
    """A comma list from the environment as a list (a ``mode="before"`` validator)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def compose(name: str, *classes: type[CoreSettings]) -> type[CoreSettings]:
    """One settings class with the fields and validators of all ``classes`` (repeats and
    classes another one already includes are dropped): what one process runs."""
    bases: list[type[CoreSettings]] = []
    for cls in classes:
        if not any(issubclass(other, cls) for other in bases) and cls not in bases:
            bases = [base for base in bases if not issubclass(cls, base)] + [cls]
    if len(bases) == 1:
        return bases[0]
    return cast("type[CoreSettings]", type(name, tuple(bases), {"__module__": __name__}))


def variable_of(cls: type[CoreSettings], loc: str) -> str:
    """The variable(s) of the setting an error's ``loc`` names (its field or an alias)."""
    for name, info in cls.model_fields.items():
        aliases = info.validation_alias
        names = [str(c) for c in aliases.choices] if isinstance(aliases, AliasChoices) else []
        if loc == name or loc in names:
            # The unprefixed one first: DATABASE_URL or BILLING_DATABASE_URL.
            return " or ".join(reversed(names)) if names else f"BILLING_{name.upper()}"
    return f"BILLING_{loc.upper()}" if loc else "configuration"


def variables(cls: type[CoreSettings]) -> list[str]:
    """Every variable ``cls`` reads, as the README names them (the prefixed name)."""
    return [f"BILLING_{name.upper()}" for name in cls.model_fields]


def check_postgres_url(url: str) -> None:
    """ValueError, naming the part, when ``url`` is not a PostgreSQL URL asyncpg can use.

    The messages never quote any part of the URL: a password with an unencoded '/', '?',
    '#' or '@' shifts the parts, so what looks like a port or a host may be the password.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed '[', or a bracketed part that is no IPv6 address
        raise ValueError(
            "not a URL: bracket only an IPv6 host, and percent-encode '[' and ']' in the password"
        ) from None
    if parts.scheme not in POSTGRES_SCHEMES:
        raise ValueError(
            "must start with postgresql:// (e.g. postgresql://user:password@host:5432/dbname)"
        )
    # As asyncpg reads it: the user and password end at the first '@'.
    hosts = parts.netloc.partition("@")[2] if "@" in parts.netloc else parts.netloc
    if "@" in hosts:
        raise ValueError("the host part contains '@': percent-encode '@' in the password")
    # Several hosts are allowed (host1:5432,host2:5433); each port must be a number.
    for host in hosts.split(","):
        port = host.rpartition("]")[2] if host.startswith("[") else host
        _, colon, number = port.rpartition(":")
        if colon and not (number.isdigit() and 0 < int(number) < 65536):
            raise ValueError(
                "the host part has a port that is not a number from 1 to 65535: "
                "percent-encode '/', '?' and '#' in the password"
            )
    try:
        parse_qs(parts.query, strict_parsing=bool(parts.query))  # as asyncpg parses it
    except ValueError:
        raise ValueError(
            "the query part is not name=value pairs joined by '&': percent-encode '&' and "
            "'=' in its values"
        ) from None
