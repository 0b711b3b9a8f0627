-- bridgecore.sync_pull(): per-device cursors, paging, filters, sync tokens,
-- resync after cleanup and per-instance isolation.
\ir setup.psql

SELECT plan(91);

-------------------------------------------------------------------------------
-- Fixtures. Identity sequences are not rolled back, so local event ids and
-- instance ids differ between runs: they are always looked up.
-------------------------------------------------------------------------------
CREATE TEMP TABLE r (k text PRIMARY KEY, v jsonb);

-- One update.webhook record as Odoo's search_read returns it; the minute of
-- the timestamp is the Odoo id, so cleanup can cut between ids.
CREATE FUNCTION pg_temp.rec(oid_ bigint, model text, extra jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', oid_, 'model', model, 'record_id', 100 + oid_,
                              'event', 'create',
                              'timestamp', format('2025-11-16 10:%s:00', lpad(oid_::text, 2, '0')))
           || extra
$$;
-- Local event id of an Odoo id in an instance.
CREATE FUNCTION pg_temp.ev(odoo bigint, inst text DEFAULT 'main') RETURNS bigint LANGUAGE sql AS $$
    SELECT e.id FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id
     WHERE i.name = inst AND e.odoo_id = odoo
$$;
CREATE FUNCTION pg_temp.evs(odoo bigint[], inst text DEFAULT 'main') RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(jsonb_agg(pg_temp.ev(o, inst) ORDER BY pg_temp.ev(o, inst)), '[]') FROM unnest(odoo) o
$$;
CREATE FUNCTION pg_temp.inst(inst text DEFAULT 'main') RETURNS integer LANGUAGE sql AS $$
    SELECT id FROM bridgecore.instance WHERE name = inst
$$;
CREATE FUNCTION pg_temp.tok(pos bigint, inst text DEFAULT 'main') RETURNS text LANGUAGE sql AS $$
    SELECT 'bc1:' || pg_temp.inst(inst) || ':' || pos
$$;
CREATE FUNCTION pg_temp.r(key text) RETURNS jsonb LANGUAGE sql AS $$ SELECT v FROM r WHERE k = key $$;
CREATE FUNCTION pg_temp.ids(answer jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_path_query_array(answer, '$.events[*].id')
$$;
CREATE FUNCTION pg_temp.cursor_of(uid bigint, dev text, inst text DEFAULT 'main') RETURNS bigint LANGUAGE sql AS $$
    SELECT s.last_event_id FROM bridgecore.sync_state s
     WHERE s.instance_id = pg_temp.inst(inst) AND s.user_id = uid AND s.device_id = dev
$$;

DO $$ BEGIN PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key'); END $$;

-- Odoo ids 1..9; the batch is deliberately not in id order.
-- sales_app wants 1, 3, 4, 5, 7, 8; 2, 6 and 9 are warehouse models.
INSERT INTO r SELECT 'ingest', bridgecore.ingest('main', jsonb_build_array(
    pg_temp.rec(7, 'sale.order'),
    pg_temp.rec(1, 'sale.order'),
    pg_temp.rec(2, 'stock.picking'),
    pg_temp.rec(3, 'res.partner', '{"priority": false, "category": false, "payload": false, "user_id": false}'),
    pg_temp.rec(4, 'sale.order', '{"event": "write", "priority": "high", "category": "business",
                                   "payload": {"name": "S00042", "partner_id": {"id": 9, "name": "Azure"},
                                               "_changed_fields": ["name", "state"]},
                                   "user_id": [7, "Mitchell Admin"]}'),
    pg_temp.rec(5, 'product.product'),
    pg_temp.rec(6, 'stock.move'),
    pg_temp.rec(8, 'mail.message'),
    pg_temp.rec(9, 'stock.quant'))::json);

SELECT is(pg_temp.r('ingest')->'inserted', '9'::jsonb, 'fixture: nine events stored');

-------------------------------------------------------------------------------
-- First pull, paging, cursor order
-------------------------------------------------------------------------------
SELECT is((SELECT count(*)::int FROM bridgecore.sync_state), 0, 'no sync state before the first pull');

INSERT INTO r VALUES ('p1', bridgecore.sync_pull(1, 'dev-a', 'sales_app', "limit" => 2));

SELECT is((SELECT count(*)::int FROM bridgecore.sync_state WHERE user_id = 1 AND device_id = 'dev-a'), 1,
          'first pull creates the device''s state');
SELECT is((SELECT app_type FROM bridgecore.sync_state WHERE user_id = 1 AND device_id = 'dev-a'), 'sales_app',
          'state remembers the app type');
SELECT is(pg_temp.r('p1')->>'status', 'success', 'status is success');
SELECT is(pg_temp.r('p1')->'last_sync_time', 'null'::jsonb, 'last_sync_time is null on the first pull');
SELECT is(pg_temp.ids(pg_temp.r('p1')), pg_temp.evs('{1,3}'), 'first page: the two oldest wanted events, in cursor order');
SELECT is(pg_temp.r('p1')->'has_more', 'true'::jsonb, 'has_more is true when the limit cut the answer');
SELECT is(pg_temp.r('p1')->'has_updates', 'true'::jsonb, 'has_updates is true');
SELECT is(pg_temp.r('p1')->'new_events_count', '2'::jsonb, 'new_events_count equals the page size');
SELECT is(pg_temp.r('p1')->>'next_sync_token', pg_temp.tok(pg_temp.ev(3)), 'token names the last delivered event');
SELECT is(pg_temp.cursor_of(1, 'dev-a'), pg_temp.ev(3), 'state cursor is at the last delivered event');
SELECT is(pg_temp.r('p1')->'resync_required', 'false'::jsonb, 'no resync needed');

INSERT INTO r VALUES ('p2', bridgecore.sync_pull(1, 'dev-a', 'sales_app', "limit" => 2));
SELECT is(pg_temp.ids(pg_temp.r('p2')), pg_temp.evs('{4,5}'), 'second page continues after the first');
SELECT is(pg_temp.r('p2')->>'last_sync_time', to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
          'last_sync_time is the time of the previous sync, ISO 8601 UTC');
SELECT is(pg_temp.r('p2')->'has_more', 'true'::jsonb, 'has_more still true');

INSERT INTO r VALUES ('p3', bridgecore.sync_pull(1, 'dev-a', 'sales_app', "limit" => 2));
SELECT is(pg_temp.ids(pg_temp.r('p3')), pg_temp.evs('{7,8}'), 'third page: the rest');
SELECT is(pg_temp.r('p3')->'has_more', 'false'::jsonb, 'has_more false when exactly limit events were left');
SELECT is(pg_temp.r('p3')->>'next_sync_token', pg_temp.tok(pg_temp.ev(9)),
          'with nothing more to send the cursor moves past unwanted newer events');
SELECT is(pg_temp.cursor_of(1, 'dev-a'), pg_temp.ev(9), 'state cursor moved past unwanted events');

INSERT INTO r VALUES ('p4', bridgecore.sync_pull(1, 'dev-a', 'sales_app', "limit" => 2));
SELECT is(pg_temp.r('p4')->'has_updates', 'false'::jsonb, 'no new events: has_updates false');
SELECT is(pg_temp.r('p4')->'events', '[]'::jsonb, 'no new events: events is []');
SELECT is(pg_temp.r('p4')->'new_events_count', '0'::jsonb, 'no new events: count 0');
SELECT is(pg_temp.r('p4')->>'next_sync_token', pg_temp.r('p3')->>'next_sync_token', 'no new events: token unchanged');
SELECT is(pg_temp.r('p4')->'has_more', 'false'::jsonb, 'no new events: has_more false');
SELECT results_eq(
    $$ SELECT sync_count, total_events_synced, last_event_count FROM bridgecore.sync_state
        WHERE user_id = 1 AND device_id = 'dev-a' $$,
    $$ VALUES (4::bigint, 6::bigint, 0) $$,
    'state counts pulls and delivered events');

-- One big page: ids strictly increasing (cursor order) although ingested out of order.
INSERT INTO r VALUES ('all', bridgecore.sync_pull(2, 'dev-all', 'sales_app'));
SELECT is(pg_temp.ids(pg_temp.r('all')), pg_temp.evs('{1,3,4,5,7,8}'), 'default limit returns every wanted event in id order');
SELECT is((SELECT array_agg(e->>'model' ORDER BY (e->>'id')::bigint)
             FROM jsonb_array_elements(pg_temp.r('all')->'events') e),
          ARRAY['sale.order', 'res.partner', 'sale.order', 'product.product', 'sale.order', 'mail.message'],
          'events follow Odoo id order (local ids were assigned in Odoo id order)');

-------------------------------------------------------------------------------
-- Event shape
-------------------------------------------------------------------------------
SELECT is((SELECT bool_and(e ?& ARRAY['id', 'model', 'record_id', 'event', 'timestamp', 'priority',
                                      'category', 'payload', 'changed_fields'])
             FROM jsonb_array_elements(pg_temp.r('all')->'events') e),
          true, 'every event carries id, model, record_id, event, timestamp, priority, category, payload, changed_fields');
SELECT is((SELECT e - 'id' FROM jsonb_array_elements(pg_temp.r('all')->'events') e
            WHERE (e->>'id')::bigint = pg_temp.ev(4)),
          '{"model": "sale.order", "record_id": 104, "event": "write", "timestamp": "2025-11-16T10:04:00Z",
            "priority": "high", "category": "business",
            "payload": {"name": "S00042", "partner_id": {"id": 9, "name": "Azure"}, "_changed_fields": ["name", "state"]},
            "changed_fields": ["name", "state"], "user_id": 7}'::jsonb,
          'full event: priority, category, payload, changed_fields, Odoo user');
SELECT is((SELECT e - 'id' FROM jsonb_array_elements(pg_temp.r('all')->'events') e
            WHERE (e->>'id')::bigint = pg_temp.ev(3)),
          '{"model": "res.partner", "record_id": 103, "event": "create", "timestamp": "2025-11-16T10:03:00Z",
            "priority": null, "category": null, "payload": null, "changed_fields": null, "user_id": null}'::jsonb,
          'Odoo false values come out as JSON null');

-------------------------------------------------------------------------------
-- App type models intersected with models_filter
-------------------------------------------------------------------------------
INSERT INTO r VALUES ('f1', bridgecore.sync_pull(1, 'dev-f1', 'sales_app', models_filter => '{sale.order,stock.picking}'));
SELECT is(pg_temp.ids(pg_temp.r('f1')), pg_temp.evs('{1,4,7}'),
          'models_filter is intersected with the app type (stock.picking is not a sales_app model)');

INSERT INTO r VALUES ('f2', bridgecore.sync_pull(1, 'dev-f2', 'sales_app', models_filter => '{}'));
SELECT is(pg_temp.ids(pg_temp.r('f2')), pg_temp.evs('{1,3,4,5,7,8}'), 'empty models_filter means no filter');

INSERT INTO r VALUES ('f3', bridgecore.sync_pull(1, 'dev-f3', 'sales_app', models_filter => '{stock.picking}'));
SELECT is(pg_temp.r('f3')->'events', '[]'::jsonb, 'filter outside the app type gives no events');
SELECT is(pg_temp.r('f3')->'has_updates', 'false'::jsonb, '... and has_updates false');

INSERT INTO r VALUES ('f4', bridgecore.sync_pull(1, 'dev-f4', 'warehouse_app'));
SELECT is(pg_temp.ids(pg_temp.r('f4')), pg_temp.evs('{2,5,6,8,9}'), 'warehouse_app gets its own models');

INSERT INTO r VALUES ('f5', bridgecore.sync_pull(1, 'dev-f5', 'sales_app', models_filter => '{res.partner,mail.message}'));
SELECT is(pg_temp.ids(pg_temp.r('f5')), pg_temp.evs('{3,8}'), 'filter with two models');

SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-f6', 'sales_app', models_filter => '{"sale order"}') $$,
                 '22023', NULL, 'invalid model name in models_filter is rejected');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-f6', 'sales_app', models_filter => ARRAY[NULL::text]) $$,
                 '22004', NULL, 'null in models_filter is rejected');

-------------------------------------------------------------------------------
-- Argument validation
-------------------------------------------------------------------------------
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-v', 'no_such_app') $$, '22023', NULL, 'unknown app_type');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-v', NULL) $$, '22004', NULL, 'null app_type');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-v', 'sales_app', "limit" => 0) $$, '22023', NULL, 'limit 0');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-v', 'sales_app', "limit" => 501) $$, '22023', NULL, 'limit 501');
SELECT lives_ok($$ SELECT bridgecore.sync_pull(1, 'dev-v', 'sales_app', "limit" => 500) $$, 'limit 500 is allowed');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(0, 'dev-v', 'sales_app') $$, '22023', NULL, 'user_id 0');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, '', 'sales_app') $$, '22023', NULL, 'empty device_id');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, NULL, 'sales_app') $$, '22004', NULL, 'null device_id');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(NULL, 'dev-v', 'sales_app') $$, '22004', NULL, 'null user_id');
SELECT throws_ok(format($$ SELECT bridgecore.sync_pull(1, %L, 'sales_app') $$, repeat('x', 256)), '22023', NULL,
                 'device_id longer than 255 characters');
SELECT lives_ok(format($$ SELECT bridgecore.sync_pull(1, %L, 'sales_app') $$, repeat('x', 255)),
                'device_id of 255 characters is allowed');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, E'dev\n1', 'sales_app') $$, '22023', NULL,
                 'device_id with a control character');

-------------------------------------------------------------------------------
-- Sync tokens
-------------------------------------------------------------------------------
-- dev-a is at ev(9). Continue from the first answer's token: re-delivered,
-- and the stored state does not move back, so the token of the latest
-- answer stays valid (a second sync path, or the app's own last answer).
INSERT INTO r VALUES ('t1', bridgecore.sync_pull(1, 'dev-a', 'sales_app', "limit" => 1,
                                                 sync_token => pg_temp.r('p1')->>'next_sync_token'));
SELECT is(pg_temp.ids(pg_temp.r('t1')), pg_temp.evs('{4}'), 'token re-delivers the events after it');
SELECT is(pg_temp.cursor_of(1, 'dev-a'), pg_temp.ev(9), 'a replayed older token does not move the stored state back');
SELECT is(pg_temp.r('t1')->>'next_sync_token', pg_temp.tok(pg_temp.ev(4)), 'token of the re-delivered page');

INSERT INTO r VALUES ('t2', bridgecore.sync_pull(1, 'dev-a', 'sales_app',
                                                 sync_token => pg_temp.r('t1')->>'next_sync_token'));
SELECT is(pg_temp.ids(pg_temp.r('t2')), pg_temp.evs('{5,7,8}'), 'the replayed page''s token continues from there');
SELECT lives_ok(format($$ SELECT bridgecore.sync_pull(1, 'dev-a', 'sales_app', sync_token => %L) $$,
                       pg_temp.tok(pg_temp.ev(9))),
                'the token of the latest answer is still accepted after a replay (not "ahead")');

-- "0" is the starting token: a device whose first answer was lost asks
-- for the same page again.
INSERT INTO r VALUES ('z1', bridgecore.sync_pull(1, 'dev-new', 'sales_app', "limit" => 2, sync_token => '0'));
INSERT INTO r VALUES ('z2', bridgecore.sync_pull(1, 'dev-new', 'sales_app', "limit" => 2, sync_token => '0'));
SELECT is(pg_temp.ids(pg_temp.r('z2')), pg_temp.ids(pg_temp.r('z1')), 'starting token "0": a lost first answer is served again');
SELECT is(jsonb_array_length(pg_temp.r('z2')->'events'), 2, '... the first page of the log');

INSERT INTO r VALUES ('t3', bridgecore.sync_pull(1, 'dev-a', 'sales_app', sync_token => pg_temp.ev(1)::text));
SELECT is(pg_temp.ids(pg_temp.r('t3')), pg_temp.evs('{3,4,5,7,8}'), 'plain decimal token (today''s format) is accepted');

SELECT throws_ok(format($$ SELECT bridgecore.sync_pull(1, 'dev-a', 'sales_app', sync_token => %L) $$,
                        'bc1:' || pg_temp.inst() + 1000 || ':1'),
                 '22023', 'sync_token belongs to another instance', 'token of another instance is rejected');
SELECT throws_ok(format($$ SELECT bridgecore.sync_pull(1, 'dev-f3', 'sales_app', sync_token => %L) $$,
                        pg_temp.tok(pg_temp.cursor_of(1, 'dev-f3') + 1)),
                 '22023', NULL, 'token ahead of the device''s state is rejected');
SELECT throws_ok(format($$ SELECT bridgecore.sync_pull(1, 'dev-f1', 'sales_app', sync_token => %L) $$,
                        (pg_temp.cursor_of(1, 'dev-f1') + 1)::text),
                 '22023', NULL, 'decimal token ahead of the device''s state is rejected');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-a', 'sales_app', sync_token => 'garbage') $$,
                 '22023', NULL, 'garbage token is rejected');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-a', 'sales_app', sync_token => 'bc1:x:1') $$,
                 '22023', NULL, 'token with a non-numeric instance is rejected');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-a', 'sales_app', sync_token => '-5') $$,
                 '22023', NULL, 'negative token is rejected');
SELECT is(pg_temp.cursor_of(1, 'dev-f3'), pg_temp.ev(9), 'a rejected token leaves the state alone');

-------------------------------------------------------------------------------
-- Resync after cleanup
-------------------------------------------------------------------------------
-- dev-r has seen 1 and 3; cleanup removes Odoo ids 1..5 (minutes 01..05),
-- deleting them (one instance; partitions.sql has retention by partition).
INSERT INTO r VALUES ('r0', bridgecore.sync_pull(1, 'dev-r', 'sales_app', "limit" => 2));
SELECT is(pg_temp.cursor_of(1, 'dev-r'), pg_temp.ev(3), 'dev-r is at Odoo id 3');
INSERT INTO r VALUES ('purge_pos', to_jsonb(pg_temp.ev(5)));
INSERT INTO r VALUES ('clean', bridgecore.cleanup(before => '2025-11-16 10:05:30+00', instance => 'main'));
SELECT is(pg_temp.r('clean')->'deleted', '5'::jsonb, 'cleanup removed five events');

INSERT INTO r VALUES ('r1', bridgecore.sync_pull(1, 'dev-r', 'sales_app'));
SELECT is(pg_temp.r('r1')->'resync_required', 'true'::jsonb, 'device below the purged events must resync');
SELECT is(pg_temp.ids(pg_temp.r('r1')), pg_temp.evs('{7,8}'), '... and gets what is left');
INSERT INTO r VALUES ('r2', bridgecore.sync_pull(1, 'dev-r', 'sales_app'));
SELECT is(pg_temp.r('r2')->'resync_required', 'false'::jsonb, 'resync is reported once; the next pull is normal');

INSERT INTO r VALUES ('r3', bridgecore.sync_pull(1, 'dev-a', 'sales_app'));
SELECT is(pg_temp.r('r3')->'resync_required', 'false'::jsonb, 'device that already passed the purged events needs no resync');

INSERT INTO r VALUES ('r4', bridgecore.sync_pull(1, 'dev-a', 'sales_app',
                                                 sync_token => pg_temp.r('p1')->>'next_sync_token'));
SELECT is(pg_temp.r('r4')->'resync_required', 'true'::jsonb, 'a token below the purged events requires resync');
SELECT is(pg_temp.r('r4')->>'next_sync_token', pg_temp.tok(pg_temp.ev(9)), '... and continues after them');

-------------------------------------------------------------------------------
-- Two instances
-------------------------------------------------------------------------------
DO $$ BEGIN PERFORM bridgecore.add_instance('second', 'https://other.example.com', 'db2', 'bot', 'x-secret-key'); END $$;
INSERT INTO r SELECT 'ingest2', bridgecore.ingest('second', jsonb_build_array(
    pg_temp.rec(1, 'sale.order'), pg_temp.rec(2, 'res.partner'))::json);

SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-a', 'sales_app') $$, '22004', NULL,
                 'instance omitted while two instances exist');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'dev-a', 'sales_app', instance => 'nope') $$, '22023', NULL,
                 'unknown instance');

INSERT INTO r VALUES ('main_state', to_jsonb(pg_temp.cursor_of(1, 'dev-a')));
INSERT INTO r VALUES ('s1', bridgecore.sync_pull(1, 'dev-a', 'sales_app', instance => 'second'));
SELECT is(pg_temp.r('s1')->'last_sync_time', 'null'::jsonb, 'same device on another instance starts its own state');
SELECT is(pg_temp.ids(pg_temp.r('s1')), pg_temp.evs('{1,2}', 'second'), 'only the other instance''s events');
SELECT is(pg_temp.r('s1')->>'next_sync_token', pg_temp.tok(pg_temp.ev(2, 'second'), 'second'),
          'token names the other instance');
SELECT is(pg_temp.cursor_of(1, 'dev-a'), (pg_temp.r('main_state'))::text::bigint, 'the first instance''s state is untouched');
SELECT is((SELECT count(*)::int FROM bridgecore.sync_state WHERE user_id = 1 AND device_id = 'dev-a'), 2,
          'one state per instance');
SELECT throws_ok(format($$ SELECT bridgecore.sync_pull(1, 'dev-a', 'sales_app', instance => 'second', sync_token => %L) $$,
                        pg_temp.tok(0, 'main')),
                 '22023', 'sync_token belongs to another instance', 'token of the first instance rejected on the second');

-------------------------------------------------------------------------------
-- Pages of models that are rare in the log come from the per-model index;
-- the answer is the same as reading the log in id order would give.
-------------------------------------------------------------------------------
DO $$ BEGIN PERFORM bridgecore.add_instance('rare', 'https://rare.example.com', 'prod', 'bot', 's3cret-secret-key'); END $$;
-- 1,000 events: mail.message, with a stock.picking every 97th and a
-- stock.move every 5th (a fifth of the log); no stock.quant at all.
SELECT is(bridgecore.ingest('rare', (SELECT json_agg(jsonb_build_object(
              'id', g, 'record_id', g, 'event', 'write', 'timestamp', '2025-11-16 10:00:00',
              'model', CASE WHEN g % 97 = 0 THEN 'stock.picking' WHEN g % 5 = 0 THEN 'stock.move'
                            ELSE 'mail.message' END) ORDER BY g)
          FROM generate_series(1, 1000) g)) ->> 'inserted', '1000', 'rare: 1,000 events stored');
-- Every page of a device, followed by its tokens to the end: the event ids
-- in the order received, and how many pages it took.
CREATE FUNCTION pg_temp.page_through(dev text, models text[], lim integer)
RETURNS TABLE (event_ids bigint[], pages integer, last_token text) LANGUAGE plpgsql AS $$
DECLARE
    answer jsonb;
    tok text := '0';
BEGIN
    event_ids := '{}';
    pages := 0;
    LOOP
        answer := bridgecore.sync_pull(1, dev, 'warehouse_app', lim, models, 'rare', tok);
        pages := pages + 1;
        event_ids := event_ids || ARRAY(SELECT (e ->> 'id')::bigint
                                          FROM jsonb_array_elements(answer -> 'events') e);
        tok := answer ->> 'next_sync_token';
        EXIT WHEN NOT (answer ->> 'has_more')::boolean OR pages > 1000;
    END LOOP;
    last_token := tok;
    RETURN NEXT;
END
$$;
CREATE FUNCTION pg_temp.wanted_ids(models text[]) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(e.id ORDER BY e.id), '{}') FROM bridgecore.event e
     WHERE e.instance_id = pg_temp.inst('rare') AND e.model = ANY (models)
$$;
SELECT is((SELECT event_ids FROM pg_temp.page_through('rare-1', '{stock.picking}', 3)),
          pg_temp.wanted_ids('{stock.picking}'),
          'rare: a model that is 1 % of the log, 3 at a time: every event once, in order');
SELECT is((SELECT pages FROM pg_temp.page_through('rare-2', '{stock.picking}', 3)), 4,
          '... in 4 pages (10 events)');
SELECT is((SELECT event_ids FROM pg_temp.page_through('rare-3', '{stock.picking,stock.move}', 7)),
          pg_temp.wanted_ids('{stock.picking,stock.move}'),
          'rare: two models, a fifth of the log: every event once, in order');
SELECT is((SELECT event_ids FROM pg_temp.page_through('rare-4', '{mail.message,stock.picking}', 50)),
          pg_temp.wanted_ids('{mail.message,stock.picking}'),
          'rare: the common models, 50 at a time: every event once, in order');
SELECT is((SELECT event_ids FROM pg_temp.page_through('rare-5', '{stock.quant}', 10)), '{}'::bigint[],
          'rare: a model absent from the log: no events');
SELECT is((SELECT last_token FROM pg_temp.page_through('rare-6', '{stock.quant}', 10)),
          pg_temp.tok((SELECT max(id) FROM bridgecore.event WHERE instance_id = pg_temp.inst('rare')), 'rare'),
          '... and the token moves past the whole log');
INSERT INTO r VALUES ('rare_mid', bridgecore.sync_pull(1, 'rare-1', 'warehouse_app', 2, '{stock.picking}', 'rare',
                                                       pg_temp.tok(pg_temp.ev(194, 'rare'), 'rare')));
SELECT is(pg_temp.ids(pg_temp.r('rare_mid')), pg_temp.evs('{291,388}', 'rare'),
          'rare: a token from mid-log (a replayed answer) gets the next two of the model');
SELECT is(pg_temp.r('rare_mid') ->> 'has_more', 'true', '... with more to come');

SELECT * FROM finish();
ROLLBACK;
