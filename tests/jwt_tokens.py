"""Bearer tokens for the read API tests: signing helpers, forgeries, and a loopback JWKS."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

# 64+ bytes: long enough that PyJWT does not warn even when a test signs HS512 with it.
HS256_SECRET = "test-hs256-secret-" + "0123456789abcdef" * 3
ISSUER = "https://auth.test"
AUDIENCE = "billing-fleet"


def claims(sub: str | None = "user-1", **overrides: Any) -> dict[str, Any]:
    """Valid claims for the test issuer and audience, five minutes to live."""
    now = int(time.time())
    base: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
    if sub is not None:
        base["sub"] = sub
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = HS256_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(payload, secret, algorithm=alg)


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256"}


def rs256(payload: dict[str, Any], key: rsa.RSAPrivateKey, kid: str, alg: str = "RS256") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(payload: dict[str, Any], header: dict[str, Any], hmac_key: bytes = b"") -> str:
    """A token PyJWT refuses to make: ``alg: none`` (empty signature) or HS256 with any key,
    e.g. an RSA public key in PEM, the classic algorithm-confusion attack."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    if header.get("alg") == "none":
        return f"{signing_input}."
    digest = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(digest)}"


@dataclass
class JwksServer:
    """A JWKS document served over HTTP on loopback; counts how often it was fetched."""

    keys: list[dict[str, Any]]
    url: str = ""
    fetches: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with jwks._lock:
                    jwks.fetches += 1
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler

    @contextmanager
    def running(self) -> Iterator[JwksServer]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
        # A short poll interval: shutdown() waits for the next poll.
        thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join()
