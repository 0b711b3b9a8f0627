-- Operations (0.2.0): dead letters (view, retry, ignore), devices and
-- user_stats, idle devices, sync_reset_all, status(), statistics and
-- metrics(), the model classification and the privileges of the new
-- functions and views.
\ir setup.psql

SELECT plan(189);

-------------------------------------------------------------------------------
-- Fixtures. Identity sequences are not rolled back, so ids are looked up.
-------------------------------------------------------------------------------
CREATE TEMP TABLE r (k text PRIMARY KEY, v jsonb);
CREATE FUNCTION pg_temp.r(key text) RETURNS jsonb LANGUAGE sql AS $$ SELECT v FROM r WHERE k = key $$;
-- One update.webhook record; extra overrides fields (a null value removes one).
CREATE FUNCTION pg_temp.rec(oid_ bigint, extra jsonb DEFAULT '{}', model text DEFAULT 'sale.order')
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_strip_nulls(jsonb_build_object('id', oid_, 'model', model, 'record_id', 100 + oid_,
                                                'event', 'write', 'timestamp', '2025-11-16 10:30:00') || extra)
$$;
-- A record refused for its event kind.
CREATE FUNCTION pg_temp.bad(oid_ bigint, model text DEFAULT 'sale.order') RETURNS jsonb LANGUAGE sql AS $$
    SELECT pg_temp.rec(oid_, '{"event": "archive"}', model)
$$;
CREATE FUNCTION pg_temp.inst(inst text) RETURNS integer LANGUAGE sql AS $$
    SELECT id FROM bridgecore.instance WHERE name = inst
$$;
-- Dead letter id of an Odoo id in an instance.
CREATE FUNCTION pg_temp.dl(odoo bigint, inst text DEFAULT 'main') RETURNS bigint LANGUAGE sql AS $$
    SELECT d.id FROM bridgecore.dead_letter d WHERE d.instance_id = pg_temp.inst(inst) AND d.odoo_id = odoo
$$;
CREATE FUNCTION pg_temp.dl_status(odoo bigint, inst text DEFAULT 'main') RETURNS text LANGUAGE sql AS $$
    SELECT d.status::text FROM bridgecore.dead_letter d WHERE d.id = pg_temp.dl(odoo, inst)
$$;
CREATE FUNCTION pg_temp.nev(odoo bigint, inst text DEFAULT 'main') RETURNS integer LANGUAGE sql AS $$
    SELECT count(*)::int FROM bridgecore.event e WHERE e.instance_id = pg_temp.inst(inst) AND e.odoo_id = odoo
$$;
CREATE FUNCTION pg_temp.has_gap(odoo bigint, inst text DEFAULT 'main') RETURNS boolean LANGUAGE sql AS $$
    SELECT EXISTS (SELECT 1 FROM bridgecore.gap g WHERE g.instance_id = pg_temp.inst(inst) AND g.odoo_id = odoo)
$$;
CREATE FUNCTION pg_temp.pull(uid bigint, dev text, inst text, lim integer DEFAULT 100) RETURNS jsonb LANGUAGE sql AS $$
    SELECT to_jsonb(bridgecore.sync_pull(uid, dev, 'sales_app', lim, instance => inst))
$$;
CREATE FUNCTION pg_temp.active(uid bigint, dev text, inst text DEFAULT 'main') RETURNS boolean LANGUAGE sql AS $$
    SELECT s.is_active FROM bridgecore.sync_state s
     WHERE s.instance_id = pg_temp.inst(inst) AND s.user_id = uid AND s.device_id = dev
$$;
-- A counter of bridgecore.stats for an instance (0 while it has no row).
CREATE FUNCTION pg_temp.stat(inst text, col text) RETURNS bigint LANGUAGE sql AS $$
    SELECT coalesce((SELECT (to_jsonb(s) ->> col)::bigint FROM bridgecore.stats s WHERE s.instance = inst), 0)
$$;

-- Statistics live in shared memory and ignore ROLLBACK: start this
-- database's counters from zero (other databases keep theirs).
DO $$ BEGIN PERFORM bridgecore.stats_reset(); END $$;

DO $$ BEGIN
    PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.add_instance('second', 'https://two.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.add_instance('off', 'https://off.example.com', 'prod', 'bot', 's3cret-secret-key', enabled => false);
END $$;

-------------------------------------------------------------------------------
-- Dead letters: the view
-------------------------------------------------------------------------------
INSERT INTO r SELECT 'ingest', bridgecore.ingest('main', jsonb_build_array(
    pg_temp.rec(1), pg_temp.bad(2), pg_temp.bad(3), pg_temp.bad(4), pg_temp.bad(5),
    pg_temp.rec(NULL, '{"record_id": 999, "event": "archive"}'), pg_temp.rec(6))::json);
SELECT is(pg_temp.r('ingest') - 'instance' - 'max_odoo_id' - 'notifications',
          '{"inserted": 2, "duplicates": 0, "dead_lettered": 5}'::jsonb,
          'fixture: 2 records stored, 5 dead-lettered (one without an id)');

SELECT has_view('bridgecore', 'dead_letters', 'view dead_letters exists');
SELECT columns_are('bridgecore', 'dead_letters',
                   ARRAY['id', 'instance', 'odoo_id', 'reason', 'status', 'attempts', 'first_failed_at',
                         'last_failed_at', 'note', 'record'],
                   'dead_letters has the documented columns');
SELECT results_eq(
    $$ SELECT instance, odoo_id, status::text, attempts, note FROM bridgecore.dead_letters
        ORDER BY odoo_id NULLS LAST $$,
    $$ VALUES ('main', 2::bigint, 'pending', 1, NULL::text), ('main', 3, 'pending', 1, NULL),
              ('main', 4, 'pending', 1, NULL), ('main', 5, 'pending', 1, NULL),
              ('main', NULL, 'pending', 1, NULL) $$,
    'dead_letters lists every dead letter with its instance name, pending, one attempt');
SELECT is((SELECT reason FROM bridgecore.dead_letters WHERE odoo_id = 2), 'unknown event "archive"',
          'dead_letters shows the reason');
SELECT is((SELECT record::jsonb FROM bridgecore.dead_letters WHERE odoo_id = 2), pg_temp.bad(2),
          'dead_letters shows the record verbatim');

-------------------------------------------------------------------------------
-- retry_dead_letter: still invalid -> retrying, the row is asked for again
-------------------------------------------------------------------------------
INSERT INTO r VALUES ('retry2', bridgecore.retry_dead_letter(pg_temp.dl(2)));
SELECT is(pg_temp.r('retry2'), jsonb_build_object('id', pg_temp.dl(2), 'status', 'retrying'),
          'retry of a still invalid record answers retrying');
SELECT is(pg_temp.dl_status(2), 'retrying', '... the dead letter is retrying');
SELECT ok(pg_temp.has_gap(2), '... and its Odoo id is a gap, so the poller fetches the row again');
SELECT is(pg_temp.nev(2), 0, '... nothing was stored');
SELECT is((SELECT attempts FROM bridgecore.dead_letter WHERE id = pg_temp.dl(2)), 1,
          '... asking Odoo again is not a failed attempt: attempts unchanged');
SELECT is(bridgecore.retry_dead_letter(pg_temp.dl(2)) ->> 'status', 'retrying', 'a retrying dead letter may be retried again');
SELECT is((SELECT count(*)::int FROM bridgecore.gap WHERE instance_id = pg_temp.inst('main')), 1,
          '... which keeps one gap for it');

-------------------------------------------------------------------------------
-- retry_dead_letter: valid now -> resolved, stored exactly once
-------------------------------------------------------------------------------
UPDATE bridgecore.dead_letter SET record = pg_temp.rec(3)::json WHERE id = pg_temp.dl(3);
SELECT is(bridgecore.retry_dead_letter(pg_temp.dl(3)), jsonb_build_object('id', pg_temp.dl(3), 'status', 'resolved'),
          'retry of a record that is valid now answers resolved');
SELECT is(pg_temp.dl_status(3), 'resolved', '... the dead letter is resolved');
SELECT is(pg_temp.nev(3), 1, '... the event is stored');
SELECT ok(NOT pg_temp.has_gap(3), '... and not asked for from Odoo');
SELECT throws_ok(format('SELECT bridgecore.retry_dead_letter(%s)', pg_temp.dl(3)), '22023', NULL,
                 'retrying a resolved dead letter is refused');
UPDATE bridgecore.dead_letter SET status = 'pending' WHERE id = pg_temp.dl(3);
SELECT is(bridgecore.retry_dead_letter(pg_temp.dl(3)) ->> 'status', 'resolved',
          'retrying it again (made pending by hand) resolves it again');
SELECT is(pg_temp.nev(3), 1, '... without storing the event twice');

-------------------------------------------------------------------------------
-- retry_dead_letter of an unstorable record: its copy is not what Odoo sent
-- (here NaN, kept as the string "NaN"), so it is not stored; Odoo's row is
-- asked for again
-------------------------------------------------------------------------------
INSERT INTO bridgecore.dead_letter (instance_id, odoo_id, record, reason)
VALUES (pg_temp.inst('main'), 77, pg_temp.rec(77, '{"payload": {"amount": "NaN"}}')::json,
        'unstorable record: NaN or Infinity is not a JSON number');
SELECT is(bridgecore.retry_dead_letter(pg_temp.dl(77)) ->> 'status', 'retrying',
          'retry of an unstorable record answers retrying');
SELECT is(pg_temp.nev(77), 0, '... its inexact copy is not stored');
SELECT ok(pg_temp.has_gap(77), '... and the row is asked for from Odoo');
DELETE FROM bridgecore.gap WHERE instance_id = pg_temp.inst('main') AND odoo_id = 77;
DELETE FROM bridgecore.dead_letter WHERE id = pg_temp.dl(77);

-------------------------------------------------------------------------------
-- A valid version of a dead-lettered Odoo id, ingested, resolves it
-------------------------------------------------------------------------------
SELECT is(bridgecore.ingest('main', jsonb_build_array(pg_temp.rec(5))::json) ->> 'inserted', '1',
          'a valid version of Odoo id 5 is ingested');
SELECT is(pg_temp.dl_status(5), 'resolved', '... and its dead letter is resolved');

-------------------------------------------------------------------------------
-- A dead letter without an Odoo id cannot be fetched again
-------------------------------------------------------------------------------
INSERT INTO r SELECT 'noid', to_jsonb(id) FROM bridgecore.dead_letter
 WHERE instance_id = pg_temp.inst('main') AND odoo_id IS NULL;
INSERT INTO r VALUES ('dl_count', (SELECT to_jsonb(count(*)) FROM bridgecore.dead_letter));
SELECT is(bridgecore.retry_dead_letter(pg_temp.r('noid')::text::bigint) ->> 'status', 'pending',
          'retry of an invalid record without an Odoo id answers pending');
SELECT is((SELECT status::text FROM bridgecore.dead_letter WHERE id = pg_temp.r('noid')::text::bigint), 'pending',
          '... the dead letter stays pending');
SELECT is((SELECT count(*)::int FROM bridgecore.dead_letter), pg_temp.r('dl_count')::text::int,
          '... and no second dead letter is written for the same record');

-------------------------------------------------------------------------------
-- ignore_dead_letter
-------------------------------------------------------------------------------
SELECT is(bridgecore.retry_dead_letter(pg_temp.dl(4)) ->> 'status', 'retrying', 'Odoo id 4 is being retried');
SELECT is(bridgecore.ignore_dead_letter(pg_temp.dl(4), 'cancelled in Odoo'),
          jsonb_build_object('id', pg_temp.dl(4), 'status', 'ignored', 'note', 'cancelled in Odoo'),
          'ignore_dead_letter answers ignored with the note');
SELECT results_eq(format('SELECT status::text, note FROM bridgecore.dead_letters WHERE id = %s', pg_temp.dl(4)),
                  $$ VALUES ('ignored', 'cancelled in Odoo') $$, '... the view shows it ignored, with the note');
SELECT ok(NOT pg_temp.has_gap(4), '... and its row is no longer asked for from Odoo');
SELECT throws_ok(format('SELECT bridgecore.retry_dead_letter(%s)', pg_temp.dl(4)), '22023', NULL,
                 'retrying an ignored dead letter is refused');
SELECT throws_ok(format('SELECT bridgecore.ignore_dead_letter(%s)', pg_temp.dl(3)), '22023', NULL,
                 'ignoring a resolved dead letter is refused');
SELECT throws_ok('SELECT bridgecore.retry_dead_letter(-1)', 'P0002', NULL, 'retrying an unknown dead letter: P0002');
SELECT throws_ok('SELECT bridgecore.ignore_dead_letter(-1, ''x'')', 'P0002', NULL, 'ignoring an unknown dead letter: P0002');
-- Through PostgREST (request.method is set) "not found" is PT404, which it answers with HTTP 404.
SELECT is(set_config('request.method', 'POST', true), 'POST', 'simulate a PostgREST request');
SELECT throws_ok('SELECT bridgecore.retry_dead_letter(-1)', 'PT404', 'dead letter -1 does not exist',
                 'PostgREST: retrying an unknown dead letter is PT404');
SELECT throws_ok('SELECT bridgecore.ignore_dead_letter(-1)', 'PT404', 'dead letter -1 does not exist',
                 'PostgREST: ignoring an unknown dead letter is PT404');
SELECT is(set_config('request.method', '', true), '', 'back to a plain SQL caller');

-- An ignored record that Odoo sends again, still malformed, stays ignored;
-- once it is stored, the dead letter is resolved. (stock.move: no sales_app
-- device below sees it.)
DO $$ BEGIN
    PERFORM bridgecore.ingest('main', jsonb_build_array(pg_temp.bad(7, 'stock.move'))::json);
    PERFORM bridgecore.ignore_dead_letter(pg_temp.dl(7), 'duplicate in Odoo');
END $$;
SELECT is(bridgecore.ingest('main', jsonb_build_array(pg_temp.bad(7, 'stock.move'))::json) ->> 'dead_lettered', '1',
          'the ignored Odoo id 7 comes again, still malformed');
SELECT results_eq(format('SELECT status::text, note, attempts FROM bridgecore.dead_letters WHERE id = %s', pg_temp.dl(7)),
                  $$ VALUES ('ignored', 'duplicate in Odoo', 2) $$, '... it stays ignored, with its note; the attempt counts');
SELECT is(bridgecore.ingest('main', jsonb_build_array(pg_temp.rec(7, '{}', 'stock.move'))::json) ->> 'inserted', '1',
          'a valid version of the ignored Odoo id 7 is ingested');
SELECT is(pg_temp.dl_status(7), 'resolved', '... and resolves the ignored dead letter');

-------------------------------------------------------------------------------
-- retry_dead_letters(instance)
-------------------------------------------------------------------------------
DO $$ BEGIN
    PERFORM bridgecore.ingest('second', jsonb_build_array(
        pg_temp.bad(11), pg_temp.bad(12), pg_temp.bad(13), pg_temp.bad(14), pg_temp.bad(15))::json);
    PERFORM bridgecore.ingest('second', jsonb_build_array(pg_temp.rec(14))::json);   -- resolves 14
    PERFORM bridgecore.ignore_dead_letter(pg_temp.dl(15, 'second'));
END $$;
UPDATE bridgecore.dead_letter SET record = pg_temp.rec(12)::json WHERE id = pg_temp.dl(12, 'second');
UPDATE bridgecore.dead_letter SET record = pg_temp.rec(13)::json WHERE id = pg_temp.dl(13, 'second');
SELECT is(bridgecore.retry_dead_letters('second'),
          '{"instance": "second", "resolved": 2, "retrying": 1, "pending": 0}'::jsonb,
          'retry_dead_letters counts the outcomes of the pending and retrying dead letters');
SELECT results_eq(
    $$ SELECT odoo_id, status::text FROM bridgecore.dead_letters WHERE instance = 'second' AND odoo_id IS NOT NULL
        ORDER BY odoo_id $$,
    $$ VALUES (11::bigint, 'retrying'), (12, 'resolved'), (13, 'resolved'), (14, 'resolved'), (15, 'ignored') $$,
    '... resolved and ignored ones were left alone');
SELECT is((SELECT array_agg(odoo_id ORDER BY odoo_id) FROM bridgecore.event WHERE instance_id = pg_temp.inst('second')),
          ARRAY[12, 13, 14]::bigint[], '... the fixed records are stored once each');
SELECT is(bridgecore.retry_dead_letters('second') - 'instance', '{"resolved": 0, "retrying": 1, "pending": 0}'::jsonb,
          'a second run finds only the unresolved ones');
SELECT is((SELECT count(*)::int FROM bridgecore.dead_letter WHERE instance_id = pg_temp.inst('main') AND status = 'retrying'), 1,
          'retry_dead_letters leaves other instances alone');
SELECT throws_ok($$ SELECT bridgecore.retry_dead_letters('nope') $$, '22023', NULL, 'retry_dead_letters of an unknown instance');

-------------------------------------------------------------------------------
-- devices and user_stats
-------------------------------------------------------------------------------
-- main holds Odoo ids 1, 3, 5, 6 (four sale.order events).
DO $$ BEGIN
    PERFORM pg_temp.pull(1, 'dev-a', 'main', 2);
    PERFORM pg_temp.pull(1, 'dev-a', 'main', 2);
    PERFORM pg_temp.pull(1, 'dev-b', 'main');
    PERFORM pg_temp.pull(2, 'dev-c', 'main', 3);
    PERFORM pg_temp.pull(1, 'dev-a', 'second');
END $$;

SELECT has_view('bridgecore', 'devices', 'view devices exists');
SELECT results_eq(
    $$ SELECT instance, user_id, device_id, app_type, is_active, sync_count, last_event_count, total_events_synced,
              resync_required, last_sync_time = now(), idle = interval '0'
         FROM bridgecore.devices ORDER BY instance, user_id, device_id $$,
    $$ VALUES ('main', 1::bigint, 'dev-a', 'sales_app', true, 2::bigint, 2, 4::bigint, false, true, true),
              ('main', 1, 'dev-b', 'sales_app', true, 1, 4, 4, false, true, true),
              ('main', 2, 'dev-c', 'sales_app', true, 1, 3, 3, false, true, true),
              ('second', 1, 'dev-a', 'sales_app', true, 1, 3, 3, false, true, true) $$,
    'devices: one row per device with its instance, counts and idle time');
SELECT has_view('bridgecore', 'user_stats', 'view user_stats exists');
SELECT results_eq(
    $$ SELECT instance, user_id, devices, active_devices, syncs, events_synced FROM bridgecore.user_stats
        ORDER BY instance, user_id $$,
    $$ VALUES ('main', 1::bigint, 2::bigint, 2::bigint, 3::bigint, 8::bigint), ('main', 2, 1, 1, 1, 3),
              ('second', 1, 1, 1, 1, 3) $$,
    'user_stats: devices, active devices, syncs and events synced per instance and user');

-------------------------------------------------------------------------------
-- deactivate_idle_devices
-------------------------------------------------------------------------------
UPDATE bridgecore.sync_state SET last_sync_time = now() - interval '2 hours'
 WHERE instance_id = pg_temp.inst('main') AND device_id = 'dev-b';
UPDATE bridgecore.sync_state SET last_sync_time = now() - interval '3 hours'
 WHERE instance_id = pg_temp.inst('second') AND device_id = 'dev-a';
SELECT is((SELECT idle FROM bridgecore.devices WHERE instance = 'main' AND device_id = 'dev-b'), interval '2 hours',
          'devices.idle is the time since the last sync');
SELECT is(bridgecore.deactivate_idle_devices(interval '1 hour', 'main') - 'message', '{"ok": true, "deactivated": 1}'::jsonb,
          'deactivate_idle_devices(1 hour, main) deactivates the one idle device of main');
SELECT results_eq(
    $$ SELECT instance, device_id, is_active FROM bridgecore.devices ORDER BY instance, user_id, device_id $$,
    $$ VALUES ('main', 'dev-a', true), ('main', 'dev-b', false), ('main', 'dev-c', true), ('second', 'dev-a', true) $$,
    '... only dev-b of main, not the idle device of the other instance');
SELECT is((SELECT active_devices FROM bridgecore.user_stats WHERE instance = 'main' AND user_id = 1), 1::bigint,
          'user_stats counts the inactive device out of active_devices');
SELECT is(bridgecore.deactivate_idle_devices(interval '0') - 'message', '{"ok": true, "deactivated": 0}'::jsonb,
          'an idle time of 0 deactivates nothing');
SELECT ok(pg_temp.active(1, 'dev-a', 'second'), '... the device idle for 3 hours is still active');
SELECT is(bridgecore.deactivate_idle_devices() - 'message', '{"ok": true, "deactivated": 0}'::jsonb,
          'without an argument bridgecore.device_idle_timeout (30 days by default) applies: 3 hours is not idle');
UPDATE bridgecore.sync_state SET last_sync_time = now() - current_setting('bridgecore.device_idle_timeout')::interval
                                                        - interval '1 minute'
 WHERE instance_id = pg_temp.inst('second') AND device_id = 'dev-a';
SELECT is(bridgecore.deactivate_idle_devices() ->> 'deactivated', '1',
          '... a device idle for longer than bridgecore.device_idle_timeout is deactivated');
SELECT is(pg_temp.pull(1, 'dev-b', 'main') ->> 'status', 'success', 'the inactive device pulls again');
SELECT ok(pg_temp.active(1, 'dev-b'), '... which makes it active again');
UPDATE bridgecore.sync_state SET last_sync_time = now() - interval '2 hours' WHERE device_id = 'dev-c';
SELECT is(set_config('request.jwt.claims', '{"instance": "second"}', true), '{"instance": "second"}',
          'JWT confined to instance second');
SELECT throws_ok($$ SELECT bridgecore.deactivate_idle_devices(interval '1 hour', 'main') $$, '42501', NULL,
                 'instance claim: deactivate_idle_devices of another instance is refused');
SELECT is(bridgecore.deactivate_idle_devices(interval '1 hour') ->> 'deactivated', '0',
          'instance claim: without instance only the claimed instance is swept');
SELECT is(set_config('request.jwt.claims', '', true), '', 'JWT claims cleared');
SELECT ok(pg_temp.active(2, 'dev-c'), '... the idle device of main is still active');
UPDATE bridgecore.sync_state SET last_sync_time = now() WHERE device_id = 'dev-c';

-------------------------------------------------------------------------------
-- sync_reset_all
-------------------------------------------------------------------------------
SELECT is(bridgecore.sync_reset_all(1, 'main') - 'message', '{"status": "success", "devices_reset": 2}'::jsonb,
          'sync_reset_all resets both devices of user 1 on main');
SELECT results_eq(
    $$ SELECT instance, user_id, device_id, last_event_id = 0, sync_count = 0 FROM bridgecore.devices
        ORDER BY instance, user_id, device_id $$,
    $$ VALUES ('main', 1::bigint, 'dev-a', true, true), ('main', 1, 'dev-b', true, true),
              ('main', 2, 'dev-c', false, false), ('second', 1, 'dev-a', false, false) $$,
    '... and no other user''s device, nor the user''s device on another instance');
SELECT is(pg_temp.pull(1, 'dev-a', 'main') ->> 'new_events_count', '4', '... whose next pull starts from the beginning');
SELECT is(bridgecore.sync_reset_all(3, 'main') ->> 'devices_reset', '0', 'a user without devices: nothing reset');
SELECT throws_ok($$ SELECT bridgecore.sync_reset_all(0, 'main') $$, '22023', NULL, 'sync_reset_all: user_id must be positive');
SELECT throws_ok($$ SELECT bridgecore.sync_reset_all(NULL, 'main') $$, '22004', NULL, 'sync_reset_all: user_id must not be null');
SET LOCAL ROLE bridgecore_app;
SELECT is(set_config('request.jwt.claims', '{"user_id": 7}', true), '{"user_id": 7}', 'JWT claims for user 7');
SELECT throws_ok($$ SELECT bridgecore.sync_reset_all(2, 'main') $$, '42501', NULL,
                 'JWT user 7: sync_reset_all of user 2 is refused');
SELECT is(bridgecore.sync_reset_all(7, 'main') - 'message', '{"status": "success", "devices_reset": 0}'::jsonb,
          'JWT user 7: sync_reset_all of user 7 works');
SELECT is(set_config('request.jwt.claims', '', true), '', 'JWT claims cleared');
RESET ROLE;
SELECT is((SELECT sync_count FROM bridgecore.devices WHERE instance = 'main' AND device_id = 'dev-c'), 1::bigint,
          '... user 2''s device was not reset');

-------------------------------------------------------------------------------
-- status()
-------------------------------------------------------------------------------
UPDATE bridgecore.instance SET last_error = 'login: auth_failed: login refused', consecutive_failures = 3,
                               last_error_at = now()
 WHERE name = 'off';
SELECT is((SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys((SELECT to_jsonb(s) FROM bridgecore.status() s LIMIT 1)) k),
          ARRAY['consecutive_failures', 'cursor', 'dead_letters_pending', 'devices_active', 'events_ingested',
                'events_per_second', 'gaps_open', 'instance', 'lag', 'last_error', 'last_error_at', 'last_success_at',
                'next_attempt_at', 'poller_pid', 'state', 'url'],
          'status() has the documented columns');
SELECT results_eq($$ SELECT instance, state FROM bridgecore.status() $$,
                  $$ VALUES ('main', 'ok'), ('off', 'disabled'), ('second', 'ok') $$,
                  'status(): one row per instance, by name; a disabled instance is disabled');
SELECT results_eq(
    $$ SELECT url, dead_letters_pending, gaps_open, devices_active, cursor, poller_pid FROM bridgecore.status()
        WHERE instance = 'second' $$,
    $$ VALUES ('https://two.example.com', 1::bigint, 1::bigint, 0::bigint, 0::bigint, NULL::integer) $$,
    'status(): pending and retrying dead letters, open gaps, active devices; no poller here');
SELECT results_eq(
    $$ SELECT devices_active FROM bridgecore.status() WHERE instance = 'main' $$,
    $$ VALUES (3::bigint) $$, 'status(): active devices of main');
SELECT results_eq(
    $$ SELECT last_error, consecutive_failures, lag FROM bridgecore.status() WHERE instance = 'off' $$,
    $$ VALUES ('login: auth_failed: login refused', 3, NULL::interval) $$,
    'status(): last error and failures; no lag without events');

-------------------------------------------------------------------------------
-- Statistics. Shared memory ignores transactions: compare before and after.
-------------------------------------------------------------------------------
SELECT has_view('bridgecore', 'stats', 'view stats exists');
SELECT has_view('bridgecore', 'stats_models', 'view stats_models exists');
SELECT has_view('bridgecore', 'stats_errors', 'view stats_errors exists');
SELECT columns_are('bridgecore', 'stats',
                   ARRAY['instance', 'polls', 'failed_polls', 'events_ingested', 'duplicates', 'dead_letters',
                         'bytes_received', 'sync_pulls', 'events_delivered', 'notifications', 'errors',
                         'poll_count', 'poll_seconds_sum', 'ingest_count', 'ingest_seconds_sum',
                         'events_per_second', 'since'],
                   'stats has the documented columns');
SELECT columns_are('bridgecore', 'stats_models', ARRAY['instance', 'model', 'events', 'batches', 'processing_seconds_sum'],
                   'stats_models has the documented columns');
SELECT columns_are('bridgecore', 'stats_errors', ARRAY['instance', 'kind', 'count'], 'stats_errors has the documented columns');

INSERT INTO r SELECT 'before', to_jsonb(s) FROM bridgecore.stats s WHERE instance = 'main';
SELECT is(pg_temp.pull(2, 'dev-c', 'main', 100) ->> 'new_events_count', '1', 'one sync_pull delivering one event');
SELECT is(pg_temp.stat('main', 'sync_pulls'), (pg_temp.r('before') ->> 'sync_pulls')::bigint + 1,
          'stats.sync_pulls grows by exactly 1');
SELECT is(pg_temp.stat('main', 'events_delivered'), (pg_temp.r('before') ->> 'events_delivered')::bigint + 1,
          'stats.events_delivered grows by the events delivered');
SELECT is(bridgecore.ingest('main', jsonb_build_array(pg_temp.rec(20), pg_temp.rec(21, '{}', 'res.partner'),
                                                      pg_temp.rec(6), pg_temp.bad(22))::json) - 'instance' - 'max_odoo_id',
          '{"inserted": 2, "duplicates": 1, "dead_lettered": 1, "notifications": 2}'::jsonb,
          'an ingest with 2 new events, 1 duplicate and 1 dead letter');
SELECT is(ARRAY[pg_temp.stat('main', 'events_ingested'), pg_temp.stat('main', 'duplicates'),
                pg_temp.stat('main', 'dead_letters'), pg_temp.stat('main', 'notifications')],
          ARRAY[(pg_temp.r('before') ->> 'events_ingested')::bigint + 2, (pg_temp.r('before') ->> 'duplicates')::bigint + 1,
                (pg_temp.r('before') ->> 'dead_letters')::bigint + 1, (pg_temp.r('before') ->> 'notifications')::bigint + 2],
          '... counted in events_ingested, duplicates, dead_letters and notifications');
SELECT is(bridgecore.ingest('main', jsonb_build_array(pg_temp.rec(23, '{}', 'x.' || repeat('m', 126)))::json) ->> 'inserted',
          '1', 'a record of a model with a 128-byte name is stored');
SELECT is((SELECT max(length(model)) FROM bridgecore.stats_models WHERE instance = 'main' AND model LIKE 'x.%'), 128,
          '... and counted in stats_models under its whole name');
SELECT is(pg_temp.stat('main', 'polls'), 0::bigint, 'no poller here: no polls');
SELECT is((SELECT last_success_at FROM bridgecore.instances WHERE name = 'off'), NULL,
          '... and an instance never polled has no last_success_at');
SELECT results_eq(
    $$ SELECT kind, count FROM bridgecore.stats_errors WHERE instance = 'main' $$,
    $$ SELECT k, 0::bigint FROM unnest('{transport,too_large,http,bad_response,rpc,access_denied,session_expired,auth_failed,store}'::text[]) k $$,
    'stats_errors: one row per kind of failure, none yet');
SELECT is((SELECT errors FROM bridgecore.stats WHERE instance = 'main'), '{}'::jsonb, 'stats.errors is empty without failures');

SELECT lives_ok($$ SELECT bridgecore.stats_reset() $$, 'stats_reset()');
SELECT is(ARRAY[pg_temp.stat('main', 'sync_pulls'), pg_temp.stat('main', 'events_ingested'),
                pg_temp.stat('second', 'dead_letters')], ARRAY[0, 0, 0]::bigint[],
          '... zeroes this database''s counters');
SELECT is(pg_temp.pull(2, 'dev-c', 'main') ->> 'status', 'success', 'one more sync_pull');
SELECT is(pg_temp.stat('main', 'sync_pulls'), 1::bigint, '... counts from zero: sync_pulls is 1');
SELECT ok((SELECT since >= now() FROM bridgecore.stats WHERE instance = 'main'), '... and stats.since is the reset time');

-------------------------------------------------------------------------------
-- metrics()
-------------------------------------------------------------------------------
INSERT INTO r VALUES ('metrics', to_jsonb(bridgecore.metrics()));
CREATE FUNCTION pg_temp.metrics() RETURNS text LANGUAGE sql AS $$ SELECT pg_temp.r('metrics') #>> '{}' $$;
SELECT ok(pg_temp.metrics() LIKE E'%# HELP webhook_received_total Events stored from Odoo.\n# TYPE webhook_received_total counter\n%',
          'metrics: HELP and TYPE of webhook_received_total');
SELECT ok(pg_temp.metrics() LIKE E'%# HELP sync_pull_requests_total %\n# TYPE sync_pull_requests_total counter\n%',
          'metrics: HELP and TYPE of sync_pull_requests_total');
SELECT ok(pg_temp.metrics() LIKE E'%# HELP webhook_errors_total %\n# TYPE webhook_errors_total counter\n%',
          'metrics: HELP and TYPE of webhook_errors_total');
SELECT ok(pg_temp.metrics() LIKE E'%# HELP webhook_queue_size %\n# TYPE webhook_queue_size gauge\n%',
          'metrics: HELP and TYPE of webhook_queue_size');
SELECT ok(pg_temp.metrics() LIKE E'%# HELP webhook_processing_seconds %\n# TYPE webhook_processing_seconds histogram\n%',
          'metrics: HELP and TYPE of webhook_processing_seconds');
SELECT ok(pg_temp.metrics() LIKE E'%\nsync_pull_requests_total{instance="main"} 1\n%',
          'metrics: sync_pull_requests_total of main is 1');
SELECT ok(pg_temp.metrics() LIKE E'%\nwebhook_received_total{instance="second"} 0\n%',
          'metrics: webhook_received_total of second is 0');
SELECT ok(pg_temp.metrics() LIKE format(E'%%\nwebhook_queue_size{instance="main"} %s\n%%',
              (SELECT count(*) FROM bridgecore.dead_letter WHERE instance_id = pg_temp.inst('main') AND status IN ('pending', 'retrying'))
              + (SELECT count(*) FROM bridgecore.gap WHERE instance_id = pg_temp.inst('main'))),
          'metrics: webhook_queue_size of main is its pending dead letters plus open gaps');
SELECT ok(pg_temp.metrics() LIKE E'%\nwebhook_errors_total{instance="main",kind="http"} 0\n%',
          'metrics: webhook_errors_total per instance and kind');
SELECT ok(pg_temp.metrics() LIKE E'%\nbridgecore_instance_state{instance="off",state="disabled"} 1\n%'
          AND pg_temp.metrics() LIKE E'%\nbridgecore_instance_state{instance="off",state="ok"} 0\n%',
          'metrics: bridgecore_instance_state marks the current state');
SELECT is((SELECT array_agg(l) FROM regexp_split_to_table(rtrim(pg_temp.metrics(), E'\n'), E'\n') l
            WHERE l !~ '^# (HELP|TYPE) [a-z_]+ .+$'
              AND l !~ '^[a-z_]+\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\} -?[0-9]+(\.[0-9]+)?(e[-+]?[0-9]+)?$'),
          NULL, 'metrics: every line is a comment or a sample of the text exposition format');
SELECT is((SELECT count(*)::int FROM regexp_matches(pg_temp.metrics(), E'(^|\n)# TYPE ([a-z_]+) ', 'g')),
          (SELECT count(DISTINCT m[2])::int FROM regexp_matches(pg_temp.metrics(), E'(^|\n)# TYPE ([a-z_]+) ', 'g') m),
          'metrics: each family is declared once');

-------------------------------------------------------------------------------
-- _classify_model: the middleware's classification (odoo-contract.md)
-------------------------------------------------------------------------------
CREATE TEMP TABLE cases (model text, transient boolean, classification text, priority text);
INSERT INTO cases VALUES
    -- transient first, whatever the name
    ('sale.advance.payment.inv', true, 'transient', NULL), ('account.payment.register', true, 'transient', NULL),
    ('sale.order', true, 'transient', NULL), ('ir.cron', true, 'transient', NULL),
    -- ignored: each substring
    ('ir.attachment', false, 'ignored', NULL), ('repair.order', false, 'ignored', NULL),
    ('base.automation', false, 'ignored', NULL), ('mail.message', false, 'ignored', NULL),
    ('mail.message.subtype', false, 'ignored', NULL), ('mail.followers', false, 'ignored', NULL),
    ('mail.activity', false, 'ignored', NULL), ('mail.activity.type', false, 'ignored', NULL),
    ('bus.bus', false, 'ignored', NULL), ('report.paperformat', false, 'ignored', NULL),
    ('account.report.line', false, 'ignored', NULL), ('x_wizard_step', false, 'ignored', NULL),
    ('stock.picking.wizard', false, 'ignored', NULL),
    -- critical: the six exact names
    ('sale.order', false, 'critical', 'high'), ('purchase.order', false, 'critical', 'high'),
    ('account.move', false, 'critical', 'high'), ('stock.picking', false, 'critical', 'high'),
    ('res.partner', false, 'critical', 'high'), ('account.payment', false, 'critical', 'high'),
    -- important: each prefix
    ('sale.order.line', false, 'important', 'medium'), ('sale.report', false, 'important', 'medium'),
    ('purchase.order.line', false, 'important', 'medium'), ('stock.move', false, 'important', 'medium'),
    ('account.move.line', false, 'important', 'medium'), ('account.payment.term', false, 'important', 'medium'),
    ('product.template', false, 'important', 'medium'), ('hr.employee', false, 'important', 'medium'),
    ('project.task', false, 'important', 'medium'), ('crm.lead', false, 'important', 'medium'),
    -- standard: anything else
    ('res.partner.bank', false, 'standard', 'low'), ('res.company', false, 'standard', 'low'),
    ('uom.uom', false, 'standard', 'low'), ('x_custom.thing', false, 'standard', 'low'),
    ('sale', false, 'standard', 'low'), ('website.sale.extra', false, 'standard', 'low'),
    -- transient unknown (get_available_models): classified by name
    ('sale.order', NULL, 'critical', 'high'), ('stock.move', NULL, 'important', 'medium');
SELECT is(c.classification || '/' || coalesce(c.priority::text, '-'),
          x.classification || '/' || coalesce(x.priority, '-'),
          format('_classify_model(%s, %s) is %s', x.model, coalesce(x.transient::text, 'null'), x.classification))
  FROM cases x, LATERAL bridgecore._classify_model(x.model, x.transient) c
 ORDER BY x.classification, x.model, x.transient;

-------------------------------------------------------------------------------
-- Model discovery and audit setup: what needs no Odoo
-------------------------------------------------------------------------------
SELECT has_table('bridgecore', 'odoo_model', 'table odoo_model exists');
SELECT throws_ok($$ SELECT * FROM bridgecore.discover_models('nope') $$, '22023', NULL, 'discover_models of an unknown instance');
SELECT throws_ok($$ SELECT bridgecore.initialize_audit('main', dry_run => NULL) $$, '22004', NULL,
                 'initialize_audit: dry_run must not be null');

-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------
SELECT has_role('bridgecore_monitor', 'role bridgecore_monitor exists');
SELECT is((SELECT rolcanlogin OR rolsuper OR rolcreaterole OR rolbypassrls FROM pg_roles WHERE rolname = 'bridgecore_monitor'),
          false, 'bridgecore_monitor is a NOLOGIN group role without special attributes');
SELECT is_member_of('bridgecore_monitor', 'bridgecore_admin', 'bridgecore_admin is a member of bridgecore_monitor');

-- The roles below cannot read the tables the fixture helpers use.
SELECT pg_temp.dl(2) AS dl2 \gset

SET LOCAL ROLE bridgecore_app;
SELECT throws_ok($$ SELECT * FROM bridgecore.discover_models('main') $$, '42501', NULL, 'app role: discover_models denied');
SELECT throws_ok($$ SELECT bridgecore.initialize_audit('main') $$, '42501', NULL, 'app role: initialize_audit denied');
SELECT throws_ok($$ SELECT bridgecore.metrics() $$, '42501', NULL, 'app role: metrics denied');
SELECT throws_ok($$ SELECT * FROM bridgecore.status() $$, '42501', NULL, 'app role: status denied');
SELECT throws_ok(format('SELECT bridgecore.retry_dead_letter(%s)', :dl2), '42501', NULL,
                 'app role: retry_dead_letter denied');
SELECT throws_ok($$ SELECT bridgecore.stats_reset() $$, '42501', NULL, 'app role: stats_reset denied');
SELECT throws_ok($$ SELECT count(*) FROM bridgecore.stats $$, '42501', NULL, 'app role: stats denied');
SELECT throws_ok($$ SELECT count(*) FROM bridgecore.devices $$, '42501', NULL, 'app role: devices denied');
RESET ROLE;
SELECT is(pg_temp.dl_status(2), 'retrying', '... the denied retry changed nothing');

SET LOCAL ROLE bridgecore_monitor;
SELECT lives_ok($$ SELECT bridgecore.metrics() $$, 'monitor role: metrics works');
SELECT lives_ok($$ SELECT * FROM bridgecore.stats $$, 'monitor role: reads stats');
SELECT lives_ok($$ SELECT * FROM bridgecore.stats_models $$, 'monitor role: reads stats_models');
SELECT lives_ok($$ SELECT * FROM bridgecore.stats_errors $$, 'monitor role: reads stats_errors');
SELECT throws_ok($$ SELECT count(*) FROM bridgecore.dead_letters $$, '42501', NULL, 'monitor role: dead_letters denied');
SELECT throws_ok($$ SELECT count(*) FROM bridgecore.instance $$, '42501', NULL, 'monitor role: instance denied');
SELECT throws_ok($$ SELECT * FROM bridgecore.status() $$, '42501', NULL, 'monitor role: status denied');
SELECT throws_ok($$ SELECT bridgecore.stats_reset() $$, '42501', NULL, 'monitor role: stats_reset denied');
SELECT throws_ok($$ SELECT * FROM bridgecore.discover_models('main') $$, '42501', NULL, 'monitor role: discover_models denied');
RESET ROLE;

SET LOCAL ROLE bridgecore_admin;
SELECT lives_ok($$ SELECT * FROM bridgecore.status() $$, 'admin role: status works');
SELECT lives_ok($$ SELECT count(*) FROM bridgecore.dead_letters, bridgecore.devices, bridgecore.user_stats, bridgecore.odoo_model $$,
                'admin role: reads dead_letters, devices, user_stats and odoo_model');
SELECT lives_ok($$ SELECT * FROM bridgecore.stats $$, 'admin role: reads stats (as a member of bridgecore_monitor)');
SELECT is(bridgecore.ignore_dead_letter(:dl2, 'by admin') ->> 'status', 'ignored', 'admin role: ignore_dead_letter works');
SELECT throws_ok($$ SELECT bridgecore._classify_model('sale.order', false) $$, '42501', NULL,
                 'admin role: internal helpers stay out of reach');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
