-- As exactly_owner, after `exactly migrate` has run as exactly_owner.
GRANT USAGE ON SCHEMA exactly TO orders_app;
GRANT SELECT, INSERT, UPDATE, DELETE
    ON exactly.offsets, exactly.completed, exactly.outbox, exactly.dead_letters, exactly.parked TO orders_app;
GRANT USAGE ON SEQUENCE exactly.outbox_id_seq, exactly.dead_letters_id_seq TO orders_app;
-- The runtime reads the migration history to check that the tables are current.
GRANT SELECT ON exactly._migrations TO orders_app;
-- Tables and sequences a later version of exactly adds get the same rights when
-- exactly_owner creates them.
ALTER DEFAULT PRIVILEGES FOR ROLE exactly_owner IN SCHEMA exactly
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO orders_app;
ALTER DEFAULT PRIVILEGES FOR ROLE exactly_owner IN SCHEMA exactly
    GRANT USAGE ON SEQUENCES TO orders_app;
