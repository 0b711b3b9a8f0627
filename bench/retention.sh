#!/usr/bin/env bash
# Benchmark: retention by partition drop against DELETE of the same rows,
# and sync_pull latency while retention runs.
#
# One cluster, one loaded database (OLD events older than the cutoff, then
# NEW recent ones, a skewed model mix, bridgecore.partition_size PART), and
# copies of it made with CREATE DATABASE ... TEMPLATE:
#
#   drop    bridgecore.cleanup(before): the partitions of the old events go
#   warm    the same in a session that ran retention before, as the
#           launcher's backend has (functions compiled, catalogs cached)
#   floor   a bare DROP TABLE of the same partitions and its commit: what
#           PostgreSQL pays to drop them (their files are freed at commit),
#           the least retention by partition can cost
#   delete  DELETE of the same rows (what retention did before), then the
#           VACUUM it leaves behind
#   cost    for the drop, the floor, the DELETE and its VACUUM, besides the
#           time: the CPU time of the backend (/proc/<pid>/schedstat) and the
#           WAL written
#   pulls   CLIENTS pgbench clients pull pages of 100 events (sync_pull with
#           a token in the recent part of the log) for SECONDS seconds
#           without retention, then again while the launcher's retention
#           drops the old partitions one per transaction, one every
#           SECONDS / (partitions + 1) seconds; p50 and p99 of each run
#
# Usage: bench/retention.sh [old events, default 1000000] [new events,
# default 100000] [partition size, default 1000000] [seconds, default 20]
# [clients, default 4]
#
# COLD=1 measures the drop, the floor and the DELETE with the removed
# partitions in no cache (server restarted, their files dropped from the OS
# page cache), as for old partitions in a log larger than memory; by
# default the files are as CREATE DATABASE left them, cached. Most of a
# drop's cost is the file system freeing the files at commit, which depends
# on that and on the file system (online discard, for one): the script says
# where the cluster's files are and how that is mounted (TMPDIR chooses).
#
# FS=ext4 (as root) puts the cluster on a file system of its own: a new
# ext4 in a sparse file of FS_SIZE (default 24G) under /var/tmp, mounted
# through a loop device without online discard, the usual setting for a
# database's disk (fstrim runs from a timer instead). With online discard
# (the "discard" mount option) every dropped file waits for the device to
# trim its blocks, whatever removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

OLD=${1:-1000000}
NEW=${2:-100000}
PART=${3:-1000000}
SECONDS_RUN=${4:-20}
CLIENTS=${5:-4}
CUTOFF='2021-01-01 00:00:00+00'

make -s >/dev/null && make -s install >/dev/null
FS_IMAGE= FS_MOUNT=
fs_release() {
    [ -n "$FS_MOUNT" ] && { umount "$FS_MOUNT" && rmdir "$FS_MOUNT"; }
    [ -n "$FS_IMAGE" ] && rm -f "$FS_IMAGE"
    return 0
}
trap 'cluster_stop; rm -rf "$WORK"; fs_release' EXIT
if [ "${FS:-}" = ext4 ]; then
    [ "$(id -u)" = 0 ] || { echo "FS=ext4 needs root (mkfs, mount)" >&2; exit 1; }
    FS_IMAGE=$(mktemp /var/tmp/bridgecore-fs.XXXXXX)
    truncate -s "${FS_SIZE:-24G}" "$FS_IMAGE"
    mkfs.ext4 -q -F "$FS_IMAGE"
    FS_MOUNT=$(mktemp -d /var/tmp/bridgecore-mnt.XXXXXX)
    mount -o loop,nodiscard "$FS_IMAGE" "$FS_MOUNT" || { echo "cannot mount a loop device here" >&2; exit 1; }
    chmod 1777 "$FS_MOUNT"
    export TMPDIR=$FS_MOUNT
elif [ -n "${FS:-}" ]; then
    echo "FS: only ext4 is known" >&2; exit 1
fi
WORK=$(mktemp -d)
chmod 755 "$WORK"
cluster_start "shared_buffers = '1GB'" "max_wal_size = '8GB'" "checkpoint_timeout = '30min'" \
              "bridgecore.rate_limit_sync_pull = 0" "bridgecore.maintenance_interval = 0" \
              "bridgecore.partition_size = $PART" "autovacuum = off"

ms() { python3 -c 'import sys; print("%.2f" % (float(sys.argv[1]) * 1000))' "$1"; }

psql -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE bench_load' >/dev/null
psql -q -v ON_ERROR_STOP=1 -d bench_load <<SQL
CREATE EXTENSION bridgecore;
SELECT name FROM bridgecore.add_instance('bench', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key') \g /dev/null
-- Odoo ids 1..$OLD in 2020, then $NEW recent ones, in batches of 100,000.
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
-- The rows went in by INSERT, not by ingestion: what each partition holds
-- (bridgecore.partition_summary, which ingestion keeps) is counted once.
SELECT bridgecore._summarize_partitions() \g /dev/null
SQL
psql -q -d bench_load -c 'VACUUM ANALYZE' -c 'CHECKPOINT'
for db in bench_drop bench_warm bench_floor bench_delete bench_pull; do
    psql -q -d postgres -c "CREATE DATABASE $db TEMPLATE bench_load"
done
parts=$(psql -Atq -d bench_load -c "SELECT count(*) FROM bridgecore._partitions() WHERE hi <= $OLD + 1")
psql -q -d postgres -c 'CHECKPOINT'

cache="warm: the copies' files as CREATE DATABASE left them, in the OS page cache"
if [ -n "${COLD:-}" ]; then
    # Old partitions no cache holds any more, as in a log larger than
    # memory: the server restarted (empty shared buffers), then the files
    # of the partitions retention removes (tables, indexes, TOAST) dropped
    # from the OS page cache, in the databases of the drop, the floor and
    # the DELETE alike. The rest (catalogs, the recent partition, the small
    # tables) stays in the OS page cache, as for a server in use.
    cache="cold: server restarted, the removed partitions' files out of the OS page cache"
    files=()
    for db in bench_drop bench_warm bench_floor bench_delete; do
        mapfile -t -O "${#files[@]}" files < <(psql -Atq -d "$db" -c "
            SELECT pg_relation_filepath(c.oid) FROM bridgecore._partitions() p, pg_class c
             WHERE p.hi <= $OLD + 1
               AND (c.oid = p.part OR c.oid IN (SELECT i.indexrelid FROM pg_index i WHERE i.indrelid = p.part)
                    OR c.oid IN (SELECT t.reltoastrelid FROM pg_class t WHERE t.oid = p.part)
                    OR c.oid IN (SELECT i.indexrelid FROM pg_index i, pg_class t
                                  WHERE t.oid = p.part AND i.indrelid = t.reltoastrelid))")
    done
    cluster_restart
    python3 - "$CLUSTER_DIR/data" "${files[@]}" <<'PY'
import glob, os, sys
for rel in sys.argv[2:]:
    base = os.path.join(sys.argv[1], rel)
    for name in [base] + glob.glob(base + '.*') + glob.glob(base + '_*'):
        fd = os.open(name, os.O_RDONLY)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
PY
fi

echo "== $OLD old and $NEW recent events, partitions of $PART ids ($parts partitions of old events only)"
echo "== page cache $cache; data in $(df --output=fstype,target "$CLUSTER_DIR" | tail -1 | xargs), mount options: $(findmnt -no OPTIONS --target "$CLUSTER_DIR")"

# What a step costs the server besides its time: the CPU time of the
# session's backend (its schedstat, ns on a CPU: the time a commit waits for
# the file system to free the dropped files is not in it) and the WAL it
# wrote. COST_START before the step, COST_END after it prints both (ms and
# bytes) on lines of their own.
COST_START="SELECT pg_backend_pid() AS cost_pid, pg_current_wal_lsn() AS cost_lsn \\gset
\\setenv COST_PID :cost_pid
\\! cut -d' ' -f1 /proc/\$COST_PID/schedstat >\$COST_DIR/cpu0"
COST_END="\\! cut -d' ' -f1 /proc/\$COST_PID/schedstat >\$COST_DIR/cpu1
\\! echo \$(( (\$(cat \$COST_DIR/cpu1) - \$(cat \$COST_DIR/cpu0)) / 1000000 ))
SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), :'cost_lsn')::bigint;"
export COST_DIR=$WORK

# Retention by partition: one cleanup() call, timed in the server, its
# transaction's work and its commit (which truncates the dropped files)
# apart.
read -r work_s drop_s deleted drop_cpu drop_wal <<<"$(psql -Atq -d bench_drop <<SQL | tr '\n' ' '
SET client_min_messages = warning;
$COST_START
SELECT clock_timestamp() AS t0 \gset
BEGIN;
SELECT bridgecore.cleanup('$CUTOFF') AS answer \gset
SELECT extract(epoch FROM clock_timestamp() - :'t0');
COMMIT;
SELECT extract(epoch FROM clock_timestamp() - :'t0');
SELECT (:'answer'::jsonb) -> 'deleted';
$COST_END
SQL
)"
left_drop=$(psql -Atq -d bench_drop -c "SELECT count(*) FROM bridgecore.event")

# The same in a session that has run retention before (a cleanup() with a
# cutoff that drops nothing), as the launcher's long-lived backend has: its
# functions compiled and the catalogs it reads in its caches.
read -r warm_work_s warm_s <<<"$(psql -Atq -d bench_warm <<SQL | tr '\n' ' '
SET client_min_messages = warning;
SELECT bridgecore.cleanup('1970-01-01') \g /dev/null
SELECT clock_timestamp() AS t0 \gset
BEGIN;
SELECT bridgecore.cleanup('$CUTOFF') -> 'partitions_dropped' \g /dev/null
SELECT extract(epoch FROM clock_timestamp() - :'t0');
COMMIT;
SELECT extract(epoch FROM clock_timestamp() - :'t0');
SQL
)"

# The floor: a bare DROP TABLE of the same partitions, in a copy of the same
# database, with nothing else (no summary, no horizons, no checks): what
# PostgreSQL itself pays to drop them, most of it at the commit, which frees
# their files.
read -r floor_s floor_cpu floor_wal <<<"$(psql -Atq -d bench_floor <<SQL | tr '\n' ' '
SELECT string_agg(p.part::text, ', ') AS parts FROM bridgecore._partitions() p WHERE p.hi <= $OLD + 1 \gset
$COST_START
SELECT clock_timestamp() AS t0 \gset
BEGIN;
LOCK TABLE ONLY bridgecore.event IN ACCESS EXCLUSIVE MODE;
DROP TABLE :parts;
COMMIT;
SELECT extract(epoch FROM clock_timestamp() - :'t0');
$COST_END
SQL
)"

# DELETE of the same rows, and the VACUUM it leaves.
read -r delete_s delete_cpu delete_wal vacuum_s vacuum_cpu vacuum_wal <<<"$(psql -Atq -d bench_delete <<SQL | tr '\n' ' '
$COST_START
SELECT clock_timestamp() AS t0 \gset
DELETE FROM bridgecore.event WHERE id <= $OLD;
SELECT extract(epoch FROM clock_timestamp() - :'t0');
$COST_END
$COST_START
SELECT clock_timestamp() AS t1 \gset
VACUUM bridgecore.event;
SELECT extract(epoch FROM clock_timestamp() - :'t1');
$COST_END
SQL
)"
left_delete=$(psql -Atq -d bench_delete -c "SELECT count(*) FROM bridgecore.event")

printf '%-34s %12s\n' "retention of $OLD events" "ms"
printf '%-34s %12s\n' "partition drop (cleanup)" "$(ms "$drop_s")"
printf '%-34s %12s\n' "  of which before the commit" "$(ms "$work_s")"
printf '%-34s %12s\n' "partition drop, warm session" "$(ms "$warm_s")"
printf '%-34s %12s\n' "  of which before the commit" "$(ms "$warm_work_s")"
printf '%-34s %12s\n' "bare DROP TABLE (the floor)" "$(ms "$floor_s")"
printf '%-34s %12s\n' "DELETE" "$(ms "$delete_s")"
printf '%-34s %12s\n' "DELETE + VACUUM" "$(ms "$(python3 -c "print($delete_s + $vacuum_s)")")"
python3 -c "print('DELETE / drop: %.0fx   (DELETE + VACUUM) / drop: %.0fx' % ($delete_s / $drop_s, ($delete_s + $vacuum_s) / $drop_s))"
python3 -c "print('DELETE / warm drop: %.0fx   (DELETE + VACUUM) / warm drop: %.0fx' % ($delete_s / $warm_s, ($delete_s + $vacuum_s) / $warm_s))"
python3 -c "print('DELETE / floor: %.0fx   drop / floor: %.2fx   warm drop / floor: %.2fx' % ($delete_s / $floor_s, $drop_s / $floor_s, $warm_s / $floor_s))"
printf '%-34s %12s %14s\n' "what the server did" "CPU ms" "WAL bytes"
printf '%-34s %12s %14s\n' "partition drop (cleanup)" "$drop_cpu" "$drop_wal"
printf '%-34s %12s %14s\n' "bare DROP TABLE (the floor)" "$floor_cpu" "$floor_wal"
printf '%-34s %12s %14s\n' "DELETE" "$delete_cpu" "$delete_wal"
printf '%-34s %12s %14s\n' "VACUUM after the DELETE" "$vacuum_cpu" "$vacuum_wal"
python3 -c "d = max($drop_cpu, 1); print('backend CPU, DELETE / drop: %.0fx   (DELETE + VACUUM) / drop: %.0fx   (at least 1 ms of drop)' % ($delete_cpu / d, ($delete_cpu + $vacuum_cpu) / d))"
python3 -c "print('WAL, DELETE / drop: %.0fx   (DELETE + VACUUM) / drop: %.0fx' % ($delete_wal / max($drop_wal, 1), ($delete_wal + $vacuum_wal) / max($drop_wal, 1)))"
echo "events left: $left_drop after the drop, $left_delete after the DELETE; cleanup() answered deleted = $deleted"

# Concurrent pulls: devices whose state is at the newest event pull pages
# of 100 from tokens in the recent part of the log.
psql -q -d bench_pull <<SQL
SELECT bridgecore.sync_pull(1, 'dev' || d, 'sales_app', 1, instance => 'bench') FROM generate_series(1, $CLIENTS * 4) d \g /dev/null
UPDATE bridgecore.sync_state SET last_event_id = (SELECT max(id) FROM bridgecore.event);
SQL
cat >"$WORK/pull.sql" <<SQL
\set d random(1, $CLIENTS * 4)
\set pos random($OLD + 1, $OLD + $NEW - 1000)
SELECT bridgecore.sync_pull(1, 'dev' || :d, 'sales_app', 100, instance => 'bench', sync_token => 'bc1:1:' || :pos) IS NOT NULL;
SQL
chown -R postgres: "$WORK" 2>/dev/null || true

pull_run() {  # name
    rm -f "$WORK"/log.*
    (cd "$WORK" && pgbench -n -d bench_pull -f pull.sql -c "$CLIENTS" -j 2 -T "$SECONDS_RUN" -l --log-prefix="log" >/dev/null 2>"$WORK/pgbench.err") \
        || { cat "$WORK/pgbench.err"; exit 1; }
    cat "$WORK"/log.* | python3 -c '
import sys
lat = sorted(int(l.split()[2]) for l in sys.stdin)
p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000.0
print("%-34s %8d pulls  p50 %7.2f ms  p99 %7.2f ms" % (sys.argv[1], len(lat), p(0.5), p(0.99)))
print("%s %.3f %.3f" % (sys.argv[1], p(0.5), p(0.99)), file=open(sys.argv[2], "a"))' "$1" "$WORK/summary"
}

pull_run "pulls without retention"
# The launcher's way: one partition per transaction, spread over the run.
(
    gap=$(python3 -c "print($SECONDS_RUN / ($parts + 1))")
    for _ in $(seq "$parts"); do
        sleep "$gap"
        psql -Atq -d bench_pull -c "SELECT bridgecore._drop_partition('$CUTOFF')" >>"$WORK/drops"
    done
) &
dropper=$!
pull_run "pulls while retention drops"
wait "$dropper"
echo "partitions dropped during the run: $(grep -cv '^0$' "$WORK/drops") of $parts"
python3 - "$WORK/summary" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
base, during = float(rows[0][-1]), float(rows[-1][-1])
print("p99 during retention / without: %.2fx" % (during / base))
PY
