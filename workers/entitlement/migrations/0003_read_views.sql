-- The entitlement worker's read contract, version 1: what the gateway's read API may
-- read, and all it may read (a gateway role needs SELECT on these views only). Views are
-- named read_v<N>_<what>; the worker may change its tables behind them, as long as the
-- views keep their columns and meaning. An incompatible change adds read_v2_* views
-- beside these, and these are dropped only in a release after the gateway moved.
-- Plain views: PostgreSQL inlines them into the query, so the read API's index scans
-- on entitlements (customer_id, feature) and entitlement_customers (user_id) stay.

-- A customer's effective entitlements, expired ones left out: a row the worker has not
-- swept yet is never answered as entitled.
CREATE VIEW read_v1_entitlements AS
SELECT e.customer_id, e.feature, e."limit", e.expires_at, e.sources
FROM entitlements e
WHERE e.expires_at IS NULL OR e.expires_at > now();

-- The same, with the application user each Stripe customer maps to (NULL: none yet),
-- one row per customer and feature; the gateway merges a user's customers.
CREATE VIEW read_v1_user_entitlements AS
SELECT c.user_id, e.customer_id, e.feature, e."limit", e.expires_at, e.sources
FROM entitlement_customers c
JOIN entitlements e ON e.customer_id = c.customer_id
WHERE e.expires_at IS NULL OR e.expires_at > now();
