#!/usr/bin/env bash
# Benchmark: what verifying every token in the database (bridgecore.verify_token)
# costs the gateway per request, against the gateway of an earlier commit that
# verified tokens in JavaScript (HMAC in the Node process), same cluster, same
# clients, alternating runs.  Routes: GET /api/v2/sync/state (REST: the token
# is verified in the first round trip of the request's transaction) and
# POST /graphql { __typename } (GraphQL: one round trip of its own before
# PostGraphile's).  Also the database side alone: a round trip of
# verify_token against one of SELECT 1.
# Usage: bench/gateway_auth.sh [requests per run, default 2000] [rounds, default 3]
#        BASE=<commit> (default 296940a, the last with the JavaScript verifier)
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
N=${1:-2000}
ROUNDS=${2:-3}
BASE=${BASE:-296940a}
SECRET=a-benchmark-secret-of-at-least-32-chars

make -s >/dev/null && make -s install >/dev/null
gateway/run --install >/dev/null
old=$(mktemp -d "${TMPDIR:-/tmp}/bridgecore-gw-old.XXXXXX")
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; cluster_stop; rm -rf "$old"' EXIT
git archive "$BASE" gateway | tar -x -C "$old"
ln -s "$PWD/gateway/node_modules" "$old/gateway/node_modules"

cluster_start "max_connections = 100" "track_functions = 'all'" "bridgecore.rate_limit_sync_state = 0"
psql -qX -c "CREATE EXTENSION bridgecore" -c "ALTER DATABASE postgres SET bridgecore.jwt_secret = '$SECRET'"
psql -qX -c "SELECT count(*) FROM bridgecore.add_instance('acme', 'http://127.0.0.1:9', 'odoo', 'bot', 'worker-key', enabled => false)" >/dev/null
psql -qX -c "SELECT bridgecore.ingest('acme', '[{\"id\":1,\"model\":\"sale.order\",\"record_id\":1,\"event\":\"create\",\"timestamp\":\"2025-11-16 10:30:00\"}]')" >/dev/null
TOKEN=$(psql -XAtq -c "SELECT bridgecore.issue_token('bridgecore_app', 7, 'acme', '1 day') ->> 'access_token'")
psql -XAtq -c "SELECT bridgecore.sync_pull(7, 'bench-phone', 'sales_app')" >/dev/null
URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres"

NODE=$PWD/gateway/node_modules/node/bin/node
start() {   # dir port
    (cd "$1" && DATABASE_URL=$URL BRIDGECORE_JWT_SECRET=$SECRET PORT=$2 GRAPHILE_ENV=production \
        exec "$NODE" src/main.js) >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$2/health" >/dev/null && return; sleep 0.1; done
    echo "the gateway in $1 did not start" >&2; exit 1
}
OLD_PORT=$(free_port); start "$old/gateway" "$OLD_PORT"
NEW_PORT=$(free_port); start "$PWD/gateway" "$NEW_PORT"

TOKEN=$TOKEN OLD=http://127.0.0.1:$OLD_PORT NEW=http://127.0.0.1:$NEW_PORT N=$N ROUNDS=$ROUNDS DATABASE_URL=$URL \
    gateway/node_modules/node/bin/node bench/lib/gateway_auth.mjs
