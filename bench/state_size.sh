#!/usr/bin/env bash
# Disk used per device state: N devices (default 100,000; three per user,
# device ids of 39 characters) in bridgecore.sync_state, after VACUUM; the
# table and its primary key, per device.
#
# Usage: bench/state_size.sh [devices, default 100000]
set -euo pipefail
cd "$(dirname "$0")/.."
. test/lib/cluster.sh
N=${1:-100000}
make -s >/dev/null && make -s install >/dev/null
trap cluster_stop EXIT
cluster_start "bridgecore.maintenance_interval = 0"
psql -qAt -v ON_ERROR_STOP=1 <<SQL
CREATE EXTENSION bridgecore;
SELECT name FROM bridgecore.add_instance('s', 'http://odoo.invalid', 'db', 'bot', 'key-secret-key', enabled => false) \g /dev/null
INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id, last_sync_time, sync_count)
SELECT 1, 1 + g / 3, 'device-' || md5(g::text), 'sales_app', g, now(), 5 FROM generate_series(1, $N) g;
VACUUM ANALYZE bridgecore.sync_state;
SELECT format('%s devices: %s bytes per device state (table %s, primary key %s)', $N,
              round(pg_total_relation_size('bridgecore.sync_state') / $N::numeric),
              round(pg_table_size('bridgecore.sync_state') / $N::numeric),
              round(pg_indexes_size('bridgecore.sync_state') / $N::numeric));
SQL
