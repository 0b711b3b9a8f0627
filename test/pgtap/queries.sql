-- v1 event queries: bridgecore.events() and bridgecore.check_updates().
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION bridgecore;

SELECT plan(31);

CREATE FUNCTION pg_temp.ev(odoo bigint) RETURNS bigint LANGUAGE sql AS $$
    SELECT id FROM bridgecore.event WHERE odoo_id = odoo
$$;
-- Local ids of Odoo ids, in the given order.
CREATE FUNCTION pg_temp.evs(odoo bigint[]) RETURNS jsonb LANGUAGE sql AS $$
    SELECT coalesce(jsonb_agg(pg_temp.ev(o) ORDER BY n), '[]') FROM unnest(odoo) WITH ORDINALITY AS t(o, n)
$$;
CREATE FUNCTION pg_temp.ids(answer anyelement) RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_path_query_array(to_jsonb(answer), '$.data[*].id')
$$;

DO $$ BEGIN
    PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.ingest('main', '[
      {"id": 1, "model": "sale.order", "record_id": 456, "event": "create", "timestamp": "2025-11-16 10:00:00",
       "priority": "high", "category": "business", "payload": {"name": "S00456"}},
      {"id": 2, "model": "sale.order", "record_id": 456, "event": "write", "timestamp": "2025-11-16 10:10:00",
       "priority": "low", "category": "business", "payload": {"state": "sale", "_changed_fields": ["state"]}},
      {"id": 3, "model": "res.partner", "record_id": 7, "event": "create", "timestamp": "2025-11-16 10:20:00",
       "priority": "medium", "category": "system"},
      {"id": 4, "model": "sale.order", "record_id": 456, "event": "unlink", "timestamp": "2025-11-16 10:30:00"},
      {"id": 5, "model": "res.partner", "record_id": 8, "event": "write", "timestamp": "2025-11-16 10:40:00",
       "user_id": [2, "Mitchell Admin"]}
    ]');
END $$;

-------------------------------------------------------------------------------
-- events()
-------------------------------------------------------------------------------
SELECT is(to_jsonb(bridgecore.events()) - 'data', '{"status": "success", "count": 5}'::jsonb, 'status and count');
SELECT is(pg_temp.ids(bridgecore.events()), pg_temp.evs('{5,4,3,2,1}'), 'newest first');
SELECT is((to_jsonb(bridgecore.events())->'data'->0) - 'id',
          '{"model": "res.partner", "record_id": 8, "event": "write", "occurred_at": "2025-11-16T10:40:00Z",
            "priority": null, "category": null, "payload": null, "changed_fields": null,
            "user_id": 2, "user_name": "Mitchell Admin"}'::jsonb,
          'event shape: occurred_at, enhanced fields, Odoo user and name');
SELECT is((SELECT e->'changed_fields' FROM jsonb_array_elements(to_jsonb(bridgecore.events())->'data') e
            WHERE (e->>'id')::bigint = pg_temp.ev(2)), '["state"]'::jsonb, 'changed_fields');
SELECT is(pg_temp.ids(bridgecore.events(model_name => 'sale.order')), pg_temp.evs('{4,2,1}'), 'model_name filter');
SELECT is(pg_temp.ids(bridgecore.events(record_id => 456)), pg_temp.evs('{4,2,1}'), 'record_id filter');
SELECT is(pg_temp.ids(bridgecore.events(event => 'create')), pg_temp.evs('{3,1}'), 'event filter');
SELECT is(pg_temp.ids(bridgecore.events(since => '2025-11-16 10:20:00+00')), pg_temp.evs('{5,4,3}'),
          'since: events at or after it');
SELECT is(pg_temp.ids(bridgecore.events(priority => 'high')), pg_temp.evs('{1}'), 'priority filter');
SELECT is(pg_temp.ids(bridgecore.events(category => 'business')), pg_temp.evs('{2,1}'), 'category filter');
SELECT is(pg_temp.ids(bridgecore.events(model_name => 'sale.order', event => 'write', record_id => 456)),
          pg_temp.evs('{2}'), 'filters combine with AND');
SELECT is(pg_temp.ids(bridgecore.events("limit" => 2, "offset" => 1)), pg_temp.evs('{4,3}'), 'limit and offset page');
SELECT is(to_jsonb(bridgecore.events("limit" => 2, "offset" => 1))->'count', '2'::jsonb, 'count is the page size');
SELECT is(to_jsonb(bridgecore.events(model_name => 'stock.move')), '{"status": "success", "count": 0, "data": []}'::jsonb,
          'no match: empty data');
SELECT throws_ok($$ SELECT bridgecore.events("limit" => 0) $$, '22023', NULL, 'limit 0');
SELECT throws_ok($$ SELECT bridgecore.events("limit" => 1001) $$, '22023', NULL, 'limit 1001');
SELECT lives_ok($$ SELECT bridgecore.events("limit" => 1000) $$, 'limit 1000 is allowed');
SELECT throws_ok($$ SELECT bridgecore.events("offset" => -1) $$, '22023', NULL, 'negative offset');
SELECT throws_ok($$ SELECT bridgecore.events(event => 'delete') $$, '22023', NULL, 'unknown event type');
SELECT throws_ok($$ SELECT bridgecore.events(priority => 'urgent') $$, '22023', NULL, 'unknown priority');
SELECT throws_ok($$ SELECT bridgecore.events(instance => 'nope') $$, '22023', NULL, 'unknown instance');

-------------------------------------------------------------------------------
-- check_updates()
-------------------------------------------------------------------------------
SELECT is(to_jsonb(bridgecore.check_updates()),
          '{"has_update": true, "last_update_at": "2025-11-16T10:40:00Z",
            "summary": [{"model": "sale.order", "count": 3}, {"model": "res.partner", "count": 2}]}'::jsonb,
          'summary by model, largest count first');
SELECT is(to_jsonb(bridgecore.check_updates(since => '2025-11-16 10:25:00+00')),
          '{"has_update": true, "last_update_at": "2025-11-16T10:40:00Z",
            "summary": [{"model": "res.partner", "count": 1}, {"model": "sale.order", "count": 1}]}'::jsonb,
          'since; equal counts sorted by model');
SELECT is(to_jsonb(bridgecore.check_updates("limit" => 3))->'summary',
          '[{"model": "res.partner", "count": 2}, {"model": "sale.order", "count": 1}]'::jsonb,
          'limit summarises the newest events only');
SELECT is(to_jsonb(bridgecore.check_updates(since => '2025-11-16 10:00:00+00'))->'summary'->0->'count', '3'::jsonb,
          'since is inclusive');
SELECT is(to_jsonb(bridgecore.check_updates(since => '2030-01-01')),
          '{"has_update": false, "last_update_at": null, "summary": []}'::jsonb, 'nothing new');
SELECT throws_ok($$ SELECT bridgecore.check_updates("limit" => 0) $$, '22023', NULL, 'limit 0');
SELECT throws_ok($$ SELECT bridgecore.check_updates("limit" => NULL) $$, '22004', NULL, 'null limit');

DO $$ BEGIN PERFORM bridgecore.add_instance('second', 'https://other.example.com', 'db2', 'bot', 'x-secret-key'); END $$;
SELECT throws_ok($$ SELECT bridgecore.check_updates() $$, '22004', NULL, 'instance omitted with two instances');
SELECT is(to_jsonb(bridgecore.check_updates(instance => 'second')),
          '{"has_update": false, "last_update_at": null, "summary": []}'::jsonb, 'per instance');
SELECT is(to_jsonb(bridgecore.events(instance => 'main'))->'count', '5'::jsonb, 'events per instance');

SELECT * FROM finish();
ROLLBACK;
