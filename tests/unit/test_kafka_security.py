"""Kafka security settings -> the clients' keyword arguments and TLS context; refusals."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram512
from pydantic import ValidationError

from billing_fleet.kafka_security import PLAINTEXT, kafka_security
from billing_fleet.settings import CoreSettings
from fleet.cli import settings_errors
from tests.tls_certs import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _settings(monkeypatch: pytest.MonkeyPatch, **env: str) -> CoreSettings:
    for name, value in env.items():
        monkeypatch.setenv(f"BILLING_{name.upper()}", value)
    return CoreSettings()


def test_plaintext_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    security = kafka_security(_settings(monkeypatch))
    assert security is PLAINTEXT
    assert security.client_kwargs() == {"security_protocol": "PLAINTEXT"}
    assert security.broker_security() is None


def test_sasl_ssl_scram(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    settings = _settings(
        monkeypatch,
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_cafile=str(pki.ca),
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="fleet",
        kafka_sasl_password="s3cret",
    )
    assert "s3cret" not in repr(settings)  # a SecretStr: never in logs or errors
    security = kafka_security(settings)
    kwargs = security.client_kwargs()
    context = kwargs.pop("ssl_context")
    assert kwargs == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "fleet",
        "sasl_plain_password": "s3cret",
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    subjects = [ca["subject"] for ca in context.get_ca_certs()]
    assert subjects == [((("commonName", "billing-fleet test CA"),),)]
    broker = security.broker_security()
    assert isinstance(broker, SASLScram512)
    assert (broker.username, broker.password, broker.use_ssl) == ("fleet", "s3cret", True)
    assert broker.ssl_context is context


def test_sasl_plaintext_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _settings(
        monkeypatch,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
    )
    security = kafka_security(settings)
    assert security.client_kwargs() == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_plain_username": "u",
        "sasl_plain_password": "p",
    }
    broker = security.broker_security()
    assert isinstance(broker, SASLPlaintext) and not broker.use_ssl


def test_ssl_without_hostname_check(monkeypatch: pytest.MonkeyPatch, pki: Pki) -> None:
    settings = _settings(
        monkeypatch,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki.ca),
        kafka_ssl_check_hostname="false",
    )
    security = kafka_security(settings)
    context = security.client_kwargs()["ssl_context"]
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    broker = security.broker_security()
    assert type(broker) is BaseSecurity and broker.ssl_context is context


async def _handshake(pki: Pki, client: ssl.SSLContext) -> str:
    """The client certificate's common name, as a loopback TLS server that requires one
    (signed by the test CA) sees it."""
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    server.load_cert_chain(pki.server_cert, pki.server_key)
    server.verify_mode = ssl.CERT_REQUIRED
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        seen.set_result(dict(item[0] for item in peer["subject"])["commonName"])
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with asyncio.timeout(10):
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
            name = await seen
            writer.close()
    finally:
        listener.close()
        await listener.wait_closed()
    return name


async def test_mutual_tls_context_passes_a_real_handshake(
    monkeypatch: pytest.MonkeyPatch, pki: Pki
) -> None:
    settings = _settings(
        monkeypatch,
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(pki.ca),
        kafka_ssl_certfile=str(pki.client_cert),
        kafka_ssl_keyfile=str(pki.client_key),
    )
    context = kafka_security(settings).client_kwargs()["ssl_context"]
    assert await _handshake(pki, context) == "billing-fleet-client"


async def test_a_context_without_the_ca_refuses_the_server(pki: Pki) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(pki, ssl.create_default_context())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},
            "BILLING_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs BILLING_KAFKA_SASL_USERNAME and "
            "BILLING_KAFKA_SASL_PASSWORD",
        ),
        (
            {"kafka_sasl_username": "u", "kafka_sasl_password": "p"},
            "BILLING_KAFKA_SASL_USERNAME/PASSWORD set, but BILLING_KAFKA_SECURITY_PROTOCOL is "
            "PLAINTEXT: use SASL_PLAINTEXT or SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "BILLING_KAFKA_SSL_CAFILE: no file at /nonexistent/ca.pem",
        ),
        (
            {"kafka_ssl_cafile": "/nonexistent/ca.pem"},
            "BILLING_KAFKA_SSL_CAFILE set, but BILLING_KAFKA_SECURITY_PROTOCOL is PLAINTEXT: "
            "use SSL or SASL_SSL",
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_keyfile": "/k.pem"},
            "BILLING_KAFKA_SSL_KEYFILE needs BILLING_KAFKA_SSL_CERTFILE",
        ),
    ],
)
def test_bad_combinations_are_one_line(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(monkeypatch, **env)
    assert settings_errors(caught.value) == [f"billing-fleet: configuration: {expected}"]


def test_unknown_protocol_and_mechanism_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as caught:
        _settings(monkeypatch, kafka_security_protocol="TLS", kafka_sasl_mechanism="OAUTHBEARER")
    lines = settings_errors(caught.value)
    assert [line.split(":")[1].strip() for line in lines] == [
        "BILLING_KAFKA_SECURITY_PROTOCOL",
        "BILLING_KAFKA_SASL_MECHANISM",
    ]


def test_a_file_that_holds_no_certificate_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pki: Pki
) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValidationError) as caught:
        _settings(monkeypatch, kafka_security_protocol="SSL", kafka_ssl_cafile=str(garbage))
    (line,) = settings_errors(caught.value)
    assert line.startswith(
        f"billing-fleet: configuration: BILLING_KAFKA_SSL_CAFILE: cannot load {garbage}"
    )
    with pytest.raises(ValidationError) as caught:
        _settings(
            monkeypatch,
            kafka_security_protocol="SSL",
            kafka_ssl_cafile=str(pki.ca),
            kafka_ssl_certfile=str(pki.client_cert),
            kafka_ssl_keyfile=str(pki.server_key),  # not this certificate's key
        )
    (line,) = settings_errors(caught.value)
    assert "BILLING_KAFKA_SSL_CERTFILE/KEYFILE: cannot load" in line
