#!/usr/bin/env bash
# Makes the Debian bookworm root file system that both local images (kafka, postgres) start from.
# Usage: images/base/build.sh DIR MIRROR   (scripts/setup passes the machine's own apt mirror)
# scripts/setup then imports DIR with `tar -C DIR -c . | docker import - exactly-local/base:bookworm`.
set -euo pipefail
dir=$1
mirror=$2

# openjdk-17 runs the Kafka broker and tools; postgresql-15 is the database server and
# pgbouncer the pooler some tests put in front of it; procps/iproute2 give ps/ss for
# debugging inside containers.
debootstrap --variant=minbase \
  --include=postgresql-15,pgbouncer,openjdk-17-jre-headless,procps,iproute2,ca-certificates \
  bookworm "$dir" "$mirror"

# The package's postinst created a cluster "main"; the postgres image makes its own in $PGDATA.
rm -rf "$dir/var/lib/postgresql/15/main" "$dir/etc/postgresql/15/main"
# Downloaded .debs and package lists are not needed at run time (hundreds of MB).
rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
# The mirror's address stays out of the image: nothing in it installs packages later.
: >"$dir/etc/apt/sources.list"
