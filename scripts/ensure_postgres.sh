#!/bin/sh
# A project-local PostgreSQL server for the shared-study tests (tests/integration/
# test_postgres_study.py) and for trying `lmalloc search --worker --storage postgresql+psycopg://...`
# on one machine. See docs/scale-out.md, "Shared study on PostgreSQL".
#
#   sh scripts/ensure_postgres.sh [start]   install (apt-get, when missing), init, start; print URL
#   sh scripts/ensure_postgres.sh stop      stop the server (the data stays)
#   sh scripts/ensure_postgres.sh status    print the URL when running, exit 1 otherwise
#
# The cluster lives in .services/postgres/ (git-ignored), listens on 127.0.0.1 only, on port
# $LMALLOC_PG_PORT (default 55432, not the default 5432, so it never meets a system server), and
# has a database and login role `lmalloc` (password `lmalloc`, may create databases: each test
# makes its own). Idempotent: a running server is left alone. Never fails the build: when it
# cannot install or start a server it prints a warning and exits 0, and the tests skip with it.
# As root, the server runs as the `postgres` system user (created when missing): PostgreSQL
# refuses to run as root.
set -u

HERE=$(cd "$(dirname "$0")/.." && pwd)
PORT=${LMALLOC_PG_PORT:-55432}
DIR=${LMALLOC_PG_DIR:-$HERE/.services/postgres}
DATA=$DIR/data
ROLE=lmalloc
PASSWORD=lmalloc
DB=lmalloc
# the server's Unix socket (superuser access); sockets paths are limited to ~100 bytes
SOCK=$DIR
[ ${#DIR} -gt 90 ] && SOCK=/tmp/lmalloc-pg-$PORT
URL="postgresql+psycopg://$ROLE:$PASSWORD@127.0.0.1:$PORT/$DB"
ACTION=${1:-start}

warn() {
    echo "warning: $*; the PostgreSQL tests will skip" >&2
    exit 0
}

find_bin() {  # the newest server binaries: Debian keeps them out of PATH
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        [ -x "$d/initdb" ] && { echo "$d"; return 0; }
    done
    p=$(command -v initdb 2>/dev/null) && { dirname "$p"; return 0; }
    return 1
}

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
fi

install_server() {
    if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
        warn "PostgreSQL is not installed and this user is not root (no passwordless sudo)"
    fi
    command -v apt-get >/dev/null 2>&1 || warn "PostgreSQL is not installed and apt-get is unavailable"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1 \
        || { $SUDO apt-get update -qq >/dev/null 2>&1 \
             && $SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null 2>&1; } \
        || warn "could not install PostgreSQL with apt-get"
}

# as_owner CMD...: run as the cluster's owner (postgres when we are root, else ourselves)
if [ "$(id -u)" -eq 0 ]; then
    OWNER=postgres
    as_owner() { runuser -u "$OWNER" -- "$@"; }
else
    OWNER=$(id -un)
    as_owner() { "$@"; }
fi

running() { [ -f "$DATA/PG_VERSION" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

psql_admin() {  # superuser over the private Unix socket
    as_owner "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres "$@"
}

init_cluster() {
    if [ "$OWNER" = postgres ] && ! id postgres >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/postgresql --shell /bin/sh postgres \
            || warn "could not create the postgres system user"
    fi
    mkdir -p "$DIR" || warn "cannot create $DIR"
    [ "$OWNER" = postgres ] && chown postgres "$DIR"
    chmod 700 "$DIR"
    if [ "$SOCK" != "$DIR" ]; then
        mkdir -p "$SOCK" && chmod 700 "$SOCK"
        [ "$OWNER" = postgres ] && chown postgres "$SOCK"
    fi
    as_owner test -w "$DIR" || warn "user $OWNER cannot write $DIR (a parent folder is private)"
    if [ ! -f "$DATA/PG_VERSION" ]; then
        as_owner "$BIN/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >"$DIR/initdb.log" 2>&1 \
            || warn "initdb failed (see $DIR/initdb.log)"
        cat >>"$DATA/postgresql.conf" <<EOF
# lmalloc test server (scripts/ensure_postgres.sh)
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$SOCK'
max_connections = 200
shared_buffers = 32MB
synchronous_commit = off
EOF
    fi
}

start() {
    BIN=$(find_bin) || { install_server; BIN=$(find_bin) || warn "no PostgreSQL server binaries after install"; }
    mkdir -p "$(dirname "$DIR")" || warn "cannot create $(dirname "$DIR")"
    if command -v flock >/dev/null 2>&1; then  # two starts at once: the second waits
        exec 9>"$DIR.lock" && flock 9
    fi
    if running; then
        echo "$URL"
        exit 0
    fi
    init_cluster
    as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/server.log" -w -t 60 start >/dev/null 2>&1 9>&- \
        || warn "the server did not start (port $PORT taken? see $DIR/server.log)"
    exists=$(psql_admin -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$ROLE'") \
        || warn "cannot reach the new server over its socket in $SOCK"
    if [ "$exists" != 1 ]; then
        psql_admin -c "CREATE ROLE $ROLE LOGIN CREATEDB PASSWORD '$PASSWORD'" >/dev/null \
            || warn "could not create the role $ROLE"
    fi
    exists=$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")
    if [ "$exists" != 1 ]; then
        psql_admin -c "CREATE DATABASE $DB OWNER $ROLE" >/dev/null \
            || warn "could not create the database $DB"
    fi
    echo "$URL"
}

case "$ACTION" in
    start)
        start
        ;;
    stop)
        BIN=$(find_bin) || exit 0
        if running; then
            as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
        fi
        ;;
    status)
        BIN=$(find_bin) || exit 1
        running || exit 1
        echo "$URL"
        ;;
    url)
        echo "$URL"
        ;;
    *)
        echo "usage: $0 [start|stop|status|url]" >&2
        exit 2
        ;;
esac
