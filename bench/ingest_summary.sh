#!/usr/bin/env bash
# Benchmark: what keeping bridgecore.partition_summary costs ingestion.
#
# The store path adds each batch's events to the summary of their partition
# in the statement that inserts them (src/ingest.c); retention then reads the
# summary instead of the partition's rows.  This measures that addition: one
# cluster, one binary, batches of BATCH records stored by bridgecore.ingest()
# (the store path the worker uses, each batch its own transaction, into
# partitions of 1,000,000 ids), in alternating rounds with the summary and
# without it (the table renamed away, which makes the store path prepare its
# insert without the summary, as for a 0.3.0 schema), each side first in
# every other round.  Each round stores BATCHES batches and is timed in the
# server; the median round of each side is compared.  Time on a shared
# machine is noisy: bench/ingest_summary_callgrind.sh counts instructions.
#
# Usage: bench/ingest_summary.sh [rounds, default 7] [batches, default 40]
# [batch size, default 500]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
ROUNDS=${1:-7}
BATCHES=${2:-40}
BATCH=${3:-500}

make -s >/dev/null && make -s install >/dev/null
trap cluster_stop EXIT
cluster_start "shared_buffers = '512MB'" "max_wal_size = '4GB'" "bridgecore.maintenance_interval = 0" \
              "bridgecore.partition_size = 1000000"

psql -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION bridgecore;
SELECT name FROM bridgecore.add_instance('bench', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key',
                                         enabled => false) \g /dev/null
CREATE SCHEMA bench;
CREATE SEQUENCE bench.odoo_id;
CREATE TABLE bench.round (side text, seconds float8);
-- batches batches of $BATCH records each, a transaction each, in a skewed
-- model mix; the round's time goes into bench.round.
CREATE PROCEDURE bench.store(side text, batches int) LANGUAGE plpgsql AS \$\$
DECLARE
    t0 timestamptz := clock_timestamp();
    first bigint;
BEGIN
    FOR b IN 1 .. batches LOOP
        first := nextval('bench.odoo_id');
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
        COMMIT;
    END LOOP;
    INSERT INTO bench.round VALUES (side, extract(epoch FROM clock_timestamp() - t0));
    COMMIT;
END
\$\$;
-- Warm up: partitions made, plans prepared, caches filled.
CALL bench.store('warmup', 10);
SQL

with_summary() { psql -q -v ON_ERROR_STOP=1 -c "CALL bench.store('summary', $BATCHES)"; }
without_summary() {
    psql -q -v ON_ERROR_STOP=1 -c "ALTER TABLE bridgecore.partition_summary RENAME TO partition_summary_off" \
                               -c "CALL bench.store('without', $BATCHES)" \
                               -c "ALTER TABLE bridgecore.partition_summary_off RENAME TO partition_summary"
}
# Each side goes first in every other round.
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) = 1 ]; then with_summary; without_summary; else without_summary; with_summary; fi
done

psql -Atq -F ' ' -c "SELECT side, percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds) FROM bench.round
                     WHERE side <> 'warmup' GROUP BY side" | python3 -c "
import sys
m = {s: float(v) for s, v in (l.split() for l in sys.stdin)}
per = lambda s: m[s] * 1000 / $BATCHES
print('batches of $BATCH records, %d rounds of $BATCHES batches each side (median round)' % $ROUNDS)
print('%-24s %9.2f ms per batch  %6.2f us per event' % ('without the summary', per('without'), per('without') * 1000 / $BATCH))
print('%-24s %9.2f ms per batch  %6.2f us per event' % ('with the summary', per('summary'), per('summary') * 1000 / $BATCH))
print('cost of the summary: %+.2f ms per batch (%+.1f %%)' % (per('summary') - per('without'), (m['summary'] / m['without'] - 1) * 100))
"
psql -Atq -c "SELECT 'summary rows: ' || count(*) || ' for ' || sum(events) || ' events' FROM bridgecore.partition_summary"
