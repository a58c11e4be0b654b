-- Deliveries: effects beyond Kafka (mails, outbound webhooks), written in the handler's
-- transaction and sent afterwards by the worker's dispatcher.

-- One row per effect; (worker, channel, idempotency_key) is unique, so a redelivered
-- event that builds the same delivery inserts nothing. A dispatcher leases a due row by
-- moving next_attempt_at past the lease and counting the attempt; the result then sets
-- status and, for a retry, when it is due again.
CREATE TABLE deliveries (
    id              bigserial   PRIMARY KEY,
    worker          text        NOT NULL,
    channel         text        NOT NULL,
    destination     text        NOT NULL,
    idempotency_key text        NOT NULL,
    payload         bytea       NOT NULL,
    headers         jsonb       NOT NULL DEFAULT '{}',
    metadata        jsonb       NOT NULL DEFAULT '{}',
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'dead')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    last_code       text,
    last_detail     text,
    UNIQUE (worker, channel, idempotency_key)
);

-- The dispatcher's claim: a worker's pending rows by due time.
CREATE INDEX deliveries_due ON deliveries (worker, next_attempt_at) WHERE status = 'pending';

-- Every attempt that came to a result (a sender killed mid-send leaves none: its lease
-- expires and the next attempt is recorded under the next number).
CREATE TABLE delivery_attempts (
    id          bigserial   PRIMARY KEY,
    delivery_id bigint      NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL DEFAULT now(),
    outcome     text        NOT NULL CHECK (outcome IN ('sent', 'retry', 'failed')),
    code        text,
    detail      text
);
CREATE INDEX delivery_attempts_delivery ON delivery_attempts (delivery_id);
