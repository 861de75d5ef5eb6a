#!/usr/bin/env bash
# Entrypoint of exactly-local/pgbouncer: writes pgbouncer.ini from the environment and runs
# PgBouncer in the foreground.
# - PGBOUNCER_UPSTREAM_HOST (required), PGBOUNCER_UPSTREAM_PORT (default 5432): the server;
# - PGBOUNCER_UPSTREAM_USER (default postgres), PGBOUNCER_UPSTREAM_PASSWORD (required): the
#   role every pooled server connection logs in as, whatever the client's user;
# - PGBOUNCER_POOL_MODE: session (default), transaction or statement;
# - PGBOUNCER_POOL_SIZE (default 40): server connections per database.
# Clients are trusted (auth_type = trust; PgBouncer still wants their user in auth_file, so
# the upstream user is the one listed): the pooler only ever listens on a test's own port.
set -Eeuo pipefail

: "${PGBOUNCER_UPSTREAM_HOST:?the PostgreSQL server to pool}"
: "${PGBOUNCER_UPSTREAM_PASSWORD:?the password of the upstream role}"
config=/tmp/pgbouncer.ini
cat >"$config" <<INI
[databases]
* = host=${PGBOUNCER_UPSTREAM_HOST} port=${PGBOUNCER_UPSTREAM_PORT:-5432} user=${PGBOUNCER_UPSTREAM_USER:-postgres} password=${PGBOUNCER_UPSTREAM_PASSWORD}

[pgbouncer]
listen_addr = 0.0.0.0
listen_port = 6432
unix_socket_dir =
auth_type = trust
auth_file = /tmp/userlist.txt
pool_mode = ${PGBOUNCER_POOL_MODE:-session}
default_pool_size = ${PGBOUNCER_POOL_SIZE:-40}
max_client_conn = 1000
; sqlx sends extra_float_digits at start-up, which PgBouncer would otherwise refuse.
ignore_startup_parameters = extra_float_digits,options
server_reset_query = DISCARD ALL
logfile =
pidfile =
INI
printf '"%s" ""\n' "${PGBOUNCER_UPSTREAM_USER:-postgres}" >/tmp/userlist.txt
exec pgbouncer "$config"
