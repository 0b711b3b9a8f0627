#!/usr/bin/env bash
# Builds the libFuzzer targets and runs each for a bounded time on a copy
# of its seed corpus:
#
#     test/fuzz/run.sh [seconds-per-target]     (default 20)
#
# Prints "ok - fuzz <target>: N runs" or "not ok - fuzz <target>: ..." per
# target and exits non-zero when a target found a crash, a sanitizer report,
# a leak, a hang or a broken invariant.  The input that did it is kept in
# test/fuzz/artifacts/<target>/ (replay: test/fuzz/build/fuzz_<target>
# <file>).  Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev),
# libjson-c-dev, libcurl4-openssl-dev and postgresql-server-dev-15; installs
# nothing.  pg_config is taken from PATH, or from PG_CONFIG.
set -u
cd "$(dirname "$0")"

seconds=${1:-20}
targets="decode odoo_time sync_token rpc_answer jwt"
failed=0

if ! make -s PG_CONFIG="${PG_CONFIG:-pg_config}" >build.log 2>&1; then
    cat build.log
    rm -f build.log
    for t in $targets; do echo "not ok - fuzz $t: the targets did not build"; done
    exit 1
fi
rm -f build.log

work=$(mktemp -d "${TMPDIR:-/tmp}/bridgecore-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT

for t in $targets; do
    case $t in
        decode|rpc_answer) opts="-dict=json.dict -max_len=8192" ;;
        jwt) opts="-dict=json.dict -max_len=8400" ;;     # tokens up to 8192 bytes, and beyond
        *) opts="-max_len=512" ;;
    esac
    rm -rf "artifacts/$t"
    mkdir -p "$work/$t" "artifacts/$t"
    cp corpus/$t/* "$work/$t/"
    # -timeout: an input taking 10 s is a hang; leaks are checked per input.
    ./build/fuzz_$t $opts -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="artifacts/$t/" "$work/$t" >"$work/$t.log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$work/$t.log" | tail -1)
    if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
        echo "ok - fuzz $t: $runs runs"
    else
        failed=1
        echo "not ok - fuzz $t: exit code $rc after ${runs:-?} runs"
        grep -aE 'invariant broken|^  |ERROR: |SUMMARY: |runtime error|ereport|raised at' "$work/$t.log" \
            | grep -avE '^    #' | head -20 | sed 's/^/# /'
        for f in artifacts/$t/*; do
            [ -e "$f" ] && echo "# reproducer: test/fuzz/$f"
        done
    fi
done
exit $failed
