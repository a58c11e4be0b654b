-- Tables of the entitlement worker; the read API only reads `entitlements` and
-- `entitlement_customers`.

-- Stripe customer -> application user (customer.metadata.user_id, else the
-- client_reference_id of a completed checkout).
CREATE TABLE entitlement_customers (
    customer_id   text        PRIMARY KEY,
    user_id       text,
    user_id_from  text,                      -- 'metadata' | 'checkout'
    event_at      timestamptz NOT NULL,      -- newest customer event applied (order tolerance)
    event_id      text        NOT NULL
);
CREATE INDEX entitlement_customers_user ON entitlement_customers (user_id);

-- What grants access: a subscription, a one-off payment, or Stripe's own entitlement
-- summary ('stripe'). Each keeps the newest event applied to it, so an older event never
-- overwrites newer state, and the features it grants.
CREATE TABLE entitlement_sources (
    source_id     text        PRIMARY KEY,   -- sub_..., pi_.../ch_..., 'stripe:<customer>'
    customer_id   text        NOT NULL,
    kind          text        NOT NULL,      -- 'subscription' | 'payment' | 'stripe'
    status        text        NOT NULL,
    grants        jsonb       NOT NULL DEFAULT '{}',  -- feature -> {"limit": int|null, "expires_at": iso|null}
    event_at      timestamptz NOT NULL,
    event_rank    integer     NOT NULL,
    event_id      text        NOT NULL,
    past_due_since timestamptz
);
CREATE INDEX entitlement_sources_customer ON entitlement_sources (customer_id);

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
