-- Upgrading from 0.1.0 keeps the data and brings in 0.2.0's objects.
DROP EXTENSION bridgecore CASCADE;
CREATE EXTENSION bridgecore VERSION '0.1.0';
SET bridgecore.rate_limit_sync_pull = 0;
SELECT name FROM bridgecore.add_instance('old', 'https://erp.example.com', 'prod', 'bot', 's3cret');
SELECT bridgecore.ingest('old', '[{"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:00:00"},
                                 {"id": 2, "model": "sale.order", "record_id": 1, "event": "bogus", "timestamp": "2025-11-16 10:00:01"}]') ->> 'inserted' AS inserted;
SELECT r->>'new_events_count' AS pulled FROM bridgecore.sync_pull(1, 'd1', 'sales_app') r;
SELECT to_regproc('bridgecore.metrics') IS NULL AS no_metrics_in_010;

ALTER EXTENSION bridgecore UPDATE TO '0.2.0';
SELECT extversion FROM pg_extension WHERE extname = 'bridgecore';

-- The data is still there and works with the new functions.
SELECT name, cursor, events_ingested FROM bridgecore.instances;
SELECT s->>'last_event_id' AS cursor FROM bridgecore.sync_state(1, 'd1') s;
SELECT instance, odoo_id, reason, status FROM bridgecore.dead_letters;
SELECT instance, user_id, devices, active_devices, syncs FROM bridgecore.user_stats;
SELECT bridgecore.ingest('old', '[{"id": 3, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:00:02"}]') ->> 'inserted' AS inserted;
SELECT r->>'new_events_count' AS pulled FROM bridgecore.sync_pull(1, 'd1', 'sales_app') r;
SELECT instance, sync_pulls >= 1 AS counted_pull, events_ingested >= 1 AS counted_ingest FROM bridgecore.stats;

-- Every object of a fresh install, and only those, after the update.
SELECT count(*) AS objects FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'bridgecore');
DROP EXTENSION bridgecore CASCADE;
CREATE EXTENSION bridgecore;
SELECT count(*) AS objects FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'bridgecore');
