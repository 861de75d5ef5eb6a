-- Messages that could not be processed: undecodable, or out of retries. Each is written in
-- the transaction that moves its partition's position past it, so it is never lost and,
-- with the unique key, never recorded twice.
CREATE TABLE IF NOT EXISTS exactly.dead_letters (
    id             BIGSERIAL   PRIMARY KEY,
    group_id       TEXT        NOT NULL,
    topic          TEXT        NOT NULL,
    partition      INTEGER     NOT NULL,
    message_offset BIGINT      NOT NULL,
    key            BYTEA,
    payload        BYTEA,
    header_names   TEXT[]      NOT NULL DEFAULT '{}',
    header_values  BYTEA[]     NOT NULL DEFAULT '{}',
    error          TEXT        NOT NULL,
    attempts       INTEGER     NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (group_id, topic, partition, message_offset)
);
