"""Checks a command runs before it starts serving, so the usual mistakes end in one clear
line (``Unavailable``) instead of a traceback or a half-started process."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg

from billing_fleet.logs import one_line

if TYPE_CHECKING:  # not at run time: `worker` loads nothing of the gateway
    from api_gateway.settings import GatewaySettings


CONNECT_TIMEOUT_SECONDS = 5.0
T = TypeVar("T")


class Unavailable(RuntimeError):
    """A dependency or resource the command needs is not there; the message says which."""


# What PostgreSQL not there (or no longer answering) raises past the checks.
DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    Unavailable,
    asyncpg.PostgresError,
    OSError,
    TimeoutError,
)


def failure_reason(exc: BaseException, *, missing_table: str | None = None) -> str:
    """One line for an operator command's ``DATABASE_ERRORS`` (``missing_table``: what
    to say when the table is not there, i.e. the database is not migrated)."""
    if missing_table is not None and isinstance(exc, asyncpg.UndefinedTableError):
        return missing_table
    if isinstance(exc, asyncpg.PostgresError):
        return f"PostgreSQL failed (DATABASE_URL): {one_line(exc)}"
    if isinstance(exc, Unavailable):
        return one_line(exc)
    return f"a server stopped answering ({one_line(exc) or type(exc).__name__})"


def with_connection(url: str, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """``work(conn)`` on one connection to ``url`` once ``check_database`` passed, bounded."""

    async def run() -> T:
        await check_database(url)
        conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS * 2):
                return await work(conn)
        finally:
            conn.terminate()

    return asyncio.run(run())


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now (bound and released at once)."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return True  # an unresolvable host is the server's error to report, not "in use"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: a port in TIME_WAIT after a stop counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError:
            return False
    return True


def require_free_ports(ports: dict[str, tuple[str, int]]) -> None:
    """``Unavailable`` naming the setting of the first port something already listens on."""
    for variable, (host, port) in ports.items():
        if not port_free(host, port):
            raise Unavailable(
                f"port {port} on {host} is in use: stop what listens there or choose "
                f"another with {variable}"
            )


def postgres_address(url: str) -> str:
    """Where ``url`` points (hosts and ports, or the socket directory), without credentials."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    query = parse_qs(parts.query)
    socket_dir = query.get("host", [""])[0]
    port = query.get("port", [""])[0] or "5432"
    if hosts:
        return hosts if ":" in hosts.rpartition("]")[2] else f"{hosts}:{port}"
    if socket_dir:
        return f"{socket_dir} (unix socket, port {port})"
    return f"the local unix socket (port {port})"


async def check_database(url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Connect once to ``url``: ``Unavailable`` saying why PostgreSQL cannot be used."""
    where = f"PostgreSQL at {postgres_address(url)} (DATABASE_URL)"
    try:
        conn = await asyncpg.connect(url, timeout=timeout)
    except TimeoutError:
        raise Unavailable(f"{where} did not answer within {timeout:g} s") from None
    except asyncpg.PostgresError as exc:  # reached, but refused: auth, unknown database
        raise Unavailable(f"{where} refused the connection: {exc}") from None
    except ValueError as exc:  # asyncpg's own checks of the URL (ClientConfigurationError)
        raise Unavailable(f"DATABASE_URL is malformed: {exc}") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise Unavailable(f"{where} is unreachable: {reason}") from None
    await conn.close()


def require_gateway_ports(settings: GatewaySettings) -> None:
    """``require_free_ports`` for the gateway's port, and its admin port when it has one."""
    ports = {"BILLING_GATEWAY_PORT": (settings.gateway_host, settings.gateway_port)}
    if settings.gateway_admin_port is not None:
        ports["BILLING_GATEWAY_ADMIN_PORT"] = (settings.gateway_host, settings.gateway_admin_port)
    require_free_ports(ports)
