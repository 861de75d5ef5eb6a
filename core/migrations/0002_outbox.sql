-- The transactional outbox: records a Database-mode handler emits, written in the same
-- transaction as its effects and its position, published to Kafka by the relay.
-- `txid` is the writing transaction's id: the relay publishes in (txid, id) order and only
-- rows of transactions older than every running one, so a row can never appear behind
-- the relay's position after it moved on.
CREATE TABLE IF NOT EXISTS exactly.outbox (
    id            BIGSERIAL   PRIMARY KEY,
    txid          BIGINT      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    topic         TEXT        NOT NULL,
    key           BYTEA,
    payload       BYTEA,
    header_names  TEXT[]      NOT NULL DEFAULT '{}',
    header_values BYTEA[]     NOT NULL DEFAULT '{}',
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS outbox_order ON exactly.outbox (txid, id);
