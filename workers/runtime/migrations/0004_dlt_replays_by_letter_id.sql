-- Replays are recorded by the dead letter's own id (its dlt_id header), not by where it
-- sits: a broker that starts again empty (dev's in-memory one) reuses partitions and
-- offsets, and a new letter at a replayed letter's offset showed as replayed already.
-- Letters written before ids existed (no dlt_id) are still recorded by position.
ALTER TABLE dlt_replays ADD COLUMN dlt_id text;
ALTER TABLE dlt_replays DROP CONSTRAINT dlt_replays_pkey;
CREATE UNIQUE INDEX dlt_replays_by_id ON dlt_replays (topic, dlt_id) WHERE dlt_id IS NOT NULL;
CREATE UNIQUE INDEX dlt_replays_by_position ON dlt_replays (topic, partition, "offset")
    WHERE dlt_id IS NULL;
