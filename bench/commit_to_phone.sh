#!/usr/bin/env bash
# Benchmark: Odoo commit to phone through the doorbell. The Odoo stand-in
# pushes each new row to the gateway's POST /api/v1/webhooks/receive after
# the row is committed (as the auto_webhook addon's instant push does); the
# instance's poll_interval is 10 s, so a row comes in by the ring, not by a
# poll. For each of N single-row changes, made one at a time at random
# moments (50 to 150 ms apart), it times from the change's commit:
#   - the NOTIFY on bridgecore_events reaching a listener (node-postgres),
#   - the graphql-ws subscriber's syncAvailable message (NOTIFIED),
#   - and that subscriber's following REST pull (POST /api/v2/sync/pull)
#     answering with the row.
# The commit is the moment the stand-in made the row visible, by its clock
# (committed_at in its answer; the same machine's clock); the time from
# sending it the change is printed too, an upper bound.
# Also printed: the stand-in's ring count, the poller's rings, coalesced
# rings and fetches. Everything shares the machine.
# Usage: bench/commit_to_phone.sh [changes, default 200]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
N=${1:-200}
SECRET=a-benchmark-secret-of-at-least-32-chars
KEY=bench-push-key-0123456789abcdef0123456789abcdef

make -s >/dev/null && make -s install >/dev/null
gateway/run --install >/dev/null
GW_PID=
SD_PID=
trap '[ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null; [ -n "$SD_PID" ] && kill "$SD_PID" 2>/dev/null; cluster_stop' EXIT
# One device pulls after every change: the per-device rate limit is off.
cluster_start "bridgecore.database = 'postgres'" "bridgecore.rate_limit_sync_pull = 0"
SD_PORT=$(free_port)
python3 test/odoo_standin.py --port "$SD_PORT" --password worker-key >/dev/null 2>&1 &
SD_PID=$!
for _ in $(seq 150); do curl -s -o /dev/null -XPOST "http://127.0.0.1:$SD_PORT/control" -d '{"op":"stats"}' && break; sleep 0.1; done
psql -qX -c "CREATE EXTENSION bridgecore" -c "ALTER DATABASE postgres SET bridgecore.jwt_secret = '$SECRET'"
URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres"
PORT=$(free_port)
(cd gateway && DATABASE_URL=$URL BRIDGECORE_JWT_SECRET=$SECRET PORT=$PORT GRAPHILE_ENV=production \
    exec node_modules/node/bin/node src/main.js) >/dev/null 2>&1 &
GW_PID=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
psql -qX -c "SELECT count(*) FROM bridgecore.add_instance('bell', 'http://127.0.0.1:$SD_PORT', 'odoo', 'bridgecore',
             'worker-key', poll_interval => '10 seconds')" \
     -c "SELECT count(*) FROM bridgecore.alter_instance('bell', push_key => '$KEY')" >/dev/null
curl -s -o /dev/null -XPOST "http://127.0.0.1:$SD_PORT/control" \
    -d "{\"op\":\"set\",\"push_url\":\"http://127.0.0.1:$PORT/api/v1/webhooks/receive\",\"push_key\":\"$KEY\"}"
TOKEN=$(psql -XAtq -c "SELECT bridgecore.issue_token('bridgecore_app', 7, 'bell', '1 day') ->> 'access_token'")

TOKEN=$TOKEN GATEWAY_URL=http://127.0.0.1:$PORT STANDIN_URL=http://127.0.0.1:$SD_PORT N=$N DATABASE_URL=$URL \
    gateway/node_modules/node/bin/node bench/lib/commit_to_phone.mjs
psql -XAtq -c "SELECT format('poller: %s rings, %s coalesced, %s fetches', d.rings, d.coalesced, d.fetches)
               FROM bridgecore._doorbell_stats() d JOIN bridgecore.instance i ON i.id = d.instance_id WHERE i.name = 'bell'"
