"""The notification worker's outbound webhooks, signed per the Standard Webhooks spec.

``endpoints`` reads the team's endpoints (YAML, validated at startup), ``payload`` builds
the CloudEvent each endpoint receives and its ``Delivery`` rows, ``sender`` signs and
POSTs them through the runtime's HTTP channel, ``state`` keeps each endpoint's health and
whether a 410 Gone disabled it.
"""

from typing import Final

CHANNEL: Final = "webhook"
"""The channel name of signed webhooks (``WorkerSpec.channels``; ``deliveries.channel``)."""
