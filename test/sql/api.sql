-- Response shapes of the app-facing functions (today's JSON plus extras).
SET bridgecore.rate_limit_sync_pull = 0;
SET bridgecore.rate_limit_sync_state = 0;
SET bridgecore.rate_limit_sync_reset = 0;

-- Volatile values (times of day) are masked.
CREATE FUNCTION masked(j jsonb) RETURNS jsonb LANGUAGE sql AS $$
    SELECT regexp_replace(j::text, '"(last_sync_time|created_at)": "[^"]*"', '"\1": "<time>"', 'g')::jsonb
$$;

SELECT bridgecore.ingest('main', $$[
 {"id": 10, "model": "sale.order", "record_id": 456, "event": "create", "timestamp": "2025-11-16 10:30:00",
  "priority": "high", "category": "business", "user_id": [2, "Mitchell Admin"],
  "payload": {"name": "S00042", "partner_id": {"id": 7, "name": "Azure"}, "_metadata": {"model": "sale.order", "id": 456}}},
 {"id": 11, "model": "res.partner", "record_id": 7, "event": "write", "timestamp": "2025-11-16 10:31:00",
  "priority": "low", "category": "business", "user_id": false,
  "payload": {"name": "Azure Interior", "_changed_fields": ["name", "phone"]}},
 {"id": 12, "model": "stock.picking", "record_id": 9, "event": "unlink", "timestamp": "2025-11-16 10:32:00"},
 {"id": 13, "model": "sale.order", "record_id": 457, "event": "write", "timestamp": "2025-11-16 10:33:00",
  "priority": "medium", "category": "business", "payload": false}
]$$);

-- First pull creates the state; last_sync_time is null the first time.
SELECT jsonb_pretty(bridgecore.sync_pull(user_id => 1, device_id => 'device_123', app_type => 'sales_app')::jsonb);
-- Nothing new: same token, no events, previous sync time set.
SELECT masked(bridgecore.sync_pull(1, 'device_123', 'sales_app')::jsonb);
SELECT masked(bridgecore.sync_state(1, 'device_123'));

-- Limit and has_more; models_filter intersects the app type's models.
SELECT jsonb_path_query_array(r::jsonb, '$.events[*].id') AS ids, r->'has_more' AS has_more, r->'next_sync_token' AS token
  FROM bridgecore.sync_pull(2, 'tablet', 'manager_app', "limit" => 2) r;
SELECT jsonb_path_query_array(r::jsonb, '$.events[*].id') AS ids, r->'has_more' AS has_more, r->'next_sync_token' AS token
  FROM bridgecore.sync_pull(2, 'tablet', 'manager_app', "limit" => 2) r;
SELECT jsonb_path_query_array(r::jsonb, '$.events[*].id') AS ids, r->'has_more' AS has_more
  FROM bridgecore.sync_pull(3, 'phone', 'sales_app', models_filter => '{res.partner,stock.picking}') r;

-- Lost answer: the app passes back the last token it processed.
SELECT jsonb_path_query_array(r::jsonb, '$.events[*].id') AS ids, r->'next_sync_token' AS token
  FROM bridgecore.sync_pull(2, 'tablet', 'manager_app', sync_token => 'bc1:1:1') r;
SELECT jsonb_path_query_array(r::jsonb, '$.events[*].id') AS ids
  FROM bridgecore.sync_pull(2, 'tablet', 'manager_app', sync_token => '2') r;

-- Reset.
SELECT bridgecore.sync_reset(1, 'device_123');
SELECT s->'last_event_id' AS last_event_id, s->'sync_count' AS sync_count FROM bridgecore.sync_state(1, 'device_123') s;

-- v1 queries.
SELECT jsonb_pretty(bridgecore.events(model_name => 'sale.order'));
SELECT bridgecore.events(event => 'unlink') -> 'count' AS unlinks;
SELECT jsonb_path_query_array(bridgecore.events("limit" => 2, "offset" => 1), '$.data[*].id') AS page;
SELECT jsonb_path_query_array(bridgecore.events(since => '2025-11-16 10:31:00+00'), '$.data[*].id') AS since;
SELECT jsonb_path_query_array(bridgecore.events(priority => 'high'), '$.data[*].id') AS high;
SELECT bridgecore.check_updates();
SELECT bridgecore.check_updates(since => '2025-11-16 10:32:00+00');
SELECT bridgecore.check_updates(since => '2030-01-01');

-- Priority orders by rank, not by text.
SELECT odoo_id, priority FROM bridgecore.event ORDER BY priority DESC NULLS LAST, odoo_id;

-- Admin view and functions.
SELECT name, url, database, login, source_model, poll_interval, batch_size, enabled, verify_tls, state
  FROM bridgecore.alter_instance('main', batch_size => 200, verify_tls => false);
SELECT bridgecore.set_app_type('field_app', '{project.task,res.partner,project.task}');
SELECT jsonb_path_query_array(r::jsonb, '$.events[*].id') AS ids
  FROM bridgecore.sync_pull(4, 'field-1', 'field_app') r;

-- The instance and models a push channel of an app type follows.
SELECT bridgecore.sync_scope('field_app');
SELECT bridgecore.sync_scope('delivery_app', 'main');
SELECT try($$ SELECT bridgecore.sync_scope(NULL) $$);
SELECT try($$ SELECT bridgecore.sync_scope('nope') $$);
SELECT try($$ SELECT bridgecore.sync_scope('sales_app', 'elsewhere') $$);
SELECT set_config('request.jwt.claims', '{"role": "bridgecore_app", "instance": "main"}', false);
SELECT bridgecore.sync_scope('field_app') ->> 'instance' AS token_instance;
SELECT try($$ SELECT bridgecore.sync_scope('field_app', 'other') $$);
RESET request.jwt.claims;
