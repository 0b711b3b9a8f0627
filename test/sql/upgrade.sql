-- Upgrading from 0.1.0 through 0.2.0 to 0.3.0 keeps the data and brings in
-- each version's objects.
DROP EXTENSION bridgecore CASCADE;
CREATE EXTENSION bridgecore VERSION '0.1.0';
SET bridgecore.rate_limit_sync_pull = 0;
SELECT name FROM bridgecore.add_instance('old', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key');
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
-- 0.2.0's retention records one horizon per instance.
SELECT bridgecore.cleanup('2025-11-16 10:00:01+00', 'old') ->> 'deleted' AS deleted;

ALTER EXTENSION bridgecore UPDATE TO '0.3.0';
SELECT extversion FROM pg_extension WHERE extname = 'bridgecore';
-- The 0.2.0 horizon holds for every model; ingestion and pulls go on.
SELECT i.name, p.model, p.through = i.purged_through AS same_horizon
  FROM bridgecore.purged p JOIN bridgecore.instance i ON i.id = p.instance_id;
SELECT bridgecore.ingest('old', '[{"id": 4, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:00:03"}]') ->> 'inserted' AS inserted;
SELECT r->>'new_events_count' AS pulled, r->>'resync_required' AS resync FROM bridgecore.sync_pull(1, 'd1', 'sales_app') r;
SELECT odoo_id, reason, status FROM bridgecore.dead_letters;

-- Every object of a fresh install, and only those, after the update.
SELECT count(*) AS objects FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'bridgecore');
DROP EXTENSION bridgecore CASCADE;
CREATE EXTENSION bridgecore;
SELECT count(*) AS objects FROM pg_depend
 WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
   AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'bridgecore');
