#!/usr/bin/env bash
# Installs what BridgeCore needs to build, test and run its demo on Debian
# bookworm (PostgreSQL 15).  Run as root.  clang, libclang-rt-14-dev and
# patchelf are for the sanitizer run (test/sanitize.sh).  npm installs the
# gateway's dependencies (Node 22 among them) from gateway/package-lock.json.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    make gcc libc6-dev python3 python3-psycopg2 curl ca-certificates \
    postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap postgresql-15-plproxy postgresql-contrib \
    libtap-parser-sourcehandler-pgtap-perl \
    libcurl4-openssl-dev libjson-c-dev \
    prometheus prometheus-postgres-exporter \
    clang libclang-rt-14-dev patchelf >/dev/null
# npm (with a Node.js to run it) only where none is installed: a Node.js
# from elsewhere brings its own npm, which Debian's package would clash with.
command -v npm >/dev/null ||
    apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
