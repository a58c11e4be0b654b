"""The receiving end of ``bench e2e --worker notification``: a real aiosmtpd SMTP server in
a process of its own (it stands for the mail provider, on another machine in production),
timing each mail's arrival.

It serves SMTP on ``--port`` from the start (the notification worker's relay) and reads
the load generator's acceptances from stdin (``CUSTOMER OBJECT ACCEPTED_NS``, see
``bench.e2e_client send``). A mail's arrival is the moment its ``DATA`` is complete,
just before the server answers ``250`` (``time.monotonic_ns``, the clock the sender
stamps acceptances with). The mail for a customer is the first one to that customer's
address (``bench.ledger_events.customer_email``); its latency is accepted -> arrived.
After stdin's end, it waits until every accepted customer's mail arrived or
``MAIL_TIMEOUT_S`` passed, then writes a JSON summary to ``--out`` and exits.

Usage: ``python -m bench.mail_sink --port PORT --out FILE`` (started by
``bench.e2e_notification``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.cpu import own_cpu_seconds
from bench.ledger_events import customer_of
from billing_fleet.signals import run_event_loop

HOST: Final = "127.0.0.1"
MAIL_TIMEOUT_S: Final = 120.0
"""After the last acceptance: mails not arrived by then are missing."""


@dataclass
class Arrivals:
    """The aiosmtpd handler: the first arrival per recipient, and how many came again."""

    first_ns: dict[str, int] = field(default_factory=dict)
    mails: int = 0
    repeated: int = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        arrived = time.monotonic_ns()
        self.mails += 1
        for recipient in envelope.rcpt_tos:
            if recipient in self.first_ns:
                self.repeated += 1
            else:
                self.first_ns[recipient] = arrived
        return "250 Message accepted"


async def sink(port: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    arrivals = Arrivals()
    server = await loop.create_server(lambda: SMTP(arrivals, hostname=HOST), HOST, port)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    accepted: dict[str, int] = {}  # customer -> accepted_ns
    load_began_cpu_s: float | None = None  # at the first acceptance: the load's start
    try:
        while line := await reader.readline():
            if load_began_cpu_s is None:
                load_began_cpu_s = own_cpu_seconds()
            customer, _, accepted_ns = line.decode().split()
            accepted[customer] = int(accepted_ns)
        deadline = time.monotonic() + MAIL_TIMEOUT_S
        arrived = {customer_of(address) for address in arrivals.first_ns}
        while not arrived >= accepted.keys() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            arrived = {customer_of(address) for address in arrivals.first_ns}
    finally:
        server.close()
        await server.wait_closed()
    by_customer = {customer_of(a): ns for a, ns in arrivals.first_ns.items()}
    latencies = [
        (by_customer[customer] - at) / 1e6
        for customer, at in accepted.items()
        if customer in by_customer
    ]
    load_arrivals = [ns for customer, ns in by_customer.items() if customer in accepted]
    cpu_s = own_cpu_seconds()
    return {
        # Counted apart from the bench driver's (bench.cpu): all of it, and the load's.
        "cpu_s": cpu_s,
        "load_cpu_s": 0.0 if load_began_cpu_s is None else cpu_s - load_began_cpu_s,
        "latency_ms": latencies,
        "load_span_s": (max(load_arrivals) - min(load_arrivals)) / 1e9 if load_arrivals else 0.0,
        "missing": len(accepted) - len(latencies),
        "mails": arrivals.mails,
        "repeated": arrivals.repeated,
        "others": len(by_customer.keys() - accepted.keys()),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mail_sink")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {}

    async def main() -> None:
        summary.update(await sink(args.port))

    run_event_loop(main())
    args.out.write_text(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
