# Throwaway PostgreSQL cluster with bridgecore preloaded; sourced by test/run
# and the demo.  cluster_start exports PGHOST, PGPORT, PGUSER, PGDATABASE;
# cluster_stop removes everything.  Works as root (the cluster then runs as
# the postgres user) and as an ordinary user.
#
# The server inherits the caller's environment (runuser keeps it, and pg_ctl
# passes it on to the postmaster and so to every backend and background
# worker): test/sanitize.sh sets ASAN_OPTIONS and UBSAN_OPTIONS that way.
# With BRIDGECORE_LOG_DIR set, cluster_stop keeps the server log there, as
# server-<port>.log, for test/sanitize.sh to search for sanitizer reports.

PG_BINDIR=$(pg_config --bindir)

as_cluster_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# cluster_start [extra postgresql.conf lines...]
cluster_start() {
    CLUSTER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/bridgecore-cluster.XXXXXX")
    chmod 755 "$CLUSTER_DIR"
    [ "$(id -u)" = 0 ] && chown postgres: "$CLUSTER_DIR"
    export PGPORT=$(free_port) PGHOST=$CLUSTER_DIR PGUSER=postgres PGDATABASE=postgres
    as_cluster_owner "$PG_BINDIR/initdb" -D "$CLUSTER_DIR/data" -U postgres -A trust \
        -E UTF8 --no-locale >"$CLUSTER_DIR/initdb.log" 2>&1 \
        || { cat "$CLUSTER_DIR/initdb.log"; return 1; }
    {
        echo "shared_preload_libraries = 'bridgecore'"
        echo "port = $PGPORT"
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$CLUSTER_DIR'"
        echo "fsync = off"
        echo "synchronous_commit = off"
        echo "max_connections = 60"
        echo "max_prepared_transactions = 10"
        for line in "$@"; do echo "$line"; done
    } >>"$CLUSTER_DIR/data/postgresql.conf"
    as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" \
        -w -t 60 start >/dev/null || { cat "$CLUSTER_DIR/server.log"; return 1; }
}

cluster_restart() {
    as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -l "$CLUSTER_DIR/server.log" \
        -w -t 60 -m fast restart >/dev/null
}

cluster_stop() {
    [ -n "${CLUSTER_DIR:-}" ] || return 0
    as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -w -t 60 -m immediate stop \
        >/dev/null 2>&1 || true
    if [ -n "${BRIDGECORE_LOG_DIR:-}" ] && [ -f "$CLUSTER_DIR/server.log" ]; then
        cp "$CLUSTER_DIR/server.log" "$BRIDGECORE_LOG_DIR/server-$PGPORT.log"
    fi
    rm -rf "$CLUSTER_DIR"
    CLUSTER_DIR=
}
