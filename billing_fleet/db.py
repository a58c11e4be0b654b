"""PostgreSQL connection pools (asyncpg), bounded database work, and JSON parameters.

What the gateway and the workers do with the database while they run goes through
``bounded_connection`` or ``bounded_transaction``: acquire, statements and release together
within one deadline. On a timeout the connection is abandoned (``terminate()``: the socket
is closed, the server rolls back whatever was open) instead of asyncpg's graceful path,
which on a stalled (not down) server waits for it: a query ``timeout=`` sends a cancel
request over a new connection and the release waits for that, a rollback waits for its
answer, a connect for the handshake. The pool opens a fresh connection on a later acquire.
Closing a pool at shutdown is bounded too (``close_pool``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy
from pydantic_core import to_json

# Raised into the block by our own deadline (or a caller's): a query may be in flight.
_INTERRUPTED = (asyncio.CancelledError, TimeoutError)

# What the database raises when it is down, stalled (a deadline's TimeoutError) or refusing
# connections: SQLSTATE classes 08 (connection), 53 (resources: too many connections) and
# 57 (operator intervention: shutting down, cannot connect now). An outage, not the
# caller's fault: the gateway answers 503, a worker retries the batch.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # ConnectionError is a subclass
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.OperatorInterventionError,
)


async def _keep_session(_: asyncpg.Connection) -> None:
    """Pool reset: nothing to undo. Our code leaves no session state behind (no SET,
    LISTEN or session-level advisory lock; transaction-level ones end with it), and
    asyncpg's default reset would spend a round trip per release on ``RESET ALL; ...``.
    An open transaction is still rolled back: asyncpg does that before calling this."""


async def create_pool(
    url: str, *, min_size: int = 1, max_size: int = 10, connect_timeout: float = 60.0
) -> asyncpg.Pool:
    """A pool on ``url`` (any libpq URL asyncpg accepts, unix-socket ``?host=`` included).

    ``connect_timeout`` bounds each new connection's handshake, including those the pool
    opens in the background to keep ``min_size``."""
    pool: asyncpg.Pool = await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, reset=_keep_session, timeout=connect_timeout
    )
    return pool


async def close_pool(pool: asyncpg.Pool, seconds: float) -> None:
    """Close ``pool`` gracefully within ``seconds``, else terminate it: a graceful close
    waits for the server to acknowledge each connection's Terminate message, which a
    stalled server never does."""
    try:
        async with asyncio.timeout(seconds):
            await pool.close()
    except TimeoutError:
        pool.terminate()  # close() did on its cancellation; again costs nothing


def _abandon(proxy: PoolConnectionProxy[asyncpg.Record]) -> None:
    # terminate() also hands the holder back to the pool (without its connection).
    with contextlib.suppress(asyncpg.InterfaceError):  # released already: nothing to do
        proxy.terminate()


class bounded_connection:
    """``async with bounded_connection(pool, seconds) as conn``: a pooled connection for
    the block; acquiring it, the block and the release take at most ``seconds`` together,
    else TimeoutError, and the connection is abandoned.

    An error the block raises otherwise (the server refused a statement, a caller's bug)
    leaves the connection in a known state: it is released, within the deadline too. That
    error is the one raised, also when the server dropped the connection under the block
    (terminated, a failover) and the release fails or finds it released by asyncpg.

    The deadline is one timer that cancels the task, with ``asyncio.timeout``'s
    cancellation accounting, kept in this object rather than in a second context manager
    around the acquire: the read API runs thousands of these a second.
    """

    __slots__ = ("_cancelling", "_expired", "_pool", "_proxy", "_seconds", "_task", "_timer")
    _proxy: PoolConnectionProxy[asyncpg.Record]
    _task: asyncio.Task[Any]
    _timer: asyncio.TimerHandle
    _cancelling: int

    def __init__(self, pool: asyncpg.Pool, seconds: float) -> None:
        self._pool, self._seconds, self._expired = pool, seconds, False

    async def __aenter__(self) -> asyncpg.Connection:
        task = asyncio.current_task()
        assert task is not None, "bounded_connection needs a task"
        self._task, self._cancelling = task, task.cancelling()
        self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        try:
            self._proxy = await self._pool.acquire()
        except BaseException as exc:
            self._end(exc)
            raise
        # The pool's proxy forwards every Connection method; callers are typed on those.
        return cast(asyncpg.Connection, self._proxy)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        try:
            if isinstance(exc, _INTERRUPTED):
                _abandon(self._proxy)
            else:
                await self._release(exc)
        except BaseException as error:
            self._end(error)
            raise
        self._end(exc)

    async def _release(self, exc: BaseException | None) -> None:
        proxy = self._proxy
        try:
            in_transaction = proxy.is_in_transaction()
        except asyncpg.InterfaceError:
            # The server dropped the connection (terminated, failover): asyncpg released it
            # itself and detached the proxy. Nothing to do; the block's error says why.
            return
        # Cut short by the deadline, a release still completes in the background (asyncpg
        # shields it): never abandon a connection once it is released. Its only round
        # trip is the ROLLBACK of a transaction left open: bound that one (asyncpg's
        # bound costs a timer and a Timeout, like ours).
        try:
            await self._pool.release(proxy, timeout=self._seconds if in_transaction else None)
        except Exception:
            # The ROLLBACK failed (asyncpg then terminates the connection), e.g. on a
            # connection the server dropped: the block's own error says what happened.
            if exc is None:
                raise

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    def _end(self, exc: BaseException | None) -> None:
        """Stop the timer; our own cancellation leaves as TimeoutError (asyncio.timeout's
        rule: unless the task was cancelled by someone else meanwhile)."""
        self._timer.cancel()
        if (
            self._expired
            and self._task.uncancel() <= self._cancelling
            and isinstance(exc, asyncio.CancelledError)
        ):
            raise TimeoutError from exc


@asynccontextmanager
async def bounded_transaction(
    pool: asyncpg.Pool, seconds: float
) -> AsyncIterator[asyncpg.Connection]:
    """``bounded_connection`` inside a transaction, committed when the block ends.

    On the deadline nothing is rolled back over the wire: the connection is abandoned and
    the server rolls back (a COMMIT the deadline cut short may have committed: callers
    must be idempotent, as the workers are). Another error rolls back, within the deadline.
    """
    async with bounded_connection(pool, seconds) as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        except _INTERRUPTED:
            raise
        except BaseException:
            # A ROLLBACK that fails (the server dropped the connection: the proxy is
            # detached, or asyncpg still reads the server's last error) must not replace
            # the block's own error; leaving the connection then releases or drops it.
            with contextlib.suppress(Exception):
                if not conn.is_closed():
                    await transaction.rollback()
            raise
        await transaction.commit()


class BoundedPool(NamedTuple):
    """A pool whose queries are each bounded by ``seconds`` (see ``bounded_connection``)."""

    pool: asyncpg.Pool
    seconds: float

    async def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with bounded_connection(self.pool, self.seconds) as conn:
            return await conn.fetch(query, *args)

    async def fetchval(self, query: str, *args: Any) -> Any:
        async with bounded_connection(self.pool, self.seconds) as conn:
            return await conn.fetchval(query, *args)


async def database_answers(pool: asyncpg.Pool, seconds: float) -> bool:
    """Whether the database runs ``SELECT 1`` within ``seconds`` (a readiness probe): a
    stalled server fails the probe by the deadline."""
    try:
        await BoundedPool(pool, seconds).fetchval("SELECT 1")
    except Exception:
        return False
    return True


def json_text(value: Any) -> str:
    """``value`` as JSON text, for a ``$n::text::jsonb`` parameter: pydantic-core's encoder
    (several times json.dumps' speed; workers write thousands of these per batch)."""
    return to_json(value).decode()
