"""The banner's read API commands carry tokens the gateway accepts, for the right callers."""

from __future__ import annotations

import re
import shlex
import time
from urllib.parse import urlsplit

import pytest

from api_gateway.app import is_admin_path
from api_gateway.auth import TokenVerifier
from fleet.dev_banner import Generated, banner
from fleet.send_test_event import DEFAULT_CUSTOMER_ID, DEFAULT_USER_ID
from tests.fleet_settings import FleetSettings

JWT_SECRET = "generated-jwt-secret-0123456789abcdef"


def settings(**overrides: object) -> FleetSettings:
    return FleetSettings(
        kafka_bootstrap_servers="127.0.0.1:9092",
        database_url="postgresql://postgres:pw@/postgres?host=/tmp/x",
        **overrides,  # type: ignore[arg-type]
    )


def curls(text: str) -> list[list[str]]:
    return [shlex.split(line) for line in text.splitlines() if line.strip().startswith("curl ")]


async def test_the_printed_tokens_verify_for_the_test_user_and_as_a_service() -> None:
    configured = settings(jwt_hs256_secret=JWT_SECRET, jwt_issuer="iss", jwt_audience="aud")
    text = banner(configured, Generated("whsec_made_up", JWT_SECRET), {})
    [user_curl, service_curl] = curls(text)
    verifier = TokenVerifier.from_settings(configured)
    assert verifier is not None

    user = await verifier.verify(user_curl[2].removeprefix("Authorization: Bearer "))
    service = await verifier.verify(service_curl[2].removeprefix("Authorization: Bearer "))

    assert user.subject == DEFAULT_USER_ID
    assert user_curl[3] == "http://127.0.0.1:8000/v1/entitlements"
    assert configured.jwt_service_scope in service.scopes
    assert service_curl[3].endswith(f"/v1/customers/{DEFAULT_CUSTOMER_ID}/entitlements")
    assert "tokens valid 24 h" in text
    assert "whsec_made_up" in text and JWT_SECRET in text
    assert "pw@" not in text  # the database password is redacted


@pytest.mark.parametrize("jwt", [{"jwt_hs256_secret": JWT_SECRET}, {"jwt_jwks_url": "http://k"}])
def test_configured_secrets_are_not_printed(jwt: dict[str, str]) -> None:
    configured = settings(stripe_webhook_secrets="whsec_real_endpoint", **jwt)

    text = banner(configured, Generated(), {})

    assert "whsec_real_endpoint" not in text
    assert JWT_SECRET not in text
    assert curls(text) == [] and "Bearer" not in text
    assert "from BILLING_STRIPE_WEBHOOK_SECRETS (not shown)" in text


def test_tokens_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    import jwt

    text = banner(settings(), Generated(jwt_secret=JWT_SECRET), {})
    [user_curl, _] = curls(text)
    claims = jwt.decode(
        user_curl[2].removeprefix("Authorization: Bearer "), JWT_SECRET, algorithms=["HS256"]
    )

    assert claims["exp"] - time.time() == pytest.approx(24 * 3600, abs=60)


@pytest.mark.parametrize("jwt_secret", [JWT_SECRET, None])
def test_with_an_admin_port_each_url_is_on_the_port_that_serves_it(jwt_secret: str | None) -> None:
    """The admin paths (the gateway's own rule) on the admin port, the rest on the gateway's."""
    configured = settings(gateway_port=8000, gateway_admin_port=9000)

    text = banner(configured, Generated("whsec_made_up", jwt_secret), {})

    urls = [urlsplit(word) for word in re.findall(r"http://[^\s()]+", text)]
    assert {url.path for url in urls} >= {"/metrics", "/docs", "/openapi.json", "/asyncapi.json"}
    for url in urls:
        assert url.port == (9000 if is_admin_path(url.path) else 8000), url.geturl()
