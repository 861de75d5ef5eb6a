-- Positions of exactly's consumer groups: the next offset to process of each group, topic
-- and partition, written in the same transaction as the handler's effects.
-- `epoch` grows on every claim (assignment) of a partition: an instance that lost the
-- partition holds a stale epoch and its commits no longer match (fencing).
CREATE TABLE IF NOT EXISTS exactly.offsets (
    group_id    TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INTEGER     NOT NULL CHECK (partition >= 0),
    next_offset BIGINT      NOT NULL CHECK (next_offset >= 0),
    epoch       BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);
