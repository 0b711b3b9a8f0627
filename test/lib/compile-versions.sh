#!/usr/bin/env bash
# Compiles every C source of BridgeCore (src/*.c) against the server headers
# of other PostgreSQL major versions than the one installed, and prints one
# TAP line per version:
#
#   # /path/to/postgresql-16: PostgreSQL 16.2
#   ok - compiles against PostgreSQL 16
#   # /path/to/postgresql-13: PostgreSQL 13.16
#   not ok - compiles against PostgreSQL 13
#
# Usage: test/lib/compile-versions.sh DIR...
#
# Each DIR is either
#   - a configured PostgreSQL source tree (./configure run, then
#     `make -C src/backend generated-headers`), whose src/include is used,
#     with the CFLAGS and CPPFLAGS its src/Makefile.global records (what PGXS
#     would use against that version), or
#   - a server include directory, as `pg_config --includedir-server` prints
#     it for an installation or a server development package holds it; then
#     the flags are those of `${PG_CONFIG:-pg_config} --cflags --cppflags`.
#
# On top of those come the Makefile's PG_CFLAGS (-Wall -Wextra -Werror ...)
# and -fPIC, as in the real build; every file is compiled with -c to
# /dev/null, so that warnings that need the optimizer (-O2) show too.  Nothing
# is written to the source tree.  The compiler's messages for a version that
# fails go to stderr, as TAP diagnostics on stdout would be too long.
#
# Exit status: 0 if every version compiled, 1 if any failed, 2 on bad usage.
set -uo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cc=${CC:-gcc}
pg_config=${PG_CONFIG:-pg_config}

if [ $# -eq 0 ]; then
    echo "usage: $0 PG_SOURCE_TREE_OR_SERVER_INCLUDE_DIR..." >&2
    exit 2
fi

# The Makefile's own warning flags, read from it so that the two cannot drift.
pg_cflags=$(sed -n 's/^PG_CFLAGS *= *//p' "$root/Makefile")
pg_cppflags=$(sed -n 's/^PG_CPPFLAGS *= *//p' "$root/Makefile")
if [ -z "$pg_cflags" ]; then
    echo "Bail out! no PG_CFLAGS in $root/Makefile"
    exit 2
fi

# A variable's value in a configured tree's src/Makefile.global.
makefile_var() {
    sed -n "s/^$1 *= *//p" "$2" | head -n 1
}

nsrc=$(find "$root/src" -maxdepth 1 -name '*.c' | wc -l)
echo "1..$#"
failed=0
for dir in "$@"; do
    dir=${dir%/}
    if [ -f "$dir/src/include/pg_config.h" ]; then
        inc=$dir/src/include
        global=$dir/src/Makefile.global
        if [ ! -f "$global" ]; then
            echo "not ok - $dir: no src/Makefile.global (not configured?)"
            failed=1
            continue
        fi
        cflags="$(makefile_var CFLAGS "$global") $(makefile_var CFLAGS_SL "$global")"
        cppflags=$(makefile_var CPPFLAGS "$global")
        # The generated catalog and errcode headers must be there too.
        if [ ! -f "$inc/utils/errcodes.h" ] || [ ! -f "$inc/catalog/pg_type_d.h" ]; then
            echo "not ok - $dir: generated headers missing (make -C src/backend generated-headers)"
            failed=1
            continue
        fi
    elif [ -f "$dir/pg_config.h" ]; then
        inc=$dir
        cflags="$("$pg_config" --cflags) $("$pg_config" --cflags_sl)"
        cppflags=$("$pg_config" --cppflags)
    else
        echo "not ok - $dir: neither a configured source tree nor a server include directory"
        failed=1
        continue
    fi
    major=$(sed -n 's/^#define PG_MAJORVERSION "\(.*\)"/\1/p' "$inc/pg_config.h")
    full=$(sed -n 's/^#define PG_VERSION "\(.*\)"/\1/p' "$inc/pg_config.h")
    echo "# $dir: PostgreSQL $full"

    errors=0
    for src in "$root"/src/*.c; do
        # shellcheck disable=SC2086 # the flag lists are meant to split
        if ! out=$("$cc" $cflags $pg_cflags -I"$root" -I"$inc" \
                $pg_cppflags $cppflags -c -o /dev/null "$src" 2>&1); then
            errors=$((errors + 1))
        fi
        if [ -n "$out" ]; then
            printf '%s\n' "$out" >&2
        fi
    done
    if [ "$errors" -eq 0 ]; then
        echo "ok - compiles against PostgreSQL $major"
    else
        echo "not ok - compiles against PostgreSQL $major"
        echo "# $errors of $nsrc files failed, the compiler's messages are on stderr"
        failed=1
    fi
done
exit "$failed"
