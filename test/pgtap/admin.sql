-- Administration: instances, app types, cleanup, sync_state / sync_reset.
\ir setup.psql

SELECT plan(99);

CREATE TEMP TABLE r (k text PRIMARY KEY, v jsonb);
CREATE FUNCTION pg_temp.r(key text) RETURNS jsonb LANGUAGE sql AS $$ SELECT v FROM r WHERE k = key $$;
-- Odoo datetime text for an instant.
CREATE FUNCTION pg_temp.odoo_ts(ts timestamptz) RETURNS text LANGUAGE sql AS $$
    SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')
$$;
-- A batch of n records, Odoo ids from first, all at instant ts.
CREATE FUNCTION pg_temp.batch(first bigint, n integer, ts timestamptz, model text DEFAULT 'sale.order')
RETURNS json LANGUAGE sql AS $$
    SELECT json_agg(json_build_object('id', first + g, 'model', model, 'record_id', g + 1, 'event', 'write',
                                      'timestamp', pg_temp.odoo_ts(ts)) ORDER BY g)
      FROM generate_series(0, n - 1) g
$$;
CREATE FUNCTION pg_temp.nev(inst text) RETURNS integer LANGUAGE sql AS $$
    SELECT count(*)::int FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id WHERE i.name = inst
$$;

-------------------------------------------------------------------------------
-- add_instance
-------------------------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM bridgecore.instances), 0, 'no instance after CREATE EXTENSION');

INSERT INTO r SELECT 'added', to_jsonb(a) FROM bridgecore.add_instance('main', 'https://erp.example.com/', 'prod', 'bot', 's3cret-secret-key') a;
SELECT ok(pg_temp.r('added') @>
          '{"name": "main", "url": "https://erp.example.com", "database": "prod", "login": "bot",
            "source_model": "update.webhook", "poll_interval": "00:00:01", "batch_size": 500, "enabled": true,
            "verify_tls": true, "state": "ok", "cursor": 0, "last_success_at": null, "last_error": null,
            "last_error_at": null, "consecutive_failures": 0, "next_attempt_at": null, "events_ingested": 0,
            "lag": null, "purged_through": 0}'::jsonb,
          'add_instance returns the new instance with defaults, trailing slash trimmed');
SELECT is(pg_temp.r('added') ? 'secret', false, 'add_instance does not return the secret');
SELECT is((SELECT secret FROM bridgecore.instance WHERE name = 'main'), 's3cret-secret-key', 'the secret is stored');
SELECT hasnt_column('bridgecore', 'instances', 'secret', 'the instances view has no secret column');

SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('main', 'https://x.example.com', 'd', 'l', 's-secret-key') $$,
                 '23505', NULL, 'duplicate instance name');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('-bad', 'https://x.example.com', 'd', 'l', 's-secret-key') $$,
                 '22023', NULL, 'invalid instance name');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('x', 'ftp://x.example.com', 'd', 'l', 's-secret-key') $$,
                 '22023', NULL, 'url must be http(s)');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('x', 'https://x.example.com', '', 'l', 's-secret-key') $$,
                 '22023', NULL, 'empty database');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('x', 'https://x.example.com', 'd', '', 's-secret-key') $$,
                 '22023', NULL, 'empty login');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('x', 'https://x.example.com', 'd', 'l', '') $$,
                 '22023', NULL, 'empty secret');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('x', 'https://x.example.com', 'd', 'l', 's-secret-key', source_model => 'Update Webhook') $$,
                 '22023', NULL, 'invalid source_model');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('x', 'https://x.example.com', 'd', 'l', 's-secret-key', poll_interval => '1 millisecond') $$,
                 '22023', NULL, 'poll_interval below 10 ms');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('x', 'https://x.example.com', 'd', 'l', 's-secret-key', batch_size => 10001) $$,
                 '22023', NULL, 'batch_size above 10000');
SELECT throws_ok($$ SELECT * FROM bridgecore.add_instance('x', 'https://x.example.com', 'd', NULL, 's-secret-key') $$,
                 '22004', NULL, 'null argument');
SELECT is((SELECT count(*)::int FROM bridgecore.instance), 1, 'failed add_instance calls stored nothing');

SELECT results_eq(
    $$ SELECT name, poll_interval, batch_size, enabled, verify_tls, state
         FROM bridgecore.add_instance('second', 'http://10.0.0.5:8069', 'db2', 'bot2', 'k2-secret-key',
                                      poll_interval => '5 seconds', batch_size => 100,
                                      enabled => false, verify_tls => false) $$,
    $$ VALUES ('second', '5 seconds'::interval, 100, false, false, 'disabled') $$,
    'add_instance with options; a disabled instance shows state disabled');

-------------------------------------------------------------------------------
-- alter_instance
-------------------------------------------------------------------------------
UPDATE bridgecore.instance SET state = 'backoff', consecutive_failures = 3, next_attempt_at = now() + interval '1 minute'
 WHERE name = 'main';
SELECT results_eq(
    $$ SELECT name, url, batch_size, state, consecutive_failures FROM bridgecore.alter_instance('main', batch_size => 50) $$,
    $$ VALUES ('main', 'https://erp.example.com', 50, 'backoff', 3) $$,
    'changing batch_size only keeps the backoff');
SELECT results_eq(
    $$ SELECT url, login, state, consecutive_failures, next_attempt_at FROM bridgecore.alter_instance('main', url => 'https://new.example.com/', secret => 'n3w-secret-key') $$,
    $$ VALUES ('https://new.example.com', 'bot', 'ok', 0, NULL::timestamptz) $$,
    'new connection settings reset the backoff; omitted ones are kept');
SELECT is((SELECT secret FROM bridgecore.instance WHERE name = 'main'), 'n3w-secret-key', 'secret changed');
SELECT is((SELECT batch_size FROM bridgecore.instances WHERE name = 'main'), 50, 'earlier change kept');

INSERT INTO r VALUES ('main_id', to_jsonb((SELECT id FROM bridgecore.instance WHERE name = 'main')));
SELECT results_eq(
    $$ SELECT name FROM bridgecore.alter_instance('main', new_name => 'prod-eu') $$,
    $$ VALUES ('prod-eu') $$, 'rename returns the renamed instance');
SELECT is((SELECT id FROM bridgecore.instance WHERE name = 'prod-eu'), (pg_temp.r('main_id'))::text::integer,
          'rename keeps the instance id (sync tokens stay valid)');
SELECT is((SELECT count(*)::int FROM bridgecore.instance WHERE name = 'main'), 0, 'old name is gone');
SELECT throws_ok($$ SELECT * FROM bridgecore.alter_instance('prod-eu', new_name => 'second') $$, '23505', NULL,
                 'rename onto an existing name');
SELECT throws_ok($$ SELECT * FROM bridgecore.alter_instance('nope', batch_size => 10) $$, '22023', NULL,
                 'unknown instance');
SELECT throws_ok($$ SELECT * FROM bridgecore.alter_instance(NULL, batch_size => 10) $$, '22004', NULL, 'null name');
SELECT throws_ok($$ SELECT * FROM bridgecore.alter_instance('prod-eu', url => 'erp.example.com') $$, '22023', NULL,
                 'invalid url');
SELECT throws_ok($$ SELECT * FROM bridgecore.alter_instance('prod-eu', new_name => 'bad name') $$, '22023', NULL,
                 'invalid new name');
SELECT throws_ok($$ SELECT * FROM bridgecore.alter_instance('prod-eu', secret => '') $$, '22023', NULL, 'empty secret');
SELECT is((SELECT state FROM bridgecore.alter_instance('prod-eu', enabled => false)), 'disabled', 'disable');
SELECT is((SELECT state FROM bridgecore.alter_instance('prod-eu', enabled => true)), 'ok', 're-enable');
SELECT is((SELECT to_jsonb(a) ? 'secret' FROM bridgecore.alter_instance('prod-eu', login => 'bot3') a), false,
          'alter_instance does not return the secret');
DO $$ BEGIN PERFORM bridgecore.alter_instance('prod-eu', new_name => 'main'); END $$;

-------------------------------------------------------------------------------
-- set_app_type
-------------------------------------------------------------------------------
SELECT is(to_jsonb(bridgecore.set_app_type('field_app', '{project.task,res.partner,project.task}')),
          '{"name": "field_app", "models": ["project.task", "res.partner"]}'::jsonb,
          'new app type: models sorted and de-duplicated');
SELECT is((SELECT is_default FROM bridgecore.app_type WHERE name = 'field_app'), false, 'custom app types are not defaults');
SELECT is(to_jsonb(bridgecore.set_app_type('field_app', '{stock.picking}')),
          '{"name": "field_app", "models": ["stock.picking"]}'::jsonb, 'set_app_type replaces the models');
SELECT is((SELECT models FROM bridgecore.app_type WHERE name = 'field_app'), ARRAY['stock.picking'], 'one row, new models');
DO $$ BEGIN PERFORM bridgecore.set_app_type('mobile_app', '{sale.order}'); END $$;
SELECT results_eq($$ SELECT models, is_default FROM bridgecore.app_type WHERE name = 'mobile_app' $$,
                  $$ VALUES (ARRAY['sale.order'], false) $$, 'overriding a default app type marks it custom');
SELECT is((SELECT count(*)::int FROM bridgecore.app_type), 7, 'six defaults plus one custom');
-- pg_dump restore: the dumped (non-default) row of a built-in app type replaces the built-in one.
INSERT INTO bridgecore.app_type (name, models, is_default) VALUES ('delivery_app', '{stock.picking}', false);
SELECT results_eq($$ SELECT models, is_default FROM bridgecore.app_type WHERE name = 'delivery_app' $$,
                  $$ VALUES (ARRAY['stock.picking'], false) $$, 'restoring a dumped override replaces the built-in row');
SELECT throws_ok($$ SELECT bridgecore.set_app_type(NULL, '{sale.order}') $$, '22004', NULL, 'null name');
SELECT throws_ok($$ SELECT bridgecore.set_app_type('x', NULL) $$, '22004', NULL, 'null models');
SELECT throws_ok($$ SELECT bridgecore.set_app_type('bad name', '{sale.order}') $$, '22023', NULL, 'invalid name');
SELECT throws_ok($$ SELECT bridgecore.set_app_type('x', '{}') $$, '22023', NULL, 'empty models');
SELECT throws_ok($$ SELECT bridgecore.set_app_type('x', '{"sale order"}') $$, '22023', NULL, 'invalid model name');
SELECT throws_ok($$ SELECT bridgecore.set_app_type('x', ARRAY['sale.order', NULL]) $$, '22004', NULL, 'null model');

-------------------------------------------------------------------------------
-- sync_state / sync_reset
-------------------------------------------------------------------------------
DO $$ BEGIN PERFORM bridgecore.ingest('main', pg_temp.batch(1, 3, '2025-11-16 10:30:00+00')); END $$;

SELECT throws_ok($$ SELECT bridgecore.sync_state(1, 'dev-1', instance => 'main') $$, 'P0002', 'Sync state not found',
                 'sync_state of an unknown device');
SELECT throws_ok($$ SELECT bridgecore.sync_reset(1, 'dev-1', instance => 'main') $$, 'P0002', 'Sync state not found',
                 'sync_reset of an unknown device');

DO $$ BEGIN
    PERFORM bridgecore.sync_pull(1, 'dev-1', 'sales_app', "limit" => 2, instance => 'main',
                                 device_info => '{"os": "android"}', app_version => '2.1.0');
    PERFORM bridgecore.sync_pull(1, 'dev-1', 'sales_app', "limit" => 2, instance => 'main');
END $$;
INSERT INTO r VALUES ('st', bridgecore.sync_state(1, 'dev-1', instance => 'main'));
SELECT is(pg_temp.r('st') - 'created_at',
          jsonb_build_object('user_id', 1, 'device_id', 'dev-1',
                             'last_event_id', (SELECT max(id) FROM bridgecore.event),
                             'last_sync_time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                             'sync_count', 2, 'is_active', true, 'app_type', 'sales_app',
                             'last_event_count', 1, 'total_events_synced', 3,
                             'next_sync_token', 'bc1:' || (SELECT id FROM bridgecore.instance WHERE name = 'main')
                                                || ':' || (SELECT max(id) FROM bridgecore.event)),
          'sync_state shape and values');
SELECT ok(pg_temp.r('st')->>'created_at' ~ '^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$', 'created_at is ISO 8601 UTC');
SELECT results_eq($$ SELECT device_info, app_version FROM bridgecore.sync_state WHERE device_id = 'dev-1' $$,
                  $$ VALUES ('{"os": "android"}'::jsonb, '2.1.0') $$,
                  'device_info and app_version are kept when later pulls omit them');

SELECT is(to_jsonb(bridgecore.sync_reset(1, 'dev-1', instance => 'main')),
          '{"status": "success", "message": "Sync state reset successfully"}'::jsonb, 'sync_reset answer');
SELECT results_eq($$ SELECT last_event_id, sync_count FROM bridgecore.sync_state WHERE device_id = 'dev-1' $$,
                  $$ VALUES (0::bigint, 0::bigint) $$, 'reset puts the cursor back to 0 and sync_count to 0');
SELECT is(to_jsonb(bridgecore.sync_pull(1, 'dev-1', 'sales_app', instance => 'main'))->'new_events_count', '3'::jsonb,
          'after reset every event is delivered again');
-- Through PostgREST (request.method is set) "not found" is PT404, which it answers with HTTP 404.
SELECT is(set_config('request.method', 'POST', true), 'POST', 'simulate a PostgREST request');
SELECT throws_ok($$ SELECT bridgecore.sync_state(1, 'dev-404', instance => 'main') $$, 'PT404', 'Sync state not found',
                 'PostgREST: sync_state of an unknown device is PT404');
SELECT throws_ok($$ SELECT bridgecore.sync_reset(1, 'dev-404', instance => 'main') $$, 'PT404', 'Sync state not found',
                 'PostgREST: sync_reset of an unknown device is PT404');
SELECT is(set_config('request.method', '', true), '', 'back to a plain SQL caller');
SELECT throws_ok($$ SELECT bridgecore.sync_state(2, 'dev-1', instance => 'main') $$, 'P0002', NULL,
                 'state is per user: same device, other user is unknown');
SELECT throws_ok($$ SELECT bridgecore.sync_state(1, 'dev-1', instance => 'second') $$, 'P0002', NULL,
                 'state is per instance');
SELECT throws_ok($$ SELECT bridgecore.sync_state(1, 'dev-1') $$, '22004', NULL, 'instance omitted with two instances');

-------------------------------------------------------------------------------
-- cleanup
-------------------------------------------------------------------------------
-- main: 3 events of 2025-11-16 (above) + 2 old + 1 recent; second: 2 old + 1 recent.
DO $$ BEGIN
    PERFORM bridgecore.ingest('main', pg_temp.batch(100, 2, '2020-01-01 00:00:00+00'));
    PERFORM bridgecore.ingest('main', pg_temp.batch(200, 1, now() - interval '1 hour'));
    PERFORM bridgecore.ingest('second', pg_temp.batch(100, 2, '2020-01-01 00:00:00+00'));
    PERFORM bridgecore.ingest('second', pg_temp.batch(200, 1, now() - interval '1 hour'));
END $$;

INSERT INTO r SELECT 'c1_max', to_jsonb(max(e.id)) FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id
 WHERE i.name = 'second' AND e.odoo_id IN (100, 101);
INSERT INTO r VALUES ('c1', bridgecore.cleanup('2021-01-01 00:00:00+00', instance => 'second'));
SELECT is(pg_temp.r('c1'),
          '{"ok": true, "deleted": 2, "partitions_dropped": 0, "message": "Deleted 2 events older than 2021-01-01T00:00:00Z (up to the first newer event of each instance)"}'::jsonb,
          'cleanup answer {ok, deleted, partitions_dropped, message}');
SELECT is(pg_temp.nev('second'), 1, 'cleanup removed the old events of the named instance');
SELECT is(pg_temp.nev('main'), 6, '... and nothing of the other instance');
SELECT is((SELECT purged_through FROM bridgecore.instances WHERE name = 'second'),
          (pg_temp.r('c1_max'))::text::bigint,
          'purged_through is the highest removed id of that instance');
SELECT is((SELECT purged_through FROM bridgecore.instances WHERE name = 'main'), 0::bigint, 'other instance not marked');
SELECT throws_ok($$ SELECT bridgecore.cleanup(now(), instance => 'nope') $$, '22023', NULL, 'unknown instance');

-- Without instance, retention drops whole partitions (partitions.sql): the
-- only partition holds newer events, so nothing goes.
INSERT INTO r VALUES ('c2', bridgecore.cleanup('2025-11-17 00:00:00+00'));
SELECT is(pg_temp.r('c2') - 'message', '{"ok": true, "deleted": 0, "partitions_dropped": 0, "dropped_ids": null}'::jsonb,
          'without instance, cleanup drops whole partitions only');
SELECT is(pg_temp.nev('main') + pg_temp.nev('second'), 7, '... so a partition with newer events keeps every event');
INSERT INTO r VALUES ('c3', jsonb_build_object('main', bridgecore.cleanup('2025-11-17 00:00:00+00', 'main'),
                                               'second', bridgecore.cleanup('2025-11-17 00:00:00+00', 'second')));
SELECT is((pg_temp.r('c3')->'main'->>'deleted')::int + (pg_temp.r('c3')->'second'->>'deleted')::int, 5,
          'per instance, the older events are deleted');
SELECT is(pg_temp.nev('main') + pg_temp.nev('second'), 2, 'only the recent events are left');

-- Retention: before omitted means now() - bridgecore.retention.
DO $$ BEGIN
    PERFORM bridgecore.cleanup(now() + interval '1 day', 'main');   -- an empty log
    PERFORM bridgecore.ingest('main', pg_temp.batch(300, 1, now() - interval '3 days'));
    PERFORM bridgecore.ingest('main', pg_temp.batch(301, 1, now()));
END $$;
SET LOCAL bridgecore.retention = '2d';
INSERT INTO r VALUES ('c4', bridgecore.cleanup(instance => 'main'));
SELECT is(pg_temp.r('c4'),
          jsonb_build_object('ok', true, 'deleted', 1, 'partitions_dropped', 0, 'message',
                             'Deleted 1 events older than ' || to_char((now() - interval '2 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                             || ' (up to the first newer event of each instance)'),
          'cleanup() uses bridgecore.retention');
SELECT is(pg_temp.nev('main'), 1, 'the event inside the retention window is kept');
SET LOCAL bridgecore.retention = 0;
INSERT INTO r VALUES ('c_keep', bridgecore.cleanup());
SELECT is(pg_temp.r('c_keep') - 'message', '{"ok": true, "deleted": 0, "partitions_dropped": 0}'::jsonb,
          'retention 0 (keep forever) and no before: nothing is deleted');
SELECT is(pg_temp.nev('main'), 1, '... the events are kept');
SELECT is(to_jsonb(bridgecore.cleanup('2000-01-01'))->'partitions_dropped', '0'::jsonb, 'retention 0 with an explicit before works');

-- Retention removes a prefix of the log: a late event with an old timestamp
-- (a backfill, a retried dead letter, clock skew) waits behind a newer one,
-- so every retained event stays deliverable and nobody is told to resync.
DO $$ BEGIN
    PERFORM bridgecore.sync_pull(7, 'late-dev', 'sales_app', instance => 'main');
    PERFORM bridgecore.ingest('main', pg_temp.batch(900, 1, '2020-06-01 00:00:00+00'));
END $$;
SELECT is(to_jsonb(bridgecore.cleanup('2021-01-01 00:00:00+00', instance => 'main'))->'deleted', '0'::jsonb,
          'a late old event behind a newer one is not removed');
INSERT INTO r VALUES ('late', to_jsonb(bridgecore.sync_pull(7, 'late-dev', 'sales_app', instance => 'main')));
SELECT is(pg_temp.r('late') -> 'resync_required', 'false'::jsonb, '... a device below it is not told to resync');
SELECT is((SELECT array_agg((e ->> 'record_id')::int) FROM jsonb_array_elements(pg_temp.r('late') -> 'events') e),
          ARRAY[1], '... and gets it');

-- resync_required is per model: removing events a device does not want
-- does not send it into a resync.
DO $$ BEGIN
    PERFORM bridgecore.cleanup(now() + interval '1 day', 'main');
    PERFORM bridgecore.sync_pull(7, 'late-dev', 'sales_app', instance => 'main');   -- told to resync,
    PERFORM bridgecore.sync_pull(7, 'wh-dev', 'warehouse_app', instance => 'main'); -- now past the horizon
    PERFORM bridgecore.ingest('main', pg_temp.batch(910, 2, '2020-06-01 00:00:00+00', 'stock.quant'));
    PERFORM bridgecore.ingest('main', pg_temp.batch(920, 1, now(), 'sale.order'));
END $$;
SELECT is(to_jsonb(bridgecore.cleanup('2021-01-01 00:00:00+00', instance => 'main'))->'deleted', '2'::jsonb,
          'the two old stock.quant events are removed');
INSERT INTO r VALUES ('sales', to_jsonb(bridgecore.sync_pull(7, 'late-dev', 'sales_app', instance => 'main')));
INSERT INTO r VALUES ('wh', to_jsonb(bridgecore.sync_pull(7, 'wh-dev', 'warehouse_app', instance => 'main')));
SELECT is(pg_temp.r('sales') -> 'resync_required', 'false'::jsonb,
          'a sales_app device from the start is not told to resync for stock.quant removals');
SELECT is(pg_temp.r('sales') -> 'new_events_count', '1'::jsonb, '... and gets the retained sale.order event');
SELECT is(pg_temp.r('wh') -> 'resync_required', 'true'::jsonb,
          'a warehouse_app device (it wants stock.quant) from the start is told to resync');
SELECT is((SELECT through FROM bridgecore.purged p JOIN bridgecore.instance i ON i.id = p.instance_id
            WHERE i.name = 'main' AND p.model = 'stock.quant'),
          (SELECT max(id) FROM bridgecore.event) - 1,
          'purged records the highest removed id per model');

-- Batches: 250 rows with batch size 100 take three rounds; 200 rows two full ones and an empty one.
SET LOCAL bridgecore.cleanup_batch_size = 100;
DO $$ BEGIN
    PERFORM bridgecore.cleanup(now() + interval '1 day', 'main');
    PERFORM bridgecore.ingest('main', pg_temp.batch(1000, 250, '2020-06-01 00:00:00+00'));
    PERFORM bridgecore.ingest('main', pg_temp.batch(1300, 1, now()));
END $$;
SELECT is(pg_temp.nev('main'), 251, '250 old events added');
INSERT INTO r SELECT 'c5_max', to_jsonb(max(id)) FROM bridgecore.event WHERE occurred_at < '2021-01-01';
INSERT INTO r VALUES ('c5', bridgecore.cleanup('2021-01-01 00:00:00+00', instance => 'main'));
SELECT is(pg_temp.r('c5')->'deleted', '250'::jsonb, 'batch size 100: all 250 deleted');
SELECT is(pg_temp.nev('main'), 1, '... none left behind, the newer one kept');
SELECT is((SELECT purged_through FROM bridgecore.instances WHERE name = 'main'),
          (pg_temp.r('c5_max'))::text::bigint,
          'purged_through covers the last batch');
DO $$ BEGIN
    PERFORM bridgecore.cleanup(now() + interval '1 day', 'main');
    PERFORM bridgecore.ingest('main', pg_temp.batch(2000, 200, '2020-06-01 00:00:00+00'));
END $$;
SELECT is(to_jsonb(bridgecore.cleanup('2021-01-01 00:00:00+00', instance => 'main'))->'deleted', '200'::jsonb,
          'batch size 100: exactly 200 deleted');
SELECT throws_ok($$ SET LOCAL bridgecore.cleanup_batch_size = 10 $$, '22023', NULL, 'cleanup_batch_size below 100 is refused');

-------------------------------------------------------------------------------
-- remove_instance
-------------------------------------------------------------------------------
DO $$ BEGIN
    PERFORM bridgecore.ingest('second', pg_temp.batch(500, 4, now()));
    PERFORM bridgecore.ingest('second', '[{"id": 600, "model": "sale.order"}]');
    PERFORM bridgecore.sync_pull(1, 'dev-1', 'sales_app', instance => 'second');
    PERFORM bridgecore.sync_pull(1, 'dev-2', 'sales_app', instance => 'second');
END $$;
SELECT is((SELECT count(*)::int FROM bridgecore.dead_letter), 1, 'the instance has a dead letter');
SELECT is(to_jsonb(bridgecore.remove_instance('second')),
          '{"ok": true, "instance": "second", "events_deleted": 5, "sync_states_deleted": 2}'::jsonb,
          'remove_instance answer with counts');
SELECT is((SELECT count(*)::int FROM bridgecore.instances WHERE name = 'second'), 0, 'instance removed');
SELECT is((SELECT count(*)::int FROM bridgecore.event e WHERE NOT EXISTS (SELECT 1 FROM bridgecore.instance i WHERE i.id = e.instance_id)),
          0, 'its events are removed');
SELECT is((SELECT count(*)::int FROM bridgecore.dead_letter), 0, 'its dead letters are removed');
SELECT is((SELECT count(*)::int FROM bridgecore.sync_state WHERE device_id = 'dev-2'), 0, 'its sync states are removed');
SELECT is((SELECT count(*)::int FROM bridgecore.sync_state WHERE device_id = 'dev-1'), 1, 'other instances'' states are kept');
SELECT throws_ok($$ SELECT bridgecore.remove_instance('second') $$, '22023', NULL, 'removing an unknown instance');
SELECT throws_ok($$ SELECT bridgecore.remove_instance(NULL) $$, '22004', NULL, 'null name');

SELECT * FROM finish();
ROLLBACK;
