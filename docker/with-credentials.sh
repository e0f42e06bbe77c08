#!/bin/sh
# Entry point of the depthsweep image: turn a password file (a compose secret) into the PostgreSQL
# password file libpq reads, then run the command. No password is ever put in a URL or the
# environment: psycopg (Optuna's study, the MLflow server's store) finds it in $PGPASSFILE.
set -e
if [ -n "${PG_PASSWORD_FILE:-}" ] && [ -r "$PG_PASSWORD_FILE" ]; then
  umask 077
  # A .pgpass line is host:port:database:user:password, with ':' and '\' escaped.
  password=$(sed 's/[\\:]/\\&/g' "$PG_PASSWORD_FILE" | head -n 1)
  printf '*:*:*:%s:%s\n' "${PGUSER:-depthsweep}" "$password" > "$HOME/.pgpass"
  export PGPASSFILE="$HOME/.pgpass"
fi
exec "$@"
