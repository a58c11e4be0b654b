"""Token verification rules: which algorithms, keys and claims the read API accepts."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from api_gateway.auth import (
    LEEWAY_SECONDS,
    InvalidToken,
    JwksKeys,
    KeySetUnavailable,
    Principal,
    TokenVerifier,
    token_scopes,
)
from tests.fleet_settings import FleetSettings
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

KID = "key-1"


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa_key()


@pytest.fixture
def jwks(signing_key: rsa.RSAPrivateKey) -> Iterator[JwksServer]:
    with JwksServer([public_jwk(signing_key, KID)]).running() as server:
        yield server


def hs_verifier(**overrides: Any) -> TokenVerifier:
    options: dict[str, Any] = {"issuer": ISSUER, "audience": AUDIENCE, **overrides}
    return TokenVerifier(hs256_secret=HS256_SECRET, **options)


def rs_verifier(jwks: JwksServer, hs256_secret: str | None = None) -> TokenVerifier:
    return TokenVerifier(
        hs256_secret=hs256_secret, jwks=JwksKeys(jwks.url), issuer=ISSUER, audience=AUDIENCE
    )


async def rejected(verifier: TokenVerifier, token: str) -> str:
    """The reason ``verifier`` gives for refusing ``token`` (fails the test if it accepts)."""
    with pytest.raises(InvalidToken) as refused:
        await verifier.verify(token)
    return str(refused.value)


# -- HS256 ---------------------------------------------------------------------------------


async def test_valid_hs256_token_yields_subject_and_scopes() -> None:
    token = hs256(claims(sub="user-42", scope="a b"))
    assert await hs_verifier().verify(token) == Principal("user-42", frozenset({"a", "b"}))


@pytest.mark.parametrize(
    ("label", "token"),
    [
        ("garbage", "not-a-jwt"),
        ("alg none", forged(claims(), {"alg": "none", "typ": "JWT"})),
        ("alg None", forged(claims(), {"alg": "None", "typ": "JWT"})),
        ("HS384 with the secret", hs256(claims(), alg="HS384")),
        ("HS512 with the secret", hs256(claims(), alg="HS512")),
        ("RS256 without a JWKS", rs256(claims(), rsa_key(), KID)),
        ("wrong secret", hs256(claims(), secret="another-secret-" + "x" * 40)),
        ("expired beyond leeway", hs256(claims(exp=int(time.time()) - LEEWAY_SECONDS - 5))),
        ("no exp", hs256(claims(exp=None))),
        ("no sub", hs256(claims(sub=None))),
        ("empty sub", hs256(claims(sub=""))),
        ("non-string sub", hs256({**claims(), "sub": 7})),
        # Text PostgreSQL cannot hold (the subject is a SQL parameter): NUL, lone surrogates.
        ("NUL in sub", hs256(claims(sub="user\x00"))),
        ("lone high surrogate in sub", hs256(claims(sub="user\ud800"))),
        ("lone low surrogate in sub", hs256(claims(sub="\udfff"))),
        ("wrong issuer", hs256(claims(iss="https://evil.test"))),
        ("no issuer", hs256(claims(iss=None))),
        ("wrong audience", hs256(claims(aud="someone-else"))),
        ("no audience", hs256(claims(aud=None))),
        ("not yet valid", hs256(claims(nbf=int(time.time()) + 600))),
    ],
)
async def test_hs256_verifier_refuses(label: str, token: str) -> None:
    assert await rejected(hs_verifier(), token), label


async def test_expiry_within_leeway_is_accepted() -> None:
    token = hs256(claims(exp=int(time.time()) - LEEWAY_SECONDS // 2))
    assert (await hs_verifier().verify(token)).subject == "user-1"


async def test_unconfigured_issuer_and_audience_are_not_checked() -> None:
    token = hs256(claims(iss="https://anyone.test", aud="anything"))
    verifier = hs_verifier(issuer=None, audience=None)
    assert (await verifier.verify(token)).subject == "user-1"


async def test_a_verified_token_is_not_trusted_past_its_exp() -> None:
    verifier = hs_verifier(leeway=0)
    expires = int(time.time()) + 1
    token = hs256(claims(exp=expires))
    assert (await verifier.verify(token)).subject == "user-1"
    assert (await verifier.verify(token)).subject == "user-1"  # from the cache
    await asyncio.sleep(expires - time.time() + 0.05)
    assert await rejected(verifier, token) == "Signature has expired"


def test_short_hs256_secret_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="at least 32 bytes"):
        TokenVerifier(hs256_secret="short")


def test_no_verifier_without_a_secret_or_jwks() -> None:
    assert TokenVerifier.from_settings(FleetSettings()) is None
    configured = TokenVerifier.from_settings(FleetSettings(jwt_hs256_secret=HS256_SECRET))
    assert isinstance(configured, TokenVerifier)


# -- RS256 through a JWKS ------------------------------------------------------------------


async def test_valid_rs256_token_is_accepted(
    jwks: JwksServer, signing_key: rsa.RSAPrivateKey
) -> None:
    token = rs256(claims(sub="svc", scp=["x"]), signing_key, KID)
    assert await rs_verifier(jwks).verify(token) == Principal("svc", frozenset({"x"}))


async def test_jwks_is_fetched_once_for_many_tokens(
    jwks: JwksServer, signing_key: rsa.RSAPrivateKey
) -> None:
    verifier = rs_verifier(jwks)
    tokens = [rs256(claims(sub=f"user-{i}"), signing_key, KID) for i in range(20)]
    principals = await asyncio.gather(*(verifier.verify(t) for t in tokens))
    assert [p.subject for p in principals] == [f"user-{i}" for i in range(20)]
    assert jwks.fetches == 1


async def test_rs256_verifier_refuses_algorithm_confusion_and_foreign_keys(
    jwks: JwksServer, signing_key: rsa.RSAPrivateKey
) -> None:
    verifier = rs_verifier(jwks)
    pem = public_pem(signing_key)
    confusion = forged(claims(), {"alg": "HS256", "typ": "JWT", "kid": KID}, pem)
    assert await rejected(verifier, confusion) == "token algorithm not accepted"
    assert await rejected(verifier, forged(claims(), {"alg": "none", "kid": KID}))
    assert await rejected(verifier, rs256(claims(), rsa_key(), KID)) == (
        "Signature verification failed"
    )
    assert await rejected(verifier, rs256(claims(), signing_key, KID, alg="RS512"))
    assert await rejected(verifier, rs256(claims(), signing_key, "unknown-kid"))
    assert await rejected(verifier, hs256(claims())) == "token algorithm not accepted"


async def test_with_both_configured_hs256_never_verifies_with_the_public_key(
    jwks: JwksServer, signing_key: rsa.RSAPrivateKey
) -> None:
    verifier = rs_verifier(jwks, hs256_secret=HS256_SECRET)
    confusion = forged(claims(), {"alg": "HS256", "kid": KID}, public_pem(signing_key))
    assert await rejected(verifier, confusion) == "Signature verification failed"
    assert (await verifier.verify(hs256(claims()))).subject == "user-1"
    assert (await verifier.verify(rs256(claims(), signing_key, KID))).subject == "user-1"


async def test_rs256_token_without_kid_is_refused(
    jwks: JwksServer, signing_key: rsa.RSAPrivateKey
) -> None:
    token = jwt.encode(claims(), signing_key, algorithm="RS256")
    assert "kid" in await rejected(rs_verifier(jwks), token)


async def test_unreachable_jwks_is_unavailable_not_invalid(
    signing_key: rsa.RSAPrivateKey,
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/jwks.json"
    verifier = TokenVerifier(jwks=JwksKeys(url))
    with pytest.raises(KeySetUnavailable):
        await verifier.verify(rs256(claims(), signing_key, KID))


# -- scopes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token_claims", "expected"),
    [
        ({"scope": "a b  c"}, {"a", "b", "c"}),
        ({"scp": ["a", "b"]}, {"a", "b"}),
        ({"scp": "a b"}, {"a", "b"}),
        ({"scope": "a", "scp": ["b"]}, {"a", "b"}),
        ({"scope": 5, "scp": [1, "b", None]}, {"b"}),
        ({}, set()),
    ],
)
def test_scopes_from_scope_or_scp(token_claims: dict[str, Any], expected: set[str]) -> None:
    assert token_scopes(token_claims) == expected
