-- Tables of the entitlement worker; the read API only reads `entitlements` and
-- `entitlement_customers` (customer_id, user_id).

-- Stripe customer -> application user. `user_id` is metadata_user_id (customer.metadata.user_id
-- of the newest customer.* event) when set, else checkout_user_id (client_reference_id of
-- the newest completed checkout naming one).
CREATE TABLE entitlement_customers (
    customer_id        text        PRIMARY KEY,
    user_id            text,
    user_id_from       text,                 -- 'metadata' | 'checkout' | NULL
    metadata_user_id   text,
    event_at           timestamptz,          -- newest customer.* event applied (order tolerance)
    event_rank         integer,
    event_id           text,
    checkout_user_id   text,
    checkout_event_at  timestamptz,          -- newest checkout with a client_reference_id
    checkout_event_id  text
);
CREATE INDEX entitlement_customers_user ON entitlement_customers (user_id);

-- What grants access: a subscription, a one-off payment, or Stripe's own entitlement
-- summary ('stripe:<customer>'). Each keeps the newest event applied to it (event_at,
-- event_rank, event_id), so an older event never overwrites newer state, and the
-- features it grants.
CREATE TABLE entitlement_sources (
    customer_id    text        NOT NULL,
    source_id      text        NOT NULL,     -- sub_..., pi_.../ch_.../cs_..., 'stripe:<customer>'
    kind           text        NOT NULL,     -- 'subscription' | 'payment' | 'stripe'
    status         text        NOT NULL,
    grants         jsonb       NOT NULL DEFAULT '{}',  -- feature -> {"limit": int|null, "expires_at": iso|null}
    snapshot       jsonb,                    -- the newest subscription object applied
    event_at       timestamptz NOT NULL,
    event_rank     integer     NOT NULL,
    event_id       text        NOT NULL,
    past_due_since timestamptz,              -- start of the current past_due streak
    past_due_track jsonb       NOT NULL DEFAULT '{}',  -- the marks past_due_since derives from
    PRIMARY KEY (customer_id, source_id)
);

-- The effective entitlement per (customer, feature): what the API answers from.
CREATE TABLE entitlements (
    customer_id   text        NOT NULL,
    feature       text        NOT NULL,
    "limit"       bigint,                    -- NULL: boolean feature (or unlimited)
    expires_at    timestamptz,               -- NULL: until further notice
    sources       text[]      NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, feature)
);
CREATE INDEX entitlements_expiry ON entitlements (expires_at) WHERE expires_at IS NOT NULL;

-- When a customer's effective entitlements next change with time (the earliest future
-- grant expiry); the periodic job recomputes the customers that are due.
CREATE TABLE entitlement_schedule (
    customer_id   text        PRIMARY KEY,
    due_at        timestamptz NOT NULL
);
CREATE INDEX entitlement_schedule_due ON entitlement_schedule (due_at);
