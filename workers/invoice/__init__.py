"""The invoice worker: the invoice and payment ledger, receipts, and ``invoices.v1``."""
