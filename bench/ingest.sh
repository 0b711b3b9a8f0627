#!/usr/bin/env bash
# Benchmark: end-to-end ingestion by the background worker against COPY.
#
# The Odoo stand-in serves N pre-rendered update.webhook rows in
# search_read batches of 500; the worker pulls, validates and stores them
# (one transaction per batch, NOTIFYs included).  The baseline COPYs the very
# same rows (exported from the table afterwards) into the same table, in the
# same run.  Reported as a ratio, since absolute figures on a shared machine
# are noise.  Usage: bench/ingest.sh [events, default 100000] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
N=${1:-100000}
ROUNDS=${2:-3}

make -s >/dev/null && make -s install >/dev/null
STANDIN_PID=
WORK=$(mktemp -d)
chmod 755 "$WORK"
trap '[ -n "$STANDIN_PID" ] && kill $STANDIN_PID; cluster_stop; rm -rf "$WORK"' EXIT
cluster_start "bridgecore.database = 'postgres'" "shared_buffers = '512MB'" "max_wal_size = '4GB'"
psql -q -c "CREATE EXTENSION bridgecore"

ms() { date +%s%3N; }
total_worker=0
total_copy=0
ratios=()
for r in $(seq 1 "$ROUNDS"); do
    PORT=$(free_port)
    python3 test/odoo_standin.py --port "$PORT" >/dev/null &
    STANDIN_PID=$!
    until curl -s -o /dev/null -XPOST "http://127.0.0.1:$PORT/control" -d '{"op":"stats"}'; do sleep 0.1; done
    curl -s -o /dev/null -XPOST "http://127.0.0.1:$PORT/control" -d "{\"op\":\"bulk\",\"count\":$N}"

    # Worker: from the commit that adds the instance to the last row stored.
    t0=$(ms)
    psql -q -c "SELECT count(*) FROM bridgecore.add_instance('bench$r', 'http://127.0.0.1:$PORT', 'odoo',
                'bridgecore', 'bc-api-key', batch_size => 500, poll_interval => '10 milliseconds')" >/dev/null
    until [ "$(psql -Atc "SELECT events_ingested FROM bridgecore.instances WHERE name = 'bench$r'")" -ge "$N" ]; do
        sleep 0.05
    done
    t1=$(ms)
    kill $STANDIN_PID; STANDIN_PID=

    # Baseline: COPY the same rows into the same table (as another instance).
    psql -q -c "SELECT count(*) FROM bridgecore.add_instance('copy$r', 'http://127.0.0.1:1', 'x', 'x', 'x-secret-key', enabled => false)" >/dev/null
    psql -q -c "\\copy (SELECT (SELECT id FROM bridgecore.instance WHERE name = 'copy$r'), odoo_id, model, record_id, event, priority, category, payload, changed_fields, odoo_user_id, odoo_user_name, occurred_at FROM bridgecore.event e WHERE instance_id = (SELECT id FROM bridgecore.instance WHERE name = 'bench$r')) TO '$WORK/rows.copy'"
    t2=$(ms)
    psql -q -c "\\copy bridgecore.event (instance_id, odoo_id, model, record_id, event, priority, category, payload, changed_fields, odoo_user_id, odoo_user_name, occurred_at) FROM '$WORK/rows.copy'"
    t3=$(ms)
    w=$((t1 - t0)); c=$((t3 - t2))
    printf 'round %d: worker %d events in %d ms (%.0f/s)   COPY %d ms (%.0f/s)   ratio %.2f\n' \
        "$r" "$N" "$w" "$(awk -v n=$N -v t=$w 'BEGIN{print n*1000/t}')" "$c" \
        "$(awk -v n=$N -v t=$c 'BEGIN{print n*1000/t}')" "$(awk -v a=$c -v b=$w 'BEGIN{print a/b}')"
    total_worker=$((total_worker + w)); total_copy=$((total_copy + c))
    ratios+=("$(awk -v a=$c -v b=$w 'BEGIN{print a/b}')")
    psql -q -c "SELECT bridgecore.remove_instance('bench$r'), bridgecore.remove_instance('copy$r')" >/dev/null
done
printf 'worker ingestion / COPY: median of rounds %.2fx (rounds %s), total time %.2fx (%d rounds of %d events, batches of 500)\n' \
    "$(printf '%s\n' "${ratios[@]}" | sort -g | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')" \
    "$(printf '%s\n' "${ratios[@]}" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%.2f to %.2f", lo, hi}')" \
    "$(awk -v a=$total_copy -v b=$total_worker 'BEGIN{print a/b}')" "$ROUNDS" "$N"
