-- Rate limits of sync_pull, sync_state and sync_reset (SQLSTATE PT429): per
-- device, per user over all devices, and the cap on new devices per user.
--
-- The counters live in shared memory and survive ROLLBACK, and the instance
-- id is 1 again in every run (the extension and its sequences are created
-- afresh), so every device id here is random per run, and so are the users
-- of the per-user sections.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION bridgecore;

SELECT plan(59);

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
-- Users of the per-user sections: random per run.
CREATE TEMP TABLE usr (k text PRIMARY KEY, id bigint NOT NULL);
INSERT INTO usr SELECT k, 1000000 + floor(random() * 1e12)::bigint + n
  FROM unnest(ARRAY['u1', 'u2', 'u3', 'u4', 'u5', 'c1', 'c2', 'fx', 'ff', 'fy']) WITH ORDINALITY AS t(k, n);
CREATE FUNCTION pg_temp.uid(key text) RETURNS bigint LANGUAGE sql AS $$ SELECT id FROM usr WHERE k = key $$;
-- _rate_limit for the instance 1, a user of usr and a device: "ok" or the SQLSTATE.
CREATE FUNCTION pg_temp.rl(kind text, ukey text, device text) RETURNS text LANGUAGE sql AS $$
    SELECT pg_temp.try(format('SELECT bridgecore._rate_limit(%L, 1, %s, %L)', kind, pg_temp.uid(ukey), device))
$$;
-- n calls of user ukey, each from a device never seen before.
CREATE FUNCTION pg_temp.rotate(kind text, ukey text, n int) RETURNS text[] LANGUAGE sql AS $$
    SELECT array_agg(pg_temp.rl(kind, ukey, 'rot-' || gen_random_uuid()) ORDER BY i) FROM generate_series(1, n) i
$$;
-- MESSAGE_TEXT, PG_EXCEPTION_DETAIL and PG_EXCEPTION_HINT of a call's error.
CREATE FUNCTION pg_temp.error_of(q text) RETURNS text[] LANGUAGE plpgsql AS $$
DECLARE
    msg text; det text; hint text;
BEGIN
    EXECUTE q;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN ARRAY[msg, det, hint];
END
$$;

-- The per-device windows first; the per-user limit and the new-device cap
-- have sections of their own below.
SET LOCAL bridgecore.rate_limit_per_user_factor = 0;
SET LOCAL bridgecore.rate_limit_new_devices = 0;

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
-- Per user, over all of the user's devices
-------------------------------------------------------------------------------
SET LOCAL bridgecore.rate_limit_sync_pull = 2;
SET LOCAL bridgecore.rate_limit_sync_state = 2;
SET LOCAL bridgecore.rate_limit_per_user_factor = 3;
SET LOCAL bridgecore.rate_limit_new_devices = 0;
SELECT is(pg_temp.rotate('sync_pull', 'u1', 6), array_fill('ok'::text, ARRAY[6]),
          'per user: six pulls from six new device ids within 2 per device x 3 per user');
SELECT throws_ok(format($$ SELECT bridgecore._rate_limit('sync_pull', 1, %s, %L) $$, pg_temp.uid('u1'), 'rot-' || gen_random_uuid()),
                 'PT429', 'rate limit exceeded for sync_pull: 6 requests per minute per user',
                 'per user: a seventh device id is refused, rotating device ids does not evade the limit');
SELECT is((pg_temp.error_of(format($$ SELECT bridgecore._rate_limit('sync_pull', 1, %s, 'rot-x') $$, pg_temp.uid('u1'))))[2],
          'The limit applies per user, over all of the user''s devices.', 'per user: PT429 detail');
SELECT matches((pg_temp.error_of(format($$ SELECT bridgecore._rate_limit('sync_pull', 1, %s, 'rot-x') $$, pg_temp.uid('u1'))))[3],
               '^Retry in ([1-9]|[1-5][0-9]|60) seconds\.$', 'per user: the hint gives the rest of the minute');
SELECT is(pg_temp.rl('sync_pull', 'u2', 'rot-' || gen_random_uuid()), 'ok', 'per user: another user has a window of its own');
SELECT is(pg_temp.rl('sync_state', 'u1', 'rot-' || gen_random_uuid()), 'ok', 'per user: sync_state has a window of its own');
-- Through sync_pull itself.
SELECT is((SELECT array_agg(pg_temp.try(format($$ SELECT bridgecore.sync_pull(%s, %L, 'sales_app', instance => 'main') $$,
                                                 pg_temp.uid('u3'), 'rot-' || gen_random_uuid())) ORDER BY i)
             FROM generate_series(1, 7) i),
          ARRAY['ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'PT429'],
          'per user: sync_pull from rotating device ids is refused after 6 pulls');
-- A call refused for its device is not counted for its user either.
SELECT is(ARRAY[pg_temp.rl('sync_pull', 'u4', 'same'), pg_temp.rl('sync_pull', 'u4', 'same'),
                pg_temp.rl('sync_pull', 'u4', 'same'), pg_temp.rl('sync_pull', 'u4', 'same')],
          ARRAY['ok', 'ok', 'PT429', 'PT429'], 'per user: one device is refused by its own limit first');
SELECT is(pg_temp.rotate('sync_pull', 'u4', 5), ARRAY['ok', 'ok', 'ok', 'ok', 'PT429'],
          '... its refused calls did not use up the user''s 6');
SET LOCAL bridgecore.rate_limit_per_user_factor = 0;
SELECT is(pg_temp.rotate('sync_pull', 'u5', 20), array_fill('ok'::text, ARRAY[20]),
          'per user: factor 0 turns the per-user limit off');
SET LOCAL bridgecore.rate_limit_per_user_factor = 3;
SET LOCAL bridgecore.rate_limit_sync_pull = 0;
SELECT is(pg_temp.rotate('sync_pull', 'u1', 3), array_fill('ok'::text, ARRAY[3]),
          'per user: a function''s limit of 0 turns its per-user limit off too');

-------------------------------------------------------------------------------
-- New devices per user and hour
-------------------------------------------------------------------------------
SET LOCAL bridgecore.rate_limit_sync_pull = 100;
SET LOCAL bridgecore.rate_limit_sync_state = 100;
SET LOCAL bridgecore.rate_limit_per_user_factor = 0;
SET LOCAL bridgecore.rate_limit_new_devices = 3;
SELECT is(ARRAY[pg_temp.rl('sync_pull', 'c1', 'nd-1'), pg_temp.rl('sync_pull', 'c1', 'nd-2'), pg_temp.rl('sync_pull', 'c1', 'nd-3')],
          ARRAY['ok', 'ok', 'ok'], 'new devices: three device ids within a cap of 3');
SELECT throws_ok(format($$ SELECT bridgecore._rate_limit('sync_pull', 1, %s, 'nd-4') $$, pg_temp.uid('c1')),
                 'PT429', 'rate limit exceeded for sync_pull: 3 new devices per hour',
                 'new devices: a fourth device id in the hour is refused');
SELECT is((pg_temp.error_of(format($$ SELECT bridgecore._rate_limit('sync_pull', 1, %s, 'nd-5') $$, pg_temp.uid('c1'))))[2],
          'The limit applies per user; a device id the user has used recently is not new.', 'new devices: PT429 detail');
INSERT INTO dev VALUES ('nd_hint', coalesce((pg_temp.error_of(format($$ SELECT bridgecore._rate_limit('sync_pull', 1, %s, 'nd-5') $$, pg_temp.uid('c1'))))[3], 'no error'));
SELECT matches(pg_temp.dev('nd_hint'), '^Retry in [0-9]+ seconds\.$', 'new devices: PT429 hint says when to retry');
SELECT cmp_ok(substring(pg_temp.dev('nd_hint') FROM '[0-9]+')::int, '>', 60, '... the new-device window is an hour long');
SELECT is((SELECT array_agg(DISTINCT pg_temp.rl('sync_pull', 'c1', 'nd-' || (1 + i % 3))) FROM generate_series(1, 30) i),
          ARRAY['ok'], 'new devices: the user''s known devices still pass, again and again');
SELECT is(pg_temp.rl('sync_pull', 'c1', 'nd-4'), 'PT429', 'new devices: a refused device got no window, it is still new');
SELECT is(pg_temp.rl('sync_pull', 'c2', 'nd-4'), 'ok', 'new devices: another user has a cap of its own');
SELECT is(pg_temp.rl('sync_state', 'c1', 'nd-4'), 'ok', 'new devices: each function has a cap of its own');
SET LOCAL bridgecore.rate_limit_new_devices = 0;
SELECT is(pg_temp.rotate('sync_pull', 'c1', 10), array_fill('ok'::text, ARRAY[10]), 'new devices: 0 lifts the cap');

-------------------------------------------------------------------------------
-- A full table
-------------------------------------------------------------------------------
-- One user (with the per-user limit and the cap lifted) floods the table with
-- more device windows than it has slots.  The windows in it are all live.
SET LOCAL bridgecore.rate_limit_sync_pull = 3;
SET LOCAL bridgecore.rate_limit_per_user_factor = 1;
SELECT is(ARRAY[pg_temp.rl('sync_pull', 'fx', 'full-x'), pg_temp.rl('sync_pull', 'fx', 'full-x'), pg_temp.rl('sync_pull', 'fx', 'full-x')],
          ARRAY['ok', 'ok', 'ok'], 'full table: a user uses up its limit of 3 (per device and per user)');
SET LOCAL bridgecore.rate_limit_per_user_factor = 0;
SELECT is((SELECT count(*) FROM generate_series(1, current_setting('bridgecore.rate_limit_entries')::int + 2000) i
            WHERE pg_temp.rl('sync_pull', 'ff', 'flood-' || i) = 'ok'),
          current_setting('bridgecore.rate_limit_entries')::bigint + 2000,
          'full table: another user opens more device windows than the table has slots');
SET LOCAL bridgecore.rate_limit_per_user_factor = 1;
SELECT is(pg_temp.rl('sync_pull', 'fx', 'full-x'), 'PT429', 'full table: the first user is still over its limit (its user window stays)');
SELECT is(pg_temp.rl('sync_pull', 'fx', 'full-y'), 'PT429', '... from any of its devices');
SET LOCAL bridgecore.rate_limit_per_user_factor = 0;
SELECT is(ARRAY[pg_temp.rl('sync_pull', 'fy', 'full-z'), pg_temp.rl('sync_pull', 'fy', 'full-z'),
                pg_temp.rl('sync_pull', 'fy', 'full-z'), pg_temp.rl('sync_pull', 'fy', 'full-z')],
          ARRAY['ok', 'ok', 'ok', 'PT429'], 'full table: a new device still gets a window, and is limited by it');

-------------------------------------------------------------------------------
-- Settings
-------------------------------------------------------------------------------
SELECT is(current_setting('bridgecore.rate_limit_sync_reset'), '1', 'settings are readable');
SELECT is((SELECT array_agg(boot_val ORDER BY name) FROM pg_settings
            WHERE name IN ('bridgecore.rate_limit_per_user_factor', 'bridgecore.rate_limit_new_devices')),
          ARRAY['20', '10'], 'defaults: 20 new devices per user and hour, per-user limit 10 times the per-device one');
SELECT throws_ok($$ SET LOCAL bridgecore.rate_limit_sync_pull = -1 $$, '22023', NULL, 'negative limits are refused');
SELECT throws_ok($$ SET LOCAL bridgecore.rate_limit_per_user_factor = -1 $$, '22023', NULL, 'a negative per-user factor is refused');
SELECT throws_ok($$ SET LOCAL bridgecore.rate_limit_new_devices = -1 $$, '22023', NULL, 'a negative new-device cap is refused');
SELECT throws_ok($$ SET LOCAL bridgecore.rate_limit_entries = 100 $$, '55P02', NULL,
                 'the window table size is fixed at server start');

SELECT * FROM finish();
ROLLBACK;
