"""Poison or outage: which failures are the message's fault, and how long to wait.

A dependency failure (PostgreSQL or Kafka unreachable, overloaded, or a transaction that
lost a race) says nothing about the message: the worker waits and retries the same batch.
Anything else is the message's fault (poison): a few retries, then the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Sequence

import asyncpg
from aiokafka.errors import KafkaError

from billing_fleet.db import DATABASE_UNAVAILABLE
from workers.runtime.spec import Poison

_DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    *DATABASE_UNAVAILABLE,
    # SQLSTATE class 40 (serialization failure, deadlock): a lost race, not the message.
    asyncpg.exceptions.TransactionRollbackError,
    KafkaError,
)


log = logging.getLogger(__name__)


class DependencyFailure(Exception):
    """Raised by the runtime to mark a failure as an outage whatever its cause was."""


def is_dependency_failure(
    exc: BaseException, is_outage: Callable[[BaseException], bool] | None = None
) -> bool:
    """True when ``exc``, or what it was raised from, is an outage, not the message's fault.

    ``is_outage`` (a worker's ``WorkerSpec.is_outage``) names more outages: exceptions its
    own dependencies raise. An explicit ``Poison`` is always the message's fault, whatever
    it was raised from.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, Poison):
            return False
        if isinstance(current, (DependencyFailure, *_DEPENDENCY_ERRORS)):
            return True
        if is_outage is not None and is_outage(current):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def jitter(delay: float, spread: float = 0.2, rng: random.Random | None = None) -> float:
    """``delay`` ± ``spread`` (a fraction), so replicas that failed together do not retry
    together."""
    factor: float = (rng or random).uniform(-spread, spread)
    return max(0.0, delay * (1 + factor))


def retry_delay(failures: int, schedule: Sequence[float]) -> float:
    """The wait after the ``failures``-th failure of a message (1-based); the schedule's last
    entry repeats."""
    if not schedule:
        return 0.0
    return schedule[min(max(failures, 1), len(schedule)) - 1]


def dependency_delay(attempt: int, maximum: float, base: float = 0.5) -> float:
    """Exponential backoff for outages: ``base * 2**attempt`` (0-based), capped at
    ``maximum``."""
    return min(maximum, base * 2.0 ** min(attempt, 32))


async def back_off(
    what: str,
    exc: Exception,
    attempt: int,
    maximum: float,
    *,
    worker: str,
    is_outage: Callable[[BaseException], bool] | None = None,
) -> None:
    """One failed round of a loop that must outlive its dependencies (the relay, the
    dispatcher): an unexpected error is logged with its traceback (a bug of ours), then the
    loop waits out its ``attempt``-th jittered backoff."""
    if not is_dependency_failure(exc, is_outage):
        log.exception(f"{what} failed", extra={"worker": worker})
    delay = jitter(dependency_delay(attempt, maximum))
    log.warning(
        f"{what} waits for its dependencies",
        extra={"worker": worker, "error": repr(exc), "retry_in": delay},
    )
    await asyncio.sleep(delay)
