"""Input PostgreSQL cannot hold, and unexpected errors, on a real gateway and PostgreSQL.

A NUL, or a path that does not decode to UTF-8 (lone surrogates included), never
reaches SQL: the path is refused with a 400 problem, a token subject with a 401. Any
unexpected exception in a route answers a problem+json 500 without a traceback, and
is logged as one JSON line. Both on the fast paths and on FastAPI's own routes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api_gateway.access_store import READ_VIEWS
from contracts.labels import LOG_VALUE_LIMIT, log_value
from tests.fleet_settings import FleetSettings
from tests.gateway import Gateway, free_port, serve_gateway
from tests.gateway_process import GATEWAY, gateway_env
from tests.jwt_tokens import AUDIENCE, HS256_SECRET, ISSUER, claims, hs256

pytestmark = pytest.mark.integration

SERVICE_SCOPE = FleetSettings().jwt_service_scope
USER = hs256(claims(sub="user-input-test"))
SERVICE = hs256(claims(sub="svc-input-test", scope=SERVICE_SCOPE))


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert "Traceback" not in response.text
    return body


@pytest.fixture(scope="module")
async def fastapi_only(gateway: Gateway) -> AsyncIterator[str]:
    """The same gateway with FastAPI answering every route (no fast paths)."""
    settings = gateway.settings.model_copy(update={"gateway_port": free_port()})
    async with serve_gateway(settings, fast_paths=False):
        yield f"http://127.0.0.1:{settings.gateway_port}"


@pytest.fixture(params=["fast paths", "FastAPI"])
def url(request: pytest.FixtureRequest, gateway: Gateway, fastapi_only: str) -> str:
    return gateway.url if request.param == "fast paths" else fastapi_only


async def get(url: str, path: str, token: str | None = USER) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        return await client.get(path, headers=headers)


# NUL; bytes that are not UTF-8; UTF-8 encodings of lone surrogates (U+D800, U+DFFF).
BAD_PATHS = [
    ("/v1/entitlements/sso%00", USER),
    ("/v1/entitlements/%00", USER),
    ("/v1/entitlements/s%FFo", USER),
    ("/v1/entitlements/%ED%A0%80", USER),
    ("/v1/customers/cus%00x/entitlements", SERVICE),
    ("/v1/customers/cus_x/entitlements/f%00", SERVICE),
    ("/v1/customers/%C3%28/entitlements/seats", SERVICE),
    ("/v1/customers/cus_%ED%BF%BF/entitlements", SERVICE),
    ("/healthz%00", None),
]


@pytest.mark.parametrize(("path", "token"), BAD_PATHS, ids=[p for p, _ in BAD_PATHS])
async def test_paths_postgresql_cannot_hold_are_refused_with_400(
    url: str, path: str, token: str | None
) -> None:
    body = assert_problem(await get(url, path, token), 400)
    assert "UTF-8" in body["detail"]


async def test_text_that_is_fine_in_postgresql_still_reads(url: str) -> None:
    """Percent-escapes of valid UTF-8 (not NUL) are ordinary feature names."""
    response = await get(url, "/v1/entitlements/caf%C3%A9%20%F0%9F%8E%89")
    assert response.status_code == 200, response.text
    assert response.json()["feature"] == "café 🎉"


@pytest.mark.parametrize(
    "subject", ["user\x00", "\x00", "user\ud800", "\udfff"], ids=["nul", "only nul", "hi", "lo"]
)
@pytest.mark.parametrize("path", ["/v1/entitlements", "/v1/entitlements/seats"])
async def test_token_subjects_postgresql_cannot_hold_are_invalid_tokens(
    url: str, subject: str, path: str
) -> None:
    response = await get(url, path, hs256(claims(sub=subject)))
    assert_problem(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


# -- a fuzz of odd paths and claims ----------------------------------------------------------

ANY_CHARACTER = st.characters(codec=None, exclude_categories=())  # surrogates and NUL too
segments = st.binary(max_size=12).map(lambda raw: "".join(f"%{b:02X}" for b in raw)) | st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#%"),
    max_size=12,
)
paths = st.builds(
    lambda prefix, segment, suffix: prefix + segment + suffix,
    st.sampled_from(["/v1/entitlements/", "/v1/customers/", "/v1/", "/", "/healthz"]),
    segments,
    st.sampled_from(["", "/", "/entitlements", "/entitlements/", "/entitlements/seats"]),
)
subjects = st.text(alphabet=ANY_CHARACTER, max_size=10) | st.integers() | st.none()


async def test_odd_paths_and_claims_never_give_5xx_or_a_redirect(gateway: Gateway) -> None:
    statuses: set[int] = set()

    def fuzz() -> None:
        host = {"Host": "attacker.example"}
        with httpx.Client(base_url=gateway.url, timeout=10, headers=host) as client:

            @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
            @given(path=paths, subject=subjects, service=st.booleans())
            def one(path: str, subject: object, service: bool) -> None:
                token_claims = claims(sub=None, scope=SERVICE_SCOPE if service else "")
                if subject is not None:
                    token_claims["sub"] = subject
                token = hs256(token_claims)
                response = client.get(path, headers={"Authorization": f"Bearer {token}"})
                statuses.add(response.status_code)
                assert response.status_code < 500, (path, subject, response.text)
                assert "location" not in response.headers, (path, response.headers)
                if response.status_code >= 400:
                    assert response.headers["content-type"] == "application/problem+json"

            one()

    await asyncio.to_thread(fuzz)

    assert {200, 400, 401, 404} <= statuses


# -- the last resort: unexpected exceptions -------------------------------------------------


@pytest.fixture(scope="module")
async def unmigrated_database(create_database: Any) -> str:
    """A database whose read views have the wrong shape (a missing view is a 503, see
    test_access_api): every read raises UndefinedColumnError, an exception the handlers do
    not expect (it is not the database being down)."""
    url: str = await create_database(migrated=False)
    conn = await asyncpg.connect(url)
    try:
        for view in sorted(READ_VIEWS):
            await conn.execute(f"CREATE VIEW {view} AS SELECT 1 AS unrelated")
    finally:
        await conn.close()
    return url


def _failing_gateway(kafka: Any, database_url: str) -> FleetSettings:
    """A gateway on ``unmigrated_database`` whose read API is configured (so reads fail)."""
    return FleetSettings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=database_url,
        stripe_webhook_secrets=["whsec_unused"],
        gateway_port=free_port(),
        jwt_hs256_secret=HS256_SECRET,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
    )


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast paths", "FastAPI"])
async def test_an_unexpected_error_is_a_problem_500_logged_once(
    kafka: Any, unmigrated_database: str, fast_paths: bool, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _failing_gateway(kafka, unmigrated_database)
    async with serve_gateway(settings, fast_paths=fast_paths):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            response = await get(f"http://127.0.0.1:{settings.gateway_port}", "/v1/entitlements")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]

    body = assert_problem(response, 500)
    assert "UndefinedColumn" not in response.text and "entitlement" not in body["detail"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    [error] = errors
    assert error.__dict__["error_class"] == "UndefinedColumnError"
    assert error.__dict__["path"] == "/v1/entitlements"
    # The route template, named by FastAPI's router or by the fast path alike.
    assert error.__dict__["route"] == "/v1/entitlements"


@pytest.mark.parametrize("fast_paths", [True, False], ids=["fast paths", "FastAPI"])
async def test_the_logged_path_of_an_unexpected_error_is_cut(
    kafka: Any, unmigrated_database: str, fast_paths: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """The path comes from the client (up to the head limit, 64 KiB): the log line keeps
    its first ``LOG_VALUE_LIMIT`` characters, as every outside value."""
    settings = _failing_gateway(kafka, unmigrated_database)
    path = "/v1/entitlements/" + "f" * 20_000
    async with serve_gateway(settings, fast_paths=fast_paths):
        caplog.clear()
        with caplog.at_level(logging.INFO):
            response = await get(f"http://127.0.0.1:{settings.gateway_port}", path)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]

    assert_problem(response, 500)
    [error] = errors
    assert error.__dict__["error_class"] == "UndefinedColumnError"
    logged = error.__dict__["path"]
    assert len(logged) == LOG_VALUE_LIMIT
    assert logged == log_value(path)
    assert path.startswith(logged[:-1])


async def test_the_gateway_process_logs_an_unexpected_error_as_one_json_line(
    kafka: Any, unmigrated_database: str, tmp_path: Path
) -> None:
    """As an operator sees it: `billing-fleet gateway`'s stderr holds JSON lines only, and
    exactly one error line for the failed request, naming the error class and the path."""
    port = free_port()
    env = gateway_env(
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        DATABASE_URL=unmigrated_database,
        BILLING_STRIPE_WEBHOOK_SECRETS="whsec_unused",
        BILLING_GATEWAY_PORT=str(port),
        BILLING_JWT_HS256_SECRET=HS256_SECRET,
        BILLING_JWT_ISSUER=ISSUER,
        BILLING_JWT_AUDIENCE=AUDIENCE,
    )
    log = tmp_path / "gateway.log"
    with log.open("wb") as stderr:
        gateway = await asyncio.create_subprocess_exec(
            *GATEWAY, env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        url = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(20):
            while True:
                try:
                    if (await get(url, "/healthz", None)).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
        response = await get(url, "/v1/entitlements/seats")
    finally:
        gateway.terminate()
        async with asyncio.timeout(15):
            await gateway.wait()

    assert_problem(response, 500)
    lines = [json.loads(line) for line in log.read_text().splitlines()]  # JSON, every line
    errors = [line for line in lines if line["level"] in ("ERROR", "CRITICAL")]
    assert len(errors) == 1, errors
    [error] = errors
    assert error["error_class"] == "UndefinedColumnError"
    assert error["path"] == "/v1/entitlements/seats"
