#!/usr/bin/env bash
# Benchmark: bridgecore.sync_pull against the least-work pull, in CPU
# instructions per pull (callgrind), which unlike throughput do not depend on
# what else the machine runs.
#
# The same load, pulls, starting positions and equality check as
# bench/sync_pull.sh (bench/lib/sync_pull.sh).  The server is then stopped,
# and each repeat runs one single-user backend (postgres --single, which
# loads shared_preload_libraries like any backend) under
# valgrind --tool=callgrind, feeding it:
#   - both state tables reset to the starting positions, VACUUM, CHECKPOINT,
#     the log and both state tables loaded into shared buffers,
#   - both pulls as prepared statements (as pgbench -M prepared runs them),
#   - WARM pulls of each kind on other devices (plan and catalog caches),
#   - then, for PULLS devices, the device's sync_pull and the device's
#     baseline pull, each followed by SELECT pg_sleep(0),
#   - EMPTY more SELECT pg_sleep(0),
#   - a check that both sides made the same calls and ended at the same
#     positions.
# callgrind dumps its counts each time pg_sleep is entered
# (--dump-before=pg_sleep), so each measured statement gets its own count;
# the median count of the empty intervals (one marker statement) is
# subtracted from each.  Everything before the first marker (start-up, the
# reset, the prewarm and the warm-up) is left out.  Each repeat starts from
# the same state, so repeats must agree; the spread between them is
# printed.
#
# With PROFILE_DIR set, the profiles of the first measured pull of each kind
# (last repeat) are kept there, as sync_pull.callgrind and
# baseline.callgrind, for callgrind_annotate --inclusive=yes.
#
# Usage: bench/sync_pull_callgrind.sh [pulls per side] [repeats]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
. bench/lib/sync_pull.sh

PULLS=${1:-200}
REPEATS=${2:-3}
WARM=20
EMPTY=20
[ $((WARM + PULLS)) -le "$DEVICES" ] || { echo "at most $((DEVICES - WARM)) pulls" >&2; exit 1; }

make -s >/dev/null && make -s install >/dev/null
trap cluster_stop EXIT
cluster_start "${BENCH_CONF[@]}"
WORK=$(mktemp -d)
chmod 755 "$WORK"
trap 'cluster_stop; rm -rf "$WORK"' EXIT

bench_write_pulls "$WORK"
bench_load "$WORK"
bench_check_same
as_cluster_owner "$PG_BINDIR/pg_ctl" -D "$CLUSTER_DIR/data" -w -t 60 -m fast stop >/dev/null

# The single-user session; -j: a statement ends with a semicolon and an
# empty line.
{
    for s in "$(bench_reset_sql baseline)" "$(bench_reset_sql sync_pull)" "$BENCH_VACUUM" CHECKPOINT \
             "$BENCH_PREWARM" \
             "PREPARE sync_pull_pull(integer) AS $(bench_statement "$WORK/sync_pull.sql")" \
             "PREPARE baseline_pull_pull(integer) AS $(bench_statement "$WORK/baseline.sql")"; do
        printf '%s;\n\n' "$s"
    done
    for d in $(seq 1 $WARM); do
        printf 'EXECUTE sync_pull_pull(%d);\n\nEXECUTE baseline_pull_pull(%d);\n\n' "$d" "$d"
    done
    printf 'SELECT pg_sleep(0);\n\n'
    for d in $(seq $((WARM + 1)) $((WARM + PULLS))); do
        printf 'EXECUTE sync_pull_pull(%d);\n\nSELECT pg_sleep(0);\n\n' "$d"
        printf 'EXECUTE baseline_pull_pull(%d);\n\nSELECT pg_sleep(0);\n\n' "$d"
    done
    for _ in $(seq 1 $EMPTY); do printf 'SELECT pg_sleep(0);\n\n'; done
    cat <<SQL
DO \$\$
DECLARE
    bad bigint;
    short bigint;
BEGIN
    SELECT count(*) FILTER (WHERE b.last_event_id <> s.last_event_id OR b.sync_count <> 1 OR s.sync_count <> 1),
           count(*) FILTER (WHERE delivered(p.start, b.last_event_id) <> $PAGE)
      INTO bad, short
      FROM bench_start p JOIN baseline_state b USING (device_id)
      JOIN bridgecore.sync_state s USING (user_id, device_id)
     WHERE p.user_id <= $((WARM + PULLS));
    IF bad > 0 OR short > 0 THEN
        RAISE EXCEPTION 'the two sides did not do the same work: % devices differ, % short pages', bad, short;
    END IF;
END
\$\$;

SQL
} >"$WORK/session.sql"

# ir <dump> -> its instruction count
ir() { sed -n 's/^totals: //p' "$1"; }
means=()
for rep in $(seq 1 "$REPEATS"); do
    out=$WORK/cg.$rep
    mkdir "$out"
    [ "$(id -u)" = 0 ] && chown postgres: "$out"
    as_cluster_owner valgrind --tool=callgrind --dump-before=pg_sleep --dump-line=no \
        --callgrind-out-file="$out/cg" "$PG_BINDIR/postgres" --single -j -D "$CLUSTER_DIR/data" postgres \
        <"$WORK/session.sql" >"$out/stdout" 2>"$out/stderr"
    if grep -q 'ERROR' "$out/stderr"; then
        grep -B2 -A5 'ERROR' "$out/stderr" >&2
        exit 1
    fi
    # Dump k + 1 holds what ran between the k-th and the (k+1)-th marker.
    dumps=$(find "$out" -type f -name 'cg.*' | wc -l)
    [ "$dumps" = $((2 * PULLS + EMPTY + 1)) ] || { echo "FAIL: $dumps callgrind dumps" >&2; exit 1; }
    grep -q 'bridgecore\.so' "$out/cg.2" || { echo "FAIL: bridgecore.so not in sync_pull's profile" >&2; exit 1; }
    empty=() pull=() base=()
    for k in $(seq 1 $EMPTY); do empty+=("$(ir "$out/cg.$((2 * PULLS + k + 1))")"); done
    read -r marker _ < <(bench_stats "${empty[@]}")
    marker=$(printf '%.0f' "$marker")
    for i in $(seq 0 $((PULLS - 1))); do
        pull+=($(($(ir "$out/cg.$((2 * i + 2))") - marker)))
        base+=($(($(ir "$out/cg.$((2 * i + 3))") - marker)))
    done
    read -r pmed pmean _ < <(bench_stats "${pull[@]}")
    read -r bmed bmean _ < <(bench_stats "${base[@]}")
    read -r pmed pmean bmed bmean < <(printf '%.0f %.0f %.0f %.0f\n' "$pmed" "$pmean" "$bmed" "$bmean")
    means+=("$pmean $bmean")
    printf 'repeat %d: sync_pull %d Ir per pull (median %d), baseline %d (median %d); sync_pull costs %.2fx the baseline\n' \
        "$rep" "$pmean" "$pmed" "$bmean" "$bmed" "$(awk -v a="$pmean" -v b="$bmean" 'BEGIN { print a / b }')"
done

if [ -n "${PROFILE_DIR:-}" ]; then
    mkdir -p "$PROFILE_DIR"
    cp "$out/cg.2" "$PROFILE_DIR/sync_pull.callgrind"
    cp "$out/cg.3" "$PROFILE_DIR/baseline.callgrind"
fi

printf '%s\n' "${means[@]}" | awk -v n="$PULLS" -v w=$WARM -v e=$EMPTY '
    { p[NR] = $1; b[NR] = $2; sp += $1; sb += $2 }
    END {
        pmin = pmax = p[1]; bmin = bmax = b[1]
        for (i = 2; i <= NR; i++) {
            if (p[i] < pmin) pmin = p[i]; if (p[i] > pmax) pmax = p[i]
            if (b[i] < bmin) bmin = b[i]; if (b[i] > bmax) bmax = b[i]
        }
        printf "sync_pull: %d Ir per pull, baseline: %d Ir per pull (mean of %d pulls each, after %d warm-up pulls, marker of %d empty intervals subtracted)\n", sp / NR, sb / NR, n, w, e
        printf "sync_pull / least-work pull: %.2fx the instructions per pull (the inverse, %.2fx, is the throughput ratio it predicts)\n", sp / sb, sb / sp
        printf "repeats (%d): sync_pull %d to %d (%.2f%%), baseline %d to %d (%.2f%%)\n", NR, pmin, pmax, 100 * (pmax - pmin) / pmin, bmin, bmax, 100 * (bmax - bmin) / bmin
    }'
