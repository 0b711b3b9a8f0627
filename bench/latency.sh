#!/usr/bin/env bash
# Benchmark: latency from a row becoming visible in the Odoo stand-in to the
# NOTIFY reaching a listener, with a 100 ms poll interval.  Reports p50, p90,
# p99 and max over N single-row changes made at random moments.
# Usage: bench/latency.sh [changes, default 300] [poll interval ms, default 100]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
N=${1:-300}
POLL_MS=${2:-100}

make -s >/dev/null && make -s install >/dev/null
STANDIN_PID=
trap '[ -n "$STANDIN_PID" ] && kill $STANDIN_PID; cluster_stop' EXIT
cluster_start "bridgecore.database = 'postgres'"
PORT=$(free_port)
python3 test/odoo_standin.py --port "$PORT" >/dev/null &
STANDIN_PID=$!
until curl -s -o /dev/null -XPOST "http://127.0.0.1:$PORT/control" -d '{"op":"stats"}'; do sleep 0.1; done
psql -q -c "CREATE EXTENSION bridgecore"
psql -q -c "SELECT count(*) FROM bridgecore.add_instance('lat', 'http://127.0.0.1:$PORT', 'odoo',
            'bridgecore', 'bc-api-key', poll_interval => '$POLL_MS milliseconds')" >/dev/null

/usr/bin/python3 - "$PORT" "$N" "$POLL_MS" <<'PY'
import json, random, select, sys, time, urllib.request
import psycopg2

port, n, poll_ms = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
conn = psycopg2.connect("")
conn.autocommit = True
conn.cursor().execute("LISTEN bridgecore_events")

def control(op, **kw):
    req = urllib.request.Request("http://127.0.0.1:%d/control" % port,
                                 data=json.dumps(dict(op=op, **kw)).encode(), method="POST")
    return json.loads(urllib.request.urlopen(req).read())

def wait_notify(deadline):
    while time.monotonic() < deadline:
        if select.select([conn], [], [], max(0, deadline - time.monotonic())) != ([], [], []):
            conn.poll()
            if conn.notifies:
                conn.notifies.clear()
                return True
    return False

# Warm up: the first poll logs in and learns the fields.
control("add_events", count=1)
assert wait_notify(time.monotonic() + 10), "no NOTIFY within 10 s"
lat = []
for i in range(n):
    # A random moment within the poll cycle.
    time.sleep(random.uniform(0, poll_ms / 1000.0))
    t0 = time.monotonic()
    control("add_events", count=1)        # returns once the row is visible
    if not wait_notify(t0 + 5):
        print("change %d: no NOTIFY within 5 s" % i)
        sys.exit(1)
    lat.append((time.monotonic() - t0) * 1000)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(round(p / 100.0 * len(lat))) - 1)]
print("visible-to-NOTIFY latency over %d changes, poll interval %d ms: "
      "p50 %.1f ms, p90 %.1f ms, p99 %.1f ms, max %.1f ms (target p99 < %d ms)"
      % (n, poll_ms, pct(50), pct(90), pct(99), lat[-1], poll_ms + 50))
PY
