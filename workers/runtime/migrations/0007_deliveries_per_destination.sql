-- Deliveries, per destination and across re-queues.

-- The destination a send slot is counted against: a URL's scheme and authority (so one
-- receiver's paths share its limit), anything else (a mail address) as it is. Derived by
-- PostgreSQL itself, so every dispatcher computes it the same way.
ALTER TABLE deliveries ADD COLUMN origin text GENERATED ALWAYS AS (
    coalesce(lower(substring(destination FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*')),
             destination)
) STORED;

-- `attempts` only grows (delivery_attempts numbers stay unique per row); the attempts an
-- operator's `deliveries retry` found are kept here, and the channel's max attempts count
-- from them.
ALTER TABLE deliveries ADD COLUMN attempts_at_requeue integer NOT NULL DEFAULT 0;

-- Pushing a failing destination's other due rows back (and the claim's check of it).
CREATE INDEX deliveries_pending_origin ON deliveries (worker, channel, origin)
    WHERE status = 'pending';
