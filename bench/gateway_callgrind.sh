#!/usr/bin/env bash
# Benchmark: what the gateway's way of calling costs the server, in CPU
# instructions per sync pull (callgrind), against the same pull as a direct
# prepared call: numbers that, unlike throughput, do not depend on what else
# the machine runs.
#
# The data of bench/gateway_pull.sh (50,000 events, 2,000 devices with a
# state, pulls of 100 events). The gateway starts once, to create its schema
# and bridgecore_gateway.authorize, and stops. Then the server runs under
# valgrind --tool=callgrind --trace-children=yes, and pgbench (-M prepared,
# one connection, the same seed for every run) makes the pulls three ways:
#   direct    SELECT bridgecore.sync_pull(...) as bridgecore_app: an app
#             with its own database connection
#   pipeline  what the gateway sends for a token it has seen: one pipeline
#             of SELECT bridgecore_gateway.authorize(token) and the prepared
#             call, one Sync (pgbench's \startpipeline)
#   call_as   the form the gateway used before: one prepared statement of a
#             PL/pgSQL function that checks the token, sets the role and
#             claims, and runs the call's text with EXECUTE (defined here, as
#             bench.call_as; the text built by format())
# Each way runs SMALL and LARGE pulls in two sessions; a session's backend
# writes its count when it ends, and (count(LARGE) - count(SMALL)) /
# (LARGE - SMALL) is its cost per pull, the session's start and end left
# out. The cursors go back to the start of the log before each session.
#
# Usage: bench/gateway_callgrind.sh [SMALL pulls, default 40] [LARGE pulls, default 120]
# PROFILE_DIR=dir keeps each way's LARGE session's callgrind file there as
# <way>.out, for callgrind_annotate --inclusive=yes.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
. bench/lib/gateway_data.sh

SMALL=${1:-40}
LARGE=${2:-120}
[ "$LARGE" -gt "$SMALL" ] || { echo "LARGE must exceed SMALL" >&2; exit 1; }
SECRET=a-benchmark-secret-of-32-characters
DB=bench_gateway
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }

make -s >/dev/null && make -s install >/dev/null
gateway/run --install >/dev/null
WORK=$(mktemp -d)
chmod 777 "$WORK"
GATEWAY_PID=
trap '[ -n "$GATEWAY_PID" ] && kill "$GATEWAY_PID" 2>/dev/null; cluster_stop; rm -rf "$WORK"' EXIT
cluster_start "autovacuum = off" "bridgecore.rate_limit_sync_pull = 0" "bridgecore.rate_limit_new_devices = 0" \
              "bridgecore.rate_limit_per_user_factor = 0" "bridgecore.maintenance_interval = 0"

gateway_bench_data $DB $SECRET 50000 2000
psql -qX -v ON_ERROR_STOP=1 -d $DB <<SQL >/dev/null
CREATE SCHEMA bench;
CREATE FUNCTION bench.call_as(token text, query text)
RETURNS text LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS \$\$
DECLARE
    c jsonb;
    r text;
BEGIN
    PERFORM set_config('role', 'bridgecore_anon', true);
    c := bridgecore.verify_token(token);
    PERFORM set_config('role', c ->> 'role', true), set_config('request.jwt.claims', c::text, true);
    EXECUTE query INTO r;
    RETURN r;
END
\$\$;
SQL
TOKEN=$(psql -qXAt -d $DB -c "SELECT bridgecore.issue_token('bridgecore_app', 1, 'bench', '1 day') ->> 'access_token'")

# The gateway's own schema and function, as it creates them at start.
PORT=$(free_port)
DATABASE_URL="postgresql:///$DB?host=$PGHOST&port=$PGPORT&user=postgres" BRIDGECORE_JWT_SECRET=$SECRET PORT=$PORT \
    gateway/run >"$WORK/gateway.log" 2>&1 &
GATEWAY_PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$PORT/health"; do
    kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$WORK/gateway.log"; exit 1; }
    sleep 0.2
done
kill "$GATEWAY_PID"; wait "$GATEWAY_PID" 2>/dev/null || true; GATEWAY_PID=
[ "$(psql -qXAt -d $DB -c "SELECT to_regprocedure('bridgecore_gateway.authorize(text)') IS NOT NULL")" = t ] ||
    { echo "the gateway did not create bridgecore_gateway.authorize" >&2; exit 1; }

cat >"$WORK/direct.sql" <<'SQL'
\set d random(1, 2000)
SELECT bridgecore.sync_pull(1::bigint, ('dev-' || :d)::text, 'sales_app'::text, 100)::text;
SQL
cat >"$WORK/pipeline.sql" <<SQL
\set d random(1, 2000)
\startpipeline
SELECT bridgecore_gateway.authorize('$TOKEN');
SELECT bridgecore.sync_pull("user_id" => 1::bigint, "device_id" => ('dev-' || :d)::text, "app_type" => 'sales_app'::text, "limit" => 100)::text AS r;
\endpipeline
SQL
cat >"$WORK/call_as.sql" <<SQL
\set d random(1, 2000)
SELECT bench.call_as('$TOKEN', format('SELECT bridgecore.sync_pull("user_id" => ''1''::bigint, "device_id" => %L::text, "app_type" => ''sales_app''::text, "limit" => ''100''::integer)::text AS r', 'dev-' || :d));
SQL

# The server again, under callgrind: each process writes its count at exit.
as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -w -t 60 -m fast stop >/dev/null
mkdir "$WORK/cg"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/cg"
as_cluster_owner valgrind --tool=callgrind --trace-children=yes --dump-line=no \
    --callgrind-out-file="$WORK/cg/cg.%p" "$PG_BINDIR/postgres" -D "$CLUSTER_DIR/data" >"$WORK/valgrind.log" 2>&1 &
for _ in $(seq 120); do pg_isready -q && break; sleep 1; done
pg_isready -q || { tail -20 "$WORK/valgrind.log"; exit 1; }

# Waits until no process of the server writes a new count for a second (a
# backend writes its file as it exits, after its client has gone).
settle() {
    local n=-1 m
    while m=$(ls "$WORK/cg" | wc -l); [ "$m" != "$n" ]; do n=$m; sleep 1; done
}
# session <way> <pulls> -> the instruction count of its backend: the largest
# of the counts written since it started (the others are processes of the
# server that ended meanwhile, if any)
session() {
    local opts="" before out f best=0 n
    [ "$1" = direct ] && opts="-c role=bridgecore_app"
    psql -qX -d $DB -c "UPDATE bridgecore.sync_state SET last_event_id = 0, last_sync_time = NULL" >/dev/null
    settle
    before=$(ls "$WORK/cg")
    out=$(PGOPTIONS=$opts pgbench -n -M prepared --random-seed=7 -t "$2" -f "$WORK/$1.sql" $DB 2>&1) ||
        { echo "$out" >&2; exit 1; }
    grep -q "number of failed transactions: 0 " <<<"$out" || { echo "$out" >&2; exit 1; }
    for _ in $(seq 300); do
        [ -n "$(comm -13 <(echo "$before") <(ls "$WORK/cg"))" ] && break
        sleep 0.2
    done
    settle
    for f in $(comm -13 <(echo "$before") <(ls "$WORK/cg")); do
        n=$(sed -n 's/^totals: //p' "$WORK/cg/$f")
        [ -n "$n" ] && [ "$n" -gt "$best" ] && best=$n
    done
    [ "$best" -gt 0 ] || { echo "no count written for the $1 session" >&2; exit 1; }
    if [ -n "${PROFILE_DIR:-}" ] && [ "$2" = "$LARGE" ]; then
        for f in $(comm -13 <(echo "$before") <(ls "$WORK/cg")); do
            [ "$(sed -n 's/^totals: //p' "$WORK/cg/$f")" = "$best" ] && cp "$WORK/cg/$f" "$PROFILE_DIR/$1.out"
        done
    fi
    echo "$best"
}

declare -A per
for way in direct pipeline call_as; do
    small=$(session $way "$SMALL")
    large=$(session $way "$LARGE")
    per[$way]=$(( (large - small) / (LARGE - SMALL) ))
    printf '%-9s %10s instructions per pull   (sessions of %d and %d pulls: %s and %s)\n' \
        "$way" "${per[$way]}" "$SMALL" "$LARGE" "$small" "$large"
done
as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -w -t 120 -m fast stop >/dev/null || true
python3 - "${per[direct]}" "${per[pipeline]}" "${per[call_as]}" <<'PY'
import sys
d, p, c = map(int, sys.argv[1:])
print(f"the gateway's pipeline: {p / d:.2f}x the direct call (+{p - d:,} instructions per pull); "
      f"the former call_as: {c / d:.2f}x (+{c - d:,}); the pipeline saves {c - p:,} per pull ({(c - p) / c:.0%} of call_as)")
PY
