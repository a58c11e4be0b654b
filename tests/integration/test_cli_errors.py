"""The usual mistakes, on the real CLI: one line on stderr, no traceback, exit status != 0,
and nothing started or half-started behind it."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fleet.embedded import free_port
from tests.cli_support import clean_env, run

pytestmark = pytest.mark.integration


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """``result``'s stderr, asserted to be one line without a traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def closed_port() -> int:
    return free_port()  # nothing listens there


def test_database_unreachable_names_postgresql_and_its_address() -> None:
    port = closed_port()
    url = f"postgresql://billing:s3cret@127.0.0.1:{port}/billing"

    line = one_line(run("migrate", env=clean_env(DATABASE_URL=url)))

    assert line.startswith("billing-fleet migrate: PostgreSQL at 127.0.0.1:")
    assert f"127.0.0.1:{port}" in line and "unreachable" in line
    assert "s3cret" not in line


def test_dev_with_the_database_unreachable_stops_before_starting_anything(
    tmp_path: Path,
) -> None:
    port, kafka_port = closed_port(), free_port()
    env = clean_env(
        DATABASE_URL=f"postgresql://127.0.0.1:{port}/billing",
        BILLING_GATEWAY_PORT=str(free_port()),
        BILLING_DEV_KAFKA_PORT=str(kafka_port),
    )

    result = run("dev", env=env, cwd=tmp_path)

    line = one_line(result)
    assert line.startswith(f"billing-fleet dev: PostgreSQL at 127.0.0.1:{port}"), line
    assert result.stdout == ""  # no banner
    assert not (tmp_path / ".billing-fleet" / "tansu.log").exists()  # no broker started


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:5432/billing", "must start with postgresql://"),
        (
            "postgresql://billing:s3cret@db:fivefour/billing",
            "the host part has a port that is not a number",
        ),
        ("postgresql://[::1/billing", "not a URL"),
        # A '/' in the password: "billing:Xy7" would read as host and port.
        ("postgresql://billing:Xy7/s3cret@db:5432/billing", "percent-encode '/'"),
    ],
)
def test_a_malformed_database_url_is_a_settings_error(url: str, says: str) -> None:
    # A settings error: every command refuses it the same way before doing anything.
    commands = ("migrate", "dev", "gateway") if url.startswith("localhost") else ("migrate",)
    for command in commands:
        line = one_line(run(command, env=clean_env(DATABASE_URL=url)))

        assert line.startswith("billing-fleet: DATABASE_URL or BILLING_DATABASE_URL: "), line
        assert says in line and "s3cret" not in line and "Xy7" not in line


def test_a_short_jwt_secret_is_refused_by_every_process_that_serves_the_read_api() -> None:
    env = clean_env(BILLING_JWT_HS256_SECRET="too-short")
    for command in (["gateway"], ["dev"]):
        result = run(*command, env=env)

        assert result.returncode == 2
        assert one_line(result) == (
            "billing-fleet: BILLING_JWT_HS256_SECRET: must be at least 32 bytes"
        )
    for command in (["worker", "entitlement"], ["migrate"]):  # they read no JWT settings
        assert "BILLING_JWT_HS256_SECRET" not in run(*command, env=env).stderr


def test_settings_errors_are_one_line_per_setting() -> None:
    env = clean_env(BILLING_JWT_HS256_SECRET="too-short", BILLING_GATEWAY_PORT="eighty")

    result = run("gateway", env=env)

    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "billing-fleet: BILLING_GATEWAY_PORT: "
        "Input should be a valid integer, unable to parse string as an integer",
        "billing-fleet: BILLING_JWT_HS256_SECRET: must be at least 32 bytes",
    ]


def test_dev_with_the_gateway_port_in_use_says_so_before_the_banner(
    listening: int, tmp_path: Path
) -> None:
    env = clean_env(BILLING_GATEWAY_PORT=str(listening), BILLING_DEV_KAFKA_PORT=str(free_port()))

    result = run("dev", env=env, cwd=tmp_path, timeout=20)

    line = one_line(result)
    assert line == (
        f"billing-fleet dev: port {listening} on 127.0.0.1 is in use: stop what listens "
        "there or choose another with BILLING_GATEWAY_PORT"
    )
    assert result.stdout == ""
    assert not (tmp_path / ".billing-fleet" / "pgdata").exists()  # nothing was started


def test_gateway_with_its_port_in_use_says_so(listening: int, kafka: Any) -> None:
    env = clean_env(
        BILLING_GATEWAY_PORT=str(listening),
        KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        BILLING_STRIPE_WEBHOOK_SECRETS="whsec_x",
    )

    line = one_line(run("gateway", env=env, timeout=20))

    assert "BILLING_GATEWAY_PORT" in line and str(listening) in line


def test_send_test_event_without_a_gateway_says_so() -> None:
    url = f"http://127.0.0.1:{closed_port()}/webhooks/stripe"

    line = one_line(run("send-test-event", "--url", url, "--secret", "whsec_x", env=clean_env()))

    assert line.startswith(f"billing-fleet send-test-event: no gateway answers at {url}")
    assert line.endswith("start `billing-fleet dev` or pass --url")


def test_a_broken_catalog_stops_dev_and_the_worker(tmp_path: Path, kafka: Any) -> None:
    """dev must not accept webhooks that no worker will process: it refuses to start."""
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("version: 1\nproducts:\n  pro:\n    prices: [price_1]\n    featurez: {}\n")
    env = clean_env(
        BILLING_ENTITLEMENT_CATALOG_PATH=str(catalog),
        BILLING_GATEWAY_PORT=str(free_port()),
        BILLING_DEV_KAFKA_PORT=str(free_port()),
    )

    dev = run("dev", env=env, cwd=tmp_path, timeout=20)

    line = one_line(dev)
    assert line.startswith(f"billing-fleet dev: worker entitlement: {catalog}: invalid entitlement")
    assert "products.pro.featurez" in line
    assert dev.returncode == 1 and dev.stdout == ""
    worker = run(
        "worker",
        "entitlement",
        env={
            **env,
            "DATABASE_URL": "postgresql://127.0.0.1:1/unused",
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        },
    )
    assert one_line(worker).startswith(f"billing-fleet worker: worker entitlement: {catalog}")
    assert worker.returncode == 1


def test_a_catalog_that_is_not_yaml_is_one_line_too(tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text("products: [\n  - {\n")
    env = clean_env(
        BILLING_ENTITLEMENT_CATALOG_PATH=str(catalog),
        BILLING_GATEWAY_PORT=str(free_port()),
        BILLING_DEV_KAFKA_PORT=str(free_port()),
    )

    line = one_line(run("dev", env=env, cwd=tmp_path, timeout=20))

    assert "the entitlement catalog is not valid YAML" in line
