"""Signed outbound webhooks to real loopback HTTP receivers, over the runtime's dispatcher
and the real PostgreSQL (the runtime's and the notification worker's tables)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import pytest_asyncio
from standardwebhooks import Webhook

from billing_fleet.migrate import migrate
from contracts import BillingEvent
from tests.cli_support import clean_env, run
from tests.conftest import CreateDatabase
from tests.deliveries_support import attempts, dispatching, rows, statuses, write
from tests.http_receiver import Answer, Receiver
from tests.runtime_toy import make_events, unique, wait_for
from tests.webhook_support import endpoint, new_secret, verifies, write_endpoints
from workers.notification.keys import webhook_key
from workers.notification.settings import NotificationSettings
from workers.notification.webhooks import CHANNEL
from workers.notification.webhooks import endpoints as endpoints_module
from workers.notification.webhooks.endpoints import EndpointsFile
from workers.notification.webhooks.payload import cloudevent_payload, webhook_deliveries
from workers.notification.webhooks.sender import (
    SignedWebhookSender,
    webhook_policy,
    webhook_sender,
)
from workers.runtime.declaration import RUNTIME_MIGRATIONS
from workers.runtime.deliveries.http import HttpSender
from workers.runtime.settings import RuntimeSettings

pytestmark = pytest.mark.integration

SOURCE = "/billing-fleet/stripe"
TOLERANCE_SECONDS = 300  # the spec's (and standardwebhooks') timestamp tolerance


class _WebhookSettings(RuntimeSettings, NotificationSettings):
    """What the notification worker reads where it runs (the runtime's and its own)."""


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def webhooks_db(create_database: CreateDatabase) -> str:
    """A database with the runtime's tables and the notification worker's."""
    url = await create_database()
    await migrate(url, (RUNTIME_MIGRATIONS, "workers.notification"))
    return url


@pytest.fixture(autouse=True)
def _reread_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A file rewritten by the test is read at the next send, not a second later.
    monkeypatch.setattr(endpoints_module, "RELOAD_CHECK_SECONDS", 0.0)


def _sender(
    path: Path, database_url: str, worker: str, *, backoff: Sequence[float] = (0.05,)
) -> SignedWebhookSender:
    http = HttpSender(webhook_policy(list(backoff)), timeout_seconds=2.0)
    return SignedWebhookSender(
        EndpointsFile(path), http, database_url, worker=worker, db_timeout=5.0
    )


def _deliveries(path: Path, events: Sequence[BillingEvent]) -> list[Any]:
    endpoints = EndpointsFile(path)
    return [
        d
        for event in events
        for d in webhook_deliveries(endpoints.endpoints_for(event.type), event, source=SOURCE)
    ]


async def _endpoint_row(database_url: str, endpoint_id: str) -> asyncpg.Record | None:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetchrow(
            "SELECT * FROM webhook_endpoints WHERE endpoint_id = $1", endpoint_id
        )
    finally:
        await conn.close()


def _cli(database_url: str, path: Path | None, *args: str) -> Any:
    env = clean_env(DATABASE_URL=database_url)
    if path is not None:
        env["BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH"] = str(path)
    return run(*args, env=env)


def _listed(output: str, endpoint_id: str) -> dict[str, str]:
    lines = output.splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        cells = line.split("\t")
        if cells[0] == endpoint_id:
            return dict(zip(header, cells, strict=True))
    raise AssertionError(f"{endpoint_id} not listed:\n{output}")


async def test_signatures_verify_two_ways_and_a_rotation_signs_what_is_queued(
    webhooks_db: str, tmp_path: Path
) -> None:
    worker, hook = unique("wh-sign"), unique("acc")
    old, new = new_secret(), new_secret()
    receiver = Receiver()
    await receiver.start()
    path = write_endpoints(tmp_path / "e.yaml", [endpoint(hook, receiver.url("/h"), [old])])
    events = make_events(3)
    queued = _deliveries(path, events)
    await write(webhooks_db, worker, queued)
    sender = _sender(path, webhooks_db, worker)
    # Rotation begins after the rows were written: the new secret signs them too.
    write_endpoints(path, [endpoint(hook, receiver.url("/h"), [old, new])])
    try:
        async with dispatching(webhooks_db, worker, sender, channel=CHANNEL):
            await wait_for(lambda: _arrived(receiver, 3), message="three signed webhooks")
            write_endpoints(path, [endpoint(hook, receiver.url("/h"), [new])])  # rotation done
            later = make_events(1)
            await write(webhooks_db, worker, _deliveries(path, later))
            await wait_for(lambda: _arrived(receiver, 4), message="one after the rotation")
        by_id = {r.headers["webhook-id"]: r for r in receiver.received}
        for event in events:
            got = by_id[webhook_key(hook, str(event.id))]
            signatures = got.headers["webhook-signature"].split(" ")
            assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
            for secret in (old, new):  # each secret's signature is there and verifies
                assert verifies(secret, got.headers, got.body)
                assert Webhook(secret).verify(got.body, got.headers) == json.loads(got.body)
            assert json.loads(got.body) == cloudevent_payload(event, source=SOURCE)
            assert got.headers["content-type"] == "application/cloudevents+json"
            assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < TOLERANCE_SECONDS
        after = by_id[webhook_key(hook, str(later[0].id))]
        assert len(after.headers["webhook-signature"].split(" ")) == 1
        assert verifies(new, after.headers, after.body)
        assert not verifies(old, after.headers, after.body)
        assert receiver.ids("/h", receiver.requests) == {key: 1 for key in by_id}
        assert set((await statuses(webhooks_db, worker)).values()) == {"sent"}
    finally:
        await receiver.stop()


async def test_retry_after_is_honoured(webhooks_db: str, tmp_path: Path) -> None:
    worker, hook = unique("wh-after"), unique("busy")
    receiver = Receiver()
    receiver.answers["/busy"] = Answer(503, {"retry-after": "3"})
    await receiver.start()
    path = write_endpoints(
        tmp_path / "e.yaml", [endpoint(hook, receiver.url("/busy"), [new_secret()])]
    )
    await write(webhooks_db, worker, _deliveries(path, make_events(1)))
    try:
        sender = _sender(path, webhooks_db, worker, backoff=(0.05,) * 3)
        async with dispatching(webhooks_db, worker, sender, channel=CHANNEL):
            await wait_for(lambda: _requested(receiver, 1), message="the 503")
            receiver.answers["/busy"] = Answer(200)
            await wait_for(lambda: _arrived(receiver, 1), message="delivered after the wait")
            await wait_for(lambda: _all(webhooks_db, worker, "sent"), message="recorded")
        (row,) = await rows(webhooks_db, worker)
        tried = await _attempt_times(webhooks_db, row["id"])
        assert [(t["outcome"], t["code"]) for t in tried] == [("retry", "503"), ("sent", "200")]
        # The backoff says 0.05 s; the receiver said 3 s, and the row waited that long.
        waited = (tried[1]["started_at"] - tried[0]["finished_at"]).total_seconds()
        assert waited >= 2.9, waited
    finally:
        await receiver.stop()


async def test_gone_disables_the_endpoint_stops_its_rows_and_enable_requeues_them(
    webhooks_db: str, tmp_path: Path
) -> None:
    worker, gone, fine = unique("wh-gone"), unique("gone"), unique("fine")
    secret = new_secret()
    receiver, other = Receiver(), Receiver()
    receiver.answers["/gone"] = Answer(410)
    await receiver.start()
    await other.start()
    path = write_endpoints(
        tmp_path / "e.yaml",
        [
            endpoint(gone, receiver.url("/gone"), [secret]),
            endpoint(fine, other.url("/fine"), [new_secret()]),
        ],
    )
    events = make_events(5)
    await write(webhooks_db, worker, _deliveries(path, events))
    sender = _sender(path, webhooks_db, worker)
    try:
        # One send at a time per destination: the 410 comes before any other row of it.
        async with dispatching(webhooks_db, worker, sender, channel=CHANNEL, per_destination=1):
            await wait_for(lambda: _arrived(other, 5), message="the other endpoint's five")
            await wait_for(
                lambda: _settled(webhooks_db, worker, 10), message="every row sent or stopped"
            )
            assert sum(receiver.requests.values()) == 1  # the 410, and nothing after it
            found = {r["idempotency_key"]: r for r in await rows(webhooks_db, worker)}
            mine = [r for key, r in found.items() if key.startswith(f"webhook:{gone}:")]
            assert sorted(r["last_code"] for r in mine) == ["410"] + ["disabled"] * 4
            assert {r["status"] for r in mine} == {"failed"}
            stopped = next(r for r in mine if r["last_code"] == "disabled")
            assert await attempts(webhooks_db, stopped["id"]) == []  # never sent
            state = await _endpoint_row(webhooks_db, gone)
            assert state is not None and state["disabled_at"] is not None
            assert "410" in state["disabled_reason"]

            # A delivery written while it is disabled fails without a request.
            newer = make_events(1)
            await write(webhooks_db, worker, _deliveries(path, newer)[:1])
            await wait_for(lambda: _settled(webhooks_db, worker, 11), message="the newer row")
            assert sum(receiver.requests.values()) == 1
            assert (await statuses(webhooks_db, worker))[
                webhook_key(gone, str(newer[0].id))
            ] == "failed"

            listed = _cli(webhooks_db, path, "webhooks", "list")
            assert listed.returncode == 0, listed.stderr
            row = _listed(listed.stdout, gone)
            assert row["state"].startswith("disabled since ") and "410" in row["state"]
            assert (row["pending"], row["failed"], row["dead"]) == ("0", "6", "0")
            assert _listed(listed.stdout, fine)["state"] == "enabled"
            assert secret not in listed.stdout

            receiver.answers["/gone"] = Answer(200)
            enabled = _cli(webhooks_db, path, "webhooks", "enable", gone)
            assert enabled.returncode == 0, enabled.stderr
            assert f"endpoint {gone} enabled: 6 deliveries" in enabled.stdout
            await wait_for(lambda: _arrived(receiver, 6), message="the stopped rows delivered")
            await wait_for(lambda: _all(webhooks_db, worker, "sent"), message="all recorded")
        assert receiver.ids("/gone") == {
            webhook_key(gone, str(event.id)): 1 for event in [*events, *newer]
        }
        state = await _endpoint_row(webhooks_db, gone)
        assert state is not None and state["disabled_at"] is None
        again = _cli(webhooks_db, path, "webhooks", "enable", gone)
        assert (again.returncode, again.stderr.strip()) == (
            1,
            f"billing-fleet webhooks enable: endpoint {gone} is not disabled",
        )
    finally:
        await receiver.stop()
        await other.stop()


async def test_the_last_attempt_is_dead_and_deliveries_retry_requeues_it(
    webhooks_db: str, tmp_path: Path
) -> None:
    worker, hook = unique("wh-dead"), unique("dead")
    receiver = Receiver()
    receiver.default = Answer(500)
    await receiver.start()
    path = write_endpoints(
        tmp_path / "e.yaml", [endpoint(hook, receiver.url("/d"), [new_secret()])]
    )
    await write(webhooks_db, worker, _deliveries(path, make_events(1)))
    # The factory: BILLING_NOTIFICATION_WEBHOOK_BACKOFF_SECONDS gives two waits, so three
    # attempts.
    settings = _WebhookSettings(
        database_url=webhooks_db,
        notification_webhook_endpoints_path=path,
        notification_webhook_backoff_seconds=[0.05, 0.05],
    )
    sender = webhook_sender(settings, EndpointsFile(path), worker=worker)
    assert (sender.policy.backoff_seconds, sender.policy.max_attempts) == ((0.05, 0.05), 3)
    try:
        async with dispatching(webhooks_db, worker, sender, channel=CHANNEL):
            await wait_for(lambda: _all(webhooks_db, worker, "dead"), message="dead")
            assert sum(receiver.requests.values()) == 3
            (row,) = await rows(webhooks_db, worker)

            async def health_written() -> bool:
                found = await _endpoint_row(webhooks_db, hook)
                return found is not None and found["last_failure_at"] is not None

            await wait_for(health_written, message="the failure written")
            listed = _cli(webhooks_db, path, "webhooks", "list")
            assert listed.returncode == 0, listed.stderr
            shown = _listed(listed.stdout, hook)
            assert (shown["dead"], shown["last success"]) == ("1", "-")
            assert shown["last failure"].endswith("500 HTTP 500")
            dead = run(
                "deliveries",
                "list",
                "--status",
                "dead",
                "--worker",
                worker,
                env=clean_env(DATABASE_URL=webhooks_db),
            )
            assert f"{row['id']}\t{worker}\t{CHANNEL}\tdead\t3" in dead.stdout

            receiver.default = Answer(200)
            retried = run(
                "deliveries", "retry", str(row["id"]), env=clean_env(DATABASE_URL=webhooks_db)
            )
            assert retried.returncode == 0, retried.stderr
            await wait_for(lambda: _all(webhooks_db, worker, "sent"), message="sent after retry")
        assert receiver.ids("/d") == {row["idempotency_key"]: 1}
        assert sum(receiver.requests.values()) == 4
    finally:
        await receiver.stop()


async def test_one_endpoint_down_does_not_hold_back_the_other(
    webhooks_db: str, tmp_path: Path
) -> None:
    worker, down_id, up_id = unique("wh-down"), unique("down"), unique("up")
    down, up = Receiver(), Receiver()
    await up.start()  # `down` never listens: connection refused
    path = write_endpoints(
        tmp_path / "e.yaml",
        [
            endpoint(down_id, down.url("/a"), [new_secret()]),
            endpoint(up_id, up.url("/b"), [new_secret()]),
        ],
    )
    # The down endpoint's rows come first in due order.
    events = make_events(10)
    queued = sorted(
        _deliveries(path, events),
        key=lambda d: not d.idempotency_key.startswith(f"webhook:{down_id}:"),
    )
    await write(webhooks_db, worker, queued)
    sender = _sender(path, webhooks_db, worker, backoff=(5.0,))
    try:
        async with dispatching(
            webhooks_db, worker, sender, channel=CHANNEL, concurrency=4, per_destination=2
        ):
            await wait_for(lambda: _arrived(up, 10), message="the up endpoint's ten")

            async def both_written() -> bool:
                a = await _endpoint_row(webhooks_db, down_id)
                b = await _endpoint_row(webhooks_db, up_id)
                return bool(a and a["last_failure_at"] and b and b["last_success_at"])

            await wait_for(both_written, message="health of both endpoints")
            states = await statuses(webhooks_db, worker)
            assert {states[webhook_key(down_id, str(e.id))] for e in events} == {"pending"}
            assert down.requests == {}
            failure = await _endpoint_row(webhooks_db, down_id)
            assert failure is not None and "Connect" in failure["last_failure"]
        assert up.ids("/b", up.requests) == {webhook_key(up_id, str(e.id)): 1 for e in events}
    finally:
        await up.stop()


async def test_webhooks_cli_refuses_in_one_line(
    webhooks_db: str, create_database: CreateDatabase, tmp_path: Path
) -> None:
    secret = new_secret()
    path = write_endpoints(
        tmp_path / "e.yaml",
        [
            endpoint("listed", "https://a.example/h?token=abc", [secret], ["invoice.*"]),
            endpoint("off", "https://b.example/h", [secret], enabled=False),
        ],
    )
    listed = _cli(webhooks_db, path, "webhooks", "list")
    assert listed.returncode == 0, listed.stderr
    row = _listed(listed.stdout, "listed")
    assert (row["url"], row["events"], row["state"]) == (
        "https://a.example/h?...",
        "invoice.*",
        "enabled",
    )
    assert _listed(listed.stdout, "off")["state"] == "off (enabled: false)"
    assert secret not in listed.stdout and "token=abc" not in listed.stdout

    no_path = _cli(webhooks_db, None, "webhooks", "list")
    assert no_path.returncode == 2
    assert "set BILLING_NOTIFICATION_WEBHOOK_ENDPOINTS_PATH" in no_path.stderr
    broken = write_endpoints(tmp_path / "b.yaml", [endpoint("x", "ftp://x/", ["whsec_c2hvcnQ="])])
    bad = _cli(webhooks_db, broken, "webhooks", "list")
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "endpoints.0.url" in bad.stderr and "c2hvcnQ" not in bad.stderr

    unmigrated = await create_database()
    behind = _cli(unmigrated, path, "webhooks", "enable", "listed")
    assert behind.returncode == 1
    assert "no webhook_endpoints table: run `billing-fleet migrate`" in behind.stderr
    unreachable = _cli("postgresql://postgres@127.0.0.1:1/postgres", path, "webhooks", "list")
    assert unreachable.returncode == 1
    assert len(unreachable.stderr.strip().splitlines()) == 1, unreachable.stderr
    assert unreachable.stderr.startswith("billing-fleet webhooks list: ")
    assert "Traceback" not in behind.stderr + unreachable.stderr + bad.stderr


async def _arrived(receiver: Receiver, count: int) -> bool:
    return len(receiver.accepted) >= count


async def _requested(receiver: Receiver, count: int) -> bool:
    return sum(receiver.requests.values()) >= count


async def _all(database_url: str, worker: str, status: str) -> bool:
    found = await statuses(database_url, worker)
    return bool(found) and set(found.values()) == {status}


async def _settled(database_url: str, worker: str, count: int) -> bool:
    found = await statuses(database_url, worker)
    return len(found) == count and "pending" not in found.values()


async def _attempt_times(database_url: str, delivery_id: int) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(
            "SELECT outcome, code, started_at, finished_at FROM delivery_attempts"
            " WHERE delivery_id = $1 ORDER BY attempt",
            delivery_id,
        )
    finally:
        await conn.close()
