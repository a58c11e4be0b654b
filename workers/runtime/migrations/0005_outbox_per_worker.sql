-- Each worker relays its own outbox rows, under its own advisory lock, so workers relay in
-- parallel and one worker's backlog or outage delays no other's. Rows name their worker.
--
-- Rows present at upgrade: before this migration the entitlement worker was the only
-- worker of the fleet, so every row was written by it (its handler and its expiry job emit
-- only entitlements.changes.v1). Any other row (another topic) could only have come from
-- that same worker too, or from a hand-made insert: it is assigned to 'entitlement' as
-- well, so that it is relayed like the rest instead of being stranded with no relay.
--
-- The default stays during a rolling upgrade's window: a worker of the previous release
-- (the entitlement worker, the only one it had) still inserts rows without the column,
-- and they are its rows. This release always names the worker itself.
ALTER TABLE outbox ADD COLUMN worker text NOT NULL DEFAULT 'entitlement';
-- A relay takes its worker's oldest rows: (worker, id) serves both the take and the count.
CREATE INDEX outbox_by_worker ON outbox (worker, id);
