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
. bench/lib/stand.sh
N=${1:-200}
prepare_doorbell_stand
# One device pulls after every change: the per-device rate limit is off.
cluster_start "bridgecore.database = 'postgres'" "bridgecore.rate_limit_sync_pull = 0"
start_doorbell_stand

TOKEN=$TOKEN GATEWAY_URL=http://127.0.0.1:$PORT STANDIN_URL=http://127.0.0.1:$SD_PORT N=$N DATABASE_URL=$URL \
    gateway/node_modules/node/bin/node bench/lib/commit_to_phone.mjs
psql -XAtq -c "SELECT format('poller: %s rings, %s coalesced, %s fetches', d.rings, d.coalesced, d.fetches)
               FROM bridgecore._doorbell_stats() d JOIN bridgecore.instance i ON i.id = d.instance_id WHERE i.name = 'bell'"
