-------------------------------------------------------------------------------
-- Smart sync (per user and device)
-------------------------------------------------------------------------------
-- Validates the (user, device) a request names, and that a PostgREST caller
-- whose JWT carries a user_id claim only acts for that user.
CREATE FUNCTION bridgecore._check_device(user_id bigint, device_id text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claims text := nullif(current_setting('request.jwt.claims', true), '');
    claimed text;
BEGIN
    IF user_id IS NULL THEN
        RAISE EXCEPTION 'user_id must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the Odoo user id of the app''s user.';
    ELSIF user_id <= 0 THEN
        RAISE EXCEPTION 'user_id must be positive, got %', user_id USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the Odoo user id of the app''s user.';
    ELSIF device_id IS NULL THEN
        RAISE EXCEPTION 'device_id must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass a stable identifier of the device, 1 to 255 characters.';
    ELSIF device_id = '' OR length(device_id) > 255 THEN
        RAISE EXCEPTION 'device_id must be 1 to 255 characters, got %', length(device_id)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a stable identifier of the device, 1 to 255 characters.';
    ELSIF device_id ~ '[[:cntrl:]]' THEN
        RAISE EXCEPTION 'device_id must not contain control characters'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a stable identifier of the device, 1 to 255 printable characters.';
    END IF;
    IF claims IS NOT NULL THEN
        claimed := claims::jsonb ->> 'user_id';
        IF claimed IS NOT NULL AND claimed IS DISTINCT FROM user_id::text THEN
            RAISE EXCEPTION 'user_id % does not match the authenticated user', user_id
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'A device can only act on its own user''s sync state.';
        END IF;
    END IF;
END
$$;

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
RETURNS json LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Every statement is planned at each call, with the position, the page size
-- and the models known: a generic plan (which the plan cache would otherwise
-- switch to after a few calls, its estimate looking no worse) does not know
-- that a wanted model is rare or absent, and reads the log by id looking
-- for it, hundreds of milliseconds on a log of a million events.
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    purged bigint;
    wanted text[];
    cursor_id bigint;
    prev_sync timestamptz;
    pos bigint;
    resync boolean := false;
    lim integer := sync_pull."limit";
    events_json json;
    n integer;
    last_id bigint;
    more boolean;
    newest bigint;
    per_model text;
    more_seen boolean;
BEGIN
    PERFORM bridgecore._check_device(sync_pull.user_id, sync_pull.device_id);
    PERFORM bridgecore._check_limit(lim, 'limit', 500);
    IF sync_pull.app_type IS NULL THEN
        RAISE EXCEPTION 'app_type must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Known app types: ' || (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM bridgecore.app_type a) || '.';
    END IF;
    SELECT a.models INTO wanted FROM bridgecore.app_type a WHERE a.name = sync_pull.app_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown app_type "%"', left(sync_pull.app_type, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known app types: ' || (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM bridgecore.app_type a) || '.';
    END IF;
    IF cardinality(models_filter) > 0 THEN
        PERFORM bridgecore._check_model_names(models_filter, 'models_filter');
        wanted := ARRAY(SELECT unnest(wanted) INTERSECT SELECT unnest(models_filter));
    END IF;

    -- An omitted instance is the one a 'bc1:' sync_token names, unless the
    -- JWT names one: apps that omit it keep working when an instance is added.
    inst_id := bridgecore._instance_id(coalesce(sync_pull.instance,
        (SELECT i.name FROM bridgecore.instance i
          WHERE i.id = bridgecore._token_instance_id(sync_pull.sync_token)
            AND nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'instance' IS NULL)));
    PERFORM bridgecore._rate_limit('sync_pull', inst_id, sync_pull.user_id, sync_pull.device_id);

    SELECT s.last_event_id, s.last_sync_time INTO cursor_id, prev_sync
      FROM bridgecore.sync_state s
     WHERE s.instance_id = inst_id AND s.user_id = sync_pull.user_id AND s.device_id = sync_pull.device_id
       FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type)
        VALUES (inst_id, sync_pull.user_id, sync_pull.device_id, sync_pull.app_type)
        ON CONFLICT DO NOTHING;
        SELECT s.last_event_id, s.last_sync_time INTO cursor_id, prev_sync
          FROM bridgecore.sync_state s
         WHERE s.instance_id = inst_id AND s.user_id = sync_pull.user_id AND s.device_id = sync_pull.device_id
           FOR UPDATE;
    END IF;

    -- A token names the last answer the app processed: continue from there.
    -- "0" is the starting token: a device's first pull may pass it, so that
    -- a lost first answer can be asked for again.
    pos := cursor_id;
    IF sync_token IS NOT NULL THEN
        pos := bridgecore._token_position(sync_token, inst_id);
        IF pos > cursor_id THEN
            RAISE EXCEPTION 'sync_token is ahead of this device''s sync state'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('The token names event %s; the device''s state is at %s.', pos, cursor_id),
                      HINT = 'Pass a token this device received, or omit it to continue from the stored state.';
        END IF;
    END IF;

    -- Retention drops whole partitions, which no snapshot keeps: a query
    -- that waited for the drop's lock would run on a snapshot from before
    -- it, without the dropped rows and without their horizon. The log is
    -- locked first, so the snapshot of the page comes after any drop it
    -- waited for, and a drop waits for this pull.
    LOCK TABLE ONLY bridgecore.event IN ACCESS SHARE MODE;

    -- One statement, one snapshot: the page, the retention horizon and the
    -- newest visible id agree. Retention removes a prefix of the log, so
    -- every retained event above pos is on the page (or the next ones); the
    -- answer says resync_required exactly when retention removed an event
    -- of a model this device wants above its position (purged records the
    -- highest removed id per model; '*' stands for removals before 0.3.0,
    -- whose models were not recorded).
    --
    -- The page costs what the page holds, not what the log holds. First the
    -- log is read in id order, at most 4 * (lim + 1) events: enough for a
    -- device whose models are a quarter of the log or more, which is the
    -- usual case, and the cheapest read. A device whose models are rarer
    -- gets its page from the (instance, model, id) index instead: the first
    -- lim ids of each wanted model above pos, merged.
    --
    -- json_agg takes the page in the order of the subquery (sorted by id, a
    -- plain aggregate over one subquery), so it does not sort it again.
    SELECT coalesce(json_agg(e.doc), '[]'), count(*), max(e.id),
           (SELECT max(x.id) FROM bridgecore.event x WHERE x.instance_id = inst_id),
           (SELECT max(p.through) FROM bridgecore.purged p
             WHERE p.instance_id = inst_id AND (p.model = ANY (wanted) OR p.model = '*')),
           -- a wanted event after the page, within what was read
           EXISTS (SELECT 1 FROM (SELECT ev.id, ev.model
                                    FROM bridgecore.event ev
                                   WHERE ev.instance_id = inst_id AND ev.id > pos
                                   ORDER BY ev.id
                                   LIMIT 4 * (lim + 1)) s
                    WHERE s.model = ANY (wanted)
                    ORDER BY s.id OFFSET lim LIMIT 1)
      INTO events_json, n, last_id, newest, purged, more_seen
      FROM (SELECT s.id, s.doc
              FROM (SELECT ev.id, ev.doc, ev.model
                      FROM bridgecore.event ev
                     WHERE ev.instance_id = inst_id AND ev.id > pos
                     ORDER BY ev.id
                     LIMIT 4 * (lim + 1)) s
             WHERE s.model = ANY (wanted)
             ORDER BY s.id
             LIMIT lim) e;
    IF n < lim AND cardinality(wanted) > 0
       AND EXISTS (SELECT 1 FROM bridgecore.event x
                    WHERE x.instance_id = inst_id AND x.id > pos
                    ORDER BY x.id OFFSET 4 * (lim + 1) - 1 LIMIT 1) THEN
        -- One branch per wanted model, its name a literal: planned with the
        -- model's own statistics, so the (instance, model, id) index serves
        -- it (a model that is a parameter is planned as an average one, and
        -- a rare or absent one was then looked for by primary key).
        SELECT string_agg(format('(SELECT x.id FROM bridgecore.event x'
                                 ' WHERE x.instance_id = $1 AND x.model = %L AND x.id > $2'
                                 ' ORDER BY x.id LIMIT $3)', w), ' UNION ALL ')
          INTO per_model FROM (SELECT DISTINCT w FROM unnest(wanted) w) m;
        EXECUTE format('SELECT coalesce(json_agg(e.doc), ''[]''), count(*), max(e.id),'
                       '       (SELECT max(x.id) FROM bridgecore.event x WHERE x.instance_id = $1),'
                       '       (SELECT max(p.through) FROM bridgecore.purged p'
                       '         WHERE p.instance_id = $1 AND (p.model = ANY ($4) OR p.model = ''*''))'
                       '  FROM (SELECT ev.id, ev.doc'
                       '          FROM (SELECT k.id FROM (%s) k ORDER BY k.id LIMIT $3) page'
                       '          JOIN bridgecore.event ev ON ev.id = page.id'
                       '         ORDER BY ev.id) e', per_model)
           INTO events_json, n, last_id, newest, purged
          USING inst_id, pos, lim, wanted;
        more_seen := false;
    END IF;
    -- A full page: whether a wanted event follows it, one probe of each
    -- wanted model's index (the models as literals, as above). An event
    -- committed since the page was read has a higher id than any on it
    -- (events commit in id order), so a later snapshot here can only add to
    -- what follows.
    IF n = lim AND more_seen THEN
        more := true;
    ELSIF n = lim THEN
        EXECUTE (SELECT 'SELECT ' || string_agg(format('EXISTS (SELECT 1 FROM bridgecore.event x'
                                                     ' WHERE x.instance_id = $1 AND x.model = %L'
                                                     ' AND x.id > $2)', w), ' OR ')
                   FROM (SELECT DISTINCT w FROM unnest(wanted) w) m)
           INTO more USING inst_id, last_id;
    ELSE
        more := false;
    END IF;
    IF pos < purged THEN
        resync := true;
        IF NOT more THEN
            pos := greatest(pos, purged);
        END IF;
    END IF;

    -- With nothing more to send, the cursor moves past the events this
    -- device does not want, so they are not scanned again.
    IF more THEN
        pos := last_id;
    ELSE
        pos := greatest(pos, newest);
    END IF;

    -- The stored state never moves back: a token replayed from an earlier
    -- answer (a lost answer, a second sync path) is served from its own
    -- position, and every later token issued to this device stays valid.
    UPDATE bridgecore.sync_state s
       SET last_event_id = greatest(s.last_event_id, pos),
           last_sync_time = now(),
           sync_count = s.sync_count + 1,
           last_event_count = n,
           total_events_synced = s.total_events_synced + n,
           app_type = sync_pull.app_type,
           is_active = true,
           device_info = coalesce(sync_pull.device_info, s.device_info),
           app_version = coalesce(sync_pull.app_version, s.app_version)
     WHERE s.instance_id = inst_id AND s.user_id = sync_pull.user_id AND s.device_id = sync_pull.device_id;

    PERFORM bridgecore._count_sync_pull(inst_id, n);
    RETURN json_build_object(
        'status', 'success',
        'has_updates', n > 0,
        'new_events_count', n,
        'events', events_json,
        'next_sync_token', bridgecore._token(inst_id, pos),
        'last_sync_time', bridgecore._iso(prev_sync),
        'has_more', more,
        'resync_required', resync);
END
$$;
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
    inst_id := bridgecore._instance_id(sync_reset.instance);
    PERFORM bridgecore._rate_limit('sync_reset', inst_id, sync_reset.user_id, sync_reset.device_id);
    UPDATE bridgecore.sync_state s
       SET last_event_id = 0, sync_count = 0, last_event_count = 0
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
    inst_id := bridgecore._instance_id(sync_reset_all.instance);
    PERFORM bridgecore._rate_limit('sync_reset', inst_id, sync_reset_all.user_id, '*');
    UPDATE bridgecore.sync_state s
       SET last_event_id = 0, sync_count = 0, last_event_count = 0
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
