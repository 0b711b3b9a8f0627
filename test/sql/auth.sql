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
-- Tokens signed here in SQL (HMAC-SHA256 from sha256(), RFC 2104), so by
-- another implementation than the server's, with headers of their own: the
-- usual one written differently is read and accepted, any other algorithm
-- or a header that is not base64url JSON is refused.
CREATE FUNCTION pg_temp.b64url(b bytea) RETURNS text LANGUAGE sql AS
$$ SELECT translate(rtrim(replace(encode(b, 'base64'), E'\n', ''), '='), '+/', '-_') $$;
CREATE FUNCTION pg_temp.signed_input(input text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    k bytea := convert_to(current_setting('regress.jwt_secret'), 'UTF8');
    ipad bytea;
    opad bytea;
BEGIN
    k := k || decode(repeat('00', 64 - length(k)), 'hex');
    ipad := k;
    opad := k;
    FOR i IN 0 .. 63 LOOP
        ipad := set_byte(ipad, i, get_byte(k, i) # 54);
        opad := set_byte(opad, i, get_byte(k, i) # 92);
    END LOOP;
    RETURN input || '.' || pg_temp.b64url(sha256(opad || sha256(ipad || convert_to(input, 'UTF8'))));
END
$$;
CREATE FUNCTION pg_temp.signed(header text, claims text) RETURNS text LANGUAGE sql AS
$$ SELECT pg_temp.signed_input(pg_temp.b64url(convert_to(header, 'UTF8')) || '.' || pg_temp.b64url(convert_to(claims, 'UTF8'))) $$;
SET regress.jwt_secret = 'a-test-secret-of-at-least-32-chars!';
SELECT bridgecore.verify_token(pg_temp.signed('{"alg":"HS256","typ":"JWT"}', '{"exp": 4102444800, "role": "bridgecore_app"}')) ->> 'role' AS usual_header;
SELECT bridgecore.verify_token(pg_temp.signed('{"typ": "JWT", "alg": "HS256"}', '{"exp": 4102444800, "role": "bridgecore_app"}')) ->> 'role' AS reordered_header;
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(pg_temp.signed('{"alg":"none","typ":"JWT"}', '{"exp": 4102444800, "role": "bridgecore_app"}')) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(pg_temp.signed('{"alg":"HS512"}', '{"exp": 4102444800, "role": "bridgecore_app"}')) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(pg_temp.signed('"HS256"', '{"exp": 4102444800, "role": "bridgecore_app"}')) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(pg_temp.signed('{"alg":"HS256"}', '[1]')) $$);
SELECT pg_temp.try_detail($$ SELECT bridgecore.verify_token(
    pg_temp.signed_input('@@@.' || split_part(pg_temp.signed('{"alg":"HS256"}', '{"exp": 4102444800}'), '.', 2))) $$);
RESET regress.jwt_secret;
SELECT pg_temp.try_detail($$ SELECT bridgecore.refresh_token(bridgecore._jwt_sign('{"exp": 4102444800}')) $$);
SET bridgecore.jwt_refresh_limit = 0;
SELECT pg_temp.try_detail($$ SELECT bridgecore.refresh_token(bridgecore.issue_token('bridgecore_app', 1) ->> 'access_token') $$);
RESET bridgecore.jwt_refresh_limit;
SELECT try($$ SELECT bridgecore.issue_token('postgres') $$);
SELECT try($$ SELECT bridgecore.issue_token(NULL) $$);
SELECT try($$ SELECT bridgecore.issue_token('bridgecore_app', -1) $$);
SELECT try($$ SELECT bridgecore.issue_token('bridgecore_app', 1, lifetime => '400 days') $$);

-- authorize: the token's check, then its role and claims until the
-- transaction ends (as a gateway's login role runs it, as bridgecore_anon)
SELECT bridgecore._jwt_sign('{"exp": 4102444800, "role": "bridgecore_app", "user_id": 5, "instance": "closed"}') AS app_token,
       bridgecore._jwt_sign('{"exp": 4102444800, "role": "bridgecore_admin", "user_id": 1}') AS admin_token,
       bridgecore._jwt_sign('{"exp": 4102444800, "role": "postgres"}') AS superuser_token \gset
CREATE ROLE regress_bc_gateway LOGIN NOINHERIT IN ROLE bridgecore_anon, bridgecore_app;
SET SESSION AUTHORIZATION regress_bc_gateway;
SET ROLE bridgecore_anon;
BEGIN;
SELECT bridgecore.authorize(:'app_token');
SELECT current_user, current_setting('request.jwt.claims') AS claims;
-- the claims bind the user and the instance of what follows
SELECT try($$ SELECT bridgecore.sync_state(6, 'a-device') $$);
SELECT try($$ SELECT bridgecore.sync_state(5, 'a-device', 'elsewhere') $$);
SELECT try($$ SELECT bridgecore.sync_state(5, 'a-device') $$);
COMMIT;
SELECT current_user, coalesce(current_setting('request.jwt.claims', true), '') AS claims;
-- a role the session's user may not take, a bad token: refused, nothing set
SELECT try(format($$ SELECT bridgecore.authorize(%L) $$, :'admin_token'));
SELECT pg_temp.try_detail($$ SELECT bridgecore.authorize('abc') $$);
SELECT pg_temp.try_detail(format($$ SELECT bridgecore.authorize(%L) $$, :'superuser_token'));
SELECT current_user, coalesce(current_setting('request.jwt.claims', true), '') AS claims;
-- only bridgecore_anon runs it
SET ROLE bridgecore_app;
SELECT try(format($$ SELECT bridgecore.authorize(%L) $$, :'app_token'));
RESET ROLE;
RESET SESSION AUTHORIZATION;
DROP ROLE regress_bc_gateway;

RESET bridgecore.jwt_secret;
SELECT bridgecore.remove_instance('closed');
