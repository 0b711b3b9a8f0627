-- The doorbell: push keys (alter_instance(push_key => ...)), wake() and
-- ring(), their privileges and the limit on refused keys.
--
-- No poller runs in this database (the workers run in bridgecore.database),
-- so a ring here finds none ('no_poller'); test/integration/test_doorbell.py
-- rings running pollers. The refused-key counters live in shared memory and
-- survive ROLLBACK: every client name here is random per run.
\ir setup.psql

SELECT plan(45);

CREATE FUNCTION pg_temp.try(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE;
END
$$;
CREATE TEMP TABLE client (k text PRIMARY KEY, id text NOT NULL);
INSERT INTO client SELECT k, 'bell-' || k || '-' || gen_random_uuid() FROM unnest(ARRAY['a', 'b', 'c', 'd']) k;
CREATE FUNCTION pg_temp.client(key text) RETURNS text LANGUAGE sql AS $$ SELECT id FROM client WHERE k = key $$;
GRANT SELECT ON client TO PUBLIC;

DO $$ BEGIN
    PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.add_instance('second', 'https://other.example.com', 'db2', 'bot', 'x-secret-key');
END $$;

-------------------------------------------------------------------------------
-- push_key: validated, stored as its SHA-256 only, shown nowhere
-------------------------------------------------------------------------------
SELECT is((SELECT has_push_key FROM bridgecore.instances WHERE name = 'main'), false, 'no push key at first');
SELECT is((SELECT config_version FROM bridgecore.instance WHERE name = 'main'), 1, 'config_version 1 at first');
SELECT is((SELECT has_push_key FROM bridgecore.alter_instance('main', push_key => 'main-push-key-0123456789abcdef0123456789')),
          true, 'alter_instance(push_key => ...) sets it and returns has_push_key');
SELECT is((SELECT push_key_hash FROM bridgecore.instance WHERE name = 'main'),
          sha256('main-push-key-0123456789abcdef0123456789'::bytea), 'only the SHA-256 of the key is stored');
SELECT is((SELECT config_version FROM bridgecore.instance WHERE name = 'main'), 1,
          'a new push key alone does not restart the poller (config_version kept)');
SELECT is((SELECT count(*)::int FROM information_schema.columns
            WHERE table_schema = 'bridgecore' AND table_name = 'instances' AND column_name LIKE 'push_key%'), 0,
          'the instances view has no key or hash column');
SELECT ok(bridgecore.status()::text !~ 'push_key_hash|main-push-key', 'status() shows neither the key nor its hash');

SELECT throws_ok($$ SELECT bridgecore.alter_instance('main', push_key => 'short') $$, '22023',
                 'push_key must be 32 to 256 printable ASCII characters without spaces, got 5 characters',
                 'a short key is refused (22023)');
SELECT throws_ok($$ SELECT bridgecore.alter_instance('main', push_key => repeat('k', 20) || ' ' || repeat('k', 20)) $$,
                 '22023', NULL, 'a key with a space is refused');
SELECT throws_ok($$ SELECT bridgecore.alter_instance('main', push_key => repeat('é', 40)) $$,
                 '22023', NULL, 'a key that is not ASCII is refused');
SELECT throws_ok($$ SELECT bridgecore.alter_instance('main', push_key => repeat('k', 257)) $$,
                 '22023', NULL, 'a key over 256 characters is refused');
DO $$
DECLARE h text;
BEGIN
    PERFORM bridgecore.alter_instance('main', push_key => 'short');
EXCEPTION WHEN invalid_parameter_value THEN
    GET STACKED DIAGNOSTICS h = PG_EXCEPTION_HINT;
    PERFORM set_config('bell.hint', h, true);
END $$;
SELECT matches(current_setting('bell.hint'), 'openssl rand -hex 32', 'the hint says how to make a key');
SELECT is((SELECT push_key_hash FROM bridgecore.instance WHERE name = 'main'),
          sha256('main-push-key-0123456789abcdef0123456789'::bytea), 'a refused key changes nothing');
SELECT throws_ok($$ SELECT bridgecore.alter_instance('second', push_key => 'main-push-key-0123456789abcdef0123456789') $$,
                 '23505', 'this push_key is already used by another instance', 'two instances cannot share a key');
SELECT is((SELECT has_push_key FROM bridgecore.alter_instance('main', push_key => 'main-push-key-0123456789abcdef0123456789')),
          true, 'setting the same key again on its instance is fine');
SELECT is((SELECT has_push_key FROM bridgecore.alter_instance('main', batch_size => 100)), true,
          'push_key omitted (NULL) keeps the key');
SELECT is((SELECT has_push_key FROM bridgecore.alter_instance('second', push_key => 'second-push-key-0123456789abcdef012345')),
          true, 'the second instance gets its own key');

-------------------------------------------------------------------------------
-- ring(push_key): the key names the instance
-------------------------------------------------------------------------------
SELECT is(bridgecore.ring('main-push-key-0123456789abcdef0123456789', pg_temp.client('a')),
          '{"instance": "main", "outcome": "no_poller"}'::jsonb, 'ring with main''s key rings main (no poller runs here)');
SELECT is(bridgecore.ring('second-push-key-0123456789abcdef012345', pg_temp.client('a')) ->> 'instance', 'second',
          'ring with second''s key rings second');
SELECT throws_ok(format($$ SELECT bridgecore.ring('wrong-push-key-0123456789abcdef0123456789', %L) $$, pg_temp.client('a')),
                 '28000', 'invalid push key', 'a wrong key is 28000 (HTTP 401)');
SELECT throws_ok($$ SELECT bridgecore.ring(NULL) $$, '28000', 'a push key is required', 'no key is 28000');
SELECT throws_ok(format($$ SELECT bridgecore.ring(repeat('x', 100000), %L) $$, pg_temp.client('a')),
                 '28000', 'invalid push key', 'a huge key is refused without hashing it');
SELECT set_config('request.headers', '{"x-api-key": "second-push-key-0123456789abcdef012345"}', true) IS NOT NULL AS headers;
SELECT is(bridgecore.ring(client => pg_temp.client('a')) ->> 'instance', 'second',
          'through PostgREST the key comes from the X-API-Key header');
SELECT set_config('request.headers', '', true) IS NOT NULL AS headers;
SELECT set_config('request.method', 'POST', true) IS NOT NULL AS via_postgrest;
SELECT throws_ok(format($$ SELECT bridgecore.ring('wrong-push-key-0123456789abcdef0123456789', %L) $$, pg_temp.client('a')),
                 'PT401', 'invalid push key', 'through PostgREST a wrong key is PT401');
SELECT set_config('request.method', '', true) IS NOT NULL AS not_postgrest;

-- Refused keys per client: after rate_limit_push_key of them in a minute,
-- no key of that client is checked, not even the right one.
SET LOCAL bridgecore.rate_limit_push_key = 3;
SET LOCAL bridgecore.rate_limit_per_user_factor = 1000;     -- earlier runs' failures stay out of the way
SELECT is(ARRAY(SELECT pg_temp.try(format($$ SELECT bridgecore.ring('wrong-%s-0123456789abcdef0123456789', %L) $$, g, pg_temp.client('b')))
                  FROM generate_series(1, 4) g),
          ARRAY['28000', '28000', '28000', 'PT429'], 'the 4th refused key of a client in a minute is PT429');
SELECT is(pg_temp.try(format($$ SELECT bridgecore.ring('main-push-key-0123456789abcdef0123456789', %L) $$, pg_temp.client('b'))),
          'PT429', 'then even the right key of that client is refused (nothing to learn by guessing on)');
SELECT is(bridgecore.ring('main-push-key-0123456789abcdef0123456789', pg_temp.client('c')) ->> 'instance', 'main',
          'another client still rings');
DO $$
DECLARE m text; h text; d text;
BEGIN
    PERFORM bridgecore.ring('main-push-key-0123456789abcdef0123456789', (SELECT id FROM client WHERE k = 'b'));
EXCEPTION WHEN SQLSTATE 'PT429' THEN
    GET STACKED DIAGNOSTICS m = MESSAGE_TEXT, h = PG_EXCEPTION_HINT, d = PG_EXCEPTION_DETAIL;
    PERFORM set_config('bell.msg', m || ' | ' || d || ' | ' || h, true);
END $$;
SELECT matches(current_setting('bell.msg'),
               '^rate limit exceeded for push_key: 3 refused keys per minute \| The limit applies per client to refused push keys\. \| Retry in [0-9]+ seconds\.$',
               'the limit''s message, detail and hint');
-- All clients together: rate_limit_per_user_factor times as many.
SET LOCAL bridgecore.rate_limit_per_user_factor = 1;
SET LOCAL bridgecore.rate_limit_push_key = 1;
SELECT is(pg_temp.try(format($$ SELECT bridgecore.ring('main-push-key-0123456789abcdef0123456789', %L) $$, pg_temp.client('d'))),
          'PT429', 'once all clients together used up their refused keys, a new client is refused too');
SET LOCAL bridgecore.rate_limit_push_key = 0;
SELECT is(bridgecore.ring('main-push-key-0123456789abcdef0123456789', pg_temp.client('b')) ->> 'instance', 'main',
          'rate_limit_push_key = 0 turns the limit off');
RESET bridgecore.rate_limit_per_user_factor;
RESET bridgecore.rate_limit_push_key;

-------------------------------------------------------------------------------
-- wake(instance)
-------------------------------------------------------------------------------
SELECT is(bridgecore.wake('main'), '{"instance": "main", "outcome": "no_poller"}'::jsonb, 'wake(name) rings that instance');
SELECT throws_ok($$ SELECT bridgecore.wake(NULL) $$, '22004', NULL, 'wake() with several instances needs a name');
SELECT throws_ok($$ SELECT bridgecore.wake('nope') $$, '22023', NULL, 'an unknown instance is 22023');
SELECT is((SELECT name FROM bridgecore.alter_instance('second', push_key => '')), 'second', 'push_key => '''' ...');
SELECT is((SELECT has_push_key FROM bridgecore.instances WHERE name = 'second'), false, '... removes the key');
SELECT throws_ok(format($$ SELECT bridgecore.ring('second-push-key-0123456789abcdef012345', %L) $$, pg_temp.client('c')),
                 '28000', 'invalid push key', 'a removed key rings nothing');
SELECT is(bridgecore.ring('main-push-key-0123456789abcdef0123456789', pg_temp.client('c')) ->> 'instance', 'main',
          'the other instance''s key still works');

-------------------------------------------------------------------------------
-- Privileges: apps ring nothing; a caller without a token rings with a key
-- only; admins wake, confined to their token's instance.
-------------------------------------------------------------------------------
CREATE ROLE regress_bell_app IN ROLE bridgecore_app;
CREATE ROLE regress_bell_admin IN ROLE bridgecore_admin;
SET LOCAL ROLE regress_bell_app;
SELECT is(pg_temp.try($$ SELECT bridgecore.wake('main') $$), '42501', 'an app cannot wake an instance');
SELECT is(pg_temp.try($$ SELECT bridgecore.ring('main-push-key-0123456789abcdef0123456789') $$), '42501',
          'an app cannot ring with a key (no probing keys through it)');
SELECT is(pg_temp.try($$ SELECT bridgecore._ring(1) $$), '42501', 'nor call the ring itself');
RESET ROLE;
SET LOCAL ROLE bridgecore_anon;
SELECT is(pg_temp.try($$ SELECT bridgecore.wake('main') $$), '42501', 'bridgecore_anon cannot wake by name');
SELECT is(pg_temp.try(format($$ SELECT bridgecore.ring('main-push-key-0123456789abcdef0123456789', %L) $$, pg_temp.client('c'))),
          'ok', 'bridgecore_anon rings with a key');
RESET ROLE;
SET LOCAL ROLE regress_bell_admin;
SELECT set_config('request.jwt.claims', '{"role": "bridgecore_admin", "instance": "second"}', true) IS NOT NULL AS claims;
SELECT is(bridgecore.wake() ->> 'instance', 'second', 'an admin token''s instance is the one woken');
SELECT is(pg_temp.try($$ SELECT bridgecore.wake('main') $$), '42501', 'an admin confined to second cannot wake main');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
