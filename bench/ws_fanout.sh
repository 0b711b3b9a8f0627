#!/usr/bin/env bash
# Benchmark: WebSocket fan-out of the gateway. S concurrent graphql-ws
# subscribers of syncAvailable (every field, as apps send it) on one gateway
# (one LISTEN connection), then N ingests one after another; for each, the
# time from the ingest's commit (the moment bridgecore.ingest returned to
# its client) and from the moment it was sent, to the message's arrival at
# the last subscriber (and at the first). Reports
# p50/p99/max over the ingests and the gateway's resident memory before the
# subscribers and with all of them, and the CPU time the gateway and the
# clients spend per ingest. Clients, gateway and server share the machine.
# Also, in the same run, the same subscribers (the same graphql-ws client
# code) on a bare ws server that speaks graphql-ws (no GraphQL execution, no
# database) and writes the gateway's frames: the machine's floor.
# Usage: bench/ws_fanout.sh [subscribers, default 1000] [ingests, default 50] [form]
#   form: plain (default; the document apps send, which the gateway answers
#   without its GraphQL executor per message) or executor (the same fields
#   through a fragment, run by PostGraphile's executor)
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
. bench/lib/stand.sh
S=${1:-1000}
N=${2:-50}
FORM=${3:-plain}
SECRET=a-benchmark-secret-of-at-least-32-chars

make -s >/dev/null && make -s install >/dev/null
gateway/run --install >/dev/null
GW_PID=
trap '[ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null; cluster_stop' EXIT
cluster_start "max_connections = 100"
psql -qX -c "CREATE EXTENSION bridgecore" -c "ALTER DATABASE postgres SET bridgecore.jwt_secret = '$SECRET'"
psql -qX -c "SELECT count(*) FROM bridgecore.add_instance('acme', 'http://127.0.0.1:9', 'odoo', 'bot', 'worker-key', enabled => false)" >/dev/null
TOKEN=$(psql -XAtq -c "SELECT bridgecore.issue_token('bridgecore_app', 7, 'acme', '1 day') ->> 'access_token'")
start_gateway

FORM=$FORM TOKEN=$TOKEN GATEWAY_URL=http://127.0.0.1:$PORT GATEWAY_PID=$GW_PID S=$S N=$N DATABASE_URL=$URL \
    gateway/node_modules/node/bin/node bench/lib/ws_fanout.mjs
