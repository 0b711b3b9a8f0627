#!/usr/bin/env bash
# Benchmark: bridgecore.sync_pull against a minimal hand-written SQL pull.
#
# 1,000,000 events, 10,000 devices, pgbench with 4 clients; each transaction
# pulls up to 100 events for a random device.  The baseline reads the cursor,
# selects 100 events by id and updates the state in one statement.  The two
# are run alternately (ROUNDS times each) in the same cluster, and the result
# is reported as a ratio, because absolute figures on a shared machine are
# noise: short rounds, alternating which side goes first, and the median of
# the per-round ratios.  Usage: bench/sync_pull.sh [seconds per round] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

SECONDS_PER_ROUND=${1:-5}
ROUNDS=${2:-10}
CLIENTS=4
EVENTS=1000000
DEVICES=10000

make -s >/dev/null && make -s install >/dev/null
trap cluster_stop EXIT
cluster_start "shared_buffers = '512MB'" "max_wal_size = '4GB'"
WORK=$(mktemp -d)
trap 'cluster_stop; rm -rf "$WORK"' EXIT

echo "loading $EVENTS events and $DEVICES devices..."
psql -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION bridgecore;
SELECT name FROM bridgecore.add_instance('bench', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key') \g /dev/null
-- 8 of every 10 events are of sales_app models, the others are filtered out.
INSERT INTO bridgecore.event (instance_id, odoo_id, model, record_id, event, priority,
                              category, payload, occurred_at)
SELECT 1, g,
       (ARRAY['sale.order', 'sale.order.line', 'res.partner', 'product.product',
              'product.template', 'mail.message', 'mail.channel', 'product.category',
              'stock.picking', 'account.move'])[1 + g % 10],
       1 + g % 50000, 'write', 'medium', 'business',
       jsonb_build_object('name', 'Record ' || g, 'amount', g % 1000, '_changed_fields', jsonb_build_array('amount')),
       timestamptz '2025-01-01' + g * interval '1 second'
  FROM generate_series(1, $EVENTS) g;
INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type)
SELECT 1, d, 'device-' || d, 'sales_app' FROM generate_series(1, $DEVICES) d;
-- The baseline's own state table, shaped like the minimum a pull needs.
CREATE TABLE baseline_state (device_id text PRIMARY KEY, last_event_id bigint NOT NULL,
                             last_sync_time timestamptz, sync_count bigint NOT NULL);
INSERT INTO baseline_state SELECT 'device-' || d, 0, NULL, 0 FROM generate_series(1, $DEVICES) d;
VACUUM ANALYZE;
-- Plans must not change under the benchmark: no autovacuum/analyze on the
-- state tables (they are vacuumed, without analyze, between runs).
ALTER TABLE baseline_state SET (autovacuum_enabled = off);
ALTER TABLE bridgecore.sync_state SET (autovacuum_enabled = off);
SQL

cat >"$WORK/bridgecore.sql" <<'SQL'
\set d random(1, 10000)
SELECT bridgecore.sync_pull(:d, 'device-' || :d, 'sales_app', 100);
SQL
cat >"$WORK/baseline.sql" <<'SQL'
\set d random(1, 10000)
WITH cur AS (
    SELECT last_event_id FROM baseline_state WHERE device_id = 'device-' || :d FOR UPDATE
), page AS (
    SELECT e.id, e.model, e.record_id, e.event, e.occurred_at, e.priority, e.category, e.payload
      FROM bridgecore.event e, cur
     WHERE e.instance_id = 1 AND e.id > cur.last_event_id
       AND e.model = ANY ('{sale.order,sale.order.line,res.partner,product.template,product.product,product.category,mail.message,mail.channel}')
     ORDER BY e.id LIMIT 100
), upd AS (
    UPDATE baseline_state s
       SET last_event_id = coalesce((SELECT max(id) FROM page), s.last_event_id),
           last_sync_time = now(), sync_count = s.sync_count + 1
     WHERE s.device_id = 'device-' || :d
)
SELECT * FROM page ORDER BY id;
SQL

run() {  # run <script> <seconds> -> tps
    pgbench -n -M prepared -c $CLIENTS -j $CLIENTS -T "$2" -f "$WORK/$1.sql" 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

echo "warming up..."
run baseline 3 >/dev/null
run bridgecore 3 >/dev/null

# Each run starts from vacuumed state tables, and the order alternates, so
# neither side inherits the other's dead rows or a warmer cache.
fresh() { psql -q -c "VACUUM baseline_state, bridgecore.sync_state"; }
ratios=()
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
        fresh; b=$(run baseline "$SECONDS_PER_ROUND")
        fresh; s=$(run bridgecore "$SECONDS_PER_ROUND")
    else
        fresh; s=$(run bridgecore "$SECONDS_PER_ROUND")
        fresh; b=$(run baseline "$SECONDS_PER_ROUND")
    fi
    ratio=$(awk -v a="$s" -v b="$b" 'BEGIN{printf "%.3f", a/b}')
    ratios+=("$ratio")
    printf 'round %2d: baseline %8.1f tps   sync_pull %8.1f tps   ratio %s\n' "$r" "$b" "$s" "$ratio"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
printf 'sync_pull / hand-written SQL pull: %.2fx (median of %d alternating rounds of %ss, %d clients, %d events, %d devices)\n' \
    "$median" "$ROUNDS" "$SECONDS_PER_ROUND" $CLIENTS $EVENTS $DEVICES
