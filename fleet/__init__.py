"""The composition: the ``billing-fleet`` commands and the one-process dev fleet.

The top layer: it imports the core (``billing_fleet``), the gateway and the workers;
nothing imports it but tests and benchmarks.
"""
