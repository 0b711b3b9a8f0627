# Shell helpers of the gateway benchmarks (sourced after test/lib/cluster.sh,
# with a cluster started and SECRET set).

# start_gateway: the gateway against database postgres, in production mode,
# on a free port; sets URL (the database), PORT and GW_PID, and waits for
# /health.
start_gateway() {
    URL="postgresql:///postgres?host=$PGHOST&port=$PGPORT&user=postgres"
    PORT=$(free_port)
    (cd gateway && DATABASE_URL=$URL BRIDGECORE_JWT_SECRET=$SECRET PORT=$PORT GRAPHILE_ENV=production \
        exec node_modules/node/bin/node src/main.js) >/dev/null 2>&1 &
    GW_PID=$!
    for _ in $(seq 200); do curl -sf "http://127.0.0.1:$PORT/health" >/dev/null && break; sleep 0.1; done
}

# prepare_doorbell_stand: builds and installs the extension and the
# gateway's packages, sets SECRET and KEY, and stops the gateway, the
# stand-in and the cluster on exit.
prepare_doorbell_stand() {
    SECRET=a-benchmark-secret-of-at-least-32-chars
    KEY=bench-push-key-0123456789abcdef0123456789abcdef
    make -s >/dev/null && make -s install >/dev/null
    gateway/run --install >/dev/null
    GW_PID=
    SD_PID=
    trap '[ -n "$GW_PID" ] && kill "$GW_PID" 2>/dev/null; [ -n "$SD_PID" ] && kill "$SD_PID" 2>/dev/null; cluster_stop' EXIT
}

# start_doorbell_stand: the Odoo stand-in, the extension, the gateway, and
# instance "bell" polling the stand-in every 10 s, which the stand-in rings
# after each commit (push key KEY); sets SD_PORT, SD_PID, TOKEN (an app token
# of user 7) and what start_gateway sets.
start_doorbell_stand() {
    SD_PORT=$(free_port)
    python3 test/odoo_standin.py --port "$SD_PORT" --password worker-key >/dev/null 2>&1 &
    SD_PID=$!
    for _ in $(seq 150); do
        curl -s -o /dev/null -XPOST "http://127.0.0.1:$SD_PORT/control" -d '{"op":"stats"}' && break
        sleep 0.1
    done
    psql -qX -c "CREATE EXTENSION bridgecore" -c "ALTER DATABASE postgres SET bridgecore.jwt_secret = '$SECRET'"
    start_gateway
    psql -qX -c "SELECT count(*) FROM bridgecore.add_instance('bell', 'http://127.0.0.1:$SD_PORT', 'odoo', 'bridgecore',
                 'worker-key', poll_interval => '10 seconds')" \
         -c "SELECT count(*) FROM bridgecore.alter_instance('bell', push_key => '$KEY')" >/dev/null
    curl -s -o /dev/null -XPOST "http://127.0.0.1:$SD_PORT/control" \
        -d "{\"op\":\"set\",\"push_url\":\"http://127.0.0.1:$PORT/api/v1/webhooks/receive\",\"push_key\":\"$KEY\"}"
    TOKEN=$(psql -XAtq -c "SELECT bridgecore.issue_token('bridgecore_app', 7, 'bell', '1 day') ->> 'access_token'")
}
