"""Bearer-token verification for the read API (PyJWT).

Only the configured algorithms verify: HS256 when a shared secret is set, RS256 when a
JWKS URL is set. The algorithm is chosen from the token header only to pick which of the
configured keys to try, and PyJWT is then told to accept that one algorithm with that
one key, so ``alg: none``, HS256 signed with an RSA public key, or any other algorithm
never reach a signature check that could pass.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jwt.types import Options
from starlette.exceptions import HTTPException

from api_gateway.settings import GatewaySettings
from contracts.events import storable_text

LEEWAY_SECONDS = 10  # clock skew tolerated on exp/nbf/iat
JWKS_TTL_SECONDS = 300.0  # how long a fetched key is trusted before the JWKS is read again
JWKS_FETCH_TIMEOUT_SECONDS = 5.0
MIN_HS256_SECRET_BYTES = 32  # RFC 7518 §3.2: a key at least as long as the hash output
RETRY_AFTER_SECONDS = "5"
# Apps send the same token many times; PyJWT spends ~100 µs on one HS256 check, a dict
# hit costs nothing. A token is the signature over its claims, so an identical string
# verifies identically until its exp; the cap bounds how long a key dropped from the JWKS
# stays trusted through the cache (no longer than JwksKeys keeps it anyway).
VERIFIED_CACHE_SIZE = 4096
VERIFIED_CACHE_SECONDS = JWKS_TTL_SECONDS


class InvalidToken(Exception):
    """The token is missing, malformed, or fails verification: answer 401."""


class KeySetUnavailable(Exception):
    """The JWKS endpoint could not be read: the token may be fine, answer 503."""


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    scopes: frozenset[str]


class JwksKeys:
    """RS256 keys from a JWKS URL: fetched on first use, cached, never on the event loop.

    PyJWKClient fetches with blocking urllib, so a cache miss (first token, expiry, a new
    ``kid`` after rotation) runs it in a thread. Hits are a dict lookup. PyJWKClient's
    refresh cooldown keeps a flood of unknown ``kid``s from becoming a flood of fetches.
    """

    def __init__(self, url: str, ttl: float = JWKS_TTL_SECONDS) -> None:
        self._client = jwt.PyJWKClient(url, lifespan=ttl, timeout=JWKS_FETCH_TIMEOUT_SECONDS)
        self._ttl = ttl
        self._keys: dict[str, tuple[jwt.PyJWK, float]] = {}

    async def key(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token header has no key id (kid)")
        now = time.monotonic()
        cached = self._keys.get(kid)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            key = await asyncio.to_thread(self._client.get_signing_key, kid)
        except (jwt.PyJWKClientConnectionError, jwt.PyJWKSetError, ValueError) as exc:
            raise KeySetUnavailable(str(exc)) from exc
        except jwt.PyJWKClientError as exc:
            raise InvalidToken("no key in the key set matches the token's kid") from exc
        self._keys[kid] = (key, now + self._ttl)
        return key


class TokenVerifier:
    def __init__(
        self,
        *,
        hs256_secret: str | None = None,
        jwks: JwksKeys | None = None,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = LEEWAY_SECONDS,
    ) -> None:
        if hs256_secret is None and jwks is None:
            raise ValueError("a TokenVerifier needs an HS256 secret or a JWKS URL")
        self._secret = hs256_secret.encode() if hs256_secret is not None else None
        if self._secret is not None and len(self._secret) < MIN_HS256_SECRET_BYTES:
            raise ValueError(
                f"BILLING_JWT_HS256_SECRET must be at least {MIN_HS256_SECRET_BYTES} bytes"
            )
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._verified: dict[str, tuple[Principal, float]] = {}  # token -> (principal, until)
        self._options: Options = {
            "require": ["exp", "sub"],
            # Without a configured audience, a token's `aud` is not ours to judge.
            "verify_aud": audience is not None,
        }

    @classmethod
    def from_settings(cls, settings: GatewaySettings) -> TokenVerifier | None:
        """The verifier the settings describe, or None when the read API is not configured."""
        secret = settings.jwt_hs256_secret
        if secret is None and not settings.jwt_jwks_url:
            return None
        return cls(
            hs256_secret=secret.get_secret_value() if secret is not None else None,
            jwks=JwksKeys(settings.jwt_jwks_url) if settings.jwt_jwks_url else None,
            issuer=settings.jwt_issuer,
            audience=settings.jwt_audience,
        )

    async def verify(self, token: str) -> Principal:
        now = time.time()
        cached = self._verified.get(token)
        if cached is not None:
            if now < cached[1]:
                return cached[0]
            del self._verified[token]
        principal, expires = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = (principal, min(expires, now + VERIFIED_CACHE_SECONDS))
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        """The token's principal and its ``exp``, or InvalidToken."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        alg = header.get("alg")
        key: bytes | jwt.PyJWK
        if alg == "HS256" and self._secret is not None:
            key = self._secret
        elif alg == "RS256" and self._jwks is not None:
            key = await self._jwks.key(header.get("kid"))
        else:
            raise InvalidToken("token algorithm not accepted")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                issuer=self._issuer,
                audience=self._audience,
                leeway=self._leeway,
                options=self._options,
            )
        except jwt.PyJWTError as exc:
            # PyJWT's messages name the failed check, never the token or key.
            raise InvalidToken(str(exc)) from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:  # PyJWT < 2.10 lets a number pass
            raise InvalidToken("token subject (sub) is empty or not a string")
        if not storable_text(subject):  # it is a SQL parameter of every user read
            raise InvalidToken("token subject (sub) holds a NUL or a lone surrogate")
        return Principal(subject, token_scopes(claims)), float(claims["exp"])


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """Scopes from ``scope`` or ``scp``, each either a space-separated string or a list."""
    found: set[str] = set()
    for name in ("scope", "scp"):
        value = claims.get(name)
        if isinstance(value, str):
            found.update(value.split())
        elif isinstance(value, list):
            found.update(item for item in value if isinstance(item, str))
    return frozenset(found)


# -- Request checks, as plain functions (the fast path) and FastAPI dependencies (OpenAPI) --

# auto_error=False: we answer with our own problem details and WWW-Authenticate values.
# It only documents the scheme in OpenAPI: `authenticate` reads the header itself.
bearer = HTTPBearer(
    auto_error=False,
    bearerFormat="JWT",
    description="A JWT: HS256 with the shared secret, or RS256 by the configured JWKS.",
)


def _unauthorized(detail: str, *, error: bool = True) -> HTTPException:
    # RFC 6750 §3.1: a request without credentials gets the challenge without an error code.
    challenge = 'Bearer error="invalid_token"' if error else "Bearer"
    return HTTPException(401, detail, headers={"WWW-Authenticate": challenge})


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>`` (scheme case-insensitive), or 401."""
    header = request.headers.get("authorization")
    if header is None:
        raise _unauthorized("missing bearer token", error=False)
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("Authorization header is not 'Bearer <token>'")
    return token


async def authenticate(request: Request) -> Principal:
    """The verified caller, or HTTPException 401 (bad token) / 503 (no keys)."""
    verifier: TokenVerifier | None = request.app.state.token_verifier
    if verifier is None:
        # Refuse rather than accept anything: no key means no way to tell callers apart.
        raise HTTPException(503, "read API not configured (no JWT secret or JWKS URL)")
    try:
        return await verifier.verify(bearer_token(request))
    except InvalidToken as exc:
        raise _unauthorized(str(exc)) from exc
    except KeySetUnavailable as exc:
        raise HTTPException(
            503, "token keys unavailable", headers={"Retry-After": RETRY_AFTER_SECONDS}
        ) from exc


def require_scope(principal: Principal, scope: str) -> Principal:
    """``principal`` when its token holds ``scope``, else 403 naming it (RFC 6750 §3.1)."""
    if scope not in principal.scopes:
        raise HTTPException(
            403,
            f"token lacks the {scope!r} scope",
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )
    return principal


def require_service_scope(request: Request, principal: Principal) -> Principal:
    """``principal`` when it may read any customer's entitlements (the service scope)."""
    settings: GatewaySettings = request.app.state.settings
    return require_scope(principal, settings.jwt_service_scope)


def require_ledger_scope(request: Request, principal: Principal) -> Principal:
    """``principal`` when it may read any customer's ledger (the ledger scope)."""
    settings: GatewaySettings = request.app.state.settings
    return require_scope(principal, settings.jwt_ledger_scope)


async def authenticated(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
) -> Principal:
    return await authenticate(request)


async def service_caller(
    request: Request, principal: Annotated[Principal, Depends(authenticated)]
) -> Principal:
    return require_service_scope(request, principal)


async def ledger_caller(
    request: Request, principal: Annotated[Principal, Depends(authenticated)]
) -> Principal:
    return require_ledger_scope(request, principal)
