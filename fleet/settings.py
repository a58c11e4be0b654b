"""``dev``'s own settings (``BILLING_DEV_*``): also read by the commands an operator runs
next to a running ``dev`` (``migrate``, ``dlt``, ``send-test-event``), to find it.

Imports only the core: ``worker NAME`` and ``gateway`` load it and nothing of the other.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from billing_fleet.settings import CoreSettings


class DevSettings(CoreSettings):
    dev_data_dir: Path = Field(
        default=Path(".billing-fleet"),
        description="Where `dev` keeps the embedded PostgreSQL data, the broker's log and, "
        "while it runs, dev.json (its servers, for commands in other terminals).",
    )
    dev_kafka_port: int = Field(default=9092, description="Port of the embedded broker in dev.")
