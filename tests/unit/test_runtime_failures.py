"""Poison vs outage classification and the retry schedules."""

from __future__ import annotations

import random

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
from pydantic import ValidationError

from contracts import parse_billing_event
from workers.runtime.failures import (
    DependencyFailure,
    dependency_delay,
    is_dependency_failure,
    jitter,
    retry_delay,
)
from workers.runtime.spec import Poison


def validation_error() -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        parse_billing_event(b'{"type": "subscription.activated"}')
    return caught.value


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(),
        OSError("no route"),
        TimeoutError(),
        asyncpg.InterfaceError("connection is closed"),
        asyncpg.exceptions.ConnectionDoesNotExistError("gone"),
        asyncpg.exceptions.CannotConnectNowError("starting up"),
        asyncpg.exceptions.TooManyConnectionsError("too many"),
        asyncpg.exceptions.SerializationError("could not serialize"),
        asyncpg.exceptions.DeadlockDetectedError("deadlock"),
        asyncpg.exceptions.AdminShutdownError("terminating"),
        KafkaConnectionError(),
        KafkaTimeoutError(),
        DependencyFailure("smtp down"),
    ],
)
def test_outages_are_dependency_failures(exc: BaseException) -> None:
    assert is_dependency_failure(exc)


@pytest.mark.parametrize(
    "exc",
    [
        Poison("unknown price"),
        validation_error(),
        ValueError("bad"),
        KeyError("x"),
        asyncpg.exceptions.UniqueViolationError("dup"),
        asyncpg.exceptions.CheckViolationError("check"),
    ],
)
def test_message_faults_are_poison(exc: BaseException) -> None:
    assert not is_dependency_failure(exc)


def test_cause_decides_and_explicit_poison_wins() -> None:
    wrapped = RuntimeError("lookup failed")
    wrapped.__cause__ = ConnectionResetError()
    assert is_dependency_failure(wrapped)
    poison = Poison("catalog says no")
    poison.__cause__ = OSError()
    assert not is_dependency_failure(poison)


def test_retry_delay_follows_the_schedule_and_repeats_its_last_step() -> None:
    schedule = [0.2, 1.0, 5.0]
    assert [retry_delay(n, schedule) for n in (1, 2, 3, 4, 9)] == [0.2, 1.0, 5.0, 5.0, 5.0]
    assert retry_delay(1, []) == 0.0


def test_dependency_delay_doubles_up_to_the_cap() -> None:
    assert [dependency_delay(n, 30.0) for n in range(8)] == [0.5, 1, 2, 4, 8, 16, 30, 30]
    assert dependency_delay(10_000, 30.0) == 30.0


def test_jitter_stays_within_its_spread() -> None:
    rng = random.Random(7)
    values = [jitter(10.0, 0.2, rng) for _ in range(200)]
    assert all(8.0 <= v <= 12.0 for v in values)
    assert len(set(values)) > 100
    assert jitter(0.0) == 0.0
