"""How every Kafka client of the fleet authenticates and encrypts: TLS and SASL from the
settings, as aiokafka keyword arguments and as a FastStream ``security`` object.

OAUTHBEARER is not offered: aiokafka needs a ``sasl_oauth_token_provider`` object (code
that fetches and refreshes tokens from one identity provider's API), which no setting can
describe; PLAIN and SCRAM take a username and password, which settings can.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

if TYPE_CHECKING:
    from faststream.security import BaseSecurity

    from billing_fleet.settings import CoreSettings

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
PROTOCOLS: Final = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS: Final = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class KafkaSecurityError(ValueError):
    """The TLS material cannot be loaded (one line, naming the file or the variable)."""


@dataclass(frozen=True)
class KafkaSecurity:
    """What one client needs on top of the bootstrap servers."""

    protocol: Protocol = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    mechanism: Mechanism | None = None
    username: str | None = None
    password: str | None = None

    @property
    def uses_tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for AIOKafkaProducer/Consumer/AdminClient."""
        kwargs: dict[str, Any] = {"security_protocol": self.protocol}
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.mechanism
            kwargs["sasl_plain_username"] = self.username
            kwargs["sasl_plain_password"] = self.password
        return kwargs

    def broker_security(self) -> BaseSecurity | None:
        """The same for a FastStream ``KafkaBroker(security=...)``; None for PLAINTEXT."""
        from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

        if not self.uses_sasl:
            return BaseSecurity(ssl_context=self.ssl_context) if self.uses_tls else None
        assert self.username is not None and self.password is not None
        sasl = {"PLAIN": SASLPlaintext, "SCRAM-SHA-256": SASLScram256}.get(
            self.mechanism or "PLAIN", SASLScram512
        )
        # use_ssl explicitly: SASL_SSL without our own context means the system defaults.
        return sasl(self.username, self.password, self.ssl_context, use_ssl=self.uses_tls)


PLAINTEXT: Final = KafkaSecurity()


def servers(bootstrap: str) -> list[str]:
    """``host:port,host:port`` as a list: FastStream's KafkaBroker takes a string as ONE
    server (aiokafka splits it, FastStream wraps it in a list first)."""
    return [part.strip() for part in bootstrap.split(",") if part.strip()]


def check_combination(settings: CoreSettings) -> None:
    """ValueError (one line, naming the variables) for settings that cannot work together
    or files that are not there; run when the settings are read, so a process refuses to
    start instead of failing on its first connection."""
    protocol = settings.kafka_security_protocol
    tls = protocol in ("SSL", "SASL_SSL")
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    files = {
        "BILLING_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "BILLING_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "BILLING_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    given = [name for name, path in files.items() if path]
    if given and not tls:
        raise ValueError(
            f"{', '.join(given)} set, but BILLING_KAFKA_SECURITY_PROTOCOL is {protocol}: "
            "use SSL or SASL_SSL"
        )
    if settings.kafka_ssl_keyfile and not settings.kafka_ssl_certfile:
        raise ValueError("BILLING_KAFKA_SSL_KEYFILE needs BILLING_KAFKA_SSL_CERTFILE")
    for name, path in files.items():
        if path and not Path(path).is_file():
            raise ValueError(f"{name}: no file at {path}")
    credentials = settings.kafka_sasl_username is not None or settings.kafka_sasl_password
    if sasl and (not settings.kafka_sasl_username or not settings.kafka_sasl_password):
        raise ValueError(
            f"BILLING_KAFKA_SECURITY_PROTOCOL={protocol} needs BILLING_KAFKA_SASL_USERNAME "
            "and BILLING_KAFKA_SASL_PASSWORD"
        )
    if credentials and not sasl:
        raise ValueError(
            f"BILLING_KAFKA_SASL_USERNAME/PASSWORD set, but BILLING_KAFKA_SECURITY_PROTOCOL "
            f"is {protocol}: use SASL_PLAINTEXT or SASL_SSL"
        )
    if tls:  # files that are there but hold no certificate or key are refused now too
        _settings_context(settings)


def tls_context(
    cafile: str | None,
    certfile: str | None,
    keyfile: str | None,
    key_password: str | None,
    check_hostname: bool,
) -> ssl.SSLContext:
    """A client context trusting ``cafile`` (the system's CAs without it), with a client
    certificate when ``certfile`` is given (mutual TLS)."""
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        raise KafkaSecurityError(f"BILLING_KAFKA_SSL_CAFILE: cannot load {cafile}: {exc}") from None
    if certfile:
        try:
            context.load_cert_chain(certfile, keyfile, password=key_password)
        except (OSError, ssl.SSLError) as exc:
            raise KafkaSecurityError(
                f"BILLING_KAFKA_SSL_CERTFILE/KEYFILE: cannot load {certfile}: {exc}"
            ) from None
    if not check_hostname:
        # Still verifies the chain; only the name in the certificate is not compared.
        context.check_hostname = False
    return context


def _settings_context(settings: CoreSettings) -> ssl.SSLContext:
    key_password = settings.kafka_ssl_key_password
    return tls_context(
        settings.kafka_ssl_cafile,
        settings.kafka_ssl_certfile,
        settings.kafka_ssl_keyfile,
        key_password.get_secret_value() if key_password else None,
        settings.kafka_ssl_check_hostname,
    )


def kafka_security(settings: CoreSettings) -> KafkaSecurity:
    """The clients' security from ``settings`` (KafkaSecurityError if the TLS files do not
    load)."""
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return PLAINTEXT
    context = _settings_context(settings) if protocol in ("SSL", "SASL_SSL") else None
    password = settings.kafka_sasl_password
    sasl = protocol in ("SASL_PLAINTEXT", "SASL_SSL")
    return KafkaSecurity(
        protocol=protocol,
        ssl_context=context,
        mechanism=settings.kafka_sasl_mechanism if sasl else None,
        username=settings.kafka_sasl_username if sasl else None,
        password=password.get_secret_value() if sasl and password else None,
    )
