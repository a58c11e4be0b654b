"""The entitlement read API on a real gateway and PostgreSQL, with real JWTs.

State is set up by writing the entitlement worker's tables directly, with ids unique to
each test, so tests share the session database without seeing each other's rows.
"""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from api_gateway.access_store import READ_VIEWS
from tests.fleet_settings import FleetSettings
from tests.gateway import Gateway, free_port, serve_gateway
from tests.jwt_tokens import (
    AUDIENCE,
    HS256_SECRET,
    ISSUER,
    JwksServer,
    claims,
    forged,
    hs256,
    public_jwk,
    public_pem,
    rs256,
    rsa_key,
)

pytestmark = pytest.mark.integration

SERVICE_SCOPE = FleetSettings().jwt_service_scope
NOW = datetime.now(UTC)
LATER = (NOW + timedelta(days=30)).replace(microsecond=0)
LATEST = (NOW + timedelta(days=60)).replace(microsecond=0)
EARLIER = NOW - timedelta(days=1)


def uid(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"


Row = tuple[str, str, int | None, datetime | None, list[str]]  # customer, feature, limit, …


async def seed(database_url: str, users: dict[str, str | None], rows: list[Row]) -> None:
    """``users``: customer id -> user id; ``rows``: entitlements to insert."""
    conn = await asyncpg.connect(database_url)
    try:
        # Only the columns the read API relies on; the worker's bookkeeping stays NULL.
        await conn.executemany(
            "INSERT INTO entitlement_customers (customer_id, user_id) VALUES ($1, $2)",
            list(users.items()),
        )
        await conn.executemany(
            'INSERT INTO entitlements (customer_id, feature, "limit", expires_at, sources)'
            " VALUES ($1, $2, $3, $4, $5)",
            rows,
        )
    finally:
        await conn.close()


async def get(url: str, path: str, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.get(path, headers=headers)


def user_token(user_id: str) -> str:
    return hs256(claims(sub=user_id))


def service_token() -> str:
    return hs256(claims(sub="svc-orders", scope=f"profile {SERVICE_SCOPE}"))


def when(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["detail"]
    return body


# -- user routes ---------------------------------------------------------------------------


async def test_user_gets_unexpired_entitlements_with_limits_and_expiry(
    gateway: Gateway, database_url: str
) -> None:
    user, customer = uid("user"), uid("cus")
    await seed(
        database_url,
        {customer: user},
        [
            (customer, "seats", 5, LATER, ["sub_1"]),
            (customer, "export", None, None, ["sub_1", "pi_2"]),
            (customer, "legacy", 1, EARLIER, ["sub_0"]),
        ],
    )

    response = await get(gateway.url, "/v1/entitlements", user_token(user))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["user_id"] == user
    by_feature = {e["feature"]: e for e in body["entitlements"]}
    assert sorted(by_feature) == ["export", "seats"]  # the expired `legacy` is hidden
    seats, export = by_feature["seats"], by_feature["export"]
    assert (seats["entitled"], seats["limit"], when(seats["expires_at"])) == (True, 5, LATER)
    assert (seats["source"], seats["sources"]) == ("sub_1", ["sub_1"])
    assert (export["entitled"], export["limit"], export["expires_at"]) == (True, None, None)
    assert (export["source"], export["sources"]) == ("sub_1", ["sub_1", "pi_2"])


async def test_features_held_through_several_customers_merge(
    gateway: Gateway, database_url: str
) -> None:
    user, cus_a, cus_b, stranger = uid("user"), uid("cus"), uid("cus"), uid("cus")
    await seed(
        database_url,
        {cus_a: user, cus_b: user, stranger: uid("user")},
        [
            (cus_a, "seats", 5, LATEST, ["sub_a"]),
            (cus_b, "seats", 10, LATER, ["sub_b"]),
            (cus_a, "api_calls", 1000, LATER, ["sub_a"]),
            (cus_b, "api_calls", None, LATER, ["pi_b"]),
            (cus_a, "storage_gb", 500, EARLIER, ["sub_old"]),  # expired: does not count
            (cus_b, "storage_gb", 50, None, ["sub_b"]),
            (stranger, "seats", 999, None, ["sub_x"]),  # another user's customer
        ],
    )

    response = await get(gateway.url, "/v1/entitlements", user_token(user))

    assert response.status_code == 200, response.text
    merged = {e["feature"]: e for e in response.json()["entitlements"]}
    assert sorted(merged) == ["api_calls", "seats", "storage_gb"]
    assert (merged["seats"]["limit"], when(merged["seats"]["expires_at"])) == (10, LATEST)
    assert merged["seats"]["sources"] == ["sub_b", "sub_a"]
    assert (merged["api_calls"]["limit"], merged["api_calls"]["source"]) == (None, "pi_b")
    assert (merged["storage_gb"]["limit"], merged["storage_gb"]["expires_at"]) == (50, None)
    assert merged["storage_gb"]["sources"] == ["sub_b"]


async def test_single_feature_answers_entitled_true_or_false(
    gateway: Gateway, database_url: str
) -> None:
    user, cus_a, cus_b = uid("user"), uid("cus"), uid("cus")
    await seed(
        database_url,
        {cus_a: user, cus_b: user},
        [
            (cus_a, "seats", 3, LATER, ["sub_a"]),
            (cus_b, "seats", 7, None, ["sub_b"]),
            (cus_a, "legacy", None, EARLIER, ["sub_a"]),
        ],
    )
    token = user_token(user)

    held = await get(gateway.url, "/v1/entitlements/seats", token)
    expired = await get(gateway.url, "/v1/entitlements/legacy", token)
    never = await get(gateway.url, "/v1/entitlements/teleport", token)

    assert held.status_code == 200, held.text
    assert held.json() == {
        "feature": "seats",
        "entitled": True,
        "limit": 7,
        "expires_at": None,
        "source": "sub_b",
        "sources": ["sub_b", "sub_a"],
    }
    for response, feature in ((expired, "legacy"), (never, "teleport")):
        assert response.status_code == 200, response.text
        assert response.json() == {
            "feature": feature,
            "entitled": False,
            "limit": None,
            "expires_at": None,
            "source": None,
            "sources": [],
        }


async def test_user_without_customers_has_no_entitlements(gateway: Gateway) -> None:
    user = uid("user")
    response = await get(gateway.url, "/v1/entitlements", user_token(user))
    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": user, "entitlements": []}


# -- service routes ------------------------------------------------------------------------


async def test_service_token_reads_any_customer(gateway: Gateway, database_url: str) -> None:
    customer = uid("cus")
    await seed(
        database_url,
        {customer: None},  # not mapped to a user: only services can read it
        [
            (customer, "seats", 4, LATER, ["sub_c"]),
            (customer, "legacy", None, EARLIER, ["sub_c"]),
        ],
    )
    base = f"/v1/customers/{customer}/entitlements"

    listing = await get(gateway.url, base, service_token())
    one = await get(gateway.url, f"{base}/seats", service_token())
    scp_token = hs256(claims(sub="svc-2", scp=[SERVICE_SCOPE]))
    missing = await get(gateway.url, f"{base}/legacy", scp_token)

    assert listing.status_code == 200, listing.text
    [seats] = listing.json()["entitlements"]
    assert listing.json()["customer_id"] == customer
    assert (seats["feature"], seats["limit"], when(seats["expires_at"])) == ("seats", 4, LATER)
    assert one.status_code == 200, one.text
    assert (one.json()["entitled"], one.json()["source"]) == (True, "sub_c")
    assert missing.status_code == 200, missing.text
    assert missing.json()["entitled"] is False


@pytest.mark.parametrize("suffix", ["", "/seats"])
async def test_user_token_on_service_route_is_forbidden(gateway: Gateway, suffix: str) -> None:
    token = hs256(claims(sub=uid("user"), scope="entitlements:read"))
    response = await get(gateway.url, f"/v1/customers/cus_any/entitlements{suffix}", token)
    assert_problem(response, 403)
    assert response.headers["www-authenticate"] == (
        f'Bearer error="insufficient_scope", scope="{SERVICE_SCOPE}"'
    )


# -- refusals ------------------------------------------------------------------------------

WRONG_SECRET = "not-the-gateway-secret-" + "y" * 40
HOUR_AGO = int((NOW - timedelta(hours=1)).timestamp())
REFUSED_HEADERS: list[tuple[str, dict[str, str]]] = [
    ("basic scheme", {"Authorization": "Basic dXNlcjpwYXNz"}),
    ("bearer without token", {"Authorization": "Bearer"}),
    ("garbage", {"Authorization": "Bearer not.a.jwt"}),
    ("expired", {"Authorization": f"Bearer {hs256(claims(exp=HOUR_AGO))}"}),
    ("wrong secret", {"Authorization": f"Bearer {hs256(claims(), secret=WRONG_SECRET)}"}),
    ("wrong issuer", {"Authorization": f"Bearer {hs256(claims(iss='https://evil.test'))}"}),
    ("wrong audience", {"Authorization": f"Bearer {hs256(claims(aud='other-app'))}"}),
    ("alg none", {"Authorization": f"Bearer {forged(claims(), {'alg': 'none'})}"}),
    ("HS512", {"Authorization": f"Bearer {hs256(claims(), alg='HS512')}"}),
    ("RS256 unconfigured", {"Authorization": f"Bearer {rs256(claims(), rsa_key(), 'k')}"}),
    ("missing sub", {"Authorization": f"Bearer {hs256(claims(sub=None))}"}),
    ("missing exp", {"Authorization": f"Bearer {hs256(claims(exp=None))}"}),
]


@pytest.mark.parametrize(
    ("label", "headers"), REFUSED_HEADERS, ids=[label for label, _ in REFUSED_HEADERS]
)
@pytest.mark.parametrize("path", ["/v1/entitlements", "/v1/customers/cus_x/entitlements"])
async def test_bad_tokens_are_refused_with_401(
    gateway: Gateway, label: str, headers: dict[str, str], path: str
) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        response = await client.get(path, headers=headers)
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"', label


async def test_missing_token_gets_the_bare_challenge(gateway: Gateway) -> None:
    response = await get(gateway.url, "/v1/entitlements/seats")
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"  # RFC 6750 §3.1: no error code


async def test_openapi_documents_the_bearer_scheme(gateway: Gateway) -> None:
    spec = (await get(gateway.url, "/openapi.json")).json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path in (
        "/v1/entitlements",
        "/v1/entitlements/{feature}",
        "/v1/customers/{customer_id}/entitlements",
        "/v1/customers/{customer_id}/entitlements/{feature}",
    ):
        operation = spec["paths"][path]["get"]
        assert operation["security"] == [{"HTTPBearer": []}], path
        assert {"200", "401", "503"} <= set(operation["responses"]), path


async def test_fast_path_answers_exactly_as_the_fastapi_routes(
    gateway: Gateway, database_url: str
) -> None:
    """The read routes skip FastAPI's layers (api_gateway.access.serve_fast); every answer,
    refusals and paths it leaves to FastAPI included, matches FastAPI's own."""
    user, customer = uid("user"), uid("cus")
    await seed(database_url, {customer: user}, [(customer, "seats", 3, LATER, ["sub_p"])])
    mine, service = user_token(user), service_token()
    requests: list[tuple[str, str | None]] = [
        ("/v1/entitlements", mine),
        ("/v1/entitlements/seats", mine),
        ("/v1/entitlements/sso", mine),
        (f"/v1/customers/{customer}/entitlements", service),
        (f"/v1/customers/{customer}/entitlements/seats", service),
        (f"/v1/customers/{customer}/entitlements", mine),  # 403: no service scope
        ("/v1/entitlements", "not.a.jwt"),
        ("/v1/entitlements", None),
        ("/v1/entitlements/", mine),  # empty segment: left to FastAPI
        ("/v1/customers//entitlements", service),
        ("/v1/entitlements/seats/extra", mine),
    ]
    settings = gateway.settings.model_copy(update={"gateway_port": free_port()})
    async with serve_gateway(settings, fast_paths=False):
        plain_url = f"http://127.0.0.1:{settings.gateway_port}"
        for path, token in requests:
            fast, plain = await get(gateway.url, path, token), await get(plain_url, path, token)
            assert (fast.status_code, fast.content) == (plain.status_code, plain.content), path
            for header in ("content-type", "www-authenticate", "retry-after"):
                assert fast.headers.get(header) == plain.headers.get(header), (path, header)
    assert (await get(gateway.url, "/v1/entitlements/seats", mine)).json()["limit"] == 3


# -- RS256 through a JWKS, unconfigured, database down --------------------------------------


@dataclass
class Rs256Gateway:
    url: str
    jwks: JwksServer
    key: rsa.RSAPrivateKey


def gateway_settings(kafka: Any, database_url: str, **read_api: Any) -> FleetSettings:
    return FleetSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=database_url,
        stripe_webhook_secrets=["whsec_unused"],
        gateway_port=free_port(),
        **read_api,
    )


@pytest.fixture(scope="module")
def rs256_jwks() -> Iterator[tuple[JwksServer, rsa.RSAPrivateKey]]:
    key = rsa_key()
    with JwksServer([public_jwk(key, "kid-1")]).running() as jwks:
        yield jwks, key


@pytest.fixture(scope="module")
async def rs256_gateway(
    kafka: Any, database_url: str, rs256_jwks: tuple[JwksServer, rsa.RSAPrivateKey]
) -> AsyncIterator[Rs256Gateway]:
    jwks, key = rs256_jwks
    settings = gateway_settings(
        kafka, database_url, jwt_jwks_url=jwks.url, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    async with serve_gateway(settings):
        yield Rs256Gateway(f"http://127.0.0.1:{settings.gateway_port}", jwks, key)


async def test_rs256_token_from_the_jwks_is_accepted_and_keys_are_cached(
    rs256_gateway: Rs256Gateway, database_url: str
) -> None:
    user, customer = uid("user"), uid("cus")
    await seed(database_url, {customer: user}, [(customer, "seats", 2, None, ["sub_r"])])
    token = rs256(claims(sub=user), rs256_gateway.key, "kid-1")

    responses = [await get(rs256_gateway.url, "/v1/entitlements/seats", token) for _ in range(5)]

    assert [r.status_code for r in responses] == [200] * 5, responses[0].text
    assert (responses[0].json()["entitled"], responses[0].json()["limit"]) == (True, 2)
    assert rs256_gateway.jwks.fetches == 1


async def test_rs256_gateway_refuses_foreign_keys_and_algorithm_confusion(
    rs256_gateway: Rs256Gateway,
) -> None:
    pem = public_pem(rs256_gateway.key)
    tokens = {
        "another key, same kid": rs256(claims(), rsa_key(), "kid-1"),
        "HS256 signed with the public key": forged(claims(), {"alg": "HS256", "kid": "kid-1"}, pem),
        "HS256 with the HS test secret": hs256(claims()),
        "alg none": forged(claims(), {"alg": "none", "kid": "kid-1"}),
        "unknown kid": rs256(claims(), rs256_gateway.key, "kid-unknown"),
        "wrong audience": rs256(claims(aud="other"), rs256_gateway.key, "kid-1"),
    }
    for label, token in tokens.items():
        response = await get(rs256_gateway.url, "/v1/entitlements", token)
        assert response.status_code == 401, label
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"', label


async def test_service_scope_works_with_rs256(rs256_gateway: Rs256Gateway) -> None:
    token = rs256(claims(sub="svc", scp=[SERVICE_SCOPE]), rs256_gateway.key, "kid-1")
    response = await get(rs256_gateway.url, f"/v1/customers/{uid('cus')}/entitlements", token)
    assert response.status_code == 200, response.text
    assert response.json()["entitlements"] == []


async def test_unconfigured_read_api_answers_503_to_everyone(kafka: Any, database_url: str) -> None:
    settings = gateway_settings(kafka, database_url)
    async with serve_gateway(settings):
        url = f"http://127.0.0.1:{settings.gateway_port}"
        anonymous = await get(url, "/v1/entitlements")
        with_token = await get(url, "/v1/entitlements/seats", user_token("user-1"))
    for response in (anonymous, with_token):
        assert assert_problem(response, 503)["detail"].startswith("read API not configured")


async def test_database_down_answers_503_with_retry_after(kafka: Any) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"postgresql://billing@127.0.0.1:{sock.getsockname()[1]}/billing"
    settings = gateway_settings(
        kafka, dead, jwt_hs256_secret=HS256_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    async with serve_gateway(settings):
        response = await get(
            f"http://127.0.0.1:{settings.gateway_port}", "/v1/entitlements", user_token("u")
        )
    assert assert_problem(response, 503)["detail"] == "database unavailable"
    assert response.headers["retry-after"] == "5"


async def test_unmigrated_database_answers_503_naming_the_schema(
    kafka: Any, create_database: Any
) -> None:
    """A gateway started before `billing-fleet migrate` has no read views to query."""
    bare = await create_database(migrated=False)
    settings = gateway_settings(
        kafka, bare, jwt_hs256_secret=HS256_SECRET, jwt_issuer=ISSUER, jwt_audience=AUDIENCE
    )
    async with serve_gateway(settings):
        url = f"http://127.0.0.1:{settings.gateway_port}"
        mine = await get(url, "/v1/entitlements", user_token("u"))
        one = await get(url, "/v1/entitlements/seats", user_token("u"))
    for response in (mine, one):
        assert assert_problem(response, 503)["detail"] == "database schema not migrated"
        assert response.headers["retry-after"] == "5"


# -- the read views: the only relations the gateway reads -----------------------------------


@asynccontextmanager
async def reader_role(database_url: str, views: Iterable[str] = READ_VIEWS) -> AsyncIterator[str]:
    """A login role granted SELECT on ``views`` (by default the entitlement worker's read
    views) and nothing else (PUBLIC keeps only its defaults: CONNECT, USAGE on schema
    public); its database URL. Roles are cluster-wide, so it is dropped after the test."""
    role, password = f"billing_reader_{secrets.token_hex(4)}", secrets.token_hex(12)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        await conn.execute(f"GRANT SELECT ON {', '.join(sorted(views))} TO {role}")
        parts = urlsplit(database_url)
        host = parts.netloc.rpartition("@")[2]  # host:port, empty with a socket ?host=
        yield urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))
    finally:
        await conn.execute(f"DROP OWNED BY {role}")  # its grants, in this database
        await conn.execute(f"DROP ROLE {role}")
        await conn.close()


async def test_a_role_with_select_on_the_read_views_only_serves_every_route(
    kafka: Any, create_database: Any
) -> None:
    """The gateway reads no table of the worker: with a role that may read the views and
    nothing else, every read route answers as it does for the owner."""
    database_url = await create_database(migrated=True)
    user, cus_a, cus_b = uid("user"), uid("cus"), uid("cus")
    await seed(
        database_url,
        {cus_a: user, cus_b: user},
        [
            (cus_a, "seats", 5, LATER, ["sub_a"]),
            (cus_b, "seats", 10, LATEST, ["sub_b"]),
            (cus_a, "legacy", 1, EARLIER, ["sub_0"]),
        ],
    )
    async with reader_role(database_url) as reader_url:
        refused = await asyncpg.connect(reader_url)
        try:  # the restriction is real: the tables themselves are closed to the role
            for table in ("entitlements", "entitlement_customers"):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await refused.fetch(f"SELECT 1 FROM {table} LIMIT 1")
        finally:
            await refused.close()
        settings = gateway_settings(
            kafka,
            reader_url,
            jwt_hs256_secret=HS256_SECRET,
            jwt_issuer=ISSUER,
            jwt_audience=AUDIENCE,
        )
        async with serve_gateway(settings):
            url = f"http://127.0.0.1:{settings.gateway_port}"
            mine, service = user_token(user), service_token()
            everything = await get(url, "/v1/entitlements", mine)
            seats = await get(url, "/v1/entitlements/seats", mine)
            expired = await get(url, "/v1/entitlements/legacy", mine)
            customer = await get(url, f"/v1/customers/{cus_a}/entitlements", service)
            customer_seats = await get(url, f"/v1/customers/{cus_b}/entitlements/seats", service)

    for response in (everything, seats, expired, customer, customer_seats):
        assert response.status_code == 200, response.text
    assert [e["feature"] for e in everything.json()["entitlements"]] == ["seats"]
    assert (seats.json()["limit"], seats.json()["sources"]) == (10, ["sub_b", "sub_a"])
    assert when(seats.json()["expires_at"]) == LATEST
    assert expired.json()["entitled"] is False
    assert [(e["feature"], e["limit"]) for e in customer.json()["entitlements"]] == [("seats", 5)]
    assert customer_seats.json()["limit"] == 10
