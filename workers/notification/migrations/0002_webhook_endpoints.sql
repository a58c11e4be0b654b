-- Outbound webhook endpoints' state; the endpoints themselves (URL, secrets, filter) are
-- the endpoints file's. A row appears once an endpoint was first sent to.

-- disabled_at: a 410 Gone disabled the endpoint (its pending deliveries were stopped as
-- failed); `billing-fleet webhooks enable ID` clears it and re-queues what failed since.
-- last_*: the newest attempt's outcome each way, for `webhooks list` (written by the
-- senders at most about once a second, never moved back in time).
CREATE TABLE webhook_endpoints (
    endpoint_id     text        PRIMARY KEY,
    disabled_at     timestamptz,
    disabled_reason text,
    last_success_at timestamptz,
    last_failure_at timestamptz,
    last_failure    text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
