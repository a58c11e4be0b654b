"""Shared worker runtime: consume, idempotency, retries, dead letters, outbox, shutdown.

For now it owns only its tables (``migrations/``); the runtime code arrives with the
worker issue.
"""
