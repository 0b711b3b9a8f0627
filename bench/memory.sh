#!/usr/bin/env bash
# Measurement: the poller's private memory (RssAnon from /proc) after a
# warm-up, after 100,000 more events, and after 1,000 failed requests of
# mixed kinds.  Flat numbers mean nothing leaks per event or per failure.
# Usage: bench/memory.sh [events, default 100000] [failures, default 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
EVENTS=${1:-100000}
FAILURES=${2:-1000}

make -s >/dev/null && make -s install >/dev/null
STANDIN_PID=
trap '[ -n "$STANDIN_PID" ] && kill $STANDIN_PID; cluster_stop' EXIT
cluster_start "bridgecore.database = 'postgres'" "bridgecore.max_backoff = '20ms'"
PORT=$(free_port)
python3 test/odoo_standin.py --port "$PORT" >/dev/null &
STANDIN_PID=$!
ctl() { curl -s -XPOST "http://127.0.0.1:$PORT/control" -d "$1"; }
until ctl '{"op":"stats"}' >/dev/null; do sleep 0.1; done
psql -q -c "CREATE EXTENSION bridgecore"
psql -q -c "SELECT count(*) FROM bridgecore.add_instance('mem', 'http://127.0.0.1:$PORT', 'odoo',
            'bridgecore', 'bc-api-key', poll_interval => '10 milliseconds')" >/dev/null

wait_ingested() {
    until [ "$(psql -Atc "SELECT events_ingested FROM bridgecore.instances")" -ge "$1" ]; do sleep 0.1; done
}
rss() {
    local pid
    pid=$(psql -Atc "SELECT pid FROM pg_stat_activity WHERE backend_type = 'bridgecore poller'")
    awk '/^RssAnon/ {print $2}' "/proc/$pid/status"
}

ctl '{"op":"bulk","count":10000}' >/dev/null
wait_ingested 10000
warm=$(rss)
echo "after a 10,000-event warm-up:          RssAnon $warm kB"

ctl "{\"op\":\"bulk\",\"count\":$EVENTS}" >/dev/null
wait_ingested $((10000 + EVENTS))
after_events=$(rss)
echo "after $EVENTS more events:            RssAnon $after_events kB"

per_kind=$((FAILURES / 5))
for kind in http500 garbage truncated rpc_error html; do
    ctl "{\"op\":\"fault\",\"kind\":\"$kind\",\"count\":$per_kind}" >/dev/null
done
ctl '{"op":"add_events","count":1}' >/dev/null
until [ "$(ctl '{"op":"stats"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["faults_pending"])')" = 0 ]; do
    sleep 0.2
done
wait_ingested $((10000 + EVENTS + 1))
after_failures=$(rss)
echo "after $FAILURES failed requests:          RssAnon $after_failures kB"
psql -Atc "SELECT 'instance state ' || state || ', last error: ' || coalesce(last_error, '-') FROM bridgecore.instances"
printf 'growth: %+d kB over %d events, %+d kB over %d failures\n' \
    $((after_events - warm)) "$EVENTS" $((after_failures - after_events)) "$FAILURES"
