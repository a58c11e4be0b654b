"""Topic creation and a cheap broker probe.

The probe speaks one Kafka request (ApiVersions v0) over a raw socket: a port that merely
accepts TCP, or a broker still starting, does not count as reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterable

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError


class KafkaAdminError(RuntimeError):
    """The broker refused or could not be asked (unreachable, invalid topic, ...)."""


_API_VERSIONS = 18
_CORRELATION_ID = 0x0B111
_CLIENT_ID = b"billing-fleet-probe"
_REQUEST_BODY = struct.pack(">hhih", _API_VERSIONS, 0, _CORRELATION_ID, len(_CLIENT_ID))
API_VERSIONS_REQUEST = struct.pack(">i", len(_REQUEST_BODY) + len(_CLIENT_ID)) + (
    _REQUEST_BODY + _CLIENT_ID
)


def _is_api_versions_response(header: bytes) -> bool:
    """``header`` = the response's size (int32) and correlation id (int32)."""
    size, correlation_id = struct.unpack(">ii", header)
    return bool(size >= 4 and correlation_id == _CORRELATION_ID)


def _parse_bootstrap(bootstrap: str) -> list[tuple[str, int]]:
    servers = []
    for entry in bootstrap.split(","):
        host, _, port = entry.strip().rpartition(":")
        servers.append((host.strip("[]") or "localhost", int(port or 9092)))
    return servers


def kafka_ping(host: str, port: int, timeout: float) -> bool:
    """Blocking: does ``host:port`` answer a Kafka ApiVersions request within ``timeout``?"""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(API_VERSIONS_REQUEST)
            header = b""
            while len(header) < 8:
                chunk = sock.recv(8 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    return _is_api_versions_response(header)


async def _ping(host: str, port: int) -> bool:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(API_VERSIONS_REQUEST)
        await writer.drain()
        return _is_api_versions_response(await reader.readexactly(8))
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def broker_reachable(bootstrap: str, timeout: float) -> bool:
    """True if any bootstrap server answers a Kafka request within ``timeout`` seconds."""
    for host, port in _parse_bootstrap(bootstrap):
        try:
            async with asyncio.timeout(timeout):
                if await _ping(host, port):
                    return True
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            continue
    return False


async def ensure_topics(
    bootstrap: str,
    topics: Iterable[str],
    partitions: int,
    replication_factor: int,
) -> list[str]:
    """Create the topics that do not exist yet; returns the ones this call created.

    Existing topics are left as they are (their partition count is not changed).
    """
    wanted = list(dict.fromkeys(topics))
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        try:
            response = await admin.create_topics(
                [NewTopic(name, partitions, replication_factor) for name in wanted]
            )
        finally:
            await admin.close()
    except KafkaError as exc:
        raise KafkaAdminError(f"cannot create topics on {bootstrap}: {exc!r}") from exc
    created: list[str] = []
    # Errors come back per topic, not raised: "already exists" is the idempotent case.
    for name, code, *rest in response.topic_errors:
        if code == 0:
            created.append(name)
        elif code != TopicAlreadyExistsError.errno:
            detail = rest[0] if rest and rest[0] else f"error code {code}"
            raise KafkaAdminError(f"cannot create topic {name!r}: {detail}")
    return created
