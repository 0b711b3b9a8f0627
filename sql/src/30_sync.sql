-------------------------------------------------------------------------------
-- Smart sync (per user and device)
-------------------------------------------------------------------------------
-- Validates the (user, device) a request names, and that a PostgREST caller
-- whose JWT carries a user_id claim only acts for that user. In C
-- (src/sync_pull.c), which sync_pull calls directly: one implementation of
-- the rule for every sync function.
CREATE FUNCTION bridgecore._check_device(user_id bigint, device_id text)
RETURNS void LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bridgecore_check_device';

-- "Sync state not found": SQLSTATE P0002 (no_data_found) for SQL callers;
-- through PostgREST (which sets request.method, and answers P0002 with HTTP
-- 500) it is PT404, which PostgREST answers with HTTP 404 as apps expect.
CREATE FUNCTION bridgecore._raise_state_not_found(user_id bigint, device_id text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'Sync state not found'
        USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                             THEN 'P0002' ELSE 'PT404' END,
              DETAIL = format('No sync state for user %s and device "%s".', user_id, device_id),
              HINT = 'The first bridgecore.sync_pull() of a device creates its state.';
END
$$;

-- The token parser in C (one implementation, fuzzed): 'bc1:<instance>:<event>',
-- a plain decimal event id, or the starting token "0".
CREATE FUNCTION bridgecore._token_position(token text, instance_id integer)
RETURNS bigint LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bridgecore_token_position';

-- The instance id a 'bc1:' token names, NULL for any other token.
CREATE FUNCTION bridgecore._token_instance_id(token text)
RETURNS integer LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bridgecore_token_instance_id';

-- The token of a position, which the parser above reads back. Every
-- operator in the body is immutable (text || text, integer to text), so the
-- planner inlines the call instead of running a SQL function per pull.
CREATE FUNCTION bridgecore._token(instance_id integer, pos bigint)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 'bc1:' || instance_id::text || ':' || pos::text $$;

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
RETURNS json LANGUAGE c VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- In C (src/sync_pull.c): the page is read by index scans of the log's
-- partitions, without the planner, so that a pull costs what its page holds
-- whatever the size of the log and however rare the device's models are.
-- It makes the checks of _check_device and _check_limit (the same C functions), with the
-- same messages, and calls _check_model_names, _instance_id, _rate_limit and
-- _count_sync_pull.
AS 'MODULE_PATHNAME', 'bridgecore_sync_pull';
COMMENT ON FUNCTION bridgecore.sync_pull(bigint, text, text, integer, text[], text, text, jsonb, text)
    IS 'Incremental pull of the events a device has not seen yet.';

CREATE FUNCTION bridgecore.sync_state(user_id bigint, device_id text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    result jsonb;
BEGIN
    PERFORM bridgecore._check_device(sync_state.user_id, sync_state.device_id);
    inst_id := bridgecore._instance_id(sync_state.instance);
    PERFORM bridgecore._rate_limit('sync_state', inst_id, sync_state.user_id, sync_state.device_id);
    SELECT jsonb_build_object(
               'user_id', s.user_id, 'device_id', s.device_id,
               'last_event_id', s.last_event_id,
               'last_sync_time', bridgecore._iso(s.last_sync_time),
               'sync_count', s.sync_count, 'is_active', s.is_active,
               'app_type', s.app_type, 'last_event_count', s.last_event_count,
               'total_events_synced', s.total_events_synced,
               'next_sync_token', bridgecore._token(inst_id, s.last_event_id),
               'created_at', bridgecore._iso(s.created_at))
      INTO result
      FROM bridgecore.sync_state s
     WHERE s.instance_id = inst_id AND s.user_id = sync_state.user_id AND s.device_id = sync_state.device_id;
    IF result IS NULL THEN
        PERFORM bridgecore._raise_state_not_found(sync_state.user_id, sync_state.device_id);
    END IF;
    RETURN result;
END
$$;
COMMENT ON FUNCTION bridgecore.sync_state(bigint, text, text) IS 'The sync state of one device.';

-- What a push channel of an app (the gateway's syncAvailable subscription)
-- announces: the instance the caller acts for (its token's, or the one
-- named, or the only one) and the models of its app type.
CREATE FUNCTION bridgecore.sync_scope(app_type text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    wanted text[];
BEGIN
    IF sync_scope.app_type IS NULL THEN
        RAISE EXCEPTION 'app_type must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Known app types: ' || (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM bridgecore.app_type a) || '.';
    END IF;
    SELECT a.models INTO wanted FROM bridgecore.app_type a WHERE a.name = sync_scope.app_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown app_type "%"', left(sync_scope.app_type, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known app types: ' || (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM bridgecore.app_type a) || '.';
    END IF;
    inst_id := bridgecore._instance_id(sync_scope.instance);
    RETURN jsonb_build_object('instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id),
                              'app_type', sync_scope.app_type, 'models', to_jsonb(wanted));
END
$$;
COMMENT ON FUNCTION bridgecore.sync_scope(text, text)
    IS 'The instance and models whose notifications concern an app type''s devices.';

CREATE FUNCTION bridgecore.sync_reset(user_id bigint, device_id text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
BEGIN
    PERFORM bridgecore._check_device(sync_reset.user_id, sync_reset.device_id);
    PERFORM bridgecore._primary_only('bridgecore.sync_reset');
    inst_id := bridgecore._instance_id(sync_reset.instance);
    PERFORM bridgecore._rate_limit('sync_reset', inst_id, sync_reset.user_id, sync_reset.device_id);
    UPDATE bridgecore.sync_state s
       SET last_event_id = 0, sync_count = 0, last_event_count = 0, resets = s.resets + 1
     WHERE s.instance_id = inst_id AND s.user_id = sync_reset.user_id AND s.device_id = sync_reset.device_id;
    IF NOT FOUND THEN
        PERFORM bridgecore._raise_state_not_found(sync_reset.user_id, sync_reset.device_id);
    END IF;
    RETURN jsonb_build_object('status', 'success', 'message', 'Sync state reset successfully');
END
$$;
COMMENT ON FUNCTION bridgecore.sync_reset(bigint, text, text) IS 'Moves a device''s cursor back to the start.';

CREATE FUNCTION bridgecore.sync_reset_all(user_id bigint, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    n bigint;
BEGIN
    -- Same checks as sync_reset: valid user, and a JWT's user only.
    PERFORM bridgecore._check_device(sync_reset_all.user_id, '*');
    PERFORM bridgecore._primary_only('bridgecore.sync_reset_all');
    inst_id := bridgecore._instance_id(sync_reset_all.instance);
    PERFORM bridgecore._rate_limit('sync_reset', inst_id, sync_reset_all.user_id, '*');
    UPDATE bridgecore.sync_state s
       SET last_event_id = 0, sync_count = 0, last_event_count = 0, resets = s.resets + 1
     WHERE s.instance_id = inst_id AND s.user_id = sync_reset_all.user_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN jsonb_build_object('status', 'success', 'devices_reset', n,
                              'message', format('Sync state reset for %s devices', n));
END
$$;
COMMENT ON FUNCTION bridgecore.sync_reset_all(bigint, text) IS 'Moves every device of a user back to the start.';

-------------------------------------------------------------------------------
-- Devices
-------------------------------------------------------------------------------
CREATE VIEW bridgecore.devices AS
SELECT i.name AS instance, s.user_id, s.device_id, s.app_type, s.is_active,
       s.last_event_id, s.last_sync_time, s.sync_count, s.last_event_count,
       s.total_events_synced, s.app_version, s.device_info, s.created_at,
       EXISTS (SELECT 1 FROM bridgecore.purged p
                WHERE p.instance_id = s.instance_id AND p.through > s.last_event_id
                  AND (p.model = '*' OR p.model = ANY (a.models))) AS resync_required,
       now() - coalesce(s.last_sync_time, s.created_at) AS idle
  FROM bridgecore.sync_state s
  JOIN bridgecore.instance i ON i.id = s.instance_id
  LEFT JOIN bridgecore.app_type a ON a.name = s.app_type;
COMMENT ON VIEW bridgecore.devices IS 'Sync state of every device.';

CREATE VIEW bridgecore.user_stats AS
SELECT d.instance, d.user_id, count(*) AS devices,
       count(*) FILTER (WHERE d.is_active) AS active_devices,
       sum(d.sync_count)::bigint AS syncs,
       sum(d.total_events_synced)::bigint AS events_synced,
       max(d.last_sync_time) AS last_sync_time
  FROM bridgecore.devices d
 GROUP BY d.instance, d.user_id;
COMMENT ON VIEW bridgecore.user_stats IS 'Devices and syncs per user.';
