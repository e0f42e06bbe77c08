#!/bin/sh
# First start: a cluster whose role $POSTGRES_USER has the password in $POSTGRES_PASSWORD_FILE (a
# compose secret), reachable by password from the compose network, with the databases named in
# $POSTGRES_DATABASES. Then (and on every later start) the server in the foreground.
set -eu
user=${POSTGRES_USER:-depthsweep}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U "$user" --pwfile="$POSTGRES_PASSWORD_FILE" --auth=scram-sha-256 --encoding=UTF8 >/dev/null
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  for db in ${POSTGRES_DATABASES:-}; do
    echo "CREATE DATABASE \"$db\";" | postgres --single -D "$PGDATA" -j postgres >/dev/null
  done
fi
exec postgres -D "$PGDATA" -c listen_addresses='*'
