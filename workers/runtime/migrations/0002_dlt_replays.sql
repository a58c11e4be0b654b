-- Dead letters re-published by `billing-fleet dlt replay`. Kafka is append-only, so the
-- message stays in the dead-letter topic; this table lets `dlt list` count replays and
-- `dlt replay --all` skip what was replayed already (explicit --offset replays again).
CREATE TABLE dlt_replays (
    topic             text        NOT NULL,
    partition         integer     NOT NULL,
    "offset"          bigint      NOT NULL,
    origin_topic      text        NOT NULL,
    consumer_group    text        NOT NULL,
    replays           integer     NOT NULL DEFAULT 1,
    first_replayed_at timestamptz NOT NULL DEFAULT now(),
    last_replayed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
