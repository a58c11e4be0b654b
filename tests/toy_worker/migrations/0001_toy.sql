-- The toy worker's tables: what it applied (no unique key, so a second apply shows as a
-- second row) and the Stripe event ids it rejects as poison (its "catalog").
CREATE TABLE toy_applied (
    consumer        text NOT NULL,
    stripe_event_id text NOT NULL,
    type            text NOT NULL,
    applied_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE toy_rejects (stripe_event_id text PRIMARY KEY);
