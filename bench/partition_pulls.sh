#!/usr/bin/env bash
# Benchmark: what smaller partitions cost pulls.
#
# One cluster, two databases with the same log (OLD events of 2020, then
# NEW recent ones, the skewed model mix of bench/retention.sh), one cut into
# partitions of 1,000,000 ids, the other into partitions of SMALL ids. In
# alternating rounds of SECONDS seconds each, one pgbench client pulls pages
# of 100 events (sync_pull with a token) for devices at positions
#
#   recent   in the recent part of the log (a device that keeps up)
#   anywhere anywhere in the log (devices far behind: the per-model lookups
#            visit every partition above the position)
#
# and the p50 and p99 of each database and scenario are compared.
#
# Usage: bench/partition_pulls.sh [old events, default 1000000] [new events,
# default 100000] [small partition size, default 100000] [seconds, default 10]
# [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

OLD=${1:-1000000}
NEW=${2:-100000}
SMALL=${3:-100000}
SECONDS_RUN=${4:-10}
ROUNDS=${5:-3}

make -s >/dev/null && make -s install >/dev/null
trap 'cluster_stop; rm -rf "$WORK"' EXIT
WORK=$(mktemp -d)
chmod 755 "$WORK"
cluster_start "shared_buffers = '1GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" \
              "bridgecore.rate_limit_sync_pull = 0" "bridgecore.maintenance_interval = 0"

for part in 1000000 "$SMALL"; do
    db=bench_$part
    psql -q -v ON_ERROR_STOP=1 -d postgres -c "CREATE DATABASE $db" -c "ALTER DATABASE $db SET bridgecore.partition_size = $part"
    psql -q -v ON_ERROR_STOP=1 -d "$db" <<SQL
CREATE EXTENSION bridgecore;
SELECT name FROM bridgecore.add_instance('bench', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key', enabled => false) \g /dev/null
CREATE PROCEDURE pg_temp.load(total bigint) LANGUAGE plpgsql AS \$\$
DECLARE
    from_id bigint := 0;
    step constant bigint := 100000;
BEGIN
    WHILE from_id < total LOOP
        PERFORM bridgecore._ensure_partitions(from_id + step);
        INSERT INTO bridgecore.event (instance_id, odoo_id, model, record_id, event, priority,
                                      category, payload, occurred_at)
        SELECT 1, g,
               CASE WHEN g % 100 < 40 THEN 'mail.message' WHEN g % 100 < 60 THEN 'sale.order.line'
                    WHEN g % 100 < 75 THEN 'sale.order' WHEN g % 100 < 85 THEN 'res.partner'
                    WHEN g % 100 < 90 THEN 'account.move' WHEN g % 100 < 95 THEN 'product.product'
                    ELSE 'stock.move' END,
               1 + g % 50000, 'write', 'medium', 'business',
               jsonb_build_object('name', 'Record ' || g, 'amount', g % 1000),
               CASE WHEN g <= $OLD THEN timestamptz '2020-01-01' + g * interval '10 seconds'
                    ELSE now() - interval '1 day' + (g - $OLD) * interval '1 second' END
          FROM generate_series(from_id + 1, least(total, from_id + step)) g;
        from_id := least(total, from_id + step);
        COMMIT;
    END LOOP;
END
\$\$;
CALL pg_temp.load($OLD + $NEW);
UPDATE bridgecore.instance SET cursor = $OLD + $NEW;
SELECT bridgecore._summarize_partitions() \g /dev/null
SELECT bridgecore.sync_pull(1, 'dev' || d, 'sales_app', 1, instance => 'bench') FROM generate_series(1, 16) d \g /dev/null
-- Devices at the newest event: a token names any position at or below it.
UPDATE bridgecore.sync_state SET last_event_id = (SELECT max(id) FROM bridgecore.event);
SQL
    psql -q -d "$db" -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
    echo "$db: $(psql -Atq -d "$db" -c "SELECT count(*) FROM bridgecore._partitions()") partitions"
done

for scenario in recent anywhere; do
    if [ "$scenario" = recent ]; then lo=$((OLD + 1)); else lo=1; fi
    cat >"$WORK/$scenario.sql" <<SQL
\set d random(1, 16)
\set pos random($lo, $OLD + $NEW - 1000)
SELECT bridgecore.sync_pull(1, 'dev' || :d, 'sales_app', 100, instance => 'bench', sync_token => 'bc1:1:' || :pos) IS NOT NULL;
SQL
done
chown -R postgres: "$WORK" 2>/dev/null || true

for r in $(seq 1 "$ROUNDS"); do
    for scenario in recent anywhere; do
        for part in 1000000 "$SMALL"; do
            rm -f "$WORK"/log.*
            (cd "$WORK" && pgbench -n -d "bench_$part" -f "$scenario.sql" -c 1 -T "$SECONDS_RUN" -l --log-prefix=log >/dev/null 2>"$WORK/err") \
                || { cat "$WORK/err"; exit 1; }
            cat "$WORK"/log.* | awk -v k="$scenario $part" '{print k, $3}' >>"$WORK/all"
        done
    done
done
python3 - "$WORK/all" "$SMALL" <<'PY'
import sys, collections
lat = collections.defaultdict(list)
for line in open(sys.argv[1]):
    s, p, us = line.split()
    lat[(s, p)].append(int(us) / 1000.0)
q = lambda v, f: sorted(v)[min(len(v) - 1, int(f * len(v)))]
print("%-10s %-22s %8s %9s %9s" % ("scenario", "partition size", "pulls", "p50 ms", "p99 ms"))
for s in ("recent", "anywhere"):
    for p in ("1000000", sys.argv[2]):
        v = lat[(s, p)]
        print("%-10s %-22s %8d %9.2f %9.2f" % (s, p, len(v), q(v, 0.5), q(v, 0.99)))
    a, b = lat[(s, "1000000")], lat[(s, sys.argv[2])]
    print("%-10s p50 %.2fx, p99 %.2fx with partitions of %s ids" % (s, q(b, 0.5) / q(a, 0.5), q(b, 0.99) / q(a, 0.99), sys.argv[2]))
PY
