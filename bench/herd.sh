#!/usr/bin/env bash
# Benchmark: the herd. S graphql-ws subscribers on one gateway, each a
# device of its own; the Odoo stand-in rings the doorbell after each of R
# single-row changes (poll_interval 10 s), and every subscriber, on its
# syncAvailable message, pulls by REST (POST /api/v2/sync/pull). For each
# ring: the time from the stand-in's commit to the last device's pull
# answering with the row, p50/p99 over the rings; and the CPU time of the
# database server's processes (every backend, the poller) per ring.
# Before the rings every device has pulled once, so each ring's pulls are
# incremental pulls of one event. Rate limits are off. Also: what the
# active backends wait on during the rings (pg_stat_activity samples).
# Usage: bench/herd.sh [subscribers, default 1000] [rings, default 50]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
. bench/lib/stand.sh
S=${1:-1000}
R=${2:-50}
prepare_doorbell_stand
cluster_start "bridgecore.database = 'postgres'" "max_connections = 100" \
    "bridgecore.rate_limit_sync_pull = 0" "bridgecore.rate_limit_new_devices = 0" \
    "bridgecore.rate_limit_per_user_factor = 0"
start_doorbell_stand
POSTMASTER_PID=$(head -1 "$CLUSTER_DIR/data/postmaster.pid")

TOKEN=$TOKEN GATEWAY_URL=http://127.0.0.1:$PORT STANDIN_URL=http://127.0.0.1:$SD_PORT S=$S R=$R \
    POSTMASTER_PID=$POSTMASTER_PID GATEWAY_PID=$GW_PID DATABASE_URL=$URL \
    gateway/node_modules/node/bin/node bench/lib/herd.mjs
