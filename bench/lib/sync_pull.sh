# Shared by bench/sync_pull.sh (throughput) and bench/sync_pull_callgrind.sh
# (instructions per pull): the load, the two pulls, the devices' starting
# positions, the reset between runs and the checks.  Sourced after
# test/lib/cluster.sh, from the top of the source tree.
#
# The least-work pull.  What a device needs from a pull is the next page of
# the events of its app's models above its position, as the JSON the apps
# read (each event's stored doc, in id order, in one JSON array), and its
# position moved past them.  The least work that delivers exactly that is one
# statement which
#   - reads the device's cursor row, locked (FOR UPDATE: two pulls of one
#     device must not both deliver a page),
#   - selects the next PAGE events of the app's models above it by
#     (instance, id), with the position as an index condition,
#   - moves the cursor to the last id returned and counts the call,
#   - returns the docs aggregated into one JSON array.
# It does none of the rest of sync_pull: no argument checks, no app_type or
# instance lookup (the models and the instance are constants), no rate limit,
# no token, no retention check, no has_more or skip to the newest id, no
# statistics, no answer envelope.  Its state table holds only what it uses.
# bench_check_same verifies, before anything is measured, that it returns the
# very same events text as sync_pull's "events" for the same device and
# position (at the devices' starting positions, at the end of the log and
# past it); the run fails if they differ.
#
# Same work on both sides.  Every device starts each run at the same
# position in both state tables (bench_start: spread over the first 90 % of
# the log, so every page is full and the whole log is read), both tables are
# reset to it and vacuumed before each run, the data is frozen and cached
# before anything is measured, and pgbench draws the same devices for both
# sides (fixed seed, fixed number of calls).  bench_verify counts, after each
# round, the calls and the events each side delivered, and checks that both
# ended at the same position on every device.

EVENTS=1000000
DEVICES=10000
PAGE=100                # events per pull: sync_pull's "limit"
SEED=20251201           # pgbench --random-seed: the same devices for both sides
# sales_app's models (bridgecore.app_type); 8 of every 10 events are of them.
MODELS='{sale.order,sale.order.line,res.partner,product.template,product.product,product.category,mail.message,mail.channel}'

# Cluster settings.  The launcher's retention would delete the whole load
# (its events are dated January 2025, older than the 30-day default) a
# minute after start, in the middle of the run: maintenance_interval = 0.
# No autovacuum, no timed checkpoint: every run starts from an explicit
# VACUUM and CHECKPOINT instead.  1 GB of shared buffers holds the events,
# their indexes and both state tables (about 650 MB), so no run reads the
# disk or evicts the other side's pages.
BENCH_CONF=("shared_buffers = '1GB'" "max_wal_size = '4GB'" "checkpoint_timeout = '1h'"
            "autovacuum = off" "bridgecore.maintenance_interval = 0")

# The pulls, with :d the device number (pgbench's variable syntax; psql and
# PREPARE get $1 in its place).
bench_write_pulls() {  # bench_write_pulls <dir>
    cat >"$1/sync_pull.sql" <<SQL
SELECT bridgecore.sync_pull(:d, 'device-' || :d, 'sales_app', $PAGE);
SQL
    cat >"$1/baseline.sql" <<SQL
WITH cur AS (
    SELECT last_event_id FROM baseline_state WHERE device_id = 'device-' || :d FOR UPDATE
), page AS (
    SELECT e.id, e.doc
      FROM cur, LATERAL (
            SELECT ev.id, ev.doc FROM bridgecore.event ev
             WHERE ev.instance_id = 1 AND ev.id > cur.last_event_id
               AND ev.model = ANY ('$MODELS')
             ORDER BY ev.id LIMIT $PAGE) e
), upd AS (
    UPDATE baseline_state s
       SET last_event_id = coalesce((SELECT max(id) FROM page), s.last_event_id),
           last_sync_time = now(), sync_count = s.sync_count + 1
     WHERE s.device_id = 'device-' || :d
)
SELECT coalesce(json_agg(doc ORDER BY id), '[]') AS events FROM page;
SQL
}

# A pull's statement with $1 for :d, without its final semicolon.
bench_statement() {  # bench_statement <file>
    sed -e 's/:d/$1/g' "$1" | sed -e '$ s/;$//'
}

bench_load() {  # bench_load <dir with the pulls>
    echo "loading $EVENTS events and $DEVICES devices..."
    psql -q -v ON_ERROR_STOP=1 <<SQL
-- A synchronous commit: VACUUM may set hint bits and mark pages all-visible
-- only once the inserting transaction's commit record is flushed.
SET synchronous_commit = on;
CREATE EXTENSION bridgecore;
CREATE EXTENSION pg_prewarm;
CREATE EXTENSION pg_visibility;
SELECT name FROM bridgecore.add_instance('bench', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key',
                                         enabled => false) \g /dev/null
-- The log's partitions for the local ids these rows take.
SELECT bridgecore._ensure_partitions($EVENTS + 1) \g /dev/null
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
-- Where every device starts each run, on both sides: spread over the first
-- 90 % of the log in steps of 100 ids (7919 is prime to 9000).
CREATE TABLE bench_start (user_id bigint PRIMARY KEY, device_id text NOT NULL UNIQUE,
                          start bigint NOT NULL);
INSERT INTO bench_start
SELECT d, 'device-' || d, (d * 7919 % 9000) * ($EVENTS / 10000) FROM generate_series(1, $DEVICES) d;
-- Both state tables leave half of each page free, so that a pull's update
-- of its device's row is a HOT update on the same page from the first run
-- on, as it is in a state table that has been updated and vacuumed for a
-- while.  Without it the first run's updates of the freshly loaded, full
-- pages move every row to a new page and add an index entry, and later
-- runs do not.
ALTER TABLE bridgecore.sync_state SET (fillfactor = 50);
INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id)
SELECT 1, user_id, device_id, 'sales_app', start FROM bench_start;
-- The baseline's own state table, shaped like the minimum a pull needs.
CREATE TABLE baseline_state (device_id text PRIMARY KEY, last_event_id bigint NOT NULL,
                             last_sync_time timestamptz, sync_count bigint NOT NULL)
  WITH (fillfactor = 50);
INSERT INTO baseline_state SELECT device_id, start, NULL, 0 FROM bench_start;
-- The baseline pull as a function, for bench_check_same.
CREATE FUNCTION baseline_pull(integer) RETURNS json LANGUAGE sql VOLATILE
AS \$pull\$ $(bench_statement "$1/baseline.sql") \$pull\$;
-- The events of the app's models in (from_id, to_id]: what the pulls that
-- moved a device from from_id to to_id delivered.
CREATE FUNCTION delivered(from_id bigint, to_id bigint) RETURNS bigint LANGUAGE sql STABLE
AS \$\$ SELECT count(*) FROM bridgecore.event e
         WHERE e.instance_id = 1 AND e.id > from_id AND e.id <= to_id AND e.model = ANY ('$MODELS') \$\$;
VACUUM (FREEZE, ANALYZE);
SQL
    # Every page of the log all-visible and frozen: no pull sets a hint bit
    # or dirties a page of it.
    local unfrozen
    unfrozen=$(psql -At -c "SELECT sum(pg_relation_size(t.relid) / 8192 - v.all_frozen)
                              FROM pg_partition_tree('bridgecore.event') t,
                                   pg_visibility_map_summary(t.relid) v
                             WHERE t.isleaf")
    [ "$unfrozen" = 0 ] || { echo "FAIL: $unfrozen pages of bridgecore.event not frozen" >&2; exit 1; }
}

# Loads the tables the pulls read into shared buffers.
# The log is partitioned: every partition and its indexes.
BENCH_PREWARM="SELECT sum(pg_prewarm(c)) FROM (
    SELECT t.relid AS c FROM pg_partition_tree('bridgecore.event') t WHERE t.isleaf
    UNION ALL
    SELECT i.indexrelid FROM pg_partition_tree('bridgecore.event') t
      JOIN pg_index i ON i.indrelid = t.relid WHERE t.isleaf
    UNION ALL
    SELECT unnest(ARRAY['bridgecore.sync_state', 'bridgecore.sync_state_pkey',
                        'baseline_state', 'baseline_state_pkey', 'bench_start']::regclass[])) r"

# Puts a side's devices back at their starting positions (only the rows that
# moved), with the state counters at zero.
bench_reset_sql() {  # bench_reset_sql baseline|sync_pull
    case $1 in
    baseline) echo "UPDATE baseline_state b SET last_event_id = p.start, last_sync_time = NULL, sync_count = 0
                      FROM bench_start p WHERE b.device_id = p.device_id AND b.sync_count <> 0" ;;
    sync_pull) echo "UPDATE bridgecore.sync_state s SET last_event_id = p.start, last_sync_time = NULL,
                            sync_count = 0, last_event_count = 0, total_events_synced = 0
                       FROM bench_start p WHERE s.instance_id = 1 AND s.user_id = p.user_id
                        AND s.device_id = p.device_id AND s.sync_count <> 0" ;;
    esac
}
BENCH_VACUUM="VACUUM (FREEZE) baseline_state, bridgecore.sync_state"

bench_reset() {  # bench_reset baseline|sync_pull
    psql -q -v ON_ERROR_STOP=1 -c "$(bench_reset_sql "$1")" -c "$BENCH_VACUUM" -c CHECKPOINT
}

# Same events, same text: sync_pull's "events" and the baseline's answer for
# one device, at the first devices' starting positions, at a position with
# fewer than PAGE events left, and at the end of the log.  Rolled back.
bench_check_same() {
    psql -q -v ON_ERROR_STOP=1 <<SQL
BEGIN;
DO \$\$
DECLARE
    dev record;
    s json;
    b json;
    n integer;
    checked integer := 0;
BEGIN
    FOR dev IN SELECT user_id, start FROM bench_start WHERE user_id <= 20
               UNION ALL SELECT 1, $EVENTS - 50 UNION ALL SELECT 2, $EVENTS LOOP
        UPDATE bridgecore.sync_state SET last_event_id = dev.start WHERE user_id = dev.user_id;
        UPDATE baseline_state SET last_event_id = dev.start WHERE device_id = 'device-' || dev.user_id;
        s := bridgecore.sync_pull(dev.user_id, 'device-' || dev.user_id, 'sales_app', $PAGE) -> 'events';
        b := baseline_pull(dev.user_id::integer);
        SELECT count(*) INTO n FROM (SELECT 1 FROM bridgecore.event e
                                      WHERE e.instance_id = 1 AND e.id > dev.start
                                        AND e.model = ANY ('$MODELS')
                                      LIMIT $PAGE) x;
        IF s::text IS DISTINCT FROM b::text OR json_array_length(b) <> n THEN
            RAISE EXCEPTION 'the baseline and sync_pull differ for device % at %: % and % events, % expected',
                dev.user_id, dev.start, json_array_length(s), json_array_length(b), n;
        END IF;
        checked := checked + 1;
    END LOOP;
    RAISE NOTICE 'baseline and sync_pull return the same events (% positions checked)', checked;
END
\$\$;
ROLLBACK;
SQL
}

# After a round: each side made CALLS calls, every call delivered PAGE
# events, and both sides ended at the same position on every device.
# Prints "<calls> <events>".
bench_verify() {  # bench_verify <calls expected>
    psql -At -v ON_ERROR_STOP=1 <<SQL
SELECT CASE WHEN bc = $1 AND sc = $1 AND be = $PAGE * bc AND se = $PAGE * sc AND st = se AND differ = 0
            THEN bc || ' ' || be
            ELSE 'FAIL: calls ' || bc || ' and ' || sc || ', events ' || be || ' and ' || se
                 || ' (sync_state counts ' || st || '), devices at different positions: ' || differ END
  FROM (SELECT sum(b.sync_count) bc, sum(s.sync_count) sc, sum(s.total_events_synced) st,
               sum(delivered(p.start, b.last_event_id)) be, sum(delivered(p.start, s.last_event_id)) se,
               count(*) FILTER (WHERE b.last_event_id <> s.last_event_id OR b.sync_count <> s.sync_count) differ
          FROM bench_start p
          JOIN baseline_state b USING (device_id)
          JOIN bridgecore.sync_state s USING (user_id, device_id)) t
SQL
}

# bench_stats <numbers...> -> "median mean min max"
bench_stats() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1; s += $1 }
        END { printf "%.10g %.10g %.10g %.10g\n",
                     (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2, s / NR, a[1], a[NR] }'
}
