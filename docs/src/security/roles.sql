-- As a superuser (or a role with CREATEROLE), once per database. `orders` is the
-- database, `exactly_owner` migrates exactly's tables, `orders_app` runs the service.
CREATE ROLE exactly_owner LOGIN PASSWORD 'change-me';
CREATE ROLE orders_app LOGIN PASSWORD 'change-me';
GRANT CONNECT, CREATE ON DATABASE orders TO exactly_owner;
GRANT CONNECT ON DATABASE orders TO orders_app;
-- Every role (PUBLIC) may connect and create temporary tables by default: take both back,
-- so only the roles above connect and the service creates nothing, not even a temporary table.
REVOKE CONNECT, TEMPORARY ON DATABASE orders FROM PUBLIC;
