"""Settings that every process refuses at startup, and how the CLI names them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet.cli import settings_errors
from tests.fleet_settings import FleetSettings


@pytest.mark.parametrize("secret", ["", "short", "x" * 31, "é" * 15])
def test_a_jwt_secret_under_32_bytes_is_invalid(secret: str) -> None:
    with pytest.raises(ValidationError, match="must be at least 32 bytes"):
        FleetSettings(jwt_hs256_secret=secret)


@pytest.mark.parametrize("secret", ["x" * 32, "é" * 16])  # bytes, not characters
def test_a_jwt_secret_of_32_bytes_is_valid(secret: str) -> None:
    settings = FleetSettings(jwt_hs256_secret=secret)

    assert settings.jwt_hs256_secret is not None


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://user:pw@db.internal:5432/billing",
        "postgres://db/billing",
        "postgresql://postgres:@/postgres?host=/tmp/pgdata",
        "postgresql://[::1]:5433/billing",
        "postgresql://h1:5432,h2:5433/billing?target_session_attrs=read-write",
        "postgresql:///billing",
    ],
)
def test_postgres_urls_asyncpg_takes_are_valid(url: str) -> None:
    assert FleetSettings(database_url=url).database_url == url


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("localhost:5432/billing", "must start with postgresql://"),
        ("http://db/billing", "must start with postgresql://"),
        ("postgresql://user:pw@db:54x2/billing", "the host part has a port that is not a number"),
        ("postgresql://h1:5432,h2:0/billing", "the host part has a port that is not a number"),
        ("postgresql://[::1/billing", "not a URL"),
    ],
)
def test_malformed_postgres_urls_are_invalid(url: str, error: str) -> None:
    with pytest.raises(ValidationError, match=error):
        FleetSettings(database_url=url)


@pytest.mark.parametrize(
    "url",
    [
        # '/', '?' or '#' in a password end the host part early: "app:Xy7" reads as host:port.
        "postgresql://app:Xy7/Secr3t@db.internal:5432/billing",
        "postgresql://app:Xy7?Secr3t@db.internal:5432/billing",
        "postgresql://app:Xy7#Secr3t@db.internal:5432/billing",
        # asyncpg ends the password at the first '@': "Zq9:Xy7@db.internal:5432" is the host.
        "postgresql://app:p@Zq9:Xy7@db.internal:5432/billing",
        "postgresql://app:p@Zq9@db.internal/billing",
        # A password in the query, with an '&' that asyncpg would quote as a bad field.
        "postgresql://app@db.internal/billing?password=Xy7&Secr3t",
        # urllib quotes the bracketed part when it is not an IPv6 address.
        "postgresql://app:a[Secr3t]/x@db.internal/billing",
    ],
)
def test_a_password_that_breaks_the_url_is_never_echoed(url: str) -> None:
    with pytest.raises(ValidationError) as raised:
        FleetSettings(database_url=url)

    [line] = settings_errors(raised.value, FleetSettings)

    assert line.startswith("billing-fleet: DATABASE_URL or BILLING_DATABASE_URL: "), line
    assert "percent-encode" in line, line
    message = line.split(": ", 2)[2]
    for part in ("Xy7", "Secr3t", "Zq9", "p@"):
        assert part not in message, line


def test_errors_name_the_variables_and_never_the_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "localhost:5432/billing?password=hunter2")
    monkeypatch.setenv("BILLING_JWT_HS256_SECRET", "hunter2")
    with pytest.raises(ValidationError) as raised:
        FleetSettings()

    lines = settings_errors(raised.value, FleetSettings)

    assert lines == [
        "billing-fleet: DATABASE_URL or BILLING_DATABASE_URL: must start with postgresql:// "
        "(e.g. postgresql://user:password@host:5432/dbname)",
        "billing-fleet: BILLING_JWT_HS256_SECRET: must be at least 32 bytes",
    ]
