#!/usr/bin/env bash
# Benchmark: what keeping bridgecore.partition_summary costs ingestion, in
# CPU instructions per batch (callgrind), which unlike time do not depend on
# what else the machine runs.
#
# A single-user backend (postgres --single) under valgrind --tool=callgrind
# stores BATCHES batches of BATCH records through bridgecore.ingest() (the
# worker's store path, one transaction each, commit included) with the
# summary, then BATCHES more without it (the table renamed away: the store
# path prepares its insert without the summary, as for a 0.3.0 schema), each
# batch followed by SELECT pg_sleep(0), where callgrind dumps its counts
# (--dump-before=pg_sleep), so each batch gets its own count.  Warm-up
# batches on both sides first (plans, partitions, caches).
#
# Usage: bench/ingest_summary_callgrind.sh [batches, default 20] [batch size, default 500]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
BATCHES=${1:-20}
BATCH=${2:-500}

make -s >/dev/null && make -s install >/dev/null
trap 'cluster_stop; rm -rf "$WORK"' EXIT
WORK=$(mktemp -d)
chmod 755 "$WORK"
cluster_start "bridgecore.maintenance_interval = 0" "bridgecore.partition_size = 1000000"
psql -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION bridgecore;
SELECT name FROM bridgecore.add_instance('bench', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key',
                                         enabled => false) \g /dev/null
CREATE SCHEMA bench;
CREATE SEQUENCE bench.odoo_id;
CREATE FUNCTION bench.batch() RETURNS void LANGUAGE plpgsql AS \$\$
DECLARE
    first bigint := nextval('bench.odoo_id');
BEGIN
    PERFORM setval('bench.odoo_id', first + $BATCH - 1);
    PERFORM bridgecore.ingest('bench', (
        SELECT json_agg(json_build_object(
                   'id', g, 'event', 'write', 'record_id', 1 + g % 50000,
                   'model', CASE WHEN g % 100 < 40 THEN 'mail.message' WHEN g % 100 < 60 THEN 'sale.order.line'
                                 WHEN g % 100 < 75 THEN 'sale.order' WHEN g % 100 < 85 THEN 'res.partner'
                                 WHEN g % 100 < 90 THEN 'account.move' WHEN g % 100 < 95 THEN 'product.product'
                                 ELSE 'stock.move' END,
                   'timestamp', '2025-11-16 10:00:00',
                   'payload', json_build_object('name', 'Record ' || g, 'amount', g % 1000)))
          FROM generate_series(first, first + $BATCH - 1) g));
END
\$\$;
SELECT bench.batch() FROM generate_series(1, 10) \g /dev/null
SQL
cluster_stop_keep() { as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -w -t 60 -m fast stop >/dev/null; }
cluster_stop_keep

{
    for side in with without; do
        if [ "$side" = without ]; then
            printf 'ALTER TABLE bridgecore.partition_summary RENAME TO partition_summary_off;\n\n'
        fi
        for _ in 1 2 3 4 5; do printf 'SELECT bench.batch();\n\n'; done
        printf 'SELECT pg_sleep(0);\n\n'
        for _ in $(seq 1 "$BATCHES"); do printf 'SELECT bench.batch();\n\nSELECT pg_sleep(0);\n\n'; done
    done
} >"$WORK/session.sql"
mkdir "$WORK/cg"
[ "$(id -u)" = 0 ] && chown -R postgres: "$WORK"
as_cluster_owner valgrind --tool=callgrind --dump-before=pg_sleep --dump-line=no \
    --callgrind-out-file="$WORK/cg/cg" "$PG_BINDIR/postgres" --single -j -D "$CLUSTER_DIR/data" postgres \
    <"$WORK/session.sql" >"$WORK/stdout" 2>"$WORK/stderr"
grep -q ERROR "$WORK/stderr" && { grep -B2 -A5 ERROR "$WORK/stderr" >&2; exit 1; }
# Dumps: 1 (start-up and warm-up), then BATCHES batches with the summary
# (dumps 2 .. BATCHES+1), the rename and warm-up (BATCHES+2), BATCHES without.
python3 - "$WORK/cg" "$BATCHES" "$BATCH" <<'PY'
import os, sys, statistics
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ir(k):
    for line in open(os.path.join(d, "cg.%d" % k)):
        if line.startswith("totals: "):
            return int(line.split()[1])
with_s = [ir(k) for k in range(3, n + 2)]          # the first measured batch of each side left out
without = [ir(k) for k in range(n + 4, 2 * n + 3)]
w, wo = statistics.median(with_s), statistics.median(without)
print("batches of %d records, median of %d batches each side, instructions per batch (commit included)" % (size, n - 1))
print("%-22s %14d Ir  (%d per event)" % ("without the summary", wo, wo / size))
print("%-22s %14d Ir  (%d per event)" % ("with the summary", w, w / size))
print("cost of the summary: %+d Ir per batch (%+.2f %%), %+d per event" % (w - wo, (w / wo - 1) * 100, (w - wo) / size))
PY
