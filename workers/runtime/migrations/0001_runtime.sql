-- Tables every worker uses; owned by workers.runtime.

-- Idempotency: a worker inserts (consumer, event id) in the same transaction as its
-- effects, so a redelivered event finds its row and changes nothing.
CREATE TABLE processed_events (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Transactional outbox: events a worker emits, written with its state change and
-- relayed to Kafka afterwards; published_at is set once the broker acknowledged.
CREATE TABLE outbox (
    id           bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    key          bytea,
    value        bytea       NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}',
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);

-- The relay scans only what is still to send, in insertion order.
CREATE INDEX outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
