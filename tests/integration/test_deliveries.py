"""Deliveries against real loopback HTTP receivers and the real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from typing import Any

import pytest

from tests.deliveries_support import attempts, dispatching, http_channel, rows, statuses, write
from tests.http_receiver import HOLD, Answer, Receiver
from tests.runtime_toy import metric, unique, wait_for
from workers.runtime.deliveries import dispatcher as dispatcher_module
from workers.runtime.deliveries import store
from workers.runtime.deliveries.model import Delivery, RetryPolicy, SendResult

pytestmark = pytest.mark.integration


def _deliveries(receiver: Receiver, path: str, prefix: str, count: int) -> list[Delivery]:
    return [
        Delivery.json("http", receiver.url(path), f"{prefix}-{i}", {"n": i}) for i in range(count)
    ]


async def test_one_endpoint_down_does_not_hold_back_the_other(database_url: str) -> None:
    worker = unique("dl-outage")
    down, up = Receiver(), Receiver()
    await up.start()  # `down` is not listening: connection refused
    await write(
        database_url, worker, _deliveries(down, "/a", "a", 5) + _deliveries(up, "/b", "b", 5)
    )
    try:
        async with dispatching(database_url, worker, http_channel(backoff=(0.2, 0.3))):
            await wait_for(lambda: _arrived(up, "/b", 5), message="B delivered while A is down")
            assert down.requests == {}

            async def pending(count: int) -> bool:
                labels = {"worker": worker, "channel": "http"}
                return metric("billing_deliveries_pending", **labels) == count

            await wait_for(lambda: pending(5), message="A's five rows counted as pending")
            states = await statuses(database_url, worker)
            assert {k: v for k, v in states.items() if k.startswith("a-")} == {
                f"a-{i}": "pending" for i in range(5)
            }
            refused = [r for r in await rows(database_url, worker) if r["attempts"] > 0]
            assert any(r["idempotency_key"].startswith("a-") for r in refused)
            first_a = next(r for r in refused if r["idempotency_key"].startswith("a-"))

            async def a_refused_recorded() -> bool:
                return bool(await attempts(database_url, first_a["id"]))

            await wait_for(a_refused_recorded, message="the refused attempt is recorded")
            tried = await attempts(database_url, first_a["id"])
            assert tried[0]["outcome"] == "retry" and "Connect" in (tried[0]["detail"] or "")

            # A comes back overloaded: 503 with Retry-After, then well.
            down.default = Answer(503, {"retry-after": "1"})
            await down.start()
            await wait_for(lambda: _requested(down, "/a", 5), message="A answered 503")
            down.default = Answer(200)
            await wait_for(lambda: _arrived(down, "/a", 5), message="A delivered once back")
            await wait_for(lambda: pending(0), message="nothing pending once A is delivered")
        assert set((await statuses(database_url, worker)).values()) == {"sent"}
        assert down.ids("/a") == {f"a-{i}": 1 for i in range(5)}  # nothing twice
        assert up.ids("/b") == {f"b-{i}": 1 for i in range(5)}
        assert up.ids("/b", up.requests) == up.ids("/b")  # B never needed a retry
        codes = {r["code"] for r in await attempts(database_url, first_a["id"])}
        assert {"503", "200"} <= codes
        assert (
            metric("billing_deliveries_total", worker=worker, channel="http", outcome="dead") == 0
        )
    finally:
        await down.stop()
        await up.stop()


async def test_two_dispatchers_share_the_rows_and_send_each_once(database_url: str) -> None:
    worker = unique("dl-replicas")
    receiver = Receiver()
    receiver.default = Answer(200, delay=0.02)  # sends overlap, so both claim while busy
    await receiver.start()
    await write(database_url, worker, _deliveries(receiver, "/r", "r", 30))
    try:
        async with (
            dispatching(database_url, worker, http_channel(), concurrency=2),
            dispatching(database_url, worker, http_channel(), concurrency=2),
        ):
            await wait_for(lambda: _status_all(database_url, worker, "sent", 30))
        assert receiver.ids("/r", receiver.requests) == {f"r-{i}": 1 for i in range(30)}
        assert {r["attempts"] for r in await rows(database_url, worker)} == {1}
    finally:
        await receiver.stop()


async def test_same_idempotency_key_creates_no_second_row(database_url: str) -> None:
    worker = unique("dl-dedupe")
    receiver = Receiver()
    delivery = Delivery.json("http", receiver.url("/x"), "event-1", {"v": 1})
    assert await write(database_url, worker, [delivery]) == 1
    again = Delivery.json("http", receiver.url("/x"), "event-1", {"v": 2})
    assert await write(database_url, worker, [again, delivery]) == 0
    assert [r["idempotency_key"] for r in await rows(database_url, worker)] == ["event-1"]
    # Another worker's or another channel's key space is its own.
    assert await write(database_url, unique("dl-other"), [delivery]) == 1


async def test_gone_is_failed_and_never_retried(database_url: str) -> None:
    worker = unique("dl-gone")
    receiver = Receiver()
    receiver.answers["/gone"] = Answer(410)
    await receiver.start()
    gone = Delivery.json("http", receiver.url("/gone"), "gone-1", {})
    await write(database_url, worker, [gone])
    try:
        async with dispatching(database_url, worker, http_channel(backoff=(0.05,))):
            await wait_for(lambda: _status_is(database_url, worker, "gone-1", "failed"))
            # A later delivery goes through after several of the dispatcher's polls: the
            # failed one had every chance to be retried, and was not.
            await asyncio.sleep(0.5)
            later = Delivery.json("http", receiver.url("/ok"), "ok-1", {})
            await write(database_url, worker, [later])
            await wait_for(lambda: _arrived(receiver, "/ok", 1))
        assert receiver.ids("/gone", receiver.requests) == {"gone-1": 1}
        (row,) = [r for r in await rows(database_url, worker) if r["idempotency_key"] == "gone-1"]
        assert (row["status"], row["attempts"], row["last_code"]) == ("failed", 1, "410")
        assert [(a["outcome"], a["code"]) for a in await attempts(database_url, row["id"])] == [
            ("failed", "410")
        ]
    finally:
        await receiver.stop()


async def test_dead_after_its_attempts_then_retry_delivers_it(database_url: str) -> None:
    worker = unique("dl-dead")
    receiver = Receiver()
    receiver.default = Answer(500)
    await receiver.start()
    await write(database_url, worker, [Delivery.json("http", receiver.url("/d"), "dead-1", {})])
    try:
        async with dispatching(database_url, worker, http_channel(backoff=(0.05,), attempts=3)):
            await wait_for(lambda: _status_is(database_url, worker, "dead-1", "dead"))
            assert receiver.ids("/d", receiver.requests) == {"dead-1": 3}
            assert (
                metric("billing_deliveries_total", worker=worker, channel="http", outcome="dead")
                == 1
            )
            (row,) = await rows(database_url, worker)

            listed = _cli(database_url, "list", "--status", "dead", "--worker", worker)
            assert listed.returncode == 0, listed.stderr
            assert f"{row['id']}\t{worker}\thttp\tdead\t3" in listed.stdout
            assert "500 HTTP 500" in listed.stdout

            # Re-queued, still failing: the channel's three attempts again, numbered on.
            retried = _cli(database_url, "retry", str(row["id"]))
            assert retried.returncode == 0, retried.stderr
            assert "re-queued" in retried.stdout
            await wait_for(lambda: _requested(receiver, "/d", 6), message="three more tries")
            await wait_for(lambda: _status_is(database_url, worker, "dead-1", "dead"))
            assert receiver.ids("/d", receiver.requests) == {"dead-1": 6}

            receiver.default = Answer(200)
            retried = _cli(database_url, "retry", str(row["id"]))
            assert retried.returncode == 0, retried.stderr
            await wait_for(lambda: _arrived(receiver, "/d", 1), message="delivered after retry")
            await wait_for(lambda: _status_is(database_url, worker, "dead-1", "sent"))
        assert await statuses(database_url, worker) == {"dead-1": "sent"}
        numbers = [a["attempt"] for a in await attempts(database_url, row["id"])]
        assert numbers == [1, 2, 3, 4, 5, 6, 7]  # never a number twice
        assert [r["attempts"] for r in await rows(database_url, worker)] == [7]
        again = _cli(database_url, "retry", str(row["id"]))
        assert again.returncode == 1
        assert "is sent: only dead or failed deliveries are re-queued" in again.stderr
        missing = _cli(database_url, "retry", "999999999")
        assert (missing.returncode, missing.stderr.strip()) == (
            1,
            "billing-fleet deliveries retry: no delivery 999999999",
        )
        assert "Traceback" not in again.stderr + missing.stderr
    finally:
        await receiver.stop()


async def test_a_finished_send_claims_again_only_when_rows_were_left(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One claim per wake-up while rows trickle in (not another after each send); a
    backlog still goes out at once on freed slots, with no poll to help."""
    worker = unique("dl-claims")
    receiver = Receiver()
    await receiver.start()
    claims = 0

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return await store.claim(*args, **kwargs)

    monkeypatch.setattr(dispatcher_module, "claim", counted)
    try:
        async with dispatching(
            database_url, worker, http_channel(), concurrency=8, poll_interval=60.0
        ) as dispatcher:

            async def started() -> bool:
                return claims >= 1

            await wait_for(started, message="the start's claim")
            for i in range(10):
                await write(database_url, worker, _deliveries(receiver, "/t", f"t{i}", 1))
                dispatcher.wake()  # as a committed transaction that wrote a row does
                await wait_for(lambda n=i + 1: _arrived(receiver, "/t", n))
                await asyncio.sleep(0.05)  # room for a claim after the send, if any
            assert claims == 1 + 10
            await write(database_url, worker, _deliveries(receiver, "/b", "b", 40))
            dispatcher.wake()
            await wait_for(lambda: _arrived(receiver, "/b", 40), timeout=10.0)
        assert receiver.ids("/b") == {f"b-{i}": 1 for i in range(40)}
    finally:
        await receiver.stop()


async def test_graceful_stop_lets_a_send_in_flight_finish(database_url: str) -> None:
    worker = unique("dl-stop")
    receiver = Receiver()
    receiver.answers["/slow"] = Answer(200, delay=0.5)
    await receiver.start()
    await write(database_url, worker, [Delivery.json("http", receiver.url("/slow"), "s-1", {})])
    try:
        async with dispatching(database_url, worker, http_channel()):
            await wait_for(lambda: _requested(receiver, "/slow", 1), message="the send began")
        # The block's end cancelled the dispatcher while the receiver was still answering.
        assert await statuses(database_url, worker) == {"s-1": "sent"}
        assert receiver.ids("/slow", receiver.requests) == {"s-1": 1}
    finally:
        await receiver.stop()


async def test_a_hanging_endpoint_holds_only_its_own_send_slots(database_url: str) -> None:
    worker = unique("dl-hang")
    hanging, healthy = Receiver(), Receiver()
    hanging.default = HOLD  # accepts the connection and the request, never answers
    await hanging.start()
    await healthy.start()
    # The hanging endpoint's backlog comes first in due order.
    await write(database_url, worker, _deliveries(hanging, "/h", "h", 20))
    await write(database_url, worker, _deliveries(healthy, "/ok", "ok", 20))
    sender = http_channel(backoff=(60.0,), timeout=3.0)
    try:
        async with dispatching(database_url, worker, sender, concurrency=4, per_destination=2):
            await wait_for(lambda: _arrived(healthy, "/ok", 20), message="healthy delivered")
            # Meanwhile the hanging endpoint held two slots, and got no other request.
            assert sum(hanging.requests.values()) == 2
            await wait_for(
                lambda: _recorded_retries(database_url, worker, 2), message="the two timeouts"
            )
            states = {r["idempotency_key"]: r for r in await rows(database_url, worker)}
            hung = [r for key, r in states.items() if key.startswith("h-")]
            # Its retries pushed its whole backlog back by the wait, not only the two tried.
            assert all(r["status"] == "pending" and r["later"] for r in hung), hung
            assert sorted(r["attempts"] for r in hung) == [0] * 18 + [1, 1]
            assert sum(hanging.requests.values()) == 2
        assert healthy.ids("/ok", healthy.requests) == {f"ok-{i}": 1 for i in range(20)}
        assert {r["attempts"] for r in await rows(database_url, worker)} <= {0, 1}
        dead = metric("billing_deliveries_total", worker=worker, channel="http", outcome="dead")
        assert dead == 0
    finally:
        await hanging.stop()
        await healthy.stop()


class _Scripted:
    """A sender whose results are given per idempotency key (each send counted)."""

    def __init__(self, results: dict[str, SendResult]) -> None:
        self.results = results
        self.sends: dict[str, int] = {}

    @property
    def policy(self) -> RetryPolicy:
        return RetryPolicy((0.05,), 5)

    @property
    def timeout_seconds(self) -> float:
        return 2.0

    async def send(self, delivery: Delivery) -> SendResult:
        key = delivery.idempotency_key
        self.sends[key] = self.sends.get(key, 0) + 1
        return self.results.get(key, SendResult("sent", "200"))

    async def aclose(self) -> None:
        pass


async def test_a_result_postgresql_refuses_blocks_no_other(database_url: str) -> None:
    worker = unique("dl-nul")
    sender = _Scripted(
        {
            "nul": SendResult("failed", "4\x0010", "bad\x00 answer"),
            # Not encodable as UTF-8: the statement is refused; only this result is replaced.
            "surrogate": SendResult("failed", "400", "broken \ud800 text"),
        }
    )
    keys = ["nul", "surrogate", "fine-1", "fine-2"]
    await write(database_url, worker, [Delivery("http", "http://x", k, b"") for k in keys])
    async with dispatching(database_url, worker, sender):
        await wait_for(lambda: _settled(database_url, worker, 4), message="every result recorded")
    found = {r["idempotency_key"]: r for r in await rows(database_url, worker)}
    assert {k: r["status"] for k, r in found.items()} == {
        "nul": "failed",
        "surrogate": "failed",
        "fine-1": "sent",
        "fine-2": "sent",
    }
    assert (found["nul"]["last_code"], found["nul"]["last_detail"]) == ("410", "bad answer")
    assert found["surrogate"]["last_code"] is None
    assert "not recordable" in (found["surrogate"]["last_detail"] or "")
    assert sender.sends == {key: 1 for key in keys}  # recorded once, never sent again


async def test_a_stop_cuts_sends_off_at_the_drain_deadline(database_url: str) -> None:
    worker = unique("dl-drain")
    receiver = Receiver()
    receiver.default = HOLD
    await receiver.start()
    await write(database_url, worker, [Delivery.json("http", receiver.url("/h"), "d-1", {})])
    try:
        async with dispatching(database_url, worker, http_channel(timeout=30.0)) as dispatcher:
            await wait_for(lambda: _requested(receiver, "/h", 1), message="the send began")
            dispatcher.drain_until(asyncio.get_running_loop().time())  # no budget left
        # Cut off, not timed out: no attempt recorded, the lease will bring it back.
        (row,) = await rows(database_url, worker)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert await attempts(database_url, row["id"]) == []
    finally:
        await receiver.stop()


def test_deliveries_cli_refuses_bad_input_in_one_line() -> None:
    env = {**os.environ, "DATABASE_URL": "postgresql://postgres@127.0.0.1:1/postgres"}
    bad_id = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "deliveries", "retry", "abc"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad_id.returncode == 2 and "not a number: 'abc'" in bad_id.stderr
    bad_status = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "deliveries", "list", "--status", "lost"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad_status.returncode == 2 and "not a status: 'lost'" in bad_status.stderr
    assert "Traceback" not in bad_status.stderr
    unreachable = subprocess.run(
        [sys.executable, "-m", "fleet.cli", "deliveries", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert unreachable.returncode == 1
    assert len(unreachable.stderr.strip().splitlines()) == 1, unreachable.stderr
    assert unreachable.stderr.startswith("billing-fleet deliveries list: ")


async def test_sigkill_mid_send_sends_again_once_with_the_same_id(database_url: str) -> None:
    worker = unique("dl-kill")
    receiver = Receiver()
    receiver.answers["/slow"] = HOLD
    await receiver.start()
    await write(database_url, worker, [Delivery.json("http", receiver.url("/slow"), "k-1", {})])
    try:
        first = _dispatcher_process(database_url, worker)
        try:
            await wait_for(lambda: _requested(receiver, "/slow", 1), message="first send")
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=10)
        (row,) = await rows(database_url, worker)
        assert (row["status"], row["attempts"]) == ("pending", 1)  # killed before recording
        receiver.answers["/slow"] = Answer(200)
        second = _dispatcher_process(database_url, worker)
        try:
            await wait_for(lambda: _status_is(database_url, worker, "k-1", "sent"), timeout=30)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(timeout=10)
        assert receiver.ids("/slow", receiver.requests) == {"k-1": 2}  # the same id twice
        assert receiver.ids("/slow") == {"k-1": 1}
        assert [(a["attempt"], a["outcome"]) for a in await attempts(database_url, row["id"])] == [
            (2, "sent")
        ]
    finally:
        await receiver.stop()


def _dispatcher_process(database_url: str, worker: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "TOY_WORKER": worker,
        "TOY_LEASE_SECONDS": "3",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.deliveries_dispatch"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet.cli", "deliveries", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "DATABASE_URL": database_url},
        timeout=60,
    )


async def _arrived(receiver: Receiver, path: str, count: int) -> bool:
    return len(receiver.ids(path)) >= count


async def _requested(receiver: Receiver, path: str, count: int) -> bool:
    return sum(receiver.ids(path, receiver.requests).values()) >= count


async def _status_all(database_url: str, worker: str, status: str, count: int) -> bool:
    found = await statuses(database_url, worker)
    return len(found) == count and set(found.values()) == {status}


async def _status_is(database_url: str, worker: str, key: str, status: str) -> Any:
    return (await statuses(database_url, worker)).get(key) == status


async def _recorded_retries(database_url: str, worker: str, count: int) -> bool:
    found = 0
    for row in await rows(database_url, worker):
        found += sum(a["outcome"] == "retry" for a in await attempts(database_url, row["id"]))
    return found >= count


async def _settled(database_url: str, worker: str, count: int) -> bool:
    found = await statuses(database_url, worker)
    return len(found) == count and "pending" not in found.values()
