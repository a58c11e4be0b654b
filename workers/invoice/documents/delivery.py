"""The receipt documents' delivery: its channel and destination (one definition, for the
handler that returns it and the sender that renders it), and the receipt it names."""

from __future__ import annotations

from typing import Final

from workers.runtime.deliveries.model import Delivery

CHANNEL: Final = "receipt_pdf"
"""The delivery channel whose sender renders a receipt's PDF."""
DESTINATION: Final = "receipt-documents"


def number_of(delivery: Delivery) -> str | None:
    """The receipt number a delivery names: its ``number`` metadata, else its payload."""
    number = delivery.metadata.get("number")
    if isinstance(number, str) and number:
        return number
    try:
        text = delivery.payload.decode()
    except UnicodeDecodeError:
        return None
    return text or None
