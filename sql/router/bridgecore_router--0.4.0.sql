-- BridgeCore router: the bridgecore SQL API of many shards (databases with
-- the bridgecore extension), each call forwarded over PL/Proxy to the shard
-- that holds its instance. Apps, PostgREST and the gateway call the same
-- functions, with the same arguments and answers, as on one server.
\echo Use "CREATE EXTENSION bridgecore_router CASCADE" to load this file. \quit

-------------------------------------------------------------------------------
-- Roles: the ones of the bridgecore extension (cluster-wide; a router in a
-- cluster of its own needs them too).
-------------------------------------------------------------------------------
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY '{bridgecore_app,bridgecore_admin,bridgecore_monitor,bridgecore_anon}'::text[] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', r);
        END IF;
    END LOOP;
END
$roles$;
GRANT bridgecore_app TO bridgecore_admin;
GRANT bridgecore_monitor TO bridgecore_admin;

-------------------------------------------------------------------------------
-- Shards and placement
-------------------------------------------------------------------------------
-- The shards, numbered from 0 in the order they were added. Their
-- connection strings go into the PL/Proxy cluster bridgecore_shards (a
-- foreign server); the login and password come from its user mapping, which
-- an administrator creates (docs/scaling.md), so no role reads them here.
CREATE TABLE bridgecore.shard (
    id              integer PRIMARY KEY CHECK (id BETWEEN 0 AND 1023),
    name            text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    conninfo        text NOT NULL CHECK (conninfo <> ''),
    added_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bridgecore.shard IS 'The shards of this router: databases with the bridgecore extension.';

-- Which shard serves each instance: by name (an instance argument, a JWT's
-- instance claim) and by id (a sync_token's). Made by sync_placement() from
-- what the shards hold; switched by move_instance().
CREATE TABLE bridgecore.placement (
    instance        text PRIMARY KEY,
    instance_id     integer NOT NULL UNIQUE,
    shard           integer NOT NULL REFERENCES bridgecore.shard,
    placed_at       timestamptz NOT NULL DEFAULT now(),
    -- Set while move_instance() runs (or stopped half way): whether the
    -- instance's poller ran before the move stopped it.
    moving_enabled  boolean
);
COMMENT ON TABLE bridgecore.placement IS 'The shard of each instance.';
SELECT pg_catalog.pg_extension_config_dump('bridgecore.shard', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.placement', '');

-- The PL/Proxy calls. RUN ON a shard's id: PL/Proxy takes it modulo the
-- cluster's partitions, a power of two (add_shard pads the list with the
-- last shard), so every id names its own shard. Granted to nobody: only the
-- router's own functions, below, call them.
CREATE FUNCTION bridgecore._shard_call(shard integer, fn text, args jsonb, caller_role text, request jsonb)
RETURNS text LANGUAGE plproxy
AS $$
    CLUSTER 'bridgecore_shards';
    RUN ON shard;
    SELECT bridgecore._routed_call(fn, args, caller_role, request);
$$;

CREATE FUNCTION bridgecore._shard_step(shard integer, step text, args jsonb)
RETURNS jsonb LANGUAGE plproxy
AS $$
    CLUSTER 'bridgecore_shards';
    RUN ON shard;
    SELECT bridgecore._shard_step(step, args);
$$;

-- Writes the shards into the foreign server's options p0, p1, ...
CREATE FUNCTION bridgecore._write_cluster()
RETURNS void LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer;
    parts integer := 1;
    have text[];
    opts text[] := '{}';
    k integer;
BEGIN
    SELECT count(*) INTO n FROM bridgecore.shard;
    WHILE parts < n LOOP
        parts := parts * 2;
    END LOOP;
    SELECT coalesce(array_agg(split_part(o, '=', 1)), '{}') INTO have
      FROM pg_foreign_server s, unnest(s.srvoptions) o WHERE s.srvname = 'bridgecore_shards';
    FOR k IN 0 .. parts - 1 LOOP
        opts := opts || format('%s p%s %L', CASE WHEN ('p' || k) = ANY (have) THEN 'SET' ELSE 'ADD' END, k,
                               (SELECT s.conninfo FROM bridgecore.shard s WHERE s.id = least(k, n - 1)));
    END LOOP;
    SELECT opts || coalesce(array_agg(format('DROP %s', h)), '{}') INTO opts
      FROM unnest(have) h WHERE h ~ '^p[0-9]+$' AND substr(h, 2)::integer >= parts;
    EXECUTE format('ALTER SERVER bridgecore_shards OPTIONS (%s)', array_to_string(opts, ', '));
END
$$;

CREATE FUNCTION bridgecore.add_shard(name text, conninfo text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    new_id integer;
BEGIN
    IF name IS NULL OR conninfo IS NULL THEN
        RAISE EXCEPTION 'name and conninfo must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass a name and a libpq connection string without user and password (the user mapping of server bridgecore_shards holds those).';
    END IF;
    IF conninfo ~* '(^|\s)(user|password)\s*=' OR conninfo ~* '^postgres(ql)?://[^/]*@' THEN
        RAISE EXCEPTION 'conninfo must not hold a user or a password' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Put them in the user mapping: CREATE USER MAPPING FOR PUBLIC SERVER bridgecore_shards OPTIONS (user ''...'', password ''...'').';
    END IF;
    LOCK TABLE bridgecore.shard IN EXCLUSIVE MODE;
    SELECT coalesce(max(s.id) + 1, 0) INTO new_id FROM bridgecore.shard s;
    INSERT INTO bridgecore.shard (id, name, conninfo) VALUES (new_id, add_shard.name, add_shard.conninfo);
    IF NOT EXISTS (SELECT FROM pg_foreign_server s WHERE s.srvname = 'bridgecore_shards') THEN
        EXECUTE format('CREATE SERVER bridgecore_shards FOREIGN DATA WRAPPER plproxy OPTIONS (p0 %L)', add_shard.conninfo);
    ELSE
        PERFORM bridgecore._write_cluster();
    END IF;
    RETURN jsonb_build_object('ok', true, 'shard', add_shard.name, 'id', new_id);
END
$$;
COMMENT ON FUNCTION bridgecore.add_shard(text, text) IS 'Adds a shard: a database with the bridgecore extension.';

-- Reads which instances each shard serves into bridgecore.placement.
CREATE FUNCTION bridgecore.sync_placement()
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
    found jsonb := '[]';
    dup text;
    added bigint;
    removed bigint;
BEGIN
    LOCK TABLE bridgecore.placement IN EXCLUSIVE MODE;
    FOR s IN SELECT x.id, x.name FROM bridgecore.shard x ORDER BY x.id LOOP
        found := found || (SELECT coalesce(jsonb_agg(i || jsonb_build_object('shard', s.id)), '[]')
                             FROM jsonb_array_elements(bridgecore._step(s.id, 'instances', '{}')) i);
    END LOOP;
    -- An instance being moved keeps its placement: move_instance() sets it.
    SELECT coalesce(jsonb_agg(x), '[]') INTO found FROM jsonb_array_elements(found) x
     WHERE NOT EXISTS (SELECT FROM bridgecore.placement p WHERE p.instance = x ->> 'name' AND p.moving_enabled IS NOT NULL);
    SELECT string_agg(x ->> 'name', ', ') INTO dup
      FROM (SELECT x FROM jsonb_array_elements(found) x) t
     WHERE (SELECT count(*) FROM jsonb_array_elements(found) y
             WHERE y ->> 'name' = x ->> 'name' OR y ->> 'id' = x ->> 'id') > 1;
    IF dup IS NOT NULL THEN
        RAISE EXCEPTION 'instances on more than one shard, by name or id: %', dup
            USING ERRCODE = 'unique_violation',
                  HINT = 'Instance names and ids must be unique across shards: give each shard its own range of ids (ALTER TABLE bridgecore.instance ALTER COLUMN id RESTART WITH ...).';
    END IF;
    DELETE FROM bridgecore.placement p
     WHERE p.moving_enabled IS NULL
       AND NOT EXISTS (SELECT FROM jsonb_array_elements(found) x
                        WHERE x ->> 'name' = p.instance AND (x ->> 'id')::integer = p.instance_id
                          AND (x ->> 'shard')::integer = p.shard);
    GET DIAGNOSTICS removed = ROW_COUNT;
    INSERT INTO bridgecore.placement (instance, instance_id, shard)
    SELECT x ->> 'name', (x ->> 'id')::integer, (x ->> 'shard')::integer FROM jsonb_array_elements(found) x
    ON CONFLICT (instance) DO NOTHING;
    GET DIAGNOSTICS added = ROW_COUNT;
    RETURN jsonb_build_object('ok', true, 'instances', jsonb_array_length(found), 'added', added, 'removed', removed);
END
$$;
COMMENT ON FUNCTION bridgecore.sync_placement() IS 'Reads which instances each shard serves into bridgecore.placement.';

-------------------------------------------------------------------------------
-- Routing
-------------------------------------------------------------------------------
-- Calls of an instance hold this lock shared (pg_advisory_xact_lock_shared
-- of the key and the instance id) from before they read its placement to
-- their end; move_instance holds it exclusive while it copies the device
-- states and switches the placement, so that no call runs on the old shard
-- after the states were copied, and the calls that waited go to the new one.
CREATE FUNCTION bridgecore._placement_lock_key() RETURNS integer LANGUAGE sql IMMUTABLE
AS $$ SELECT 1112429650 $$;

-- The placement of the instance a call acts for, by the rules of
-- bridgecore._instance_id() on a shard: the JWT's instance, else the one
-- named, else the one a 'bc1:' sync_token names (with no JWT instance),
-- else the only one.
CREATE FUNCTION bridgecore._placement(instance text, sync_token text)
RETURNS bridgecore.placement LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claimed text := nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'instance';
    p bridgecore.placement;
    n bigint;
BEGIN
    IF coalesce(claimed, instance) IS NOT NULL THEN
        SELECT * INTO p FROM bridgecore.placement x WHERE x.instance = coalesce(claimed, _placement.instance);
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown instance "%"', left(coalesce(claimed, instance), 64)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN claimed IS NOT NULL THEN 'Check the instance named by your token.'
                                  ELSE 'Known instances: ' || coalesce((SELECT string_agg(x.instance, ', ' ORDER BY x.instance) FROM bridgecore.placement x), 'none') || '.' END;
        END IF;
        RETURN p;
    END IF;
    IF sync_token ~ '^bc1:[0-9]{1,10}:' THEN
        SELECT * INTO p FROM bridgecore.placement x WHERE x.instance_id = substring(sync_token FROM '^bc1:([0-9]+):')::bigint;
        IF FOUND THEN
            RETURN p;
        END IF;
    END IF;
    SELECT count(*) INTO n FROM bridgecore.placement;
    IF n = 1 THEN
        SELECT * INTO p FROM bridgecore.placement;
        RETURN p;
    ELSIF n = 0 THEN
        RAISE EXCEPTION 'no Odoo instance is configured'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'An administrator adds one on a shard with bridgecore.add_instance(), then runs bridgecore.sync_placement() on the router.';
    END IF;
    RAISE EXCEPTION 'instance must be given when several instances exist'
        USING ERRCODE = 'null_value_not_allowed',
              HINT = 'Pass instance => one of: ' || (SELECT string_agg(x.instance, ', ' ORDER BY x.instance) FROM bridgecore.placement x) || '.';
END
$$;

-- The role the shard runs a call as: the caller's highest bridgecore role.
-- Inside this SECURITY DEFINER code current_user is the owner: the caller
-- is the role it set (SET ROLE, as PostgREST and the gateway do), or else
-- the session's user.
CREATE FUNCTION bridgecore._caller_role()
RETURNS text LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := CASE WHEN current_setting('role') = 'none' THEN session_user ELSE current_setting('role') END;
BEGIN
    IF pg_has_role(caller, 'bridgecore_admin', 'USAGE') THEN
        RETURN 'bridgecore_admin';
    ELSIF pg_has_role(caller, 'bridgecore_app', 'USAGE') THEN
        RETURN 'bridgecore_app';
    ELSIF pg_has_role(caller, 'bridgecore_monitor', 'USAGE') THEN
        RETURN 'bridgecore_monitor';
    ELSIF pg_has_role(caller, 'bridgecore_anon', 'USAGE') THEN
        RETURN 'bridgecore_anon';
    END IF;
    RETURN NULL;
END
$$;

-- Raises a shard's error as the shard raised it: PL/Proxy prefixes the
-- message ("fn(n): [db] REMOTE ERROR: "), the detail and the hint.
CREATE FUNCTION bridgecore._raise_as_shard(st text, msg text, det text, hnt text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    msg := regexp_replace(msg, '^\S+\(\d+\): \[[^]]*\] REMOTE ERROR: ', '');
    det := nullif(regexp_replace(det, '^Remote detail: ', ''), '');
    hnt := nullif(regexp_replace(hnt, '^Remote hint: ', ''), '');
    IF det IS NOT NULL AND hnt IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, DETAIL = det, HINT = hnt;
    ELSIF det IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, DETAIL = det;
    ELSIF hnt IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg, HINT = hnt;
    END IF;
    RAISE EXCEPTION USING ERRCODE = st, MESSAGE = msg;
END
$$;

-- Runs a call on a shard as the caller's role with the caller's request
-- settings; its error is the shard's.
CREATE FUNCTION bridgecore._on_shard(shard integer, fn text, args jsonb)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    caller text := bridgecore._caller_role();
    request jsonb;
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    IF caller IS NULL THEN
        RAISE EXCEPTION 'permission denied for function %', fn USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT coalesce(jsonb_object_agg(k, current_setting(k, true)), '{}') INTO request
      FROM unnest('{request.jwt.claims,request.headers,request.method}'::text[]) k
     WHERE coalesce(current_setting(k, true), '') <> '';
    RETURN bridgecore._shard_call(shard, fn, args, caller, request);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM bridgecore._raise_as_shard(st, msg, det, hnt);
    RETURN NULL;
END
$$;

-- A step of a move or of sync_placement on a shard; its error is the shard's.
CREATE FUNCTION bridgecore._step(shard integer, step text, args jsonb)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    st text;
    msg text;
    det text;
    hnt text;
BEGIN
    RETURN bridgecore._shard_step(shard, step, args);
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS st = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, det = PG_EXCEPTION_DETAIL, hnt = PG_EXCEPTION_HINT;
    PERFORM bridgecore._raise_as_shard(st, msg, det, hnt);
    RETURN NULL;
END
$$;

-- A call of the API: to the shard of the instance its arguments name (or
-- its JWT, or its sync_token), under the instance's placement lock (shared).
CREATE FUNCTION bridgecore._route(fn text, args jsonb)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p bridgecore.placement := bridgecore._placement(args ->> 'instance', args ->> 'sync_token');
    shard integer;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(bridgecore._placement_lock_key(), p.instance_id);
    -- After the lock: a move that switched the placement meanwhile is seen.
    SELECT x.shard INTO shard FROM bridgecore.placement x WHERE x.instance_id = p.instance_id;
    RETURN bridgecore._on_shard(coalesce(shard, p.shard), fn, args);
END
$$;

-- A call that acts for no instance (a token's check, an administrator's
-- call over every instance): on the first shard, or on each.
CREATE FUNCTION bridgecore._first_shard(fn text, args jsonb)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    shard integer := (SELECT min(s.id) FROM bridgecore.shard s);
BEGIN
    IF shard IS NULL THEN
        RAISE EXCEPTION 'this router has no shard' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'An administrator adds one with bridgecore.add_shard().';
    END IF;
    RETURN bridgecore._on_shard(shard, fn, args);
END
$$;

-- Every shard's answer, summed: numbers add up, ok holds when it holds on
-- every shard, messages are joined, and shards holds each shard's own
-- answer (with what the sum leaves out, dropped_ids for one).
CREATE FUNCTION bridgecore._every_shard(fn text, args jsonb)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    s record;
    answers jsonb := '{}';
BEGIN
    FOR s IN SELECT x.id, x.name FROM bridgecore.shard x ORDER BY x.id LOOP
        answers := answers || jsonb_build_object(s.name, bridgecore._on_shard(s.id, fn, args)::jsonb);
    END LOOP;
    RETURN (SELECT coalesce(jsonb_object_agg(t.k, t.v), '{}')
              FROM (SELECT a.key AS k,
                           CASE WHEN bool_and(jsonb_typeof(a.value) = 'number')
                                THEN to_jsonb(sum((a.value #>> '{}')::numeric) FILTER (WHERE jsonb_typeof(a.value) = 'number'))
                                WHEN bool_and(jsonb_typeof(a.value) = 'boolean')
                                THEN to_jsonb(bool_and((a.value #>> '{}')::boolean) FILTER (WHERE jsonb_typeof(a.value) = 'boolean'))
                                WHEN a.key = 'message'
                                THEN to_jsonb(string_agg(sh.key || ': ' || (a.value #>> '{}'), '; ' ORDER BY sh.key)
                                              FILTER (WHERE jsonb_typeof(a.value) = 'string'))
                           END AS v
                      FROM jsonb_each(answers) sh, jsonb_each(sh.value) a
                     GROUP BY a.key) t
             WHERE t.v IS NOT NULL)
           || jsonb_build_object('shards', answers);
END
$$;

-------------------------------------------------------------------------------
-- The API (the bridgecore extension's, sql/src/*.sql): same names,
-- arguments, defaults and answers. The rules are the shards'. SECURITY
-- DEFINER: their own grants (the shards') are checked against their
-- immediate caller, and only they call the routing functions above, which
-- nobody else may. PL/pgSQL, whose plans last the session (an SQL
-- function's are made again at every call).
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore.sync_pull(
    user_id bigint,
    device_id text,
    app_type text,
    "limit" integer DEFAULT 100,
    models_filter text[] DEFAULT NULL,
    instance text DEFAULT NULL,
    sync_token text DEFAULT NULL,
    device_info jsonb DEFAULT NULL,
    app_version text DEFAULT NULL)
RETURNS json LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._route('sync_pull',
            jsonb_build_object('user_id', user_id, 'device_id', device_id, 'app_type', app_type, 'limit', "limit",
                               'models_filter', models_filter, 'instance', instance, 'sync_token', sync_token,
                               'device_info', device_info, 'app_version', app_version))::json;
END
$$;
COMMENT ON FUNCTION bridgecore.sync_pull(bigint, text, text, integer, text[], text, text, jsonb, text)
    IS 'Incremental pull of the events a device has not seen yet.';

CREATE FUNCTION bridgecore.sync_state(user_id bigint, device_id text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._route('sync_state', jsonb_build_object('user_id', user_id, 'device_id', device_id, 'instance', instance))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.sync_state(bigint, text, text) IS 'The sync state of one device.';

CREATE FUNCTION bridgecore.sync_scope(app_type text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._route('sync_scope', jsonb_build_object('app_type', app_type, 'instance', instance))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.sync_scope(text, text)
    IS 'The instance and models whose notifications concern an app type''s devices.';

CREATE FUNCTION bridgecore.sync_reset(user_id bigint, device_id text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._route('sync_reset', jsonb_build_object('user_id', user_id, 'device_id', device_id, 'instance', instance))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.sync_reset(bigint, text, text) IS 'Moves a device''s cursor back to the start.';

CREATE FUNCTION bridgecore.sync_reset_all(user_id bigint, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._route('sync_reset_all', jsonb_build_object('user_id', user_id, 'instance', instance))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.sync_reset_all(bigint, text) IS 'Moves every device of a user back to the start.';

CREATE FUNCTION bridgecore.events(
    model_name text DEFAULT NULL,
    record_id bigint DEFAULT NULL,
    event text DEFAULT NULL,
    since timestamptz DEFAULT NULL,
    "limit" integer DEFAULT 100,
    "offset" integer DEFAULT 0,
    priority text DEFAULT NULL,
    category text DEFAULT NULL,
    instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._route('events',
            jsonb_build_object('model_name', model_name, 'record_id', record_id, 'event', event, 'since', since,
                               'limit', "limit", 'offset', "offset", 'priority', priority, 'category', category,
                               'instance', instance))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.events(text, bigint, text, timestamptz, integer, integer, text, text, text)
    IS 'Events of the log, newest first, filtered.';

CREATE FUNCTION bridgecore.check_updates(since timestamptz DEFAULT NULL, "limit" integer DEFAULT 200, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._route('check_updates', jsonb_build_object('since', since, 'limit', "limit", 'instance', instance))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.check_updates(timestamptz, integer, text) IS 'Which models changed since a time.';

-- Without an instance (and no JWT instance): every shard's instances, as
-- on one server every instance.
CREATE FUNCTION bridgecore.cleanup(before timestamptz DEFAULT NULL, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE WHEN instance IS NULL AND NOT coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ? 'instance', false)
                    THEN bridgecore._every_shard('cleanup', jsonb_build_object('before', before))
                    ELSE bridgecore._route('cleanup', jsonb_build_object('before', before, 'instance', instance))::jsonb END;
END
$$;
COMMENT ON FUNCTION bridgecore.cleanup(timestamptz, text) IS 'Removes events older than the retention, or than before.';

CREATE FUNCTION bridgecore.deactivate_idle_devices(idle interval DEFAULT NULL, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE WHEN instance IS NULL AND NOT coalesce(nullif(current_setting('request.jwt.claims', true), '')::jsonb ? 'instance', false)
                    THEN bridgecore._every_shard('deactivate_idle_devices', jsonb_build_object('idle', idle))
                    ELSE bridgecore._route('deactivate_idle_devices', jsonb_build_object('idle', idle, 'instance', instance))::jsonb END;
END
$$;
COMMENT ON FUNCTION bridgecore.deactivate_idle_devices(interval, text) IS 'Marks devices that have not pulled for a while inactive.';

-- The password is in the call's text: a failed login must not log it
-- (a superuser's setting: SECURITY DEFINER, as on a shard).
CREATE FUNCTION bridgecore.login(username text, password text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
BEGIN
    RETURN bridgecore._route('login', jsonb_build_object('username', username, 'password', password, 'instance', instance))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.login(text, text, text)
    IS 'Checks an app user''s credentials against Odoo and returns a token.';

-- Tokens are signed with the bridgecore.jwt_secret every shard shares.
CREATE FUNCTION bridgecore.refresh_token(token text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._first_shard('refresh_token', jsonb_build_object('token', token))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.refresh_token(text)
    IS 'A new token with the claims of a valid one, without the password.';

CREATE FUNCTION bridgecore.verify_token(token text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._first_shard('verify_token', jsonb_build_object('token', token))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.verify_token(text)
    IS 'The claims of a valid token signed with bridgecore.jwt_secret for bridgecore_app or bridgecore_admin.';

CREATE FUNCTION bridgecore.issue_token(role text, user_id bigint DEFAULT NULL, instance text DEFAULT NULL,
                                       lifetime interval DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN CASE WHEN instance IS NULL AND nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'instance' IS NULL
                    THEN bridgecore._first_shard('issue_token', jsonb_build_object('role', role, 'user_id', user_id, 'lifetime', lifetime))
                    ELSE bridgecore._route('issue_token', jsonb_build_object('role', role, 'user_id', user_id, 'instance', instance,
                                                                             'lifetime', lifetime)) END::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.issue_token(text, bigint, text, interval)
    IS 'A token for a role, user and instance chosen by an administrator.';

CREATE FUNCTION bridgecore.wake(instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._route('wake', jsonb_build_object('instance', instance))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.wake(text) IS 'Makes an instance''s poller fetch now.';

-- The doorbell: the shard whose instance has the push key rings it. The
-- key is looked up by its SHA-256 (as each shard stores it); a key that no
-- shard knows, or none, goes to the first shard, which refuses it and
-- counts the refusal against the client; a client refused too often there
-- is refused before any lookup (push_key_check), as on one server.
CREATE FUNCTION bridgecore.ring(push_key text DEFAULT NULL, client text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    k text := coalesce(ring.push_key, nullif(current_setting('request.headers', true), '')::jsonb ->> 'x-api-key');
    target integer;
    sh record;
BEGIN
    IF k <> '' AND length(k) <= 256 THEN
        -- The first shard, which counts the refused keys, says first whether
        -- this client may try one (as a shard's ring does before its lookup).
        PERFORM bridgecore._step((SELECT min(x.id) FROM bridgecore.shard x), 'push_key_check',
                                 jsonb_build_object('client', ring.client));
        FOR sh IN SELECT x.id FROM bridgecore.shard x ORDER BY x.id LOOP
            IF bridgecore._step(sh.id, 'push_key_instance',
                                jsonb_build_object('hash', encode(sha256(convert_to(k, 'UTF8')), 'hex'))) <> 'null' THEN
                target := sh.id;
                EXIT;
            END IF;
        END LOOP;
    END IF;
    IF target IS NULL THEN
        RETURN bridgecore._first_shard('ring', jsonb_build_object('push_key', ring.push_key, 'client', ring.client))::jsonb;
    END IF;
    RETURN bridgecore._on_shard(target, 'ring', jsonb_build_object('push_key', ring.push_key, 'client', ring.client))::jsonb;
END
$$;
COMMENT ON FUNCTION bridgecore.ring(text, text) IS 'Odoo''s push: wakes the poller of the instance whose push key this is.';

-- Every shard's instances, as bridgecore.status() shows them on each.
CREATE FUNCTION bridgecore.status()
RETURNS TABLE (instance text, state text, url text, lag interval, events_per_second numeric,
               events_ingested bigint, cursor bigint, last_success_at timestamptz, last_error text,
               last_error_at timestamptz, consecutive_failures integer, next_attempt_at timestamptz,
               dead_letters_pending bigint, gaps_open bigint, devices_active bigint, poller_pid integer)
LANGUAGE plproxy
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    CLUSTER 'bridgecore_shards';
    RUN ON ALL;
    -- Not the half-made copy of an instance that a move is copying in.
    -- Nor the old copy of a moved instance that waits to be removed.
    SELECT s.* FROM bridgecore.status() s WHERE NOT bridgecore._shard_step('moving', '{}') ? s.instance;
$$;
COMMENT ON FUNCTION bridgecore.status() IS 'The state of every instance of every shard.';

-- Every shard's metrics (the Prometheus text of bridgecore.metrics() on
-- each) as one exposition: each family once, with its HELP and TYPE, and
-- every sample labelled with its shard.
CREATE FUNCTION bridgecore.metrics() RETURNS text LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH per_shard AS (
        SELECT sh.id AS shard_id, sh.name AS shard, bridgecore._on_shard(sh.id, 'metrics', '{}') AS body
          FROM bridgecore.shard sh
    ), lines AS (
        SELECT p.shard_id, p.shard, l.line, l.n,
               count(*) FILTER (WHERE l.line LIKE '# HELP %') OVER (PARTITION BY p.shard_id ORDER BY l.n) AS g
          FROM per_shard p, regexp_split_to_table(rtrim(p.body, E'\n'), E'\n') WITH ORDINALITY l(line, n)
    ), fam AS (
        SELECT x.*, first_value(split_part(x.line, ' ', 3)) OVER (PARTITION BY x.shard_id, x.g ORDER BY x.n) AS family
          FROM lines x
    ), firsts AS (
        SELECT f.family, min(f.shard_id) AS shard_id, min(f.shard_id::bigint * 100000000 + f.n) AS rank
          FROM fam f GROUP BY f.family
    )
    SELECT string_agg(o.line, E'\n' ORDER BY fi.rank, o.sample, o.shard_id, o.n) || E'\n'
      FROM (SELECT f.family, false AS sample, f.shard_id, f.n, f.line
              FROM fam f JOIN firsts fi ON fi.family = f.family AND fi.shard_id = f.shard_id
             WHERE f.line LIKE '# %'
            UNION ALL
            SELECT f.family, true, f.shard_id, f.n,
                   CASE WHEN f.line ~ '^[a-zA-Z_:][a-zA-Z0-9_:]*\{'
                        THEN regexp_replace(f.line, '^([a-zA-Z_:][a-zA-Z0-9_:]*)\{', '\1{shard="' || f.shard || '",')
                        ELSE regexp_replace(f.line, '^([a-zA-Z_:][a-zA-Z0-9_:]*) ', '\1{shard="' || f.shard || '"} ') END
              FROM fam f WHERE f.line !~ '^#' AND f.line <> '') o
      JOIN firsts fi ON fi.family = o.family
$$;
COMMENT ON FUNCTION bridgecore.metrics() IS 'Prometheus metrics of every shard, each sample labelled with its shard.';

-------------------------------------------------------------------------------
-- Moving an instance to another shard
-------------------------------------------------------------------------------
-- The end of a move whose placement switched to shard dst: the poller
-- starts there with the setting it had before the move (in_finish, which
-- also marks the copy complete), and every other shard's copy goes. Each
-- part may run again: a move that stopped after the switch ends by it.
CREATE PROCEDURE bridgecore._finish_move(instance_id integer, instance text, dst integer)
LANGUAGE plpgsql
AS $$
DECLARE
    was_enabled boolean;
    sh record;
BEGIN
    SELECT x.moving_enabled INTO was_enabled FROM bridgecore.placement x WHERE x.instance_id = _finish_move.instance_id;
    IF was_enabled IS NOT NULL THEN
        PERFORM bridgecore._step(dst, 'in_finish', jsonb_build_object('id', instance_id, 'enabled', was_enabled));
        UPDATE bridgecore.placement x SET moving_enabled = NULL WHERE x.instance_id = _finish_move.instance_id;
        COMMIT;
    END IF;
    FOR sh IN SELECT x.id, x.name FROM bridgecore.shard x WHERE x.id <> dst ORDER BY x.id LOOP
        IF bridgecore._step(sh.id, 'instances', '{"all": true}') @> jsonb_build_array(jsonb_build_object('name', instance)) THEN
            PERFORM bridgecore._step(sh.id, 'out_finish', jsonb_build_object('instance', instance));
            COMMIT;
        END IF;
    END LOOP;
END
$$;

-- CALL bridgecore.move_instance('acme', 'shard2'): stops the instance's
-- poller on its shard, copies its events (in batches, while its devices go
-- on pulling there), then, holding its placement lock so that no call of it
-- runs meanwhile, copies its device states, switches the placement and
-- commits; the calls that waited go to the new shard. Last, the poller
-- starts on the new shard, and the old shard's copy is removed. Each step
-- commits. If it stops half way, call it again: the new shard's
-- half-made copy is removed and the move starts over (the old shard's poller
-- stays stopped until a move completes; alter_instance(enabled => true)
-- there resumes it instead).
-- No SET search_path: a procedure with one cannot commit. Every name in it
-- is qualified but pg_catalog's, which is searched first.
CREATE PROCEDURE bridgecore.move_instance(instance text, to_shard text, batch_size integer DEFAULT 2000)
LANGUAGE plpgsql
AS $$
DECLARE
    p bridgecore.placement;
    src integer;
    dst integer;
    meta jsonb;
    shift bigint;
    after bigint := 0;
    batch jsonb;
    copied bigint := 0;
    states bigint := 0;
    after_user bigint := 0;
    after_device text := '';
    deadline timestamptz;
    t0 timestamptz;
    paused_ms numeric;
BEGIN
    IF instance IS NULL OR to_shard IS NULL THEN
        RAISE EXCEPTION 'instance and to_shard must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the instance and the shard it goes to.';
    END IF;
    IF batch_size IS NULL OR batch_size NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 100000' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO p FROM bridgecore.placement x WHERE x.instance = move_instance.instance;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown instance "%"', left(instance, 64) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Known instances: ' || coalesce((SELECT string_agg(x.instance, ', ' ORDER BY x.instance) FROM bridgecore.placement x), 'none') || '.';
    END IF;
    SELECT s.id INTO dst FROM bridgecore.shard s WHERE s.name = to_shard;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown shard "%"', left(to_shard, 64) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Known shards: ' || coalesce((SELECT string_agg(s.name, ', ' ORDER BY s.id) FROM bridgecore.shard s), 'none') || '.';
    END IF;
    -- One move of an instance at a time: a session lock, which outlives the
    -- steps' commits, and a move that stops with an error until its session
    -- ends (the same session may call it again).
    IF NOT EXISTS (SELECT FROM pg_locks l
                    WHERE l.locktype = 'advisory' AND l.pid = pg_backend_pid() AND l.granted
                      AND l.classid = (bridgecore._placement_lock_key() + 1)::oid AND l.objid = p.instance_id::oid
                      AND l.objsubid = 2)
       AND NOT pg_try_advisory_lock(bridgecore._placement_lock_key() + 1, p.instance_id) THEN
        RAISE EXCEPTION 'instance "%" is being moved by another session', instance
            USING ERRCODE = 'lock_not_available',
                  HINT = 'Wait for that move to end (or its session to close), then call bridgecore.move_instance() again.';
    END IF;
    src := p.shard;
    IF src = dst THEN
        -- A move that stopped after the switch: it ends now.
        CALL bridgecore._finish_move(p.instance_id, instance, dst);
        PERFORM pg_advisory_unlock(bridgecore._placement_lock_key() + 1, p.instance_id);
        RAISE NOTICE 'instance "%" is on shard "%"', instance, to_shard;
        RETURN;
    END IF;

    -- 1. The old shard's poller stops; the instance's log there is final.
    -- A move that stopped half way stopped it already: the setting to
    -- restore is the one its first try saw.
    meta := bridgecore._step(src, 'out_begin', jsonb_build_object('instance', instance));
    UPDATE bridgecore.placement x SET moving_enabled = coalesce(x.moving_enabled, (meta ->> 'enabled')::boolean)
     WHERE x.instance_id = p.instance_id;
    COMMIT;
    deadline := clock_timestamp() + interval '60 seconds';
    WHILE NOT bridgecore._step(src, 'out_paused', jsonb_build_object('id', p.instance_id))::boolean LOOP
        IF clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'the poller of instance "%" did not stop within 60 seconds', instance
                USING ERRCODE = 'lock_not_available', HINT = 'Call bridgecore.move_instance() again.';
        END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    meta := bridgecore._step(src, 'out_meta', jsonb_build_object('id', p.instance_id));

    -- 2. The copy of the instance on the new shard, then its events.
    shift := (bridgecore._step(dst, 'in_begin', jsonb_build_object('meta', meta)) ->> 'shift')::bigint;
    COMMIT;
    LOOP
        batch := bridgecore._step(src, 'out_events', jsonb_build_object('id', p.instance_id, 'after', after, 'n', batch_size));
        EXIT WHEN jsonb_array_length(batch) = 0;
        PERFORM bridgecore._step(dst, 'in_events', jsonb_build_object('id', p.instance_id, 'shift', shift, 'events', batch));
        copied := copied + jsonb_array_length(batch);
        after := (batch -> -1 ->> 'id')::bigint;
        COMMIT;
    END LOOP;
    PERFORM bridgecore._step(dst, 'in_dead_letters', jsonb_build_object('id', p.instance_id,
        'rows', bridgecore._step(src, 'out_dead_letters', jsonb_build_object('id', p.instance_id))));
    COMMIT;

    -- 3. No call of the instance runs while its states are copied and its
    -- placement switched; retention's horizons are copied again (it went on
    -- during the copy).
    t0 := clock_timestamp();
    PERFORM pg_advisory_xact_lock(bridgecore._placement_lock_key(), p.instance_id);
    LOOP
        batch := bridgecore._step(src, 'out_states', jsonb_build_object('id', p.instance_id, 'after_user', after_user,
                                                                        'after_device', after_device, 'n', batch_size));
        EXIT WHEN jsonb_array_length(batch) = 0;
        PERFORM bridgecore._step(dst, 'in_states', jsonb_build_object('id', p.instance_id, 'shift', shift, 'states', batch));
        states := states + jsonb_array_length(batch);
        after_user := (batch -> -1 ->> 'user_id')::bigint;
        after_device := batch -> -1 ->> 'device_id';
    END LOOP;
    PERFORM bridgecore._step(dst, 'in_purged', jsonb_build_object('id', p.instance_id, 'shift', shift,
        'purged', bridgecore._step(src, 'out_purged', jsonb_build_object('id', p.instance_id))));
    UPDATE bridgecore.placement x SET shard = dst, placed_at = now() WHERE x.instance_id = p.instance_id;
    paused_ms := round(extract(epoch FROM clock_timestamp() - t0) * 1000, 1);
    COMMIT;

    -- 4. The poller starts on the new shard; the old shard's copy goes.
    CALL bridgecore._finish_move(p.instance_id, instance, dst);
    PERFORM pg_advisory_unlock(bridgecore._placement_lock_key() + 1, p.instance_id);
    RAISE NOTICE 'moved instance "%" to shard "%": % events, % device states; its calls waited % ms',
        instance, to_shard, copied, states, paused_ms;
END
$$;
COMMENT ON PROCEDURE bridgecore.move_instance(text, text, integer)
    IS 'Moves an instance, with its events and device states, to another shard.';

-------------------------------------------------------------------------------
-- Privileges: as on a shard.
-------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA bridgecore FROM PUBLIC;
REVOKE ALL ON ALL PROCEDURES IN SCHEMA bridgecore FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA bridgecore FROM PUBLIC;
GRANT USAGE ON SCHEMA bridgecore TO bridgecore_app, bridgecore_admin, bridgecore_monitor, bridgecore_anon;
GRANT EXECUTE ON FUNCTION
    bridgecore.sync_pull(bigint, text, text, integer, text[], text, text, jsonb, text),
    bridgecore.sync_state(bigint, text, text),
    bridgecore.sync_reset(bigint, text, text),
    bridgecore.sync_reset_all(bigint, text),
    bridgecore.events(text, bigint, text, timestamptz, integer, integer, text, text, text),
    bridgecore.check_updates(timestamptz, integer, text),
    bridgecore.sync_scope(text, text),
    bridgecore.refresh_token(text)
    TO bridgecore_app;
GRANT EXECUTE ON FUNCTION bridgecore.login(text, text, text), bridgecore.verify_token(text)
    TO bridgecore_anon, bridgecore_app;
GRANT EXECUTE ON FUNCTION bridgecore.ring(text, text) TO bridgecore_anon, bridgecore_admin;
GRANT EXECUTE ON FUNCTION
    bridgecore.cleanup(timestamptz, text),
    bridgecore.deactivate_idle_devices(interval, text),
    bridgecore.issue_token(text, bigint, text, interval),
    bridgecore.wake(text),
    bridgecore.status()
    TO bridgecore_admin;
GRANT EXECUTE ON FUNCTION bridgecore.metrics() TO bridgecore_monitor;
GRANT SELECT ON bridgecore.shard, bridgecore.placement TO bridgecore_admin;
