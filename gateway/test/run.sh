#!/usr/bin/env bash
# Runs the gateway's tests (gateway/test/*.test.js, node's test runner with
# Node 22 from node_modules) against the cluster of the libpq environment
# (PGHOST, PGPORT, PGUSER): creates the database bridgecore_gateway_test with
# the extension, starts the Odoo stand-in and the gateway (gateway/run), and
# prints the runner's TAP.  Drops the database and stops both at the end.
set -u
export PGOPTIONS="${PGOPTIONS:-} -c client_min_messages=warning"
cd "$(dirname "$0")/.."
db=bridgecore_gateway_test
secret=a-gateway-test-secret-of-32-characters
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
standin_pid= gateway_pid=
cleanup() {
    [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null
    [ -n "$standin_pid" ] && kill "$standin_pid" 2>/dev/null && wait "$standin_pid" 2>/dev/null
    psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "DROP DATABASE IF EXISTS ${db}_empty" >/dev/null 2>&1
}
trap cleanup EXIT

# Dependencies first (npm ci on first use), so that the gateway starts fast.
./run --install >/dev/null 2>&1 || { echo "not ok - the gateway's dependencies could not be installed"; exit 1; }

psql -qX -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db" \
     -c "DROP DATABASE IF EXISTS ${db}_empty" -c "CREATE DATABASE ${db}_empty" >/dev/null || exit 1
psql -qX -d $db -c "CREATE EXTENSION bridgecore" \
     -c "ALTER DATABASE $db SET bridgecore.jwt_secret = '$secret'" >/dev/null || exit 1

standin_port=$(free_port)
python3 ../test/odoo_standin.py --port "$standin_port" --password worker-key >/dev/null 2>&1 &
standin_pid=$!
gateway_port=$(free_port)
url="postgresql:///$db?host=$PGHOST&port=$PGPORT&user=${PGUSER:-postgres}"
DATABASE_URL=$url BRIDGECORE_JWT_SECRET=$secret PORT=$gateway_port ./run >gateway.log 2>&1 &
gateway_pid=$!
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$gateway_port/health" >/dev/null && break
    kill -0 "$gateway_pid" 2>/dev/null || break
    sleep 0.1
done

GATEWAY_URL=http://127.0.0.1:$gateway_port STANDIN_URL=http://127.0.0.1:$standin_port \
DATABASE_URL=$url EMPTY_DATABASE_URL="postgresql:///${db}_empty?host=$PGHOST&port=$PGPORT&user=${PGUSER:-postgres}" \
BRIDGECORE_JWT_SECRET=$secret \
    node_modules/node/bin/node --test --test-reporter=tap --test-concurrency=1 test/*.test.js
rc=$?
if [ $rc -ne 0 ]; then echo "# gateway log:"; sed 's/^/#   /' gateway.log; fi
rm -f gateway.log
exit $rc
