"""What a worker tells the runtime: its name, its subscriptions, its tables.

A worker subscribes to one or more topics. Per topic, a handler is a plain async
function: it receives an open PostgreSQL transaction and one typed event, applies its
effects with SQL, and returns the events to emit; a worker may add a batch handler that
does the same for many events with fewer round trips. The runtime does everything else:
consuming, the idempotency row, batching, retries, dead letters, the outbox, metrics and
shutdown.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar, get_args

import asyncpg

from contracts import (
    BILLING_EVENT_TYPES,
    BILLING_EVENTS,
    ENTITLEMENT_CHANGES,
    INVOICES,
    LEDGER_EVENT_TYPES,
    BillingEvent,
    EntitlementChange,
    LedgerEvent,
    parse_billing_event,
    parse_entitlement_change,
    parse_ledger_event,
)
from contracts.entitlements import EntitlementChangeType
from workers.runtime.deliveries.channel import Sender
from workers.runtime.deliveries.model import Delivery


class Outgoing(NamedTuple):
    """An event to publish; written to the outbox in the handler's transaction. A
    NamedTuple (workers make several per event): every field is required."""

    topic: str
    key: str
    value: bytes
    headers: dict[str, str]


class Poison(Exception):
    """The message itself cannot be processed (unknown product, invalid data).

    Any exception that is not a dependency failure counts as poison too; raising this
    one just says so explicitly, with a message an operator can act on.
    """


Effect = Outgoing | Delivery
"""What a handler returns: events for the outbox, deliveries for the worker's channels."""

E = TypeVar("E")

TopicHandler = Callable[[asyncpg.Connection, E], Awaitable[Sequence[Effect]]]
"""Apply one event inside the open transaction; return what to emit and deliver. Never
commits.

Transactions on other Kafka keys run at the same time (``worker_lanes``): lock rows that
another key's events may also write (a deadlock is retried as an outage). Pooled
connections are not reset: leave no session state (``SET LOCAL``, transaction-level
advisory locks, no ``LISTEN``)."""

TopicBatchHandler = Callable[[asyncpg.Connection, Sequence[E]], Awaitable[Sequence[Effect]]]
"""Apply several events, in order, inside the open transaction: the same effects and the
same Outgoing and Delivery (in the same order) as the handler on each in turn. Never
commits."""

Handler = TopicHandler[BillingEvent]
BatchHandler = TopicBatchHandler[BillingEvent]

Periodic = Callable[[asyncpg.Connection], Awaitable[Sequence[Effect]]]
"""Time-driven work (e.g. expiring access) run in its own transaction; what it returns is
written as a handler's effects are (Outgoing to the outbox, Delivery to its channels)."""

OutageCheck = Callable[[BaseException], bool]


def billing_event_id(event: BillingEvent) -> str:
    return event.source.stripe_event_id


def billing_event_type(event: BillingEvent) -> str:
    return event.type


def entitlement_change_id(change: EntitlementChange) -> str:
    return str(change.id)


def entitlement_change_type(change: EntitlementChange) -> str:
    return change.type


ENTITLEMENT_CHANGE_TYPES: frozenset[str] = frozenset(get_args(EntitlementChangeType))


def ledger_event_id(event: LedgerEvent) -> str:
    return str(event.id)


def ledger_event_type(event: LedgerEvent) -> str:
    return event.type


@dataclass(frozen=True)
class Subscription(Generic[E]):
    """One consumed topic: how its bytes become events, how an event is applied, and what
    names it (idempotency) and labels it (metrics). The defaults are billing.events.v1's."""

    topic: str
    handle: TopicHandler[E]
    handle_batch: TopicBatchHandler[E] | None = None
    """Optional set-based equivalent of ``handle`` for many events (fewer round trips)."""
    parse: Callable[[bytes], E] = field(default=parse_billing_event)  # type: ignore[assignment]
    event_id: Callable[[E], str] = field(default=billing_event_id)  # type: ignore[assignment]
    """The idempotency key within this topic (``processed_events.event_id``)."""
    event_type: Callable[[E], str] = field(default=billing_event_type)  # type: ignore[assignment]
    types: frozenset[str] = BILLING_EVENT_TYPES
    """The topic's contract types: the ``type`` label of a message that does not parse is
    one of these, ``other`` or ``unknown``."""
    model: Any = BillingEvent
    """The topic's contract type (what ``parse`` returns): the payload the worker's AsyncAPI
    document shows for this subscription."""


def on_entitlement_changes(
    handle: TopicHandler[EntitlementChange],
    handle_batch: TopicBatchHandler[EntitlementChange] | None = None,
    topic: str = ENTITLEMENT_CHANGES,
) -> Subscription[EntitlementChange]:
    """A subscription to entitlements.changes.v1 (ids are the changes' uuids)."""
    return Subscription(
        topic,
        handle,
        handle_batch,
        parse=parse_entitlement_change,
        event_id=entitlement_change_id,
        event_type=entitlement_change_type,
        types=ENTITLEMENT_CHANGE_TYPES,
        model=EntitlementChange,
    )


def on_invoices(
    handle: TopicHandler[LedgerEvent],
    handle_batch: TopicBatchHandler[LedgerEvent] | None = None,
    topic: str = INVOICES,
) -> Subscription[LedgerEvent]:
    """A subscription to invoices.v1 (ids are the ledger events' uuids, stable on replay)."""
    return Subscription(
        topic,
        handle,
        handle_batch,
        parse=parse_ledger_event,
        event_id=ledger_event_id,
        event_type=ledger_event_type,
        types=LEDGER_EVENT_TYPES,
        model=LedgerEvent,
    )


@dataclass(frozen=True)
class WorkerSpec:
    name: str
    """The outbox rows' ``worker``, the metrics label, the dead-letter topics' group part,
    and the Kafka consumer group and ``processed_events.consumer`` of the first topic."""
    subscriptions: tuple[Subscription[Any], ...]
    """The consumed topics, in the declaration's order (``WorkerDeclaration.consumes``,
    which the registry checks), each with its own consumer, dead-letter topic
    (``<topic>.<name>.dlt``) and idempotency key space. The first one's consumer group and
    ``processed_events.consumer`` is ``name``, every later one's ``name@topic`` (see
    ``consumer_key``): never reorder them, add new topics at the end."""
    periodic: Periodic | None = None
    periodic_interval_seconds: float = 30.0
    emits: tuple[str, ...] = ()
    """Topics the handler's Outgoing go to; declared so the AsyncAPI document lists them."""
    watch_files: tuple[Path, ...] = ()
    """Files the factory read (a catalog): ``billing-fleet dev`` rebuilds the worker from
    its factory when one of them changes."""
    channels: Mapping[str, Sender] = field(default_factory=dict)
    """Senders by channel name for the ``Delivery`` values the handlers return; with any,
    the worker process runs a delivery dispatcher (and closes the senders when it stops)."""
    is_outage: OutageCheck | None = None
    """Extra exceptions this worker's dependencies raise that are outages (retried as the
    database's or Kafka's are), not poison; in the consumer, startup and the relay. A
    declaration's ``is_outage`` is added to it (an error either one names is an outage)."""

    def __post_init__(self) -> None:
        if not self.subscriptions:
            raise ValueError(f"worker {self.name}: no subscriptions")
        if "@" in self.name:
            raise ValueError(f"worker {self.name}: a worker name has no '@'")
        if len(set(self.topics)) != len(self.topics):
            raise ValueError(f"worker {self.name}: a topic is subscribed twice")

    @classmethod
    def single(
        cls,
        name: str,
        handle: Handler,
        *,
        topic: str = BILLING_EVENTS,
        handle_batch: BatchHandler | None = None,
        **options: Any,
    ) -> WorkerSpec:
        """A worker consuming one topic of billing events (the common case)."""
        return cls(name, (Subscription(topic, handle, handle_batch),), **options)

    def consuming(self, topic: str) -> WorkerSpec:
        """This worker with its first subscription on ``topic`` instead (tests, trials)."""
        first, *rest = self.subscriptions
        return dataclasses.replace(
            self, subscriptions=(dataclasses.replace(first, topic=topic), *rest)
        )

    @property
    def topics(self) -> tuple[str, ...]:
        """The consumed topic names, in order."""
        return tuple(s.topic for s in self.subscriptions)

    @property
    def first_topic(self) -> str:
        """The topic whose consumer group and ``processed_events.consumer`` is the bare
        worker name: the declaration's ``consumes[0]`` (a build in another order is refused)."""
        return self.subscriptions[0].topic

    def consumer_key(self, subscription: Subscription[Any]) -> str:
        """The Kafka consumer group and ``processed_events.consumer`` of ``subscription``.

        Event ids are unique within a topic only (Stripe event ids, change uuids), so each
        topic gets its own key space. The first topic keeps the bare worker name (the rows
        of releases that had one topic per worker stay valid); a worker name has no ``@``,
        so ``name@topic`` collides with no other worker's or topic's key. Moving another
        topic first would hand it the first one's committed offsets and idempotency rows:
        ``WorkerDeclaration.check`` refuses a spec whose topics are in another order."""
        if subscription.topic == self.first_topic:
            return self.name
        return f"{self.name}@{subscription.topic}"
