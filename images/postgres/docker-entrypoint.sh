#!/usr/bin/env bash
# Entrypoint of exactly-local/postgres: a drop-in for the official postgres image's
# docker-entrypoint.sh for what tests use:
# - POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust), POSTGRES_USER (default
#   postgres), POSTGRES_DB (default: the user), POSTGRES_INITDB_ARGS, POSTGRES_HOST_AUTH_METHOD
#   (default scram-sha-256), PGDATA (default /var/lib/postgresql/data), *_FILE variants, and
#   /docker-entrypoint-initdb.d/*.sh|*.sql|*.sql.gz scripts;
# - initdb only when PGDATA holds no cluster, so a stopped or killed container keeps its data;
# - listens on all interfaces (host connections need the password), runs as user postgres;
# - arguments starting with "-" go to postgres (e.g. `-c fsync=off -c max_connections=200`).
set -Eeo pipefail

# file_env VAR [DEFAULT]: VAR's value from VAR or from the file named by VAR_FILE.
file_env() {
  local var=$1 file_var="${1}_FILE" def="${2:-}" val
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo >&2 "error: both $var and $file_var are set (but are exclusive)"
    exit 1
  fi
  val=$def
  if [ -n "${!var:-}" ]; then
    val=${!var}
  elif [ -n "${!file_var:-}" ]; then
    val=$(<"${!file_var}")
  fi
  export "$var"="$val"
  unset "$file_var"
}

# postgres --help / --version and the like do not need a cluster.
want_help() {
  local arg
  for arg; do
    case "$arg" in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
  done
  return 1
}

# shellcheck disable=SC1090 # sources the user's own scripts
run_initdb_scripts() {
  local f
  for f in /docker-entrypoint-initdb.d/*; do
    case "$f" in
      *.sh) echo "$0: running $f"; if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
      *.sql) echo "$0: running $f"; psql_run "$POSTGRES_DB" -f "$f" ;;
      *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | psql_run "$POSTGRES_DB" ;;
      *) if [ -e "$f" ]; then echo "$0: ignoring $f"; fi ;;
    esac
  done
}

# psql_run DB [psql args]: psql on the temporary server's Unix socket, as the superuser.
psql_run() {
  local db=$1
  shift
  PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc \
    --dbname "$db" "$@"
}

if [ "${1:0:1}" = '-' ]; then
  set -- postgres "$@"
fi

if [ "$1" = postgres ] && ! want_help "$@"; then
  : "${PGDATA:=/var/lib/postgresql/data}"
  export PGDATA

  if [ "$(id -u)" = 0 ]; then
    # As root: prepare the directories, then run this script again as postgres (setpriv execs,
    # keeping PID 1, so that docker's signals reach the server).
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 00700 "$PGDATA"
    chmod 03777 /var/run/postgresql
    find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres:postgres '{}' +
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
  fi

  if [ -s "$PGDATA/PG_VERSION" ]; then
    echo
    echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
    echo
  else
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
      cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.
MSG
      exit 1
    fi

    initdb_args=(--username="$POSTGRES_USER")
    pwfile=
    if [ -n "$POSTGRES_PASSWORD" ]; then
      # A private file, not <(...): /dev/fd is not always there for the initdb child.
      pwfile=$(mktemp)
      printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
      initdb_args+=(--pwfile="$pwfile")
    fi
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
      initdb_args+=(--waldir="$POSTGRES_INITDB_WALDIR")
    fi
    # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as officially
    initdb "${initdb_args[@]}" $POSTGRES_INITDB_ARGS
    [ -n "$pwfile" ] && rm -f "$pwfile"

    # Listen on every interface; host connections authenticate (the official image's pg_hba line).
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

    # A temporary server on the Unix socket only, for POSTGRES_DB and the init scripts.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p ${PGPORT:-5432}" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
      psql_run postgres -v db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    run_initdb_scripts
    pg_ctl -D "$PGDATA" -m fast -w stop

    echo
    echo 'PostgreSQL init process complete; ready for start up.'
    echo
  fi
fi

exec "$@"
