#!/usr/bin/env bash
# Benchmark: many Odoo instances on one server. One Odoo stand-in process
# serves N databases (test/odoo_standin.py --databases N), each an instance
# of BridgeCore polling every 10 s; events go to the instances in turn, each
# rung at once with bridgecore.wake() (as the doorbell does), and each timed
# from the stand-in's commit to its NOTIFY (bench/lib/tenants.py).
#
# In the same run:
#   single  one instance alone, the baseline
#   many    all N instances enabled and polling
#   hung    the same, with a tenth of the instances' Odoo hung (every request
#           held until it times out, then the connection reset), rung too;
#           events go to the others
# Reports p50/p99/max of each and the ratio to the single instance, the
# background worker processes BridgeCore runs (its launcher and at most
# bridgecore.pollers pollers, each running many instances), and their memory
# (the sum of their resident sets, and of their proportional sets, which
# count shared pages once).
#
# Usage: bench/tenants.sh [instances, default 500] [events per run, default 1000]
#                         [events per second, default 20] [bridgecore.pollers, default 4]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

N=${1:-500}
EVENTS=${2:-1000}
RATE=${3:-20}
POLLERS=${4:-4}
HUNG=$((N / 10))

make -s >/dev/null && make -s install >/dev/null
STANDIN_PID=
trap '[ -n "$STANDIN_PID" ] && kill $STANDIN_PID 2>/dev/null; cluster_stop' EXIT
cluster_start "max_worker_processes = $((POLLERS + 8))" "bridgecore.max_instances = $((N + 8))" \
              "bridgecore.pollers = $POLLERS" "max_connections = 100" "bridgecore.rate_limit_sync_pull = 0"
SPORT=$(free_port)
python3 test/odoo_standin.py --port "$SPORT" --databases "$N" >/dev/null &
STANDIN_PID=$!
SURL=http://127.0.0.1:$SPORT
until curl -sf -o /dev/null -X POST -d '{"op": "stats"}' "$SURL/control"; do sleep 0.1; done
DSN="host=$PGHOST port=$PGPORT user=postgres dbname=postgres"

psql -qX -v ON_ERROR_STOP=1 -c "CREATE EXTENSION bridgecore" \
     -c "SELECT count(*) FROM bridgecore.add_instance('t1', '$SURL', 'odoo_1', 'bridgecore', 'bc-api-key', poll_interval => '10 s')" >/dev/null

# wait_until <seconds> <what> <SQL that answers t when done>
wait_until() {
    local deadline=$((SECONDS + $1))
    until [ "$(psql -XAtq -c "$3")" = t ]; do
        [ $SECONDS -lt $deadline ] || { echo "timed out waiting for $2" >&2; exit 1; }
        sleep 0.2
    done
}
# The memory of BridgeCore's processes: "<processes> <RSS MiB> <PSS MiB>".
memory() {
    local pids rss=0 pss=0 n=0 p
    pids=$(psql -XAtq -c "SELECT pid FROM pg_stat_activity WHERE backend_type IN ('bridgecore poller', 'bridgecore launcher')")
    for p in $pids; do
        [ -r /proc/$p/smaps_rollup ] || continue
        n=$((n + 1))
        rss=$((rss + $(awk '/^Rss:/ {print $2}' /proc/$p/smaps_rollup)))
        pss=$((pss + $(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup)))
    done
    echo "$n $((rss / 1024)) $((pss / 1024))"
}
run() {  # run <label> <instance=db ...>
    local label=$1; shift
    /usr/bin/python3 bench/lib/tenants.py "$DSN" "$SURL" "$EVENTS" "$RATE" "$@" | sed "s/^/$label /"
}

wait_until 60 "the first instance's first poll" \
    "SELECT last_success_at IS NOT NULL FROM bridgecore.instances WHERE name = 't1'"
SINGLE=$(run single t1=odoo_1)
echo "$SINGLE"

psql -qX -v ON_ERROR_STOP=1 -c "SELECT count(*) FROM generate_series(2, $N) g,
    LATERAL bridgecore.add_instance('t' || g, '$SURL', 'odoo_' || g, 'bridgecore', 'bc-api-key', poll_interval => '10 s')" >/dev/null
t0=$SECONDS
wait_until 300 "every instance's first poll" \
    "SELECT count(*) FILTER (WHERE last_success_at IS NOT NULL) = $N FROM bridgecore.instances"
STARTUP=$((SECONDS - t0))
read -r PROCS RSS PSS <<<"$(memory)"
ARGS=()
for i in $(seq 1 "$N"); do ARGS+=("t$i=odoo_$i"); done
MANY=$(run many "${ARGS[@]}")
echo "$MANY"

# A tenth of the instances hang: set, then rung, so that their pollers wait
# in a request while the others are measured.
for i in $(seq 1 "$HUNG"); do
    curl -sf -o /dev/null -X POST -d "{\"op\": \"set\", \"db\": \"odoo_$i\", \"hang\": 600}" "$SURL/control"
done
psql -qX -c "SELECT count(*) FROM generate_series(1, $HUNG) g, LATERAL bridgecore.wake('t' || g)" >/dev/null
HUNG_RUN=$(run hung "${ARGS[@]:$HUNG}")
echo "$HUNG_RUN"
read -r HPROCS HRSS HPSS <<<"$(memory)"

python3 - "$SINGLE" "$MANY" "$HUNG_RUN" <<PY
import json, sys
runs = {l.split(" ", 1)[0]: json.loads(l.split(" ", 1)[1]) for l in sys.argv[1:]}
s = runs["single"]
for name in ("single", "many", "hung"):
    r = runs[name]
    print("%-6s %5d events, %d lost: NOTIFY p50 %.1f ms, p99 %.1f ms, max %.1f ms; p99 %.2fx the single instance's"
          % (name, r["events"], r["lost"], r["p50"], r["p99"], r["max"], r["p99"] / s["p99"]))
print("$N instances ($HUNG hung in the last run), $EVENTS events per run at $RATE/s, bridgecore.pollers = $POLLERS; every first poll done $STARTUP s after adding them")
print("BridgeCore's processes: $PROCS with every instance polling (RSS $RSS MiB, PSS $PSS MiB), $HPROCS with a tenth hung (RSS $HRSS MiB, PSS $HPSS MiB)")
PY
