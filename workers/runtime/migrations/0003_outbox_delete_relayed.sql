-- The relay deletes a row once the broker acknowledged it (the topic is the record), so
-- the table holds only the backlog instead of every event ever emitted, and a relayed row
-- costs one cheap delete instead of an update that rewrites the row and its index entries.
DELETE FROM outbox WHERE published_at IS NOT NULL;
DROP INDEX outbox_unpublished;
ALTER TABLE outbox DROP COLUMN published_at;
