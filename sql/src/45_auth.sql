-------------------------------------------------------------------------------
-- App logins and their tokens: HS256 JWTs signed with the superuser-only
-- setting bridgecore.jwt_secret, the secret PostgREST and the gateway share,
-- so a token of bridgecore.login() works with both. Claims: role, user_id
-- (the Odoo user id), instance (its name), iat, exp, auth_time (the login,
-- kept by refreshes).
-------------------------------------------------------------------------------
-- The role of requests without a token: it may only log in.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_anon') THEN
        CREATE ROLE bridgecore_anon NOLOGIN;
    END IF;
END
$roles$;

CREATE FUNCTION bridgecore._jwt_sign(claims jsonb)
RETURNS text LANGUAGE c STABLE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_jwt_sign';

-- The claims of a token this server's secret signed and that has not
-- expired; anything else raises "invalid token" (28000, PT401 through
-- PostgREST).
CREATE FUNCTION bridgecore._jwt_verify(token text)
RETURNS jsonb LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bridgecore_jwt_verify';

-- Odoo's common.authenticate for an app user: the Odoo user id, or 28P01
-- (PT401) for refused credentials, PT429 while Odoo refuses logins after
-- too many failures, 08006 when Odoo cannot be reached, 38000 for an Odoo
-- error.
CREATE FUNCTION bridgecore._odoo_authenticate(instance_id integer, login text, password text)
RETURNS bigint LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_odoo_authenticate';

-- A setting with a unit in seconds, as a number of seconds.
CREATE FUNCTION bridgecore._setting_seconds(name text)
RETURNS integer LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT extract(epoch FROM current_setting(name)::interval)::integer $$;

-- Signs claims with fresh iat and exp and returns the answer of login and
-- refresh_token.
CREATE FUNCTION bridgecore._issue_token(claims jsonb, lifetime integer)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_s bigint := floor(extract(epoch FROM clock_timestamp()))::bigint;
    full_claims jsonb := claims || jsonb_build_object('iat', now_s, 'exp', now_s + lifetime);
BEGIN
    RETURN jsonb_build_object(
        'access_token', bridgecore._jwt_sign(full_claims),
        'token_type', 'bearer',
        'expires_in', lifetime,
        'user_id', full_claims -> 'user_id',
        'instance', full_claims -> 'instance');
END
$$;

-- A failed login must not write the statement, which holds the password,
-- to the server log (as add_instance does for the secret).
CREATE FUNCTION bridgecore.login(username text, password text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    inst_id integer;
    uid bigint;
BEGIN
    IF login.username IS NULL THEN
        RAISE EXCEPTION 'username must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the user''s Odoo login.';
    ELSIF login.username = '' OR length(login.username) > 255 THEN
        RAISE EXCEPTION 'username must be 1 to 255 characters, got %', length(login.username)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the user''s Odoo login.';
    ELSIF login.password IS NULL THEN
        RAISE EXCEPTION 'password must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the user''s Odoo password or API key.';
    ELSIF login.password = '' OR length(login.password) > 4096 THEN
        RAISE EXCEPTION 'password must be 1 to 4096 characters' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the user''s Odoo password or API key.';
    END IF;
    inst_id := bridgecore._instance_id(login.instance);
    PERFORM bridgecore._jwt_sign('{}');     -- fails before Odoo is asked when no secret is set
    PERFORM bridgecore._rate_limit('login', inst_id, 0, lower(login.username));
    uid := bridgecore._odoo_authenticate(inst_id, login.username, login.password);
    -- Every Odoo user gets an app token; admin tokens come from issue_token().
    RETURN bridgecore._issue_token(
        jsonb_build_object('role', 'bridgecore_app', 'user_id', uid,
                           'instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id),
                           'auth_time', floor(extract(epoch FROM clock_timestamp()))::bigint),
        bridgecore._setting_seconds('bridgecore.jwt_lifetime'));
END
$$;
COMMENT ON FUNCTION bridgecore.login(text, text, text)
    IS 'Checks an app user''s credentials against Odoo and returns a token.';

CREATE FUNCTION bridgecore.refresh_token(token text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text := refresh_token.token;
    claims jsonb;
    auth numeric;
    refresh_limit integer := bridgecore._setting_seconds('bridgecore.jwt_refresh_limit');
BEGIN
    -- The request's own bearer token when none is given (PostgREST puts the
    -- headers in request.headers). A token is verified here, not taken from
    -- request.jwt.claims, which any direct client can set.
    IF t IS NULL THEN
        t := substring(nullif(current_setting('request.headers', true), '')::jsonb ->> 'authorization'
                       FROM '^[Bb][Ee][Aa][Rr][Ee][Rr] +([^ ]+) *$');
    END IF;
    claims := bridgecore._jwt_verify(t);
    IF jsonb_typeof(claims -> 'auth_time') = 'number' THEN
        auth := (claims ->> 'auth_time')::numeric;
    END IF;
    IF auth IS NULL OR extract(epoch FROM clock_timestamp()) - auth >= refresh_limit THEN
        RAISE EXCEPTION 'token can no longer be refreshed'
            USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                                 THEN 'invalid_authorization_specification' ELSE 'PT401' END,
                  DETAIL = CASE WHEN auth IS NULL THEN 'The token has no auth_time claim.'
                                ELSE format('Tokens can be refreshed for %s after the login (bridgecore.jwt_refresh_limit).',
                                            current_setting('bridgecore.jwt_refresh_limit')) END,
                  HINT = 'Log in again with bridgecore.login().';
    END IF;
    RETURN bridgecore._issue_token(claims - 'iat' - 'exp', bridgecore._setting_seconds('bridgecore.jwt_lifetime'));
END
$$;
COMMENT ON FUNCTION bridgecore.refresh_token(text)
    IS 'A new token with the claims of a valid one, without the password.';

-- A request acts as its token's role, so a token for any role but the two a
-- request may have is refused here (the gateway verifies every request's
-- token with this function only). In C (src/jwt.c), not SECURITY DEFINER:
-- it reads the secret from the setting's variable, never through SQL.
CREATE FUNCTION bridgecore.verify_token(token text)
RETURNS jsonb LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bridgecore_verify_token';
COMMENT ON FUNCTION bridgecore.verify_token(text)
    IS 'The claims of a valid token signed with bridgecore.jwt_secret for bridgecore_app or bridgecore_admin.';

-- What a gateway with one pool of connections for every user runs first in
-- a request's transaction, as bridgecore_anon: verify_token's check, then
-- the token's role and its claims in request.jwt.claims, both local to the
-- transaction (the role as SET ROLE allows it: the session's user must be a
-- member). In C (src/jwt.c): the claims are then known without parsing.
CREATE FUNCTION bridgecore.authorize(token text)
RETURNS void LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_authorize';
COMMENT ON FUNCTION bridgecore.authorize(text)
    IS 'Verifies a token, then acts as it for the rest of the transaction: its role and request.jwt.claims.';

CREATE FUNCTION bridgecore.issue_token(
    role text,
    user_id bigint DEFAULT NULL,
    instance text DEFAULT NULL,
    lifetime interval DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inst_name text;
    secs numeric := coalesce(extract(epoch FROM issue_token.lifetime),
                             bridgecore._setting_seconds('bridgecore.jwt_lifetime'));
BEGIN
    IF issue_token.role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass bridgecore_app or bridgecore_admin.';
    ELSIF issue_token.role NOT IN ('bridgecore_app', 'bridgecore_admin') THEN
        RAISE EXCEPTION 'role must be bridgecore_app or bridgecore_admin, got "%"', left(issue_token.role, 64)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass bridgecore_app or bridgecore_admin.';
    ELSIF issue_token.user_id <= 0 THEN
        RAISE EXCEPTION 'user_id must be positive, got %', issue_token.user_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the Odoo user id, or omit it.';
    ELSIF secs < 1 OR secs > 366 * 86400 THEN
        RAISE EXCEPTION 'lifetime must be between 1 second and 366 days, got %', issue_token.lifetime
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass an interval such as ''1 hour'', or omit it.';
    END IF;
    -- A caller confined to an instance issues tokens for it only.
    IF issue_token.instance IS NOT NULL
       OR nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'instance' IS NOT NULL THEN
        SELECT i.name INTO inst_name FROM bridgecore.instance i
         WHERE i.id = bridgecore._instance_id(issue_token.instance);
    END IF;
    RETURN bridgecore._issue_token(
        jsonb_strip_nulls(jsonb_build_object('role', issue_token.role, 'user_id', issue_token.user_id,
                                             'instance', inst_name,
                                             'auth_time', floor(extract(epoch FROM clock_timestamp()))::bigint)),
        floor(secs)::integer);
END
$$;
COMMENT ON FUNCTION bridgecore.issue_token(text, bigint, text, interval)
    IS 'A token for a role, user and instance chosen by an administrator.';

REVOKE ALL ON FUNCTION bridgecore._jwt_sign(jsonb), bridgecore._jwt_verify(text),
                       bridgecore._odoo_authenticate(integer, text, text),
                       bridgecore._setting_seconds(text), bridgecore._issue_token(jsonb, integer),
                       bridgecore.login(text, text, text), bridgecore.refresh_token(text),
                       bridgecore.verify_token(text), bridgecore.authorize(text),
                       bridgecore.issue_token(text, bigint, text, interval) FROM PUBLIC;
GRANT USAGE ON SCHEMA bridgecore TO bridgecore_anon;
GRANT EXECUTE ON FUNCTION bridgecore.login(text, text, text), bridgecore.verify_token(text)
    TO bridgecore_anon, bridgecore_app;
GRANT EXECUTE ON FUNCTION bridgecore.refresh_token(text) TO bridgecore_app;
GRANT EXECUTE ON FUNCTION bridgecore.authorize(text) TO bridgecore_anon;
GRANT EXECUTE ON FUNCTION bridgecore.issue_token(text, bigint, text, interval) TO bridgecore_admin;
