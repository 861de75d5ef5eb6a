-- Key-level concurrency: the messages of a partition handled above its position (the
-- lowest offset not yet handled). Each row is written in the transaction of its message's
-- effects; rows below the position are deleted in the transaction that moves it.
CREATE TABLE IF NOT EXISTS exactly.completed (
    group_id       TEXT    NOT NULL,
    topic          TEXT    NOT NULL,
    partition      INTEGER NOT NULL,
    message_offset BIGINT  NOT NULL,
    PRIMARY KEY (group_id, topic, partition, message_offset)
);
