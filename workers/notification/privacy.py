"""The one masking function this worker uses (logs, the retention job).

A stand-in with the name and behaviour of ``billing_fleet.masking.mask_email`` (the SMTP
channel's part, built in parallel): when that lands, this module imports it instead and
nothing else changes.
"""

from __future__ import annotations


def mask_email(address: str) -> str:
    """``jane.doe@example.com`` → ``j***@e***.com``: never the whole local part or domain."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return "***"
    name, dot, tld = domain.rpartition(".")
    masked_domain = f"{name[:1]}***{dot}{tld}" if dot else f"{domain[:1]}***"
    return f"{local[:1]}***@{masked_domain}"
