#!/usr/bin/env bash
# Runs the whole test suite (test/run) against a build of bridgecore.so with
# AddressSanitizer and UndefinedBehaviorSanitizer, and fails on any report.
#
# Nothing outside a temporary directory is changed: the PostgreSQL
# installation that pg_config names is copied there (the same relative
# layout, so the copy finds its own files: PostgreSQL computes its paths
# relative to its binary), the sources are copied there and built with the
# sanitizers, and the suite runs with PATH pointing at the copy.  The tree
# this script is in, and the system's PostgreSQL, keep their normal build.
#
# Needs clang with its sanitizer runtimes (libclang-rt-14-dev) and patchelf
# (test/lib/install-deps.sh installs them), plus everything test/run needs.
# Prints TAP-style "ok - ..." / "not ok - ..." lines; exits non-zero when
# a check fails.  test/run calls it as its last stage; the nested test/run
# gets BRIDGECORE_SANITIZE=1, which leaves that stage out.
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD

failures=0
pass() { echo "ok - $1"; }
fail() {  # fail <name> [diagnostic text]
    failures=$((failures + 1))
    echo "not ok - $1"
    [ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/#   /'
    return 0
}
finish() {
    [ "$failures" -eq 0 ]
    exit
}

# clang's sanitizers throughout: the module, the check module below and the
# runtime loaded into the server are all clang's.  Not gcc's: gcc keeps UBSan
# in a runtime of its own (libubsan) that reads UBSAN_OPTIONS only at its
# first report, from /proc/self/environ, which a backend has overwritten by
# then with its process title, so the options would be lost.  clang's ASan
# runtime contains UBSan and reads both ASAN_OPTIONS and UBSAN_OPTIONS when
# the postmaster starts.  -shared-libasan: the module needs the runtime as a
# shared library, the one the server loads.
SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
CLANG_FLAGS="$SANITIZE -shared-libasan"
# pg_config's CFLAGS are gcc's; these are the warnings clang gives for them
# and for PostgreSQL's headers, none of them about BridgeCore's code.
CLANG_QUIET="-Wno-ignored-optimization-argument -Wno-unknown-warning-option -Wno-ignored-attributes"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bridgecore-sanitize.XXXXXX")
chmod 755 "$WORK"
cleanup() {
    type cluster_stop >/dev/null 2>&1 && cluster_stop
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Sanitizer reports go to files here (report.<pid>, one for each process
# that reports), written by the server's processes, hence world-writable.
REPORTS=$WORK/reports
CHECK_REPORTS=$WORK/check-reports
SERVER_LOGS=$WORK/server-logs
mkdir -p "$REPORTS" "$CHECK_REPORTS" "$SERVER_LOGS"
chmod 1777 "$REPORTS" "$CHECK_REPORTS" "$SERVER_LOGS"

# detect_leaks=0: PostgreSQL does not free what a process still holds when it
# exits (memory contexts die with the process), so LeakSanitizer would report
# every backend and worker exit.  detect_stack_use_after_return=1 and
# strict_string_checks=1: two checks that are off by default.
# halt_on_error=1 (and -fno-sanitize-recover in the build): the first report
# ends the process.  abort_on_error=1: with SIGABRT, which the postmaster
# treats as a crash (it resets every session, so the test at hand fails
# too).  log_path: every report is written to a file, whichever process made
# it, and found below; the server logs are searched as well.
sanitizer_options() {  # sanitizer_options <report directory>
    export ASAN_OPTIONS="detect_leaks=0:detect_stack_use_after_return=1:strict_string_checks=1:abort_on_error=1:halt_on_error=1:disable_coredump=1:log_path=$1/report"
    export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:abort_on_error=1:log_path=$1/report"
}

for tool in clang patchelf pg_config; do
    command -v "$tool" >/dev/null || { fail "$tool is installed (test/lib/install-deps.sh)"; finish; }
done
ASAN_RUNTIME=$(clang -print-file-name=libclang_rt.asan-x86_64.so)
ASAN_SONAME=$(patchelf --print-soname "$ASAN_RUNTIME" 2>/dev/null)
if [ -z "$ASAN_SONAME" ]; then
    fail "clang's AddressSanitizer runtime is installed (libclang-rt-14-dev)" \
        "clang -print-file-name=libclang_rt.asan-x86_64.so: $ASAN_RUNTIME"
    finish
fi

# ---- a private copy of the PostgreSQL installation ------------------------------

# pg_config --bindir is <prefix>/lib/postgresql/<major>/bin (Debian's layout).
MAJOR=$(pg_config --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
SOURCE=$(cd "$(pg_config --bindir)/../../../.." && pwd)
PREFIX=$WORK/pg/usr
PGBIN=$PREFIX/lib/postgresql/$MAJOR/bin
if mkdir -p "$PREFIX/lib/postgresql" "$PREFIX/share/postgresql" "$PREFIX/include" &&
   cp -a "$SOURCE/lib/postgresql/$MAJOR" "$PREFIX/lib/postgresql/" &&
   cp -a "$SOURCE/share/postgresql/$MAJOR" "$PREFIX/share/postgresql/" &&
   cp -a "$SOURCE/include/postgresql" "$PREFIX/include/" &&
   [ "$("$PGBIN/pg_config" --pkglibdir)" = "$PREFIX/lib/postgresql/$MAJOR/lib" ]; then
    pass "a private copy of PostgreSQL $MAJOR ($SOURCE) that finds its own files"
else
    fail "a private copy of PostgreSQL $MAJOR ($SOURCE) that finds its own files" \
        "pg_config --pkglibdir of the copy: $("$PGBIN/pg_config" --pkglibdir 2>&1)"
    finish
fi
export PATH=$PGBIN:$PATH

# ---- the ASan runtime, initialised first in the server --------------------------

# The ASan runtime has to come first twice over: first in the lookup order,
# so that its malloc, free and the rest interpose libc's, and first to
# initialise, before any library constructor calls into them.  LD_PRELOAD, or
# adding it to the postgres binary's NEEDED list, gets the order of lookup
# right but not the order of initialisation: the dynamic loader runs the
# constructors of unrelated libraries in reverse load order, so the
# constructor of libgpg-error (loaded for libgcrypt, for libsystemd) runs
# before ASan's, calls bindtextdomain() into the uninitialised interceptors,
# and leaves glibc's lock broken: postgres hangs at startup.  A dependency
# fixes the order (the loader initialises what a library needs before the
# library), so:
#   - the private postgres binary gets the runtime as its first NEEDED entry
#     (lookup order; ASan checks it is first), and
#   - a private copy of libgpg-error gets the runtime as a NEEDED entry
#     (initialisation order),
#   - both are found through a DT_RPATH of the binary, a directory next to
#     it that also holds a copy of the runtime: unlike DT_RUNPATH, DT_RPATH
#     also applies to the libraries the binary needs indirectly, and it is
#     relative to the binary ($ORIGIN), so no LD_LIBRARY_PATH is needed and
#     no other program is affected.
# Only this binary changes; psql, pg_ctl and the rest stay uninstrumented.
POSTGRES=$PGBIN/postgres
FIRST=$PREFIX/lib/postgresql/$MAJOR/asan-first
mkdir -p "$FIRST"
problem=
gpg_error=$(ldd "$POSTGRES" | awk '$1 ~ /^libgpg-error\.so/ {print $1, $3; exit}')
{ cp -L "$ASAN_RUNTIME" "$FIRST/$ASAN_SONAME" &&
  patchelf --add-needed "$ASAN_SONAME" "$POSTGRES" &&
  patchelf --force-rpath --set-rpath '$ORIGIN/../asan-first' "$POSTGRES"; } 2>&1 ||
    problem="patching the private postgres failed"
if [ -z "$problem" ] && [ -n "$gpg_error" ]; then
    set -- $gpg_error
    { cp -L "$2" "$FIRST/$1" && patchelf --add-needed "$ASAN_SONAME" "$FIRST/$1"; } 2>&1 ||
        problem="patching the private copy of libgpg-error failed"
fi
first_needed=$(patchelf --print-needed "$POSTGRES" | head -1)
sanitizer_options "$CHECK_REPORTS"
[ -z "$problem" ] && [ -n "$gpg_error" ] && ! ldd "$POSTGRES" | grep -qF "/asan-first/libgpg-error" &&
    problem="postgres does not load the private libgpg-error: $(ldd "$POSTGRES" | grep gpg-error)"
if [ -z "$problem" ] && [ "$first_needed" = "$ASAN_SONAME" ] &&
   version=$(timeout 30 "$POSTGRES" --version 2>&1); then
    pass "the private postgres loads and initialises $ASAN_SONAME first ($version)"
else
    fail "the private postgres loads and initialises $ASAN_SONAME first" \
        "${problem:-first NEEDED: $first_needed; postgres --version: ${version:-timed out or failed}}"
    finish
fi

# ---- the sanitized build -----------------------------------------------------------

# A copy of the sources without build products, so that this tree keeps its
# normal build (the demo and the benchmarks install it).
SRC=$WORK/src
mkdir -p "$SRC"
tar -C "$ROOT" --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --exclude=./test/results --exclude=./test/output_iso --exclude=./bench/out \
    --exclude='__pycache__' -cf - . | tar -C "$SRC" -xf -
chmod -R a+rX "$SRC"
# PGXS adds COPT to CFLAGS and LDFLAGS.  The nested test/run's make then
# finds everything built and only installs it again.
MAKE_ARGS=(CC=clang "COPT=$CLANG_FLAGS $CLANG_QUIET")
sanitized() {  # sanitized <module>: it needs the ASan runtime
    patchelf --print-needed "$1" 2>/dev/null | grep -qxF "$ASAN_SONAME"
}
if out=$(make -C "$SRC" -s -j2 "${MAKE_ARGS[@]}" 2>&1 && make -C "$SRC" -s install 2>&1) &&
   sanitized "$SRC/bridgecore.so"; then
    pass "bridgecore.so built with $SANITIZE, installed in the copy"
else
    fail "bridgecore.so built with $SANITIZE, installed in the copy" "$out"
    finish
fi

# ---- the sanitizers work in the server, and their reports are found ------------------

# reports [<pattern>] <directory...>: the lines that begin a sanitizer report
# (or those of them that match the pattern) in the files there, as
# "file:line".
REPORT='ERROR: AddressSanitizer|runtime error:'
reports() {
    local pattern=$REPORT
    [ -d "$1" ] || { pattern=$1; shift; }
    find "$@" -type f -exec grep -H -E "$pattern" {} + 2>/dev/null
}

# A module with a heap overflow and a shift by more than the width, called in
# a backend of a throwaway cluster (with bridgecore preloaded, as in the suite).
cat >"$WORK/check.c" <<'EOF'
#include "postgres.h"
#include "fmgr.h"

PG_MODULE_MAGIC;

PG_FUNCTION_INFO_V1(heap_overflow);
Datum
heap_overflow(PG_FUNCTION_ARGS)
{
    volatile char *p = malloc(8);

    p[PG_GETARG_INT32(0)] = 1;
    free((void *) p);
    PG_RETURN_INT32(0);
}

PG_FUNCTION_INFO_V1(shift_overflow);
Datum
shift_overflow(PG_FUNCTION_ARGS)
{
    PG_RETURN_INT32(1 << PG_GETARG_INT32(0));
}
EOF
. test/lib/cluster.sh
if ! out=$(clang $CLANG_FLAGS $CLANG_QUIET -fPIC -shared -I"$(pg_config --includedir-server)" \
               -o "$WORK/check.so" "$WORK/check.c" 2>&1); then
    fail "a module with planted errors builds" "$out"
elif ! cluster_start >"$WORK/cluster_start.log" 2>&1; then
    fail "a sanitized server with bridgecore preloaded starts" "$(cat "$WORK/cluster_start.log")
$(reports "$CHECK_REPORTS")"
else
    pass "a sanitized server with bridgecore preloaded starts"
    # planted <function> <argument>: creates the function and calls it, in one
    # session (the crash would lose a commit not yet flushed).
    planted() {
        psql -X -q -c "CREATE FUNCTION $1(int) RETURNS int AS '$WORK/check.so' LANGUAGE C STRICT" \
                   -c "SELECT $1($2)" >/dev/null 2>&1
    }
    # Each planted error aborts its backend, and the postmaster reinitialises:
    # ready <n> waits for its n-th "ready to accept connections".
    ready() {
        local i
        for i in $(seq 300); do
            [ "$(grep -c 'ready to accept connections' "$CLUSTER_DIR/server.log")" -ge "$1" ] &&
                pg_isready -q && return 0
            sleep 0.1
        done
        return 1
    }
    planted heap_overflow 8
    ready 2
    if reports "$CHECK_REPORTS" | grep -q 'ERROR: AddressSanitizer: heap-buffer-overflow'; then
        pass "a heap overflow in a backend is reported and found"
    else
        fail "a heap overflow in a backend is reported and found" \
            "$(ls -l "$CHECK_REPORTS"; tail -20 "$CLUSTER_DIR/server.log")"
    fi
    planted shift_overflow 40
    ready 3
    if reports "$CHECK_REPORTS" | grep -q 'runtime error: shift exponent 40'; then
        pass "undefined behaviour in a backend is reported and found"
    else
        fail "undefined behaviour in a backend is reported and found" \
            "$(ls -l "$CHECK_REPORTS"; tail -20 "$CLUSTER_DIR/server.log")"
    fi
fi
cluster_stop
[ "$failures" -eq 0 ] || finish

# ---- the whole suite ---------------------------------------------------------------

sanitizer_options "$REPORTS"
start=$(date +%s)
BRIDGECORE_SANITIZE=1 BRIDGECORE_LOG_DIR=$SERVER_LOGS "$SRC/test/run" >"$WORK/suite.log" 2>&1
suite_rc=$?
took=$(($(date +%s) - start))
MODULE=$(pg_config --pkglibdir)/bridgecore.so
if sanitized "$MODULE"; then
    pass "the suite ran with the sanitized bridgecore.so"
else
    fail "the suite ran with the sanitized bridgecore.so" "$MODULE needs: $(patchelf --print-needed "$MODULE" 2>&1)"
fi
totals=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/suite.log" | tail -1)
# The nested suite's stages, and all it printed but its passes if it failed.
if [ "$suite_rc" -eq 0 ]; then
    grep -E '^== ' "$WORK/suite.log"
else
    grep -vE '^ok |^ *$|^[0-9]+ passed, [0-9]+ failed$' "$WORK/suite.log"
fi | sed 's/^/# /'
if [ "$suite_rc" -eq 0 ] && [ -n "$totals" ]; then
    pass "the whole suite (test/run) under ASan+UBSan: $totals (${took} s)"
else
    fail "the whole suite (test/run) under ASan+UBSan: ${totals:-no totals} (exit $suite_rc, ${took} s)"
fi

# Every report, in the report files or in a server log, is a failure.
for kind in "AddressSanitizer:ERROR: AddressSanitizer" "UndefinedBehaviorSanitizer:runtime error:"; do
    found=$(reports "${kind#*:}" "$REPORTS" "$SERVER_LOGS")
    if [ -z "$found" ]; then
        pass "no ${kind%%:*} report"
        continue
    fi
    while IFS= read -r line; do
        file=${line%%:*}
        text=${line#*:}
        fail "${kind%%:*} report ($(basename "$file")): $text" "$file:
$(grep -F -A 40 -- "$text" "$file" | head -40)"
    done <<<"$found"
done

finish
