#!/usr/bin/env bash
# A router (extension bridgecore_router) in front of two shards on this
# machine: what the router adds to a pull, and what moving an instance costs.
#
# 1. Pulls of 100 events (the same page each time: a token of position 0),
#    by pgbench, on the shard directly and through the router, in
#    alternating rounds of the same run: transactions per second with two
#    clients and the router's ratio to the shard's (the router's and the
#    shard's backends share this machine's cores), then the average latency
#    of one client and what the router adds to it.
# 2. CALL bridgecore.move_instance() of an instance of EVENTS events and
#    DEVICES device states to the other shard and back: the wall time, and
#    how long the instance's calls waited (the state copy and the switch).
#
# Usage: bench/router.sh [events, default 100000] [devices, default 10000]
#        [rounds, default 3] [seconds per round, default 10]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
EVENTS=${1:-100000}
DEVICES=${2:-10000}
ROUNDS=${3:-3}
SECS=${4:-10}
make -s >/dev/null && make -s install >/dev/null

B_DIR=
stop_all() {
    [ -n "$B_DIR" ] && { as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$B_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$B_DIR"; }
    cluster_stop
}
trap stop_all EXIT
cluster_start "bridgecore.maintenance_interval = 0" "max_connections = 100"
A_HOST=$PGHOST A_PORT=$PGPORT
B_DIR=$(mktemp -d "${TMPDIR:-/tmp}/bridgecore-shard.XXXXXX"); chmod 755 "$B_DIR"
[ "$(id -u)" = 0 ] && chown postgres: "$B_DIR"
B_PORT=$(free_port)
as_cluster_owner "$PG_BINDIR/initdb" -D "$B_DIR/data" -U postgres -A trust -E UTF8 --no-locale >/dev/null
printf '%s\n' "shared_preload_libraries = 'bridgecore'" "port = $B_PORT" "listen_addresses = ''" \
    "unix_socket_directories = '$B_DIR'" "fsync = off" "synchronous_commit = off" \
    "bridgecore.maintenance_interval = 0" | as_cluster_owner sh -c "cat >> '$B_DIR/data/postgresql.conf'"
as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$B_DIR/data" -l "$B_DIR/log" -w -t 60 start >/dev/null

for shard in "$A_HOST $A_PORT" "$B_DIR $B_PORT"; do
    set -- $shard
    psql -qAt -v ON_ERROR_STOP=1 -h "$1" -p "$2" <<SQL
CREATE EXTENSION bridgecore;
CREATE ROLE bc_router_login LOGIN IN ROLE bridgecore_router;
ALTER ROLE bc_router_login SET bridgecore.rate_limit_sync_pull = 0;
SQL
done
psql -qAt -v ON_ERROR_STOP=1 -h "$B_DIR" -p "$B_PORT" -c "ALTER TABLE bridgecore.instance ALTER COLUMN id RESTART WITH 1001"
psql -qAt -v ON_ERROR_STOP=1 <<SQL
SELECT name FROM bridgecore.add_instance('acme', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key', enabled => false) \g /dev/null
SELECT bridgecore.ingest('acme', (SELECT json_agg(json_build_object(
           'id', g, 'model', (ARRAY['sale.order', 'res.partner', 'stock.picking', 'mail.message'])[1 + g % 4],
           'record_id', g, 'event', 'write', 'timestamp', '2026-01-01 00:00:00',
           'payload', json_build_object('name', 'Record ' || g, 'note', repeat('x', 60))))
         FROM generate_series(1, $EVENTS) g)) -> 'inserted' \g /dev/null
INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id, last_sync_time, sync_count)
SELECT 1, 1 + g / 3, 'device-' || md5(g::text), 'sales_app', (g * 7) % $EVENTS, now(), 5 FROM generate_series(1, $DEVICES) g;
VACUUM ANALYZE;
CREATE DATABASE router;
SQL
psql -qAt -v ON_ERROR_STOP=1 -d router <<SQL
SET client_min_messages = warning;
CREATE EXTENSION bridgecore_router CASCADE;
SELECT bridgecore.add_shard('a', 'host=$A_HOST port=$A_PORT dbname=postgres') \g /dev/null
SELECT bridgecore.add_shard('b', 'host=$B_DIR port=$B_PORT dbname=postgres') \g /dev/null
CREATE USER MAPPING FOR PUBLIC SERVER bridgecore_shards OPTIONS (user 'bc_router_login');
SELECT bridgecore.sync_placement() \g /dev/null
SQL

script=$(mktemp)
cat >"$script" <<'SQL'
SELECT bridgecore.sync_pull(1, 'bench-' || :client_id, 'sales_app', 100, sync_token => 'bc1:1:0');
SQL
tps() {  # tps <database>
    PGOPTIONS="-c bridgecore.rate_limit_sync_pull=0" pgbench -n -c 2 -j 2 -T "$SECS" -f "$script" "$1" 2>&1 |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
echo "== pulls of 100 events: shard and router, $ROUNDS rounds of $SECS s, 2 clients"
for r in $(seq 1 "$ROUNDS"); do
    direct=$(tps postgres)
    routed=$(tps router)
    echo "round $r: shard $direct tps, router $routed tps, ratio $(echo "scale=2; $routed / $direct" | bc)"
done
echo "== one client, one pull at a time: average latency"
lat() {  # lat <database>
    PGOPTIONS="-c bridgecore.rate_limit_sync_pull=0" pgbench -n -c 1 -T "$SECS" -f "$script" "$1" 2>&1 |
        sed -n 's/^latency average = \([0-9.]*\) ms/\1/p'
}
for r in $(seq 1 "$ROUNDS"); do
    direct=$(lat postgres)
    routed=$(lat router)
    echo "round $r: shard $direct ms, router $routed ms, the router adds $(echo "scale=3; $routed - $direct" | bc) ms"
done
rm -f "$script"

echo "== moving an instance of $EVENTS events and $DEVICES device states"
for to in b a; do
    start=$(date +%s.%N)
    notice=$(psql -qAt -v ON_ERROR_STOP=1 -d router -c "CALL bridgecore.move_instance('acme', '$to')" 2>&1)
    end=$(date +%s.%N)
    echo "to shard $to: $(echo "scale=2; ($end - $start) / 1" | bc) s; ${notice#NOTICE:  }"
done
