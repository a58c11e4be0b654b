"""Receipts benchmark: receipt PDFs per second through the invoice worker's render pool.

The shipped receipt template with every field set (the sample ``check_templates`` uses),
a fresh number per receipt, rendered to HTML in the loop and to PDF by
``PdfRenderer`` (weasyprint in spawned processes): (a) with one render process, (b) with
``--processes`` (default: ``os.cpu_count()``). Each pool is warmed first (its processes
spawned and weasyprint imported: the first render of a process pays about a second).
Printed: both rates and (b) / (n x (a)), how close the pool comes to n single processes
(the machine's other load and its real core count set the ceiling; no target).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from dataclasses import replace

from bench import machine
from billing_fleet.signals import run_event_loop
from workers.invoice.documents.document import sample_documents
from workers.invoice.documents.pdf import PdfRenderer
from workers.invoice.documents.render import ReceiptRenderer
from workers.invoice.settings import InvoiceSettings

RENDER_TIMEOUT_SECONDS = 60.0


def receipts_html(count: int, first: int = 0) -> list[str]:
    """``count`` receipts as the shipped template renders them, numbered apart."""
    renderer = ReceiptRenderer(InvoiceSettings())
    full, _ = sample_documents()
    return [renderer.html(replace(full, number=f"R-2026-{first + i:06d}")) for i in range(count)]


async def rate(processes: int, count: int) -> float:
    """Receipts/s of ``count`` PDFs through a warmed pool of ``processes``."""
    renderer = PdfRenderer(processes, RENDER_TIMEOUT_SECONDS)
    try:
        warm = receipts_html(2 * processes, first=900_000)
        await asyncio.gather(*(renderer.render(html) for html in warm))
        documents = receipts_html(count)
        start = time.perf_counter()
        pdfs = await asyncio.gather(*(renderer.render(html) for html in documents))
        elapsed = time.perf_counter() - start
    finally:
        await renderer.aclose()
    if not all(pdf.startswith(b"%PDF-") for pdf in pdfs):
        raise RuntimeError("a render did not produce a PDF")
    return count / elapsed


def run(*, receipts: int, processes: int | None = None) -> int:
    pool_size = processes or os.cpu_count() or 1
    rates: dict[int, float] = {}

    async def measure() -> None:
        rates[1] = await rate(1, receipts)
        rates[pool_size] = await rate(pool_size, receipts * pool_size)

    print(
        f"{receipts:,} receipts per render process, 1 and {pool_size} processes "
        f"({machine.described()}) ...",
        file=sys.stderr,
        flush=True,
    )
    run_event_loop(measure())
    single, pooled = rates[1], rates[pool_size]
    ratio = pooled / (pool_size * single)
    print("receipts/s (shipped template, weasyprint)")
    print(f"{'(a) 1 render process':<46}{single:8.1f}")
    print(f"{f'(b) {pool_size} render processes':<46}{pooled:8.1f}")
    print(
        f"b / ({pool_size} x a) = {pooled:.1f} / {pool_size * single:.1f} = {ratio:.2f}"
        f"    (a: {1000 / single:.0f} ms per receipt)"
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run(receipts=40))
