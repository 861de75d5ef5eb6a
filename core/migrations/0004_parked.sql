-- Key-level parking: messages of a key whose handler failed, held (with every later message
-- of the same key) while the partition's other keys go on. Written in the transaction that
-- moves the partition's position past them; retried per key in offset order; removed in
-- the transaction that commits their effects or dead-letters them.
CREATE TABLE IF NOT EXISTS exactly.parked (
    group_id       TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    partition      INTEGER     NOT NULL,
    message_offset BIGINT      NOT NULL,
    key            BYTEA,
    payload        BYTEA,
    header_names   TEXT[]      NOT NULL DEFAULT '{}',
    header_values  BYTEA[]     NOT NULL DEFAULT '{}',
    error          TEXT,
    attempts       INTEGER     NOT NULL DEFAULT 0,
    retry_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    parked_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition, message_offset)
);
