"""Every process refuses Kafka security settings that cannot work: one line, exit 2, before
it connects to anything."""

from __future__ import annotations

from tests.cli_support import clean_env, run


def test_sasl_without_a_password_stops_every_process_with_one_line() -> None:
    env = clean_env(BILLING_KAFKA_SECURITY_PROTOCOL="SASL_SSL", BILLING_KAFKA_SASL_USERNAME="u")
    for command in (["gateway"], ["worker", "entitlement"], ["migrate"], ["dlt", "list"]):
        result = run(*command, env=env)
        assert result.returncode == 2, command
        assert result.stderr.splitlines() == [
            "billing-fleet: configuration: BILLING_KAFKA_SECURITY_PROTOCOL=SASL_SSL needs "
            "BILLING_KAFKA_SASL_USERNAME and BILLING_KAFKA_SASL_PASSWORD"
        ], command


def test_a_missing_ca_file_is_one_line() -> None:
    env = clean_env(
        BILLING_KAFKA_SECURITY_PROTOCOL="SSL", BILLING_KAFKA_SSL_CAFILE="/nonexistent/ca.pem"
    )
    result = run("gateway", env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "billing-fleet: configuration: BILLING_KAFKA_SSL_CAFILE: no file at /nonexistent/ca.pem"
    ]
