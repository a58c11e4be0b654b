"""Deliveries: effects beyond Kafka (mails, outbound webhooks).

A handler returns ``Delivery`` values beside its ``Outgoing``; the runtime stores them in
the handler's transaction (``store.write_deliveries``) and a ``Dispatcher`` sends them
afterwards through the worker's channels, retrying each row on its own schedule.
"""
