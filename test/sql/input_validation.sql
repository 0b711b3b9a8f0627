-- Every bad argument gets a precise SQLSTATE, a message and a hint, and
-- changes nothing.
SET bridgecore.rate_limit_sync_pull = 0;
SET bridgecore.rate_limit_sync_state = 0;
SET bridgecore.rate_limit_sync_reset = 0;

-- user_id
SELECT try($$ SELECT bridgecore.sync_pull(NULL, 'd1', 'sales_app') $$);
SELECT try($$ SELECT bridgecore.sync_pull(0, 'd1', 'sales_app') $$);
SELECT try($$ SELECT bridgecore.sync_pull(-5, 'd1', 'sales_app') $$);
SELECT try($$ SELECT bridgecore.sync_state(0, 'd1') $$);
SELECT try($$ SELECT bridgecore.sync_reset(-1, 'd1') $$);
-- device_id
SELECT try($$ SELECT bridgecore.sync_pull(1, NULL, 'sales_app') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, '', 'sales_app') $$);
SELECT try(format($$ SELECT bridgecore.sync_pull(1, %L, 'sales_app') $$, repeat('x', 256)));
SELECT try($$ SELECT bridgecore.sync_pull(1, E'dev\n1', 'sales_app') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, E'dev\t1', 'sales_app') $$);
SELECT try(format($$ SELECT bridgecore.sync_pull(1, %L, 'sales_app') $$, repeat('x', 255)));
-- limit
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', 0) $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', 501) $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', NULL) $$);
SELECT try($$ SELECT bridgecore.events("limit" => 0) $$);
SELECT try($$ SELECT bridgecore.events("limit" => 1001) $$);
SELECT try($$ SELECT bridgecore.events("offset" => -1) $$);
SELECT try($$ SELECT bridgecore.check_updates("limit" => 0) $$);
-- app type, models filter
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', NULL) $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'pos_app') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', models_filter => ARRAY['sale.order', NULL]) $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', models_filter => ARRAY['sale order']) $$);
-- event type, priority
SELECT try($$ SELECT bridgecore.events(event => 'delete') $$);
SELECT try($$ SELECT bridgecore.events(priority => 'urgent') $$);
-- instance
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', instance => 'nope') $$);
SELECT try($$ SELECT bridgecore.events(instance => 'nope') $$);
-- sync token
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => 'garbage') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => 'bc1:99:0') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => '-1') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => '12345') $$);
-- A standby's token (it carries the device's resets): beyond the stored
-- state it is taken only where the log holds its position, and with the
-- device's own count of resets.
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => 'bc1:1:12345:0') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => 'bc1:1:12345:7') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => 'bc1:1:5:') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => 'bc1:1:5:1:2') $$);
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app', sync_token => 'bc1:1:99999999999999999999') $$);
-- A REPEATABLE READ snapshot predates the log's lock: refused.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app') $$);
ROLLBACK;
-- unknown device
SELECT try($$ SELECT bridgecore.sync_state(1, 'never-seen') $$);
SELECT try($$ SELECT bridgecore.sync_reset(1, 'never-seen') $$);
-- ingest
SELECT try($$ SELECT bridgecore.ingest('main', NULL) $$);
SELECT try($$ SELECT bridgecore.ingest('main', '{"id": 1}') $$);
SELECT try($$ SELECT bridgecore.ingest('main', '[{"id": 1,]') $$);
SELECT try($$ SELECT bridgecore.ingest('nope', '[]') $$);
-- cleanup
-- bridgecore.retention = 0 keeps events forever: cleanup() without before
-- deletes nothing (and does not fail a scheduled job).
SET bridgecore.retention = 0;
SELECT bridgecore.cleanup();
RESET bridgecore.retention;
SELECT try($$ SELECT bridgecore.cleanup(now(), 'nope') $$);
-- administration
SELECT try($$ SELECT bridgecore.add_instance('main', 'https://x.example', 'db', 'u', 'k-secret-key') $$);
SELECT try($$ SELECT bridgecore.add_instance('bad name', 'https://x.example', 'db', 'u', 'k-secret-key') $$);
SELECT try($$ SELECT bridgecore.add_instance('x', 'ftp://x.example', 'db', 'u', 'k-secret-key') $$);
SELECT try($$ SELECT bridgecore.add_instance('x', 'https://erp example.com', 'db', 'u', 'k-secret-key') $$);
SELECT try($$ SELECT bridgecore.add_instance('x', 'https://erp.example.com/odoo?db=x', 'db', 'u', 'k-secret-key') $$);
SELECT try($$ SELECT bridgecore.add_instance('x', 'https://x.example', '', 'u', 'k-secret-key') $$);
SELECT try($$ SELECT bridgecore.add_instance('x', 'https://x.example', 'db', 'u', '') $$);
SELECT try($$ SELECT bridgecore.add_instance('x', 'https://x.example', 'db', 'u', 'k-secret-key', poll_interval => '0') $$);
SELECT try($$ SELECT bridgecore.add_instance('x', 'https://x.example', 'db', 'u', 'k-secret-key', batch_size => 0) $$);
SELECT try($$ SELECT bridgecore.add_instance('x', 'https://x.example', 'db', 'u', 'k-secret-key', source_model => 'Update Webhook') $$);
SELECT try($$ SELECT bridgecore.add_instance('x', NULL, 'db', 'u', 'k-secret-key') $$);
SELECT try($$ SELECT bridgecore.alter_instance('nope', batch_size => 10) $$);
SELECT try($$ SELECT bridgecore.alter_instance('main', batch_size => 0) $$);
SELECT try($$ SELECT bridgecore.remove_instance('nope') $$);
SELECT try($$ SELECT bridgecore.set_app_type('x', '{}') $$);
SELECT try($$ SELECT bridgecore.set_app_type('x y', '{sale.order}') $$);
SELECT try($$ SELECT bridgecore.set_app_type('x', '{"not a model"}') $$);

-- Nothing above changed anything (the one valid call, with a 255-character
-- device_id, created its state).
SELECT (SELECT count(*) FROM bridgecore.instance) AS instances,
       (SELECT count(*) FROM bridgecore.sync_state) AS states,
       (SELECT count(*) FROM bridgecore.event) AS events,
       (SELECT count(*) FROM bridgecore.dead_letter) AS dead_letters,
       (SELECT count(*) FROM bridgecore.app_type) AS app_types;
