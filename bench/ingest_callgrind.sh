#!/usr/bin/env bash
# Benchmark: the store path of a batch against COPY of the same rows, in CPU
# instructions (callgrind), which unlike time do not depend on what else the
# machine runs.
#
# A single-user backend (postgres --single) under valgrind --tool=callgrind
# alternates: one batch of BATCH records stored through bridgecore.ingest()
# (the worker's store path: decode, exactly-once check, insert with the
# generated doc, partition_summary, NOTIFYs; one transaction, commit
# included), then COPY of BATCH rows of the same shape into the same table
# (doc computed there too).  Each statement is followed by SELECT
# pg_sleep(0), where callgrind dumps its counts (--dump-before=pg_sleep).
# The records are rendered like the Odoo stand-in's bulk rows, before the
# measured session.  What the worker adds around it (HTTP, the cursor
# update) is not counted here: bench/ingest.sh measures the whole.
#
# Usage: bench/ingest_callgrind.sh [batches, default 15] [batch size, default 500]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
BATCHES=${1:-15}
BATCH=${2:-500}

make -s >/dev/null && make -s install >/dev/null
trap 'cluster_stop; rm -rf "$WORK"' EXIT
WORK=$(mktemp -d)
chmod 755 "$WORK"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK"
cluster_start "bridgecore.maintenance_interval = 0" "bridgecore.partition_size = 1000000"
psql -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION bridgecore;
SELECT name FROM bridgecore.add_instance('bench', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key',
                                         enabled => false) \g /dev/null
SELECT name FROM bridgecore.add_instance('copy', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key',
                                         enabled => false) \g /dev/null
CREATE SCHEMA bench;
CREATE TABLE bench.batch AS
SELECT k, json_agg(json_build_object(
           'id', g, 'model', (ARRAY['sale.order', 'sale.order.line', 'res.partner', 'product.product',
                                    'stock.picking', 'account.move', 'mail.message', 'purchase.order'])[1 + g % 8],
           'record_id', 1 + g % 5000, 'event', (ARRAY['create', 'write', 'write', 'unlink'])[1 + g % 4],
           'timestamp', '2025-11-16 10:00:00', 'priority', 'low', 'category', 'business',
           'payload', json_build_object('name', 'Record ' || g,
                                        '_metadata', json_build_object('model', 'sale.order', 'id', g % 5000,
                                                                       'display_name', 'Record ' || g),
                                        '_changed_fields', json_build_array('name')),
           'user_id', json_build_array(2, 'Mitchell Admin')) ORDER BY g)::text AS body
  FROM generate_series(1, ${BATCH} * (${BATCHES} + 6)) g, LATERAL (SELECT (g - 1) / ${BATCH} AS k) kk
 GROUP BY k;
-- warm-up: plans, partitions, caches; its rows are what COPY stores again
SELECT bridgecore.ingest('bench', body::json) FROM bench.batch WHERE k < 5 ORDER BY k \g /dev/null
SQL
for k in 0 1 2 3 4; do
    psql -q -v ON_ERROR_STOP=1 -c "\\copy (SELECT (SELECT id FROM bridgecore.instance WHERE name = 'copy'), odoo_id, model, record_id, event, priority, category, payload, changed_fields, odoo_user_id, odoo_user_name, occurred_at FROM bridgecore.event WHERE odoo_id > $k * $BATCH AND odoo_id <= ($k + 1) * $BATCH ORDER BY id) TO '$WORK/rows$k.copy'"
done
as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -w -t 60 -m fast stop >/dev/null
COLS="instance_id, odoo_id, model, record_id, event, priority, category, payload, changed_fields, odoo_user_id, odoo_user_name, occurred_at"
{
    printf "SELECT count(*) FROM bridgecore.event;\n\n"
    printf "COPY bridgecore.event ($COLS) FROM '$WORK/rows0.copy';\n\n"
    printf 'SELECT pg_sleep(0);\n\n'
    for b in $(seq 5 $((BATCHES + 5))); do
        printf "SELECT bridgecore.ingest('bench', body::json) FROM bench.batch WHERE k = $b;\n\n"
        printf 'SELECT pg_sleep(0);\n\n'
        printf "COPY bridgecore.event ($COLS) FROM '$WORK/rows$((b % 5)).copy';\n\n"
        printf 'SELECT pg_sleep(0);\n\n'
    done
} >"$WORK/session.sql"
mkdir "$WORK/cg"
[ "$(id -u)" = 0 ] && chown -R postgres: "$WORK"
as_cluster_owner valgrind --tool=callgrind --dump-before=pg_sleep --dump-line=no \
    --callgrind-out-file="$WORK/cg/cg" "$PG_BINDIR/postgres" --single -j -D "$CLUSTER_DIR/data" postgres \
    <"$WORK/session.sql" >"$WORK/stdout" 2>"$WORK/stderr"
grep -q ERROR "$WORK/stderr" && { grep -B2 -A5 ERROR "$WORK/stderr" >&2; exit 1; }
# Dumps: 1 (start-up, first COPY), then ingest (even k) and COPY (odd k)
# alternating; the first pair is left out.
python3 - "$WORK/cg" "$BATCHES" "$BATCH" <<'PY'
import os, sys, statistics
d, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def ir(k):
    for line in open(os.path.join(d, "cg.%d" % k)):
        if line.startswith("totals: "):
            return int(line.split()[1])
ing = [ir(2 + 2 * i) for i in range(1, n + 1)]
cp = [ir(3 + 2 * i) for i in range(1, n + 1)]
a, b = statistics.median(ing), statistics.median(cp)
print("batches of %d records, median of %d each, instructions per statement (commit included)" % (size, n))
print("%-28s %14d Ir  (%d per event)" % ("bridgecore.ingest()", a, a / size))
print("%-28s %14d Ir  (%d per event)" % ("COPY", b, b / size))
print("COPY / ingest: %.2fx" % (b / a))
PY
if [ -n "${KEEP_CG:-}" ]; then rm -rf "$KEEP_CG"; cp -r "$WORK/cg" "$KEEP_CG"; fi
