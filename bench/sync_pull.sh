#!/usr/bin/env bash
# Benchmark: bridgecore.sync_pull against the least-work pull, in throughput.
#
# 1,000,000 events, 10,000 devices, pgbench with 4 clients; each transaction
# pulls a page of 100 events for a random device, with sync_pull or with the
# least-work pull (one SQL statement that reads the cursor, selects the page
# and moves the cursor: defined in bench/lib/sync_pull.sh, and checked to
# return the same events as sync_pull before anything is measured).
#
# A round runs each side once, the order alternating between rounds, and
# both sides do the same work: each run starts from the same positions
# (both state tables reset and vacuumed, a checkpoint, the log frozen and in
# shared buffers), and makes the same calls (the same number per client,
# the same devices from a fixed pgbench seed).  After each round the calls
# and delivered events of both sides are counted (every call must deliver a
# full page) and every device must have ended at the same position on both
# sides; the run fails otherwise.  The number of calls per client is set
# once, from a warm-up, so that a run takes about the given seconds.
#
# Absolute figures on a shared machine are noise; the result is the median
# of the per-round ratios (sync_pull tps / baseline tps), with their spread
# and each side's tps.  bench/sync_pull_callgrind.sh measures the same two
# pulls in instructions, which do not depend on the machine's load.
#
# Usage: bench/sync_pull.sh [seconds per run] [rounds]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
. bench/lib/sync_pull.sh

SECONDS_PER_RUN=${1:-5}
ROUNDS=${2:-6}
CLIENTS=4

make -s >/dev/null && make -s install >/dev/null
trap cluster_stop EXIT
cluster_start "${BENCH_CONF[@]}"
WORK=$(mktemp -d)
trap 'cluster_stop; rm -rf "$WORK"' EXIT

bench_write_pulls "$WORK"
for side in sync_pull baseline; do
    { echo "\\set d random(1, $DEVICES)"; cat "$WORK/$side.sql"; } >"$WORK/$side.pgbench"
done
bench_load "$WORK"
bench_check_same
psql -q -At -c "$BENCH_PREWARM" >/dev/null

# run <side> <pgbench limit option> -> tps
run() {
    local out
    out=$(pgbench -n -M prepared -c $CLIENTS -j $CLIENTS --random-seed=$SEED "$2" \
                  -f "$WORK/$1.pgbench" 2>&1) || { echo "$out" >&2; exit 1; }
    sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out"
}

echo "warming up..."
bench_reset baseline; wb=$(run baseline -T3)
bench_reset sync_pull; ws=$(run sync_pull -T3)
CALLS=$(awk -v a="$wb" -v b="$ws" -v t="$SECONDS_PER_RUN" -v c=$CLIENTS \
            'BEGIN { n = int(t * (a + b) / 2 / c); print ((n < 100) ? 100 : n) }')
echo "$CALLS calls per client and run ($((CALLS * CLIENTS)) per run, the same devices on both sides)"

ratios=() base_tps=() pull_tps=()
for r in $(seq 1 "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then order="baseline sync_pull"; else order="sync_pull baseline"; fi
    for side in $order; do
        bench_reset "$side"
        tps=$(run "$side" "-t$CALLS")
        if [ "$side" = baseline ]; then b=$tps; else s=$tps; fi
    done
    check=$(bench_verify $((CALLS * CLIENTS)))
    case $check in FAIL*) echo "round $r: $check" >&2; exit 1 ;; esac
    ratio=$(awk -v a="$s" -v b="$b" 'BEGIN { printf "%.3f", a / b }')
    ratios+=("$ratio") base_tps+=("$b") pull_tps+=("$s")
    printf 'round %2d: baseline %8.1f tps   sync_pull %8.1f tps   ratio %s   (each: %s calls, %s events)\n' \
        "$r" "$b" "$s" "$ratio" ${check% *} ${check#* }
done

read -r rm _ rmin rmax < <(bench_stats "${ratios[@]}")
read -r bm _ bmin bmax < <(bench_stats "${base_tps[@]}")
read -r sm _ smin smax < <(bench_stats "${pull_tps[@]}")
printf 'baseline:  median %.1f tps (min %.1f, max %.1f)\n' "$bm" "$bmin" "$bmax"
printf 'sync_pull: median %.1f tps (min %.1f, max %.1f)\n' "$sm" "$smin" "$smax"
printf 'sync_pull / least-work pull: %.2fx (median of %d alternating rounds; per-round min %.2fx, max %.2fx; %d clients, %d calls per run, %d events, %d devices)\n' \
    "$rm" "$ROUNDS" "$rmin" "$rmax" $CLIENTS $((CALLS * CLIENTS)) $EVENTS $DEVICES
