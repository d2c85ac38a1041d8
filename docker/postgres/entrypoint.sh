#!/bin/sh
# Initializes $PGDATA on first start (the user, its password, the database), as the official
# postgres image does, then runs the command (`postgres ARGS`).
set -eu
if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE")
fi
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "error: set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE)" >&2
    exit 2
fi
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth=scram-sha-256 \
        --no-locale -E UTF8 >/dev/null
    rm -f "$pwfile"
    # other hosts may connect (with the password) wherever listen_addresses allows
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        echo "CREATE DATABASE \"$db\" OWNER \"$user\";" |
            postgres --single -D "$PGDATA" -j template1 >/dev/null
    fi
    echo "onnxopt-postgres-entrypoint: initialized $PGDATA (user $user, database $db)"
fi
exec "$@"
