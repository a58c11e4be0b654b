"""The invoice worker's own settings (composed with the runtime's where it runs)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from billing_fleet.settings import CoreSettings


class InvoiceSettings(CoreSettings):
    invoice_receipt_prefix: str = Field(
        default="R",
        pattern=r"^[A-Za-z0-9]{1,12}$",
        description="Prefix of receipt numbers (R-2026-000123); a new prefix starts new "
        "sequences, the old numbers stay.",
    )
    invoice_seller_name: str = Field(
        default="billing-fleet", min_length=1, description="Seller named on receipts."
    )
    invoice_seller_address: str = Field(
        default="", description="Seller's postal address on receipts (lines split on '\\n')."
    )
    invoice_seller_tax_id: str = Field(
        default="", description="Seller's tax id (VAT number) on receipts; empty: none shown."
    )
    invoice_templates_dir: Path | None = Field(
        default=None,
        description="Directory whose templates override the shipped receipt templates "
        "(same file names).",
    )
    invoice_render_processes: int = Field(
        default=1, ge=1, le=32, description="Processes rendering receipt PDFs (weasyprint)."
    )
