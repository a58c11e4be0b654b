"""End-to-end benchmark of the ledger (``bench e2e --worker invoice``): webhook accepted ->
invoice readable through the read API, then the user's invoice list under wrk beside the
entitlement check, both measured in the same run on the same gateway.

``billing-fleet gateway``, ``billing-fleet worker invoice`` and ``billing-fleet worker
entitlement`` run as subprocesses on an embedded broker and a fresh migrated database (as
in production, both workers consume ``billing.events.v1``; the entitlement worker only
acknowledges the invoice events). ``bench.e2e_client send --kind invoice`` POSTs signed
``invoice.paid`` webhooks (Stripe's fixture, a fresh customer and invoice each) at a fixed
rate by schedule; ``bench.e2e_client poll`` polls
``GET /v1/customers/{customer}/invoices/{invoice_id}`` (a service token with the ledger
scope) for each accepted one until it answers 200 with ``status`` ``paid`` (404 before
the worker wrote it). ``ledger_invoices.updated_at`` (the start of the worker's
transaction) splits the latency into the pickup and the rest (the batch, its commit, and
the poller noticing).

Then a user with ``CUSTOMERS`` Stripe customers (``customer.created`` naming the user in
``metadata.user_id``) and ``INVOICES`` paid invoices among them, sent as webhooks through
the same path: wrk GETs ``/v1/invoices`` (the user's token; the first page, 20 invoices
newest first across the user's customers) at a fixed rate and closed loop, then the
entitlement check as ``bench e2e`` measures it, as the reference.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any, Final

from bench import cpu, e2e, events, infra, ledger_events, machine, procs, wrk
from bench.e2e import Fleet, Gateway, Phase, Worker
from contracts import BILLING_EVENTS
from fleet.command_settings import DevFleetSettings
from workers.invoice.worker import NAME as INVOICE

TARGET_E2E_P99_MS: Final = 150.0
# Only the status can be "paid" (amount_paid and paid_at are keys); the stored document
# writes its members as PostgreSQL's json_build_object does, `"status" : "paid"`.
PAID: Final = b'"paid"'
CUSTOMERS: Final = 3
INVOICES: Final = 50
LIST_PATH: Final = "/v1/invoices"

INVOICE_WRITTEN: Final = (
    "SELECT customer_id, updated_at FROM ledger_invoices WHERE customer_id = ANY($1::text[])"
)
"""Per customer (one invoice each), ``ledger_invoices.updated_at``: ``now()`` of the
worker's transaction, i.e. its start."""


def invoice_url(base: str, customer: str, invoice_id: str) -> str:
    return f"{base}/v1/customers/{customer}/invoices/{invoice_id}"


def start_invoice_worker(stack: ExitStack, fleet: Fleet) -> Worker:
    return e2e.start_worker(stack, fleet.workdir, INVOICE, fleet.bootstrap, fleet.database_url, {})


def warm_up(gateway: Gateway, worker: Worker, bearer: str) -> None:
    """One ``invoice.paid`` through the whole path (the worker has joined its group)."""
    run = events.run_token()
    customer, ids = f"cus_e2ewarm{run}", ledger_events.PaymentIds(f"warm{run}", 0)
    post = ledger_events.invoice_paid(f"evt_e2ewarm{run}", customer, ids, int(time.time()))
    e2e.post_webhook(gateway, post)
    url = invoice_url(gateway.base, customer, ids.invoice)
    e2e.wait_readable(gateway, [worker], url, bearer, PAID, "warm-up invoice")


def seed_user(gateway: Gateway, worker: Worker) -> str:
    """A user with ``CUSTOMERS`` customers and ``INVOICES`` paid invoices among them,
    through webhooks; returns the user's token once ``/v1/invoices`` lists them all."""
    run = events.run_token()
    user = f"user_bench{run}"
    now = int(time.time())
    customers = [f"cus_e2euser{run}{c}" for c in range(CUSTOMERS)]
    for n, customer in enumerate(customers):
        e2e.post_webhook(
            gateway, ledger_events.customer_created(f"evt_e2euser{run}c{n}", customer, user, now)
        )
    for n in range(INVOICES):
        ids = ledger_events.PaymentIds(f"user{run}", n)
        customer = customers[n % CUSTOMERS]
        # A day apart: the list's order (created_at) is the order they were sent in.
        created = now - (INVOICES - n) * 86_400
        e2e.post_webhook(
            gateway, ledger_events.invoice_paid(f"evt_e2euser{run}i{n}", customer, ids, created)
        )
    user_token = e2e.token(user)
    url = f"{gateway.base}{LIST_PATH}?limit=100"
    deadline = time.monotonic() + e2e.WARM_UP_TIMEOUT_S
    while True:
        body = e2e.wait_readable(gateway, [worker], url, user_token, b'"data"', "the user's list")
        listed = len(json.loads(body)["data"])
        if listed == INVOICES:
            return user_token
        if time.monotonic() > deadline:
            raise RuntimeError(f"the user's list has {listed} of {INVOICES} invoices")
        time.sleep(0.1)


def report(
    sent: dict[str, Any],
    polled: dict[str, Any],
    applied: list[float],
    load_cpu: cpu.Usage,
    lists: e2e.ReadRuns,
    checks: e2e.ReadRuns,
    *,
    rate: int,
    read_rate: int,
    interval_ms: float,
    connections: int,
    batch: int,
) -> str:
    lines = [
        f"e2e benchmark (ledger): {machine.described()}; gateway + invoice worker + "
        f"entitlement worker (batch {batch}) subprocesses, Tansu ({BILLING_EVENTS} "
        f"x{e2e.PARTITIONS}), PostgreSQL",
        *e2e.load_lines(
            sent,
            polled,
            what="invoice.paid (fresh customers and invoices)",
            rate=rate,
            interval_ms=interval_ms,
        ),
        "",
        *e2e.latency_lines(
            polled,
            applied,
            applied_as="picked up by the invoice worker (updated_at: its transaction's start)",
            target_ms=TARGET_E2E_P99_MS,
        ),
        *load_cpu.lines(sent["accepted"], "webhook"),
        "",
        f"read API, GET {LIST_PATH} (user token: {CUSTOMERS} customers, {INVOICES} invoices, "
        "the first page of 20), wrk:",
        *e2e.read_lines(lists, read_rate=read_rate, connections=connections),
        f"reference, same run: GET /v1/customers/{{id}}/entitlements/{events.FEATURE} "
        "(service token), wrk:",
        *e2e.read_lines(checks, read_rate=read_rate, connections=connections),
        *e2e.failure_lines(sent),
    ]
    return "\n".join(line.rstrip() for line in lines)


def run(
    *,
    rate: int,
    duration_s: int,
    poll_interval_ms: float,
    read_rate: int,
    wrk_duration_s: int,
    connections: int,
    gateway_command: Sequence[str] | None = None,
) -> int:
    try:
        wrk.executable()
    except wrk.WrkError as exc:
        print(f"bench e2e: {exc}", file=sys.stderr)
        return 2
    settings = DevFleetSettings()
    service, ledger = e2e.service_token(settings), e2e.token("bench-e2e", settings.jwt_ledger_scope)
    with procs.stopped_by_sigterm(), ExitStack() as stack:
        fleet = e2e.start_fleet(stack, "e2eledger", gateway_command)
        invoices = start_invoice_worker(stack, fleet)
        entitlements = e2e.start_entitlement_worker(stack, fleet)
        entitled = e2e.warm_up(fleet.gateway, entitlements, service)
        warm_up(fleet.gateway, invoices, ledger)
        print(f"invoice webhooks at {rate}/s for {duration_s} s ...", file=sys.stderr, flush=True)
        template = invoice_url(fleet.gateway.base, "{customer}", "{object}")
        phase = Phase("invoice", template, ledger, PAID, not_yet=(404,))
        with infra.analyzed(fleet.database_url), cpu.measured() as load_cpu:
            sent, polled = e2e.load(
                fleet.workdir, fleet.gateway, phase, rate, duration_s, poll_interval_ms
            )
        e2e.clients_apart(load_cpu, sent, polled)
        applied = asyncio.run(
            e2e.applied_ms(fleet.database_url, sent["accepted_wall_ns"], INVOICE_WRITTEN)
        )
        print("read API under wrk ...", file=sys.stderr, flush=True)
        user = seed_user(fleet.gateway, invoices)
        reads = {"rate": read_rate, "duration_s": wrk_duration_s, "connections": connections}
        lists = e2e.read_runs(
            fleet.workdir, f"{fleet.gateway.base}{LIST_PATH}", user, label="invoices", **reads
        )
        checks = e2e.read_runs(
            fleet.workdir,
            e2e.entitlement_url(fleet.gateway.base, entitled),
            service,
            label="entitlement",
            **reads,
        )
    print(
        report(
            sent,
            polled,
            applied,
            load_cpu,
            lists,
            checks,
            rate=rate,
            read_rate=read_rate,
            interval_ms=poll_interval_ms,
            connections=connections,
            batch=settings.worker_batch_max_records,
        )
    )
    return 0
