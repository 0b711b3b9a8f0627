#!/usr/bin/env bash
# Benchmark: REST POST /api/v2/sync/pull through the gateway against the same
# pulls as direct SQL calls, in throughput, same run, same clients.
#
# A log of 50,000 events (sale.order), 2,000 devices of one user; each
# client makes the same fixed sequence of pulls of 100 events on both sides
# (bench/lib/gateway_pull.mjs, a PRNG seeded per client and round):
#   rest: HTTP/1.1 keep-alive, one connection per client, Bearer token;
#   sql:  node-postgres, one connection per client acting as
#         bridgecore_app, a prepared SELECT bridgecore.sync_pull(...).
# Both load generators are the same Node.js process kind on the same
# machine. Every device has a sync state from the start; before each run
# every cursor goes back to the start of the log, so both sides do the same
# work, and each round checks that both delivered the same number of
# events. The extension's rate limits are off. Each run's CPU per pull is
# also printed by part: the server, the gateway, the load generator.
#
# The floor: the same REST pulls through bench/lib/floor_gateway.mjs, the
# least a Node.js HTTP hop in front of sync_pull can cost (node:http, one
# prepared sync_pull as bridgecore_app; no token check, no routing): what
# any gateway in Node.js pays on this machine before its own work. Its ratio
# to the SQL side is the most a gateway could reach here.
#
# A round runs each side once (sql, rest, floor), the order rotating between
# rounds. The result is the median of the per-round ratios (rest pulls/s /
# sql pulls/s, and floor / sql) with their spread: absolute figures on a
# shared machine are noise. Each
# run also counts the CPU time per pull of everything its side uses (the
# server's processes, the gateway's for rest, the load generator's): on a
# machine others share, the ratio of CPU per pull (sql / rest) is the
# steadier figure, and is the throughput ratio where CPU is the limit.
#
# Usage: bench/gateway_pull.sh [pulls per client and run, default 500] [rounds, default 6] [clients, default 4]
# GATEWAY_NODE_OPTIONS: NODE_OPTIONS for the gateway alone (e.g. --max-semi-space-size=64).
# CLIENT: the load generators' clients, the same kind on both sides.
#   minimal (the default): bare sockets speaking the protocol by hand
#           (bench/lib/gateway_pull.mjs), HTTP/1.1 on the REST side, the
#           PostgreSQL protocol on the SQL side: an app's client runs on the
#           phone, not on the two cores the server and the gateway share, so
#           the less of them it takes, the more the ratio says of the edge.
#   node:   node:http's client and node-postgres, the usual Node.js clients,
#           which cost more per pull than the gateway itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export CLIENT=${CLIENT:-minimal}
case "$CLIENT" in
    minimal|node) ;;
    *) echo "CLIENT must be minimal or node, got \"$CLIENT\"" >&2; exit 2 ;;
esac
. test/lib/cluster.sh
. bench/lib/gateway_data.sh

PULLS=${1:-500}
ROUNDS=${2:-6}
CLIENTS=${3:-4}
EVENTS=50000
DEVICES=2000
SECRET=a-benchmark-secret-of-32-characters
DB=bench_gateway
NODE=gateway/node_modules/node/bin/node

make -s >/dev/null && make -s install >/dev/null
gateway/run --install >/dev/null
GATEWAY_PID= FLOOR_PID=
LOG=$(mktemp)
cleanup() {
    [ -n "$GATEWAY_PID" ] && kill "$GATEWAY_PID" 2>/dev/null && wait "$GATEWAY_PID" 2>/dev/null || true
    [ -n "$FLOOR_PID" ] && kill "$FLOOR_PID" 2>/dev/null && wait "$FLOOR_PID" 2>/dev/null || true
    rm -f "$LOG"
    cluster_stop
}
trap cleanup EXIT
cluster_start "max_connections = 100" "shared_buffers = '256MB'"

psql -qX -v ON_ERROR_STOP=1 -d postgres <<SQL >/dev/null
ALTER SYSTEM SET bridgecore.rate_limit_sync_pull = 0;
ALTER SYSTEM SET bridgecore.rate_limit_new_devices = 0;
ALTER SYSTEM SET bridgecore.rate_limit_per_user_factor = 0;
SELECT pg_reload_conf();
SQL
# Every device has its state row from the start, as devices in use do:
# before each run every cursor goes back to the start of the log, so both
# sides do the same work, and the table's statistics are fresh. (Runs that
# began from an empty, just vacuumed table measured sequential scans of it:
# a plan made while it was empty stays until the next ANALYZE.)
gateway_bench_data $DB $SECRET $EVENTS $DEVICES
TOKEN=$(psql -qXAt -d $DB -c "SELECT bridgecore.issue_token('bridgecore_app', 1, 'bench', '1 day') ->> 'access_token'")
export TOKEN

PORT=$(free_port)
FLOOR_PORT=$(free_port)
REST_URL=http://127.0.0.1:$PORT
FLOOR_URL=http://127.0.0.1:$FLOOR_PORT
export GATEWAY_URL=$REST_URL
export DATABASE_URL="postgresql:///$DB?host=$PGHOST&port=$PGPORT&user=postgres"
NODE_OPTIONS=${GATEWAY_NODE_OPTIONS:-} DATABASE_URL=$DATABASE_URL BRIDGECORE_JWT_SECRET=$SECRET PORT=$PORT gateway/run >"$LOG" 2>&1 &
GATEWAY_PID=$!
until curl -sf -o /dev/null "$GATEWAY_URL/health"; do
    kill -0 "$GATEWAY_PID" 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 0.2
done
DATABASE_URL=$DATABASE_URL PORT=$FLOOR_PORT "$NODE" bench/lib/floor_gateway.mjs >>"$LOG" 2>&1 &
FLOOR_PID=$!
until grep -q '^listening' "$LOG"; do
    kill -0 "$FLOOR_PID" 2>/dev/null || { cat "$LOG"; exit 1; }
    sleep 0.2
done

reset() { psql -qX -d $DB -c "UPDATE bridgecore.sync_state SET last_event_id = 0, last_sync_time = NULL" -c "VACUUM ANALYZE bridgecore.sync_state" >/dev/null; }
# CPU time (user + system, clock ticks) used by the gateway process, and by
# the server: the postmaster's reaped children (backends that ended) plus
# its live children.
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
server_ticks() {
    local pm
    pm=$(head -1 "$CLUSTER_DIR/data/postmaster.pid")
    { awk '{ print $16 + $17 }' "/proc/$pm/stat"
      for c in $(pgrep -P "$pm"); do awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null; done; } |
        awk '{ s += $1 } END { print s }'
}
TICK_MS=$(awk -v t="$(getconf CLK_TCK)" 'BEGIN { print 1000 / t }')
# run <side> <seed> -> "pulls/s events CPU-ms-per-pull gateway server load": CPU
# per pull of everything the side uses (server, the gateway or the floor's
# process for rest and floor, the load generator), then each part's.
run() {
    local out g0 g1 s0 s1 pid=$GATEWAY_PID url=$REST_URL gen=rest
    [ "$1" = floor ] && pid=$FLOOR_PID url=$FLOOR_URL
    [ "$1" = sql ] && gen=sql
    reset
    g0=$(proc_ticks "$pid") s0=$(server_ticks)
    out=$(GATEWAY_URL=$url "$NODE" bench/lib/gateway_pull.mjs "$gen" "$CLIENTS" "$PULLS" "$DEVICES" "$2") || exit 1
    g1=$(proc_ticks "$pid") s1=$(server_ticks)
    [ "$1" = sql ] && g1=$g0
    python3 -c 'import json, sys; d = json.loads(sys.argv[1]); g, s, tick = int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
n = d["pulls"]
print("%.1f %d %.3f %.3f %.3f %.3f" % (d["pps"], d["events"], ((g + s) * tick + d["client_cpu_ms"]) / n, g * tick / n, s * tick / n, d["client_cpu_ms"] / n))' \
        "$out" $((g1 - g0)) $((s1 - s0)) "$TICK_MS"
}

# The gateway and the floor are long-running processes: a few runs first,
# so that their JavaScript is compiled (a fresh gateway used twice the CPU
# per pull).
echo "warming up..."
for w in 1 2 3; do run rest $((990 + w)) >/dev/null; run floor $((990 + w)) >/dev/null; done
run sql 999 >/dev/null

ratios=() floor_ratios=() rest_pps=() sql_pps=() floor_pps=() gw_cpu=() floor_gw_cpu=() cpu_ratios=() floor_cpu_ratios=() rest_cpu=() sql_cpu=() floor_cpu=()
sides=(sql rest floor)
for r in $(seq 1 "$ROUNDS"); do
    for k in 0 1 2; do
        side=${sides[$(((r - 1 + k) % 3))]}
        read -r pps events cpu gcpu scpu ccpu < <(run "$side" "$r")
        case $side in
            rest) rp=$pps re=$events rc=$cpu gc=$gcpu rs=$scpu rl=$ccpu ;;
            floor) fp=$pps fe=$events fc=$cpu fg=$gcpu fs=$scpu fl=$ccpu ;;
            sql) sp=$pps se=$events sc=$cpu ss=$scpu sl=$ccpu ;;
        esac
    done
    [ "$re" = "$se" ] && [ "$fe" = "$se" ] || { echo "round $r: rest delivered $re events, floor $fe, sql $se" >&2; exit 1; }
    ratio=$(awk -v a="$rp" -v b="$sp" 'BEGIN { printf "%.3f", a / b }')
    cpu_ratio=$(awk -v a="$sc" -v b="$rc" 'BEGIN { printf "%.3f", a / b }')
    floor_ratio=$(awk -v a="$fp" -v b="$sp" 'BEGIN { printf "%.3f", a / b }')
    floor_cpu_ratio=$(awk -v a="$sc" -v b="$fc" 'BEGIN { printf "%.3f", a / b }')
    ratios+=("$ratio") rest_pps+=("$rp") sql_pps+=("$sp") gw_cpu+=("$gc") floor_pps+=("$fp") floor_gw_cpu+=("$fg")
    cpu_ratios+=("$cpu_ratio") rest_cpu+=("$rc") sql_cpu+=("$sc") floor_ratios+=("$floor_ratio") floor_cpu_ratios+=("$floor_cpu_ratio") floor_cpu+=("$fc")
    printf 'round %2d (each side %d pulls, %d events):\n' "$r" $((PULLS * CLIENTS)) "$re"
    printf '  sql   %6.1f pulls/s %s ms CPU/pull (server %s, load %s)\n' "$sp" "$sc" "$ss" "$sl"
    printf '  rest  %6.1f pulls/s %s ms CPU/pull (server %s, gateway %s, load %s)   ratio %s, by CPU %s\n' \
        "$rp" "$rc" "$rs" "$gc" "$rl" "$ratio" "$cpu_ratio"
    printf '  floor %6.1f pulls/s %s ms CPU/pull (server %s, floor %s, load %s)   ratio %s, by CPU %s\n' \
        "$fp" "$fc" "$fs" "$fg" "$fl" "$floor_ratio" "$floor_cpu_ratio"
done

stats() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { printf "%.10g %.10g %.10g\n", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2, a[1], a[NR] }'
}
read -r rm rmin rmax < <(stats "${ratios[@]}")
read -r fm fmin fmax < <(stats "${floor_ratios[@]}")
read -r sm smin smax < <(stats "${sql_pps[@]}")
read -r gm gmin gmax < <(stats "${rest_pps[@]}")
read -r pm pmin pmax < <(stats "${floor_pps[@]}")
read -r cm cmin cmax < <(stats "${gw_cpu[@]}")
read -r fgm _ _ < <(stats "${floor_gw_cpu[@]}")
read -r qm qmin qmax < <(stats "${cpu_ratios[@]}")
read -r fqm fqmin fqmax < <(stats "${floor_cpu_ratios[@]}")
read -r scm _ _ < <(stats "${sql_cpu[@]}")
read -r rcm _ _ < <(stats "${rest_cpu[@]}")
read -r fcm _ _ < <(stats "${floor_cpu[@]}")
[ "$CLIENT" = node ] && echo "clients: node (node:http, node-postgres)" || echo "clients: minimal (bare sockets)"
printf 'sql:   median %.1f pulls/s (min %.1f, max %.1f)\n' "$sm" "$smin" "$smax"
printf 'rest:  median %.1f pulls/s (min %.1f, max %.1f)\n' "$gm" "$gmin" "$gmax"
printf 'floor: median %.1f pulls/s (min %.1f, max %.1f)\n' "$pm" "$pmin" "$pmax"
printf 'CPU per pull (server + load generator, + the gateway or the floor process): sql median %.3f ms, rest median %.3f ms, of which the gateway process %.3f ms (min %.3f, max %.3f); floor median %.3f ms, of which its process %.3f ms\n' \
    "$scm" "$rcm" "$cm" "$cmin" "$cmax" "$fcm" "$fgm"
printf 'by CPU, sql CPU per pull / rest CPU per pull: %.2fx (median; per-round min %.2fx, max %.2fx); the floor %.2fx (min %.2fx, max %.2fx): the throughput ratio when the CPU is the limit and nothing else runs\n' \
    "$qm" "$qmin" "$qmax" "$fqm" "$fqmin" "$fqmax"
printf 'the floor (a bare Node.js HTTP hop to the same prepared sync_pull) / direct SQL: %.2fx (median; per-round min %.2fx, max %.2fx): the ceiling of a Node.js gateway with these clients on this machine\n' \
    "$fm" "$fmin" "$fmax"
printf 'REST through the gateway / direct SQL: %.2fx (median of %d rounds; per-round min %.2fx, max %.2fx; %d clients, %d pulls per run of 100 events, %d events, %d devices)\n' \
    "$rm" "$ROUNDS" "$rmin" "$rmax" "$CLIENTS" $((PULLS * CLIENTS)) $EVENTS $DEVICES
