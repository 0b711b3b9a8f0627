#!/usr/bin/env bash
# Benchmark: the cost of one sync_pull as the event log grows.
#
# The log grows through the given sizes (default 10,000, 1,000,000 and
# 10,000,000 events) in one cluster, with a skewed model mix like a real
# Odoo log (mail.message 40 %, sale.order.line 20 %, sale.order 15 %,
# res.partner 10 %, account.move and product.product 5 % each, stock.move
# 4.9 %, stock.picking 0.1 %).  Each size is a log of its own, in a database
# of its own in one cluster, and a single client makes CALLS pulls of up to
# 100 events in each scenario and size, each pull a transaction of its own,
# timed in the server (clock_timestamp() around the call, so the client's
# round trip is not in it).  The pulls are made in ROUNDS rounds (default
# 10), each round a batch of every scenario on every size in turn, so that
# the machine's other load, which comes in bursts and decides a p99 of
# pulls this short, falls on every size alike instead of on whichever size
# was measured during a burst:
#
#   fresh      a new sales_app device (90 % of the log is its models), from 0
#   mid        a sales_app device whose state is in the middle of the log
#   rare       a new device of stock.picking only (0.1 % of the log), from 0,
#              pulling pages of up to 10: the 10,000-event log holds 10 such
#              events, so every size answers the same page and the growth
#              compares the log, not the page
#   rare_full  the same with pages of up to 100, answered full from 1M
#              events on (its growth is measured from the first size whose
#              pages are as full as the largest's)
#   absent     a new device of a model the log does not hold (stock.quant)
#   caught_up  a device whose state is at the newest event (empty answer)
#
# It prints p50 and p99 per size and scenario, the growth of each from the
# smallest to the largest size, and the size of the event table and its
# indexes per event.
#
# Then, on the largest log, the herd: HERD devices (default 1,000) are caught up, 100 new events
# arrive, and 16 clients pull for random devices among them at once
# (pgbench), while a sampler records what the pulling backends wait on
# every 5 ms.  Pulls of the same new events must wait on nothing shared:
# the waits seen are listed, with the pulls' p50/p99 against one client.
# Usage: [ROUNDS=10] [HERD=1000] bench/scale.sh [calls, default 1000] [sizes...]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

CALLS=${1:-1000}
HERD=${HERD:-1000}
ROUNDS=${ROUNDS:-10}
shift || true
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10000 1000000 10000000)

make -s >/dev/null && make -s install >/dev/null
trap cluster_stop EXIT
cluster_start "shared_buffers = '2GB'" "max_wal_size = '16GB'" "checkpoint_timeout = '30min'" \
              "bridgecore.rate_limit_sync_pull = 0" "bridgecore.maintenance_interval = 0"

[ $((CALLS % ROUNDS)) = 0 ] || { echo "CALLS must be a multiple of ROUNDS ($ROUNDS)" >&2; exit 1; }
LARGEST=$(printf '%s\n' "${SIZES[@]}" | sort -n | tail -1)

setup_db() {  # setup_db <database>
createdb "$1"
psql -d "$1" -q -v ON_ERROR_STOP=1 <<'SQL'
CREATE EXTENSION bridgecore;
SELECT name FROM bridgecore.add_instance('bench', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key', enabled => false) \g /dev/null
CREATE SCHEMA bench;
CREATE TABLE bench.timing (size bigint, scenario text, ms float8, events int);
CREATE SEQUENCE bench.device_seq;

-- Appends events with Odoo ids from + 1 to upto.
CREATE PROCEDURE bench.grow(upto bigint) LANGUAGE plpgsql AS $$
DECLARE
    from_id bigint := coalesce((SELECT max(odoo_id) FROM bridgecore.event), 0);
    step constant bigint := 1000000;
BEGIN
    WHILE from_id < upto LOOP
        -- The log's partitions, for the local ids these rows take.
        PERFORM bridgecore._ensure_partitions((SELECT s.last_value FROM bridgecore.event_id_seq s) + step);
        INSERT INTO bridgecore.event (instance_id, odoo_id, model, record_id, event, priority,
                                      category, payload, occurred_at)
        SELECT 1, g,
               CASE WHEN g % 1000 = 0 THEN 'stock.picking'
                    WHEN g % 1000 < 50 THEN 'stock.move'
                    WHEN g % 1000 < 100 THEN 'account.move'
                    WHEN g % 1000 < 150 THEN 'product.product'
                    WHEN g % 1000 < 250 THEN 'res.partner'
                    WHEN g % 1000 < 450 THEN 'sale.order.line'
                    WHEN g % 1000 < 600 THEN 'sale.order'
                    ELSE 'mail.message' END,
               1 + g % 50000, 'write', 'medium', 'business',
               jsonb_build_object('name', 'Record ' || g, 'amount', g % 1000,
                                  '_changed_fields', jsonb_build_array('amount')),
               timestamptz '2025-01-01' + g * interval '1 second'
          FROM generate_series(from_id + 1, least(upto, from_id + step)) g;
        from_id := least(upto, from_id + step);
        COMMIT;
    END LOOP;
    UPDATE bridgecore.instance SET cursor = upto WHERE id = 1;
    COMMIT;
END
$$;

-- calls pulls of one scenario, each in a transaction of its own, each by a
-- new device; timed into bench.timing when keep.
CREATE PROCEDURE bench.measure(size bigint, scenario text, calls integer, keep boolean)
LANGUAGE plpgsql AS $$
DECLARE
    newest bigint := (SELECT max(id) FROM bridgecore.event);
    oldest bigint := (SELECT min(id) FROM bridgecore.event);
    t0 timestamptz;
    answer json;
    dev text;
    uid bigint;
BEGIN
    FOR i IN 1 .. calls LOOP
        uid := nextval('bench.device_seq');     -- a user per device: no per-user limits apply
        dev := scenario || '-' || size || '-' || uid;
        IF scenario = 'mid' THEN
            INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id)
            VALUES (1, uid, dev, 'sales_app', oldest + (newest - oldest) / 2);
        ELSIF scenario = 'caught_up' THEN
            INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id)
            VALUES (1, uid, dev, 'sales_app', newest);
        END IF;
        COMMIT;
        t0 := clock_timestamp();
        answer := CASE scenario
            WHEN 'rare' THEN bridgecore.sync_pull(uid, dev, 'warehouse_app', 10, '{stock.picking}')
            WHEN 'rare_full' THEN bridgecore.sync_pull(uid, dev, 'warehouse_app', 100, '{stock.picking}')
            WHEN 'absent' THEN bridgecore.sync_pull(uid, dev, 'warehouse_app', 100, '{stock.quant}')
            ELSE bridgecore.sync_pull(uid, dev, 'sales_app', 100) END;
        IF keep THEN
            INSERT INTO bench.timing VALUES (size, scenario,
                extract(epoch FROM clock_timestamp() - t0) * 1000, (answer ->> 'new_events_count')::int);
        END IF;
        COMMIT;
    END LOOP;
END
$$;
SQL
}

SCENARIOS=(fresh mid rare rare_full absent caught_up)
for size in "${SIZES[@]}"; do
    start=$(date +%s)
    setup_db "bench_$size"
    psql -d "bench_$size" -q -v ON_ERROR_STOP=1 -c "CALL bench.grow($size)" -c "VACUUM (ANALYZE) bridgecore.event"
    echo "log of $size events ready in $(( $(date +%s) - start )) s"
done
for round in $(seq 1 "$ROUNDS"); do
    for size in "${SIZES[@]}"; do
        # One session per round and size: a warm-up of each scenario (the
        # session's caches and plans), not counted, then the counted pulls.
        args=()
        for s in "${SCENARIOS[@]}"; do args+=(-c "CALL bench.measure($size, '$s', 5, false)"); done
        for s in "${SCENARIOS[@]}"; do args+=(-c "CALL bench.measure($size, '$s', $((CALLS / ROUNDS)), true)"); done
        psql -d "bench_$size" -q -v ON_ERROR_STOP=1 "${args[@]}"
    done
done
# Every size's timings, with the largest log.
export PGDATABASE=bench_$LARGEST
for size in "${SIZES[@]}"; do
    [ "$size" = "$LARGEST" ] && continue
    psql -d "bench_$size" -q -v ON_ERROR_STOP=1 -c "COPY bench.timing TO STDOUT" \
        | psql -q -v ON_ERROR_STOP=1 -c "COPY bench.timing FROM STDIN"
done

psql -q -v ON_ERROR_STOP=1 <<SQL
\pset footer off
\echo
\echo 'one sync_pull, ms (server time; $CALLS pulls per scenario and size, in $ROUNDS interleaved rounds)'
SELECT size AS events, scenario,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p50,
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS p99,
       round(avg(events), 1) AS events_per_answer
  FROM bench.timing GROUP BY size, scenario
 ORDER BY array_position('{fresh,mid,rare,rare_full,absent,caught_up}'::text[], scenario), size;
\echo 'growth to the largest log, from the smallest log whose answers are as full (events per answer) as the largest log''s'
WITH p AS (
    SELECT size, scenario, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99, avg(events) AS events
      FROM bench.timing GROUP BY size, scenario),
l AS (SELECT * FROM p WHERE size = (SELECT max(size) FROM p)),
s AS (SELECT DISTINCT ON (p.scenario) p.*
        FROM p JOIN l USING (scenario)
       WHERE p.events >= l.events * 0.99 OR l.events = 0
       ORDER BY p.scenario, p.size)
SELECT s.scenario, s.size || ' -> ' || l.size AS sizes, round(s.events, 1) || ' / ' || round(l.events, 1) AS events_per_answer,
       round((l.p50 / s.p50)::numeric, 2) AS p50_growth,
       round((l.p99 / s.p99)::numeric, 2) AS p99_growth
  FROM s JOIN l USING (scenario)
 ORDER BY array_position('{fresh,mid,rare,rare_full,absent,caught_up}'::text[], s.scenario);
\echo 'disk used by the largest log (every partition)'
WITH part AS (SELECT relid FROM pg_partition_tree('bridgecore.event') WHERE isleaf)
SELECT (SELECT count(*) FROM bridgecore.event) AS events, count(*) AS partitions,
       pg_size_pretty(sum(pg_table_size(relid))) AS "table",
       pg_size_pretty(sum(pg_indexes_size(relid))) AS indexes,
       round(sum(pg_table_size(relid)) / (SELECT count(*) FROM bridgecore.event)) AS table_bytes_per_event,
       round(sum(pg_indexes_size(relid)) / (SELECT count(*) FROM bridgecore.event)) AS index_bytes_per_event
  FROM part;
\echo 'paper projection to 100M and 1B events, from the measured logs'
\echo 'fresh, mid, rare and caught_up pulls read the partitions at and above the position (one or two): their cost does not depend on how many there are'
\echo 'a first pull for an absent model visits every partition above the position: its p50 at the largest log plus, per partition more, the p50 cost of a partition measured between the smallest and the largest log'
\echo 'disk: the bytes per event (table and indexes) of the largest log'
WITH p AS (
    SELECT size, percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50
      FROM bench.timing WHERE scenario = 'absent' GROUP BY size),
conf AS (SELECT current_setting('bridgecore.partition_size')::numeric AS psize),
m AS (
    SELECT (SELECT p50 FROM p ORDER BY size LIMIT 1) AS small_p50,
           (SELECT p50 FROM p ORDER BY size DESC LIMIT 1) AS large_p50,
           ceil((SELECT min(size) FROM p) / psize) AS small_parts,
           ceil((SELECT max(size) FROM p) / psize) AS large_parts,
           (SELECT sum(pg_table_size(relid) + pg_indexes_size(relid))::numeric
              FROM pg_partition_tree('bridgecore.event') WHERE isleaf)
             / (SELECT count(*) FROM bridgecore.event) AS bytes_per_event,
           psize
      FROM conf),
slope AS (
    SELECT *, greatest(0, (large_p50 - small_p50) / greatest(1, large_parts - small_parts)) AS per_partition FROM m)
SELECT n AS events, ceil(n / psize) AS partitions, pg_size_pretty(round(n * bytes_per_event)) AS disk,
       round((large_p50 + per_partition * (ceil(n / psize) - large_parts))::numeric, 3) AS absent_first_pull_p50_ms,
       round((per_partition * 1000)::numeric, 2) AS us_per_partition
  FROM unnest('{100000000,1000000000}'::numeric[]) n, slope;
SQL

echo
echo "the herd: $HERD caught-up devices, 100 new events, pulled by 1 and by 16 clients at once"
WORK=$(mktemp -d)
trap 'cluster_stop; rm -rf "$WORK"' EXIT
psql -q -v ON_ERROR_STOP=1 <<SQL
DELETE FROM bridgecore.sync_state;
CREATE TABLE bench.waits (sample int, wait text, backends int);
CREATE PROCEDURE bench.sample_waits(samples integer) LANGUAGE plpgsql AS \$\$
BEGIN
    FOR i IN 1 .. samples LOOP
        PERFORM pg_stat_clear_snapshot();
        INSERT INTO bench.waits
        SELECT i, coalesce(wait_event_type || ':' || wait_event, 'on CPU'), count(*)
          FROM pg_stat_activity
         WHERE backend_type = 'client backend' AND state = 'active' AND query LIKE '%sync_pull%'
           AND pid <> pg_backend_pid()
         GROUP BY 2;
        COMMIT;
        PERFORM pg_sleep(0.005);
    END LOOP;
END
\$\$;
SQL
herd_round() {  # herd_round <clients> <tag>
    psql -q -v ON_ERROR_STOP=1 \
        -c "DELETE FROM bridgecore.sync_state" \
        -c "INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id)
            SELECT 1, d, 'herd-' || d, 'sales_app', (SELECT max(id) FROM bridgecore.event)
              FROM generate_series(1, $HERD) d" \
        -c "CALL bench.grow($(psql -Atc 'SELECT max(odoo_id) + 100 FROM bridgecore.event'))" \
        -c "VACUUM bridgecore.sync_state"
    cat >"$WORK/herd.sql" <<PGB
\\set d random(1, $HERD)
SELECT bridgecore.sync_pull(:d, 'herd-' || :d, 'sales_app', 100);
PGB
    psql -q -c "CALL bench.sample_waits(400)" &
    sampler=$!
    pgbench -n -M prepared -c "$1" -j 2 -t $(( HERD * 2 / $1 )) -f "$WORK/herd.sql" \
            --log --log-prefix="$WORK/$2" >"$WORK/pgbench.out" 2>&1 \
        || { echo "pgbench failed:"; cat "$WORK/pgbench.out"; exit 1; }
    kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
    cat "$WORK/$2".* | awk '{print $3 / 1000.0}' | sort -n >"$WORK/$2.ms"
}
herd_round 1 one
psql -q -c "TRUNCATE bench.waits"
herd_round 16 herd
pct() { awk -v p="$2" '{a[NR]=$1} END {i=int(NR*p); if (i<1) i=1; printf "%.3f", a[i]}' "$1"; }
printf '1 client:   p50 %s ms  p99 %s ms  (%d pulls, client-side latency)\n' \
    "$(pct "$WORK/one.ms" 0.5)" "$(pct "$WORK/one.ms" 0.99)" "$(wc -l <"$WORK/one.ms")"
printf '16 clients: p50 %s ms  p99 %s ms  (%d pulls)\n' \
    "$(pct "$WORK/herd.ms" 0.5)" "$(pct "$WORK/herd.ms" 0.99)" "$(wc -l <"$WORK/herd.ms")"
psql -q <<SQL
\\pset footer off
\\echo 'what the 16 pulling backends waited on (backend samples, every 5 ms)'
SELECT wait, sum(backends) AS samples,
       round(100.0 * sum(backends) / (SELECT sum(backends) FROM bench.waits), 1) AS pct
  FROM bench.waits GROUP BY wait ORDER BY 2 DESC;
SQL
