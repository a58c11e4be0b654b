"""Checks before serving: ports in use, and PostgreSQL's address in error messages."""

from __future__ import annotations

import socket

import pytest

from fleet.embedded import free_port
from fleet.preflight import (
    Unavailable,
    check_database,
    port_free,
    postgres_address,
    require_free_ports,
)


def test_a_port_someone_listens_on_is_not_free() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        assert not port_free("127.0.0.1", port)
        with pytest.raises(Unavailable, match=f"port {port} .* BILLING_GATEWAY_PORT"):
            require_free_ports({"BILLING_GATEWAY_PORT": ("127.0.0.1", port)})

    assert port_free("127.0.0.1", port)


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("postgresql://u:secret@db.internal/billing", "db.internal:5432"),
        ("postgresql://u:secret@db.internal:6432/billing", "db.internal:6432"),
        ("postgresql://[::1]/billing", "[::1]:5432"),
        ("postgresql://h1:5432,h2:5433/billing", "h1:5432,h2:5433"),
        ("postgresql://postgres:@/postgres?host=/tmp/pg", "/tmp/pg (unix socket, port 5432)"),
    ],
)
def test_postgres_address_has_no_credentials(url: str, address: str) -> None:
    assert postgres_address(url) == address


async def test_an_unreachable_database_is_one_clear_error() -> None:
    port = free_port()

    with pytest.raises(Unavailable) as raised:
        await check_database(f"postgresql://u:secret@127.0.0.1:{port}/billing", timeout=3)

    message = str(raised.value)
    assert message.startswith(f"PostgreSQL at 127.0.0.1:{port} (DATABASE_URL) is unreachable")
    assert "secret" not in message
