-- Rate limits of sync_pull, sync_state and sync_reset (SQLSTATE PT429).
--
-- The counters live in shared memory and survive ROLLBACK, and the instance
-- id is 1 again in every run (the extension and its sequences are created
-- afresh), so every device id here is random per run.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION bridgecore;

SELECT plan(30);

DO $$ BEGIN
    PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.add_instance('second', 'https://other.example.com', 'db2', 'bot', 'x-secret-key');
END $$;

CREATE TEMP TABLE dev (k text PRIMARY KEY, id text NOT NULL);
INSERT INTO dev SELECT k, 'rl-' || k || '-' || gen_random_uuid() FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e', 'f', 'g']) k;
CREATE FUNCTION pg_temp.dev(key text) RETURNS text LANGUAGE sql AS $$ SELECT id FROM dev WHERE k = key $$;
-- "ok" or the SQLSTATE of a call.
CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
CREATE FUNCTION pg_temp.pull(key text, uid bigint DEFAULT 1, inst text DEFAULT 'main') RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.try(format('SELECT bridgecore.sync_pull(%s, %L, %L, instance => %L)', uid, pg_temp.dev(key), 'sales_app', inst))
$$;

-------------------------------------------------------------------------------
-- sync_pull
-------------------------------------------------------------------------------
SET LOCAL bridgecore.rate_limit_sync_pull = 3;
SELECT is(ARRAY[pg_temp.pull('a'), pg_temp.pull('a'), pg_temp.pull('a')], ARRAY['ok', 'ok', 'ok'],
          'three pulls within a limit of 3 per minute');
SELECT throws_ok(format($$ SELECT bridgecore.sync_pull(1, %L, 'sales_app', instance => 'main') $$, pg_temp.dev('a')),
                 'PT429', 'rate limit exceeded for sync_pull: 3 requests per minute', 'the fourth pull is refused with PT429');
SELECT is(pg_temp.pull('b'), 'ok', 'another device has its own window');
SELECT is(pg_temp.pull('a', uid => 2), 'ok', 'another user on the same device id has its own window');
SELECT is(pg_temp.pull('a', inst => 'second'), 'ok', 'the same device on another instance has its own window');

-- The refused call did not count: with the limit raised to 5, two more pass.
SET LOCAL bridgecore.rate_limit_sync_pull = 5;
SELECT is(ARRAY[pg_temp.pull('a'), pg_temp.pull('a'), pg_temp.pull('a')], ARRAY['ok', 'ok', 'PT429'],
          'refused calls are not counted (limit raised to 5: two more pass, then PT429)');

DO $$
DECLARE
    msg text; det text; hint text;
BEGIN
    PERFORM bridgecore.sync_pull(1, pg_temp.dev('a'), 'sales_app', instance => 'main');
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    INSERT INTO dev VALUES ('detail', det), ('hint', hint);
END
$$;
SELECT is(pg_temp.dev('detail'), 'The limit applies per user and device.', 'PT429 detail');
SELECT matches(pg_temp.dev('hint'), '^Retry in [0-9]+ seconds\.$', 'PT429 hint says when to retry');
SELECT cmp_ok(substring(pg_temp.dev('hint') FROM '[0-9]+')::int, '<=', 60, '... within the one-minute window');
SELECT cmp_ok(substring(pg_temp.dev('hint') FROM '[0-9]+')::int, '>=', 1, '... and at least one second');

-- Invalid arguments are checked first and do not count.
SET LOCAL bridgecore.rate_limit_sync_pull = 1;
SELECT is(pg_temp.try(format($$ SELECT bridgecore.sync_pull(1, %L, 'sales_app', "limit" => 0, instance => 'main') $$, pg_temp.dev('c'))),
          '22023', 'an invalid call fails on its arguments');
SELECT is(pg_temp.try(format($$ SELECT bridgecore.sync_pull(1, %L, 'no_such_app', instance => 'main') $$, pg_temp.dev('c'))),
          '22023', 'an unknown app type fails on its arguments');
SELECT is(pg_temp.pull('c'), 'ok', 'invalid calls did not use up the limit of 1');
SELECT is(pg_temp.pull('c'), 'PT429', '... the next valid call is over it');

-- A call refused after the limit check (token ahead of the state) counts.
SELECT is(pg_temp.try(format($$ SELECT bridgecore.sync_pull(1, %L, 'sales_app', instance => 'main', sync_token => '999') $$, pg_temp.dev('d'))),
          '22023', 'a token ahead of the state is refused');
SELECT is(pg_temp.pull('d'), 'PT429', '... and that call counted');

-- 0 turns the limit off.
SET LOCAL bridgecore.rate_limit_sync_pull = 0;
SELECT is((SELECT array_agg(DISTINCT pg_temp.pull('a')) FROM generate_series(1, 20)), ARRAY['ok'],
          'limit 0: twenty pulls of a limited device all pass');

-------------------------------------------------------------------------------
-- sync_state
-------------------------------------------------------------------------------
SET LOCAL bridgecore.rate_limit_sync_state = 2;
SELECT is(ARRAY[pg_temp.try(format($$ SELECT bridgecore.sync_state(1, %L, instance => 'main') $$, pg_temp.dev('a'))),
                pg_temp.try(format($$ SELECT bridgecore.sync_state(1, %L, instance => 'main') $$, pg_temp.dev('a')))],
          ARRAY['ok', 'ok'], 'two state reads within a limit of 2');
SELECT throws_ok(format($$ SELECT bridgecore.sync_state(1, %L, instance => 'main') $$, pg_temp.dev('a')),
                 'PT429', 'rate limit exceeded for sync_state: 2 requests per minute', 'the third state read is refused');
SELECT is(pg_temp.pull('a'), 'ok', 'sync_state and sync_pull have separate windows');
SET LOCAL bridgecore.rate_limit_sync_state = 1;
SELECT is(pg_temp.try(format($$ SELECT bridgecore.sync_state(1, %L, instance => 'main') $$, pg_temp.dev('e'))),
          'P0002', 'state read of an unknown device: not found');
SELECT is(pg_temp.try(format($$ SELECT bridgecore.sync_state(1, %L, instance => 'main') $$, pg_temp.dev('e'))),
          'PT429', '... and it counted against the limit');
SET LOCAL bridgecore.rate_limit_sync_state = 0;
SELECT is(pg_temp.try(format($$ SELECT bridgecore.sync_state(1, %L, instance => 'main') $$, pg_temp.dev('a'))),
          'ok', 'limit 0 lifts the sync_state limit');

-------------------------------------------------------------------------------
-- sync_reset (per hour)
-------------------------------------------------------------------------------
SET LOCAL bridgecore.rate_limit_sync_reset = 1;
SELECT is(pg_temp.try(format($$ SELECT bridgecore.sync_reset(1, %L, instance => 'main') $$, pg_temp.dev('a'))),
          'ok', 'one reset within a limit of 1');
SELECT throws_ok(format($$ SELECT bridgecore.sync_reset(1, %L, instance => 'main') $$, pg_temp.dev('a')),
                 'PT429', 'rate limit exceeded for sync_reset: 1 requests per hour', 'the second reset is refused');
DO $$
DECLARE
    hint text;
BEGIN
    PERFORM bridgecore.sync_reset(1, pg_temp.dev('a'), instance => 'main');
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
    INSERT INTO dev VALUES ('reset_hint', hint);
END
$$;
SELECT cmp_ok(substring(pg_temp.dev('reset_hint') FROM '[0-9]+')::int, '>', 60, 'the reset window is an hour long');
SELECT is(pg_temp.try(format($$ SELECT bridgecore.sync_reset(1, %L, instance => 'main') $$, pg_temp.dev('b'))),
          'ok', 'another device can still reset');

-------------------------------------------------------------------------------
-- Settings
-------------------------------------------------------------------------------
SELECT is(current_setting('bridgecore.rate_limit_sync_reset'), '1', 'settings are readable');
SELECT throws_ok($$ SET LOCAL bridgecore.rate_limit_sync_pull = -1 $$, '22023', NULL, 'negative limits are refused');
SELECT throws_ok($$ SET LOCAL bridgecore.rate_limit_entries = 100 $$, '55P02', NULL,
                 'the window table size is fixed at server start');

SELECT * FROM finish();
ROLLBACK;
