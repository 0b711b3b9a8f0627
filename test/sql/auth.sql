-- Errors of the login and token functions: SQLSTATE, message and hint.
-- (Their behaviour is in test/pgtap/auth.sql, Odoo's answers in
-- test/integration/test_login.py.)
-- try() with the detail, which says why a token is refused.
CREATE FUNCTION pg_temp.try_detail(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text; msg text; detail text;
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
    RETURN state || ': ' || msg || CASE WHEN detail <> '' THEN ' (detail: ' || detail || ')' ELSE '' END;
END
$$;

SELECT name FROM bridgecore.add_instance('closed', 'http://127.0.0.1:9', 'prod', 'bot', 's3cret-secret-key');

-- No secret: nothing is signed or verified, and login asks no Odoo.
SELECT try($$ SELECT bridgecore.login('alice', 'pw', 'closed') $$);
SELECT try($$ SELECT bridgecore.verify_token('a.b.c') $$);
SELECT try($$ SET bridgecore.jwt_secret = 'short' $$);
SET bridgecore.jwt_secret = 'a-test-secret-of-at-least-32-chars!';
SHOW bridgecore.jwt_secret;

-- login's arguments
SELECT try($$ SELECT bridgecore.login(NULL, 'pw', 'closed') $$);
SELECT try($$ SELECT bridgecore.login('', 'pw', 'closed') $$);
SELECT try($$ SELECT bridgecore.login('alice', NULL, 'closed') $$);
SELECT try($$ SELECT bridgecore.login('alice', '', 'closed') $$);
SELECT try($$ SELECT bridgecore.login('alice', 'pw', 'nope') $$);
SELECT try($$ SELECT bridgecore.login('alice', 'pw') $$);
-- Odoo does not answer
SELECT pg_temp.try_detail($$ SELECT bridgecore.login('alice', 'pw', 'closed') $$);
-- the per-username limit
SET bridgecore.rate_limit_login = 1;
SELECT try($$ SELECT bridgecore.login('Carol', 'pw', 'closed') $$);
SELECT regexp_replace(try($$ SELECT bridgecore.login('carol', 'pw', 'closed') $$), '[0-9]+ seconds', 'N seconds');
RESET bridgecore.rate_limit_login;

-- tokens
SELECT try($$ SELECT bridgecore.verify_token(NULL) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(NULL) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token('abc') $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"exp": 4102444800}') || 'x') $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"exp": 1}')) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{}')) $$);
-- a signed token for a role no request may have, or without a role
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"exp": 4102444800, "role": "postgres"}')) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"exp": 4102444800, "role": ["bridgecore_app"]}')) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"exp": 4102444800}')) $$);
SELECT bridgecore.verify_token(bridgecore._jwt_sign('{"exp": 4102444800, "role": "bridgecore_admin"}'));
SELECT pg_temp.try_detail($$ SELECT bridgecore.refresh_token(bridgecore._jwt_sign('{"exp": 4102444800}')) $$);
SET bridgecore.jwt_refresh_limit = 0;
SELECT pg_temp.try_detail($$ SELECT bridgecore.refresh_token(bridgecore.issue_token('bridgecore_app', 1) ->> 'access_token') $$);
RESET bridgecore.jwt_refresh_limit;
SELECT try($$ SELECT bridgecore.issue_token('postgres') $$);
SELECT try($$ SELECT bridgecore.issue_token(NULL) $$);
SELECT try($$ SELECT bridgecore.issue_token('bridgecore_app', -1) $$);
SELECT try($$ SELECT bridgecore.issue_token('bridgecore_app', 1, lifetime => '400 days') $$);

RESET bridgecore.jwt_secret;
SELECT bridgecore.remove_instance('closed');
