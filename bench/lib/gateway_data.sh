# The data of the gateway's benchmarks (bench/gateway_pull.sh,
# bench/gateway_callgrind.sh), sourced after cluster_start:
#
#   gateway_bench_data <database> <jwt secret> <events> <devices>
#
# creates the database with the extension and the secret, one disabled
# instance "bench", <events> sale.order events (a multiple of 5,000) and
# <devices> devices of user 1 that have a sync state (dev-1 ... dev-N, each
# having pulled one event, as devices in use), then VACUUM ANALYZE.
gateway_bench_data() {
    local db=$1 secret=$2 events=$3 devices=$4
    psql -qX -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db" >/dev/null
    psql -qX -v ON_ERROR_STOP=1 -d "$db" <<SQL >/dev/null
CREATE EXTENSION bridgecore;
ALTER DATABASE $db SET bridgecore.jwt_secret = '$secret';
SELECT name FROM bridgecore.add_instance('bench', 'http://127.0.0.1:9', 'odoo', 'bot', 'bench-secret', enabled => false);
SELECT bridgecore.ingest('bench', (SELECT json_agg(json_build_object('id', g, 'model', 'sale.order', 'record_id', g,
                                                                    'event', 'write', 'timestamp', '2025-11-16 10:30:00'))
                                     FROM generate_series(b * 5000 + 1, b * 5000 + 5000) g))
  FROM generate_series(0, $events / 5000 - 1) b;
SELECT count(bridgecore.sync_pull(1, 'dev-' || d, 'sales_app', 1)) FROM generate_series(1, $devices) d;
VACUUM ANALYZE;
SQL
}
