"""``python -m bench NAME``: run one benchmark."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

WORKERS = ("entitlement", "invoice")
"""The workers ``bench worker`` and ``bench e2e`` know (``bench.workloads``); the first is
the default. Named here so that parsing the command line imports no worker."""
E2E_WORKERS = (*WORKERS, "notification")
"""``bench e2e`` measures the notification worker's receipt mails too."""


def _run(args: argparse.Namespace) -> int:
    if args.command == "ingress":
        from bench import ingress

        return ingress.run(
            duration_s=args.duration,
            connections=args.connections,
            messages=args.messages,
            rate=args.rate,
        )
    if args.command == "worker":
        from bench import worker

        return worker.run(
            worker=args.worker,
            count=args.events,
            customers=args.customers,
            batch=args.batch,
            timeout=args.timeout,
            rounds=args.rounds,
        )
    if args.command == "deliveries":
        from bench import deliveries

        return deliveries.run(
            count=args.deliveries,
            mails=args.mails,
            concurrency=args.concurrency,
            rounds=args.rounds,
            timeout=args.timeout,
        )
    if args.command == "receipts":
        from bench import receipts

        return receipts.run(receipts=args.receipts, processes=args.processes)
    if args.command == "counters":
        from bench import counters

        return counters.run(
            payments=args.payments,
            customers=args.customers,
            configs=args.configs,
            batch=args.batch,
            timeout=args.timeout,
        )
    if args.command == "fetch-wait":
        from bench import fetch_wait

        waits = [fetch_wait.Wait.parse(wait) for wait in args.waits.split(",")]
        return fetch_wait.run(
            waits=waits, rounds=args.rounds, idle_s=args.idle, messages=args.messages
        )
    if args.worker == "notification":
        from bench import e2e_notification

        return e2e_notification.run(rate=args.rate, duration_s=args.duration)
    if args.worker == "invoice":
        from bench import e2e_ledger

        return e2e_ledger.run(
            rate=args.rate,
            duration_s=args.duration,
            poll_interval_ms=args.poll_interval_ms,
            read_rate=args.read_rate,
            wrk_duration_s=args.wrk_duration,
            connections=args.connections,
        )
    from bench import e2e

    return e2e.run(
        rate=args.rate,
        duration_s=args.duration,
        poll_interval_ms=args.poll_interval_ms,
        read_rate=args.read_rate,
        wrk_duration_s=args.wrk_duration,
        connections=args.connections,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="BENCHMARK")
    ingress = commands.add_parser("ingress", help="webhook ingress vs. its ASGI and Kafka ceilings")
    ingress.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    ingress.add_argument("--connections", type=int, default=32, help="wrk connections")
    ingress.add_argument("--messages", type=int, default=50_000, help="raw produce messages")
    ingress.add_argument("--rate", type=int, default=1_000, help="fixed-rate run, req/s")

    worker = commands.add_parser("worker", help="a worker vs. raw consume+upsert")
    worker.add_argument(
        "--worker",
        choices=WORKERS,
        default=WORKERS[0],
        help="which worker and events (default: entitlement)",
    )
    worker.add_argument("--events", type=int, default=20_000, help="events published")
    worker.add_argument(
        "--customers",
        type=int,
        help="distinct customers (default: events/4 for entitlement, events/8 for invoice)",
    )
    worker.add_argument(
        "--batch", type=int, help="records per batch (default: worker_batch_max_records)"
    )
    worker.add_argument("--timeout", type=float, default=300.0, help="seconds per consumer")
    worker.add_argument("--rounds", type=int, default=5, help="alternating (a)/(b) rounds")

    e2e = commands.add_parser(
        "e2e",
        help="webhook -> entitlement (or invoice) readable latency, read API under wrk; or "
        "webhook -> receipt mail received",
    )
    e2e.add_argument(
        "--worker",
        choices=E2E_WORKERS,
        default=E2E_WORKERS[0],
        help="entitlement: subscription webhooks, the entitlement check; invoice: invoice.paid "
        "webhooks, a user's invoice list, the entitlement check beside it; notification: "
        "payment webhooks -> receipt mails at a real SMTP server (--rate, --duration only)",
    )
    e2e.add_argument("--rate", type=int, default=500, help="webhooks/s sent")
    e2e.add_argument("--duration", type=int, default=10, help="seconds of webhooks")
    e2e.add_argument(
        "--poll-interval-ms", type=float, default=5.0, help="API polls per pending event"
    )
    e2e.add_argument("--read-rate", type=int, default=2_000, help="fixed-rate read run, req/s")
    e2e.add_argument("--wrk-duration", type=int, default=8, help="seconds per wrk run")
    e2e.add_argument("--connections", type=int, default=32, help="wrk throughput connections")

    deliveries = commands.add_parser(
        "deliveries",
        help="delivery dispatcher vs. a raw HTTP client, one endpoint down; mails vs. raw SMTP",
    )
    deliveries.add_argument("--deliveries", type=int, default=5_000, help="POSTs per run")
    deliveries.add_argument("--mails", type=int, default=2_000, help="mails per run (0: none)")
    deliveries.add_argument("--concurrency", type=int, default=16, help="sends in flight")
    deliveries.add_argument("--rounds", type=int, default=3, help="alternating (a)/(b) rounds")
    deliveries.add_argument("--timeout", type=float, default=300.0, help="seconds per run")

    receipts = commands.add_parser(
        "receipts", help="receipt PDFs/s with 1 render process and with one per CPU"
    )
    receipts.add_argument("--receipts", type=int, default=40, help="receipts per process")
    receipts.add_argument(
        "--processes", type=int, help="render processes of (b) (default: os.cpu_count())"
    )

    counters = commands.add_parser(
        "counters", help="invoice worker lanes waiting on the receipt counter row"
    )
    counters.add_argument("--payments", type=int, default=10_000, help="succeeded payments")
    counters.add_argument("--customers", type=int, help="distinct customers (default: 1/6)")
    counters.add_argument(
        "--configs", default="1x1,1x2,2x2,2x4", help="replicas x lanes, comma-separated"
    )
    counters.add_argument("--batch", type=int, default=500, help="worker_batch_max_records")
    counters.add_argument("--timeout", type=float, default=120.0, help="seconds per run")

    fetch_wait = commands.add_parser(
        "fetch-wait", help="a consumer's idle CPU and pickup latency on Tansu, per fetch wait"
    )
    fetch_wait.add_argument(
        "--waits", default="10,40:10,40", help="FETCH[:POLL] waits in ms, comma-separated"
    )
    fetch_wait.add_argument("--rounds", type=int, default=2, help="rounds over the waits")
    fetch_wait.add_argument("--idle", type=float, default=5.0, help="idle seconds per wait")
    fetch_wait.add_argument("--messages", type=int, default=150, help="messages per wait")
    args = parser.parse_args(argv)

    from bench import machine

    machine.described()  # timed now, before any server of the run starts
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    except RuntimeError as exc:  # a run that did not measure what it claims
        print(f"bench {args.command}: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
