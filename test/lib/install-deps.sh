#!/usr/bin/env bash
# Installs what BridgeCore needs to build, test and run its demo on Debian
# bookworm (PostgreSQL 15).  Run as root.  clang, libclang-rt-14-dev and
# patchelf are for the sanitizer run (test/sanitize.sh).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
    make gcc libc6-dev python3 python3-psycopg2 curl ca-certificates \
    postgresql-15 postgresql-server-dev-15 postgresql-15-pgtap postgresql-contrib \
    libtap-parser-sourcehandler-pgtap-perl \
    libcurl4-openssl-dev libjson-c-dev \
    prometheus prometheus-postgres-exporter \
    clang libclang-rt-14-dev patchelf >/dev/null
