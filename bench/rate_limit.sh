#!/usr/bin/env bash
# Benchmark: the rate limiter when its table is full, against SELECT 1.
#
# The cluster runs with bridgecore.rate_limit_entries = ENTRIES (default
# 1024, the minimum), and the table is filled first.  Then pgbench, with
# CLIENTS clients, calls
#   SELECT bridgecore._rate_limit('sync_pull', 1, <random user>, <random device>)
# so that every call is a key never seen before: each one must find room in a
# full table (the worst case, and what cycling device ids does).  The
# baseline is a SELECT 1 of the same random values, so the difference is the
# limiter's own cost.  Both run alternately (ROUNDS times each) in the same
# cluster; the result is the median of the per-round ratios of throughput,
# and the median extra latency per call.
#
# Usage: bench/rate_limit.sh [seconds per round] [rounds] [entries]
#        (CLIENTS=n in the environment, default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh

SECONDS_PER_ROUND=${1:-5}
ROUNDS=${2:-6}
ENTRIES=${3:-1024}
CLIENTS=${CLIENTS:-2}

make -s >/dev/null && make -s install >/dev/null
trap cluster_stop EXIT
cluster_start "bridgecore.rate_limit_entries = $ENTRIES"
WORK=$(mktemp -d)
trap 'cluster_stop; rm -rf "$WORK"' EXIT

psql -q -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION bridgecore;
-- Fill the table: twice as many windows as it has slots, all still live.
SELECT count(bridgecore._rate_limit('sync_pull', 1, 1000000000 + i, 'fill-' || i))
  FROM generate_series(1, 2 * $ENTRIES) i \g /dev/null
SQL

cat >"$WORK/limiter.sql" <<'SQL'
\set u random(1, 900000000)
\set d random(1, 2000000000)
SELECT bridgecore._rate_limit('sync_pull', 1, :u, 'device-' || :d);
SQL
cat >"$WORK/baseline.sql" <<'SQL'
\set u random(1, 900000000)
\set d random(1, 2000000000)
SELECT 1, :u, 'device-' || :d;
SQL

run() {  # run <script> <seconds> -> tps
    pgbench -n -M prepared -c "$CLIENTS" -j "$CLIENTS" -T "$2" -f "$WORK/$1.sql" 2>&1 \
        | sed -n 's/^tps = \([0-9.]*\) .*/\1/p'
}

echo "warming up..."
run baseline 2 >/dev/null
run limiter 2 >/dev/null

ratios=()
extras=()
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
        b=$(run baseline "$SECONDS_PER_ROUND")
        s=$(run limiter "$SECONDS_PER_ROUND")
    else
        s=$(run limiter "$SECONDS_PER_ROUND")
        b=$(run baseline "$SECONDS_PER_ROUND")
    fi
    ratio=$(awk -v a="$s" -v b="$b" 'BEGIN{printf "%.3f", a/b}')
    # Extra time per call, in microseconds of one client's latency (clients / tps).
    extra=$(awk -v a="$s" -v b="$b" -v c="$CLIENTS" 'BEGIN{printf "%.1f", (c / a - c / b) * 1e6}')
    ratios+=("$ratio")
    extras+=("$extra")
    printf 'round %2d: SELECT 1 %9.1f tps   _rate_limit %9.1f tps   ratio %s   extra %s us/call\n' \
        "$r" "$b" "$s" "$ratio" "$extra"
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
printf '_rate_limit / SELECT 1: %.3fx throughput, +%.1f us per call (medians of %d alternating rounds of %ss, %d clients, full table of %d entries, a new key per call)\n' \
    "$(printf '%s\n' "${ratios[@]}" | median)" "$(printf '%s\n' "${extras[@]}" | median)" \
    "$ROUNDS" "$SECONDS_PER_ROUND" "$CLIENTS" "$ENTRIES"
