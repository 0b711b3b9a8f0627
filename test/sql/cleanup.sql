-- Cleanup in bounded batches, and resync_required for devices that missed
-- removed events.
SET bridgecore.rate_limit_sync_pull = 0;
SET bridgecore.cleanup_batch_size = 100;

SELECT bridgecore.add_instance('second', 'http://odoo2.example:8069', 'db2', 'bot', 'k2-secret-key') IS NOT NULL AS added;
SELECT bridgecore.ingest('second', (
    SELECT json_agg(json_build_object('id', g, 'model', 'sale.order', 'record_id', g, 'event', 'create',
                                      'timestamp', to_char(timestamp '2025-01-01' + g * interval '1 minute', 'YYYY-MM-DD HH24:MI:SS')))
      FROM generate_series(1, 250) g)) - 'max_odoo_id';

-- A device that saw the first 10 events.
SELECT r->'new_events_count' AS n FROM bridgecore.sync_pull(1, 'd-old', 'sales_app', 10, instance => 'second') r;

-- Omitting instance with two instances is an error.
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd-old', 'sales_app') $$);

-- Remove the 120 oldest events of that instance (two batches of 100 and one of 20).
SELECT bridgecore.cleanup('2025-01-01 02:01:00+00', 'second');
SELECT count(*) AS left_over, min(odoo_id) AS oldest FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id WHERE i.name = 'second';

-- The device missed events 11-120: it is told to resynchronise and continues from what is left.
SELECT r->'resync_required' AS resync, r->'events'->0->'record_id' AS first_record
  FROM bridgecore.sync_pull(1, 'd-old', 'sales_app', 10, instance => 'second') r;
SELECT r->'resync_required' AS resync, r->'events'->0->'record_id' AS first_record
  FROM bridgecore.sync_pull(1, 'd-old', 'sales_app', 10, instance => 'second') r;

-- The other instance was untouched.
SELECT count(*) > 0 AS main_kept FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id WHERE i.name = 'main';

-- Removing the instance removes its events and states.
SELECT bridgecore.remove_instance('second');
SELECT count(*) FROM bridgecore.sync_state s WHERE s.device_id = 'd-old';
