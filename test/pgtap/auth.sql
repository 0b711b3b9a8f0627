-- App logins and tokens: bridgecore.jwt_secret, signing and verifying
-- HS256 tokens, refresh_token, issue_token, the privileges of login, and the
-- instance a pull uses when it names none. Odoo's side of login() is in
-- test/integration/test_login.py.
\ir setup.psql

SELECT plan(67);

-- A stand-in that never answers: logins that get as far as Odoo fail there.
DO $$ BEGIN
    PERFORM bridgecore.add_instance('main', 'http://127.0.0.1:9', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.ingest('main', '[{"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
                                        {"id": 2, "model": "sale.order", "record_id": 2, "event": "create", "timestamp": "2025-11-16 10:31:00"}]');
END $$;

-- The reference signature below was computed independently (Python's hmac)
-- with the secret 'a-test-secret-of-at-least-32-chars!' over
-- base64url('{"alg":"HS256","typ":"JWT"}') || '.' || base64url('{"exp": 4102444800, "role": "bridgecore_app"}').
CREATE FUNCTION pg_temp.b64url(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT translate(rtrim(replace(encode(convert_to(t, 'UTF8'), 'base64'), E'\n', ''), '='), '+/', '-_')
$$;
CREATE FUNCTION pg_temp.part(token text, n int) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_from(decode(rpad(translate(split_part(token, '.', n), '-_', '+/'),
                                    (length(split_part(token, '.', n)) + 3) / 4 * 4, '='), 'base64'), 'UTF8')::jsonb
$$;

-------------------------------------------------------------------------------
-- The setting
-------------------------------------------------------------------------------
SELECT throws_ok($$ SELECT bridgecore.verify_token('a.b.c') $$, '55000', 'bridgecore.jwt_secret is not set',
                 'without bridgecore.jwt_secret nothing is verified');
SELECT throws_ok($$ SELECT bridgecore.issue_token('bridgecore_app', 1) $$, '55000', 'bridgecore.jwt_secret is not set',
                 '... and nothing is signed');
SELECT throws_ok($$ SELECT bridgecore.login('alice', 'pw') $$, '55000', 'bridgecore.jwt_secret is not set',
                 'login fails before asking Odoo when no secret is set');
SELECT throws_ok($$ SET LOCAL bridgecore.jwt_secret = 'too-short' $$, '22023', NULL,
                 'a secret shorter than 32 characters is refused');
SELECT is((SELECT context FROM pg_settings WHERE name = 'bridgecore.jwt_secret'), 'superuser',
          'bridgecore.jwt_secret is a superuser setting');
SET LOCAL bridgecore.jwt_secret = 'a-test-secret-of-at-least-32-chars!';
SELECT is(current_setting('bridgecore.jwt_secret'), '********', 'the secret is never shown, not even to superusers');
SET LOCAL ROLE bridgecore_admin;
SELECT throws_ok($$ SELECT current_setting('bridgecore.jwt_secret') $$, '42501', NULL,
                 'other roles cannot read the secret');
SELECT is((SELECT count(*)::int FROM pg_settings WHERE name = 'bridgecore.jwt_secret'), 0,
          '... nor see it in pg_settings');
RESET ROLE;

-------------------------------------------------------------------------------
-- Signing and verifying
-------------------------------------------------------------------------------
SELECT is(bridgecore._jwt_sign('{"role": "bridgecore_app", "exp": 4102444800}'),
          'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOiA0MTAyNDQ0ODAwLCAicm9sZSI6ICJicmlkZ2Vjb3JlX2FwcCJ9.'
          || (SELECT split_part(bridgecore._jwt_sign('{"role": "bridgecore_app", "exp": 4102444800}'), '.', 3)),
          'the header is {"alg":"HS256","typ":"JWT"} and the claims are the JSON given');
SELECT is(split_part(bridgecore._jwt_sign('{"role": "bridgecore_app", "exp": 4102444800}'), '.', 3),
          'qNrHjc9L59wXqpRF6sFrpNVnu465QO4eFcnPIlzOA-U',
          'the signature is HMAC-SHA256 of header.claims under the secret (reference value)');
SELECT is(bridgecore.verify_token(bridgecore._jwt_sign('{"role": "bridgecore_app", "user_id": 7, "exp": 4102444800}')),
          '{"role": "bridgecore_app", "user_id": 7, "exp": 4102444800}'::jsonb, 'a token verifies to its claims');
SELECT throws_ok($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"role": "bridgecore_app", "exp": 4102444800}') || 'A') $$,
                 '28000', 'invalid token', 'a changed signature is refused');
SELECT throws_ok(format($$ SELECT bridgecore.verify_token(%L) $$,
                        split_part(bridgecore._jwt_sign('{"role": "bridgecore_app", "exp": 4102444800}'), '.', 1) || '.'
                        || pg_temp.b64url('{"exp": 4102444800, "role": "bridgecore_admin"}') || '.'
                        || split_part(bridgecore._jwt_sign('{"role": "bridgecore_app", "exp": 4102444800}'), '.', 3)),
                 '28000', 'invalid token', 'changed claims are refused');
SELECT throws_ok(format($$ SELECT bridgecore.verify_token(%L) $$,
                        pg_temp.b64url('{"alg":"none"}') || '.' || pg_temp.b64url('{"exp": 4102444800, "role": "bridgecore_admin"}') || '.'),
                 '28000', 'invalid token', 'an unsigned token (alg none) is refused');
SET LOCAL bridgecore.jwt_secret = 'another-secret-of-at-least-32-chars!!';
SELECT throws_ok($$ SELECT bridgecore.verify_token('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOiA0MTAyNDQ0ODAwLCAicm9sZSI6ICJicmlkZ2Vjb3JlX2FwcCJ9.qNrHjc9L59wXqpRF6sFrpNVnu465QO4eFcnPIlzOA-U') $$,
                 '28000', 'invalid token', 'a token of another secret is refused');
SET LOCAL bridgecore.jwt_secret = 'a-test-secret-of-at-least-32-chars!';
SELECT lives_ok($$ SELECT bridgecore.verify_token('eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOiA0MTAyNDQ0ODAwLCAicm9sZSI6ICJicmlkZ2Vjb3JlX2FwcCJ9.qNrHjc9L59wXqpRF6sFrpNVnu465QO4eFcnPIlzOA-U') $$,
                'the reference token verifies with its secret');
SELECT throws_ok($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"role": "bridgecore_app", "exp": 1}')) $$,
                 '28000', 'invalid token', 'an expired token is refused');
SELECT throws_ok($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"role": "bridgecore_app"}')) $$,
                 '28000', 'invalid token', 'a token without exp is refused');
SELECT throws_ok($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"exp": 4102444800, "nbf": 4102444000}')) $$,
                 '28000', 'invalid token', 'a token before its nbf is refused');
SELECT throws_ok($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"exp": "4102444800"}')) $$,
                 '28000', 'invalid token', 'an exp that is not a number is refused');
SELECT throws_ok($$ SELECT bridgecore.verify_token('not a token') $$, '28000', 'invalid token', 'a string without dots is refused');
SELECT throws_ok($$ SELECT bridgecore.verify_token('a.b.c.d') $$, '28000', 'invalid token', 'four parts are refused');
SELECT throws_ok($$ SELECT bridgecore.verify_token(NULL) $$, '28000', 'invalid token', 'no token is refused');
SELECT throws_ok($$ SELECT bridgecore.verify_token(repeat('a', 9000) || '.b.c') $$, '28000', 'invalid token',
                 'an overlong token is refused unread');
SELECT throws_ok($$ SELECT bridgecore.verify_token('e30.e30.' || split_part(bridgecore._jwt_sign('{}'), '.', 3)) $$, '28000',
                 'invalid token', 'a signature over other parts is refused');
SELECT is(set_config('request.method', 'POST', true), 'POST', 'simulate a PostgREST request');
SELECT throws_ok($$ SELECT bridgecore.verify_token('x.y.z') $$, 'PT401', 'invalid token',
                 'through PostgREST an invalid token is PT401 (HTTP 401)');
SELECT is(set_config('request.method', '', true), '', 'back to a SQL caller');

-------------------------------------------------------------------------------
-- issue_token
-------------------------------------------------------------------------------
SELECT is(pg_temp.part(bridgecore.issue_token('bridgecore_admin') ->> 'access_token', 2) - 'iat' - 'exp' - 'auth_time',
          '{"role": "bridgecore_admin"}', 'an admin token without user or instance');
SELECT is((SELECT (t - 'access_token') FROM (SELECT bridgecore.issue_token('bridgecore_app', 7, 'main', '1 hour') t) x),
          '{"expires_in": 3600, "token_type": "bearer", "user_id": 7, "instance": "main"}', 'the answer of issue_token');
SELECT is((SELECT c - 'iat' - 'exp' - 'auth_time' FROM (SELECT pg_temp.part(bridgecore.issue_token('bridgecore_app', 7, 'main') ->> 'access_token', 2) c) x),
          '{"role": "bridgecore_app", "user_id": 7, "instance": "main"}', 'its claims');
SELECT is((SELECT ((c ->> 'exp')::bigint - (c ->> 'iat')::bigint, (c ->> 'auth_time') = (c ->> 'iat'))::text
             FROM (SELECT pg_temp.part(bridgecore.issue_token('bridgecore_app', 7) ->> 'access_token', 2) c) x),
          '(1800,t)', 'tokens live bridgecore.jwt_lifetime (30 minutes) and record the time they were issued');
SELECT throws_ok($$ SELECT bridgecore.issue_token('postgres') $$, '22023',
                 'role must be bridgecore_app or bridgecore_admin, got "postgres"', 'only the BridgeCore roles');
SELECT throws_ok($$ SELECT bridgecore.issue_token(NULL) $$, '22004', 'role must not be null', 'a role is required');
SELECT throws_ok($$ SELECT bridgecore.issue_token('bridgecore_app', 0) $$, '22023', 'user_id must be positive, got 0', 'user ids are positive');
SELECT throws_ok($$ SELECT bridgecore.issue_token('bridgecore_app', 1, lifetime => '0') $$, '22023', NULL, 'lifetimes are positive');
SELECT throws_ok($$ SELECT bridgecore.issue_token('bridgecore_app', 1, 'nope') $$, '22023', 'unknown instance "nope"', 'instances exist');
SELECT is(set_config('request.jwt.claims', '{"role": "bridgecore_admin", "instance": "main"}', true) IS NOT NULL, true,
          'an admin confined to main');
SELECT is(pg_temp.part(bridgecore.issue_token('bridgecore_app', 3) ->> 'access_token', 2) ->> 'instance', 'main',
          '... issues tokens for main only, even without naming it');
SELECT is(set_config('request.jwt.claims', '', true), '', 'no claims');

-------------------------------------------------------------------------------
-- refresh_token
-------------------------------------------------------------------------------
CREATE TEMP TABLE tok AS SELECT bridgecore.issue_token('bridgecore_app', 7, 'main') ->> 'access_token' AS t;
SELECT is((SELECT pg_temp.part(bridgecore.refresh_token(t) ->> 'access_token', 2) - 'iat' - 'exp' FROM tok),
          (SELECT pg_temp.part(t, 2) - 'iat' - 'exp' FROM tok), 'a refreshed token keeps the claims, auth_time included');
SELECT is((SELECT bridgecore.refresh_token(t) - 'access_token' FROM tok),
          '{"expires_in": 1800, "token_type": "bearer", "user_id": 7, "instance": "main"}', 'the answer of refresh_token');
SELECT is((SELECT set_config('request.headers', json_build_object('authorization', 'Bearer ' || t)::text, true) IS NOT NULL FROM tok),
          true, 'a PostgREST request with the token as Bearer');
SELECT is((SELECT pg_temp.part(bridgecore.refresh_token() ->> 'access_token', 2) ->> 'user_id'), '7',
          'refresh_token() without an argument refreshes the request''s bearer token');
SELECT is(set_config('request.headers', '{}', true), '{}', 'a request without Authorization');
SELECT throws_ok($$ SELECT bridgecore.refresh_token() $$, '28000', 'invalid token', '... has nothing to refresh');
SELECT is(set_config('request.jwt.claims', '{"role": "bridgecore_admin", "user_id": 7}', true) IS NOT NULL, true,
          'claims set by hand');
SELECT throws_ok($$ SELECT bridgecore.refresh_token() $$, '28000', 'invalid token',
                 '... are not a token: refresh_token needs a signed one');
SELECT is(set_config('request.jwt.claims', '', true), '', 'no claims');
SELECT throws_ok(format($$ SELECT bridgecore.refresh_token(%L) $$,
                        bridgecore._jwt_sign(jsonb_build_object('role', 'bridgecore_app', 'exp', 4102444800))),
                 '28000', 'token can no longer be refreshed', 'a token without auth_time cannot be refreshed');
SELECT throws_ok(format($$ SELECT bridgecore.refresh_token(%L) $$,
                        bridgecore._jwt_sign(jsonb_build_object('role', 'bridgecore_app', 'exp', 4102444800,
                                                                'auth_time', extract(epoch FROM now() - interval '8 days')::bigint))),
                 '28000', 'token can no longer be refreshed', 'nor one whose login is older than bridgecore.jwt_refresh_limit (7 days)');
SELECT throws_ok(format($$ SELECT bridgecore.refresh_token(%L) $$,
                        bridgecore._jwt_sign(jsonb_build_object('role', 'bridgecore_app', 'exp', 1, 'auth_time', 1))),
                 '28000', 'invalid token', 'an expired token cannot be refreshed');

-------------------------------------------------------------------------------
-- login: arguments, and privileges
-------------------------------------------------------------------------------
SELECT throws_ok($$ SELECT bridgecore.login(NULL, 'pw') $$, '22004', 'username must not be null', 'a username is required');
SELECT throws_ok($$ SELECT bridgecore.login('', 'pw') $$, '22023', 'username must be 1 to 255 characters, got 0', '... not empty');
SELECT throws_ok($$ SELECT bridgecore.login('alice', NULL) $$, '22004', 'password must not be null', 'a password is required');
SELECT throws_ok($$ SELECT bridgecore.login('alice', 'pw', 'nope') $$, '22023', 'unknown instance "nope"', 'the instance must exist');
SELECT throws_ok($$ SELECT bridgecore.login('alice', 'pw') $$, '08006', 'could not reach Odoo instance "main"',
                 'an Odoo that does not answer: 08006');
SET LOCAL ROLE bridgecore_anon;
SELECT throws_ok($$ SELECT bridgecore.login('alice', 'pw') $$, '08006', NULL, 'the anonymous role may log in');
SELECT throws_ok($$ SELECT bridgecore.sync_state(1, 'd') $$, '42501', NULL, '... and do nothing else');
SELECT throws_ok($$ SELECT bridgecore.refresh_token('x.y.z') $$, '42501', NULL, '... not even refresh');
RESET ROLE;
SET LOCAL ROLE bridgecore_app;
SELECT throws_ok($$ SELECT bridgecore.issue_token('bridgecore_admin') $$, '42501', NULL, 'apps cannot issue tokens');
SELECT throws_ok($$ SELECT bridgecore._jwt_sign('{}') $$, '42501', NULL, '... nor sign claims');
RESET ROLE;

-------------------------------------------------------------------------------
-- The instance of a pull that names none
-------------------------------------------------------------------------------
DO $$ BEGIN
    PERFORM bridgecore.add_instance('second', 'http://127.0.0.1:9', 'prod2', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.ingest('second', '[{"id": 1, "model": "sale.order", "record_id": 9, "event": "create", "timestamp": "2025-11-16 10:30:00"}]');
END $$;
SELECT throws_ok($$ SELECT bridgecore.sync_pull(1, 'tab', 'sales_app') $$, '22004',
                 'instance must be given when several instances exist', 'without instance, token or claim: I2');
SELECT is((bridgecore.sync_pull(1, 'tab', 'sales_app', sync_token => bridgecore._token(i.id, 0)) ->> 'next_sync_token'),
          bridgecore._token(i.id, (SELECT max(e.id) FROM bridgecore.event e WHERE e.instance_id = i.id)),
          'a bc1: token names the instance of an omitted instance')
  FROM bridgecore.instance i WHERE i.name = 'second';
SELECT is(set_config('request.jwt.claims', '{"user_id": 1, "instance": "main"}', true) IS NOT NULL, true, 'a token for main');
SELECT is((bridgecore.sync_pull(1, 'tab2', 'sales_app') -> 'events' -> 0 ->> 'record_id'), '1',
          'the claimed instance is used when the call names none');
SELECT throws_ok(format($$ SELECT bridgecore.sync_pull(1, 'tab2', 'sales_app', sync_token => %L) $$,
                        (SELECT bridgecore._token(i.id, 0) FROM bridgecore.instance i WHERE i.name = 'second')),
                 '22023', 'sync_token belongs to another instance', '... and a sync token of another instance does not override it');

SELECT * FROM finish();
ROLLBACK;
