"""``stop_all``: a stop asked for while tasks drain waits for them, then is passed on."""

from __future__ import annotations

import asyncio

import pytest

from fleet.dev_workers import stop_all


async def slow_to_stop(stopped: list[str], name: str) -> None:
    """Runs until cancelled, then takes a while to finish (a worker committing its batch)."""
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        await asyncio.sleep(0.3)
        stopped.append(name)
        raise


@pytest.mark.parametrize("cancels", [1, 2])  # a second Ctrl-C during the drain too
async def test_a_cancel_while_stopping_waits_for_the_tasks_then_is_raised(cancels: int) -> None:
    stopped: list[str] = []
    tasks = [asyncio.create_task(slow_to_stop(stopped, name)) for name in ("a", "b")]
    await asyncio.sleep(0)  # both running
    stopping = asyncio.create_task(stop_all(tasks))
    await asyncio.sleep(0.05)

    for _ in range(cancels):
        stopping.cancel()
        await asyncio.sleep(0.05)

    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(5):
            await stopping
    assert sorted(stopped) == ["a", "b"]  # both finished before the cancel went on
    assert all(task.done() for task in tasks)


async def test_without_a_cancel_it_returns_once_the_tasks_finished() -> None:
    stopped: list[str] = []
    task = asyncio.create_task(slow_to_stop(stopped, "a"))
    await asyncio.sleep(0)

    await stop_all([task])

    assert stopped == ["a"] and task.cancelled()
