-- BridgeCore 0.2.0 -> 0.3.0: hardening. One ingestion path (C) for the
-- worker and ingest(); retention that removes a prefix of each instance's log
-- and records per-model horizons; sync tokens that never move a device's
-- state back; the secret goes only where it was configured to go; gap
-- bookkeeping bounded by the batch.
\echo Use "ALTER EXTENSION bridgecore UPDATE TO '0.3.0'" to load this file. \quit

-------------------------------------------------------------------------------
-- Ingestion: the C implementation serves ingest(), retries and the worker
-------------------------------------------------------------------------------
DROP FUNCTION bridgecore._ingest(integer, json);
CREATE FUNCTION bridgecore._ingest(inst_id integer, events json)
RETURNS jsonb LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_ingest_json';
DROP FUNCTION bridgecore._decode(jsonb);
DROP FUNCTION bridgecore._raw_odoo_id(json);

-- A record without a usable id is kept once per distinct content.
CREATE INDEX dead_letter_idless_idx ON bridgecore.dead_letter (instance_id, pg_catalog.md5(record::text))
    WHERE odoo_id IS NULL;

-- Retries one dead letter: its stored record first (the rules may accept it
-- now, or a valid version was stored meanwhile); if it is still refused, the
-- poller is asked to fetch the row from Odoo again (it may have been
-- corrected there). Stored records keep their Odoo id: nothing is duplicated.
CREATE OR REPLACE FUNCTION bridgecore._retry_dead_letter(dl bridgecore.dead_letter)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb;
BEGIN
    result := bridgecore._ingest(dl.instance_id, json_build_array(dl.record));
    IF (result ->> 'dead_lettered')::bigint = 0 THEN
        UPDATE bridgecore.dead_letter d SET status = 'resolved' WHERE d.id = dl.id;
        RETURN 'resolved';
    END IF;
    -- Still refused: a retry is not a new failure from Odoo.
    UPDATE bridgecore.dead_letter d SET attempts = dl.attempts, last_failed_at = dl.last_failed_at,
                                        status = dl.status
     WHERE d.id = dl.id;
    IF dl.odoo_id IS NULL THEN
        RETURN 'pending';       -- nothing to fetch again without an id
    END IF;
    INSERT INTO bridgecore.gap (instance_id, odoo_id) VALUES (dl.instance_id, dl.odoo_id)
    ON CONFLICT (instance_id, odoo_id) DO UPDATE SET noticed_at = now();
    UPDATE bridgecore.dead_letter d SET status = 'retrying' WHERE d.id = dl.id;
    RETURN 'retrying';
END
$$;

-------------------------------------------------------------------------------
-- Retention: a prefix of each instance's log, with per-model horizons
-------------------------------------------------------------------------------
-- The highest local id retention removed, per instance and model: a device
-- is told resync_required exactly when an event of a model it wants was
-- removed above its position. '*': removals made before 0.3.0.
CREATE TABLE bridgecore.purged (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    model           text NOT NULL,
    through         bigint NOT NULL,
    PRIMARY KEY (instance_id, model)
);
COMMENT ON TABLE bridgecore.purged IS 'Highest event id removed by retention, per instance and model (''*'': any model, before 0.3.0).';
SELECT pg_catalog.pg_extension_config_dump('bridgecore.purged', '');
INSERT INTO bridgecore.purged (instance_id, model, through)
SELECT i.id, '*', i.purged_through FROM bridgecore.instance i WHERE i.purged_through > 0;

-- Deletes, per instance (one, or all), at most batch events from the start
-- of its log that are older than cutoff, stopping at its first newer event,
-- and records the horizons. Returns the events deleted.
CREATE OR REPLACE FUNCTION bridgecore._cleanup_step(cutoff timestamptz, inst_id integer, batch integer)
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target integer;
    n bigint;
    total bigint := 0;
BEGIN
    FOR target IN SELECT x.id FROM bridgecore.instance x
                   WHERE inst_id IS NULL OR x.id = inst_id ORDER BY x.id LOOP
        WITH head AS (
            SELECT ev.id, ev.occurred_at < cutoff AS old FROM bridgecore.event ev
             WHERE ev.instance_id = target ORDER BY ev.id LIMIT batch
        ), victims AS (
            SELECT h.id FROM head h
             WHERE h.id < coalesce((SELECT min(k.id) FROM head k WHERE NOT k.old), 9223372036854775807)
        ), deleted AS (
            DELETE FROM bridgecore.event ev USING victims v
             WHERE ev.id = v.id
            RETURNING ev.id, ev.model
        ), horizon AS (
            INSERT INTO bridgecore.purged AS p (instance_id, model, through)
            SELECT target, d.model, max(d.id) FROM deleted d GROUP BY d.model
            ON CONFLICT (instance_id, model) DO UPDATE SET through = greatest(p.through, EXCLUDED.through)
            RETURNING 1
        ), marked AS (
            UPDATE bridgecore.instance i
               SET purged_through = greatest(i.purged_through, (SELECT max(d.id) FROM deleted d))
             WHERE i.id = target AND EXISTS (SELECT 1 FROM deleted)
            RETURNING 1
        )
        SELECT count(*) INTO n FROM deleted
         WHERE (SELECT count(*) FROM horizon) >= 0 AND (SELECT count(*) FROM marked) >= 0;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION bridgecore.cleanup(before timestamptz DEFAULT NULL, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    cutoff timestamptz := before;
    retention interval := current_setting('bridgecore.retention')::interval;
    batch integer := current_setting('bridgecore.cleanup_batch_size')::integer;
    n bigint;
    total bigint := 0;
BEGIN
    IF cutoff IS NULL THEN
        IF retention <= interval '0' THEN
            RETURN jsonb_build_object('ok', true, 'deleted', 0,
                'message', 'Retention is disabled (bridgecore.retention = 0); pass before to delete');
        END IF;
        cutoff := now() - retention;
    END IF;
    -- Omitted instance: every instance, unless a JWT confines the caller.
    IF cleanup.instance IS NOT NULL
       OR nullif(current_setting('request.jwt.claims', true), '')::jsonb ? 'instance' THEN
        inst_id := bridgecore._instance_id(cleanup.instance);
    END IF;

    -- Bounded batches keep each DELETE short; readers are never blocked by
    -- it. Each instance loses a prefix of its log: an event newer than the
    -- cutoff keeps every later one, so a late row with an old timestamp
    -- waits until the events before it go.
    LOOP
        n := bridgecore._cleanup_step(cutoff, inst_id, batch);
        total := total + n;
        EXIT WHEN n = 0;
    END LOOP;

    RETURN jsonb_build_object(
        'ok', true, 'deleted', total,
        'message', format('Deleted %s events older than %s (up to the first newer event of each instance)',
                          total, bridgecore._iso(cutoff)));
END
$$;


CREATE OR REPLACE VIEW bridgecore.devices AS
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

-------------------------------------------------------------------------------
-- Sync: tokens never move a device back
-------------------------------------------------------------------------------
-- The token parser in C (one implementation, fuzzed): 'bc1:<instance>:<event>',
-- a plain decimal event id, or the starting token "0".
CREATE OR REPLACE FUNCTION bridgecore._token_position(token text, instance_id integer)
RETURNS bigint LANGUAGE c IMMUTABLE PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bridgecore_token_position';

CREATE OR REPLACE FUNCTION bridgecore.sync_pull(
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

    inst_id := bridgecore._instance_id(sync_pull.instance);
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

    -- One statement, one snapshot: the page, the retention horizon and the
    -- newest visible id agree. Retention removes a prefix of the log, so
    -- every retained event above pos is on the page (or the next ones); the
    -- answer says resync_required exactly when retention removed an event
    -- of a model this device wants above its position (purged records the
    -- highest removed id per model; '*' stands for removals before 0.3.0,
    -- whose models were not recorded).
    SELECT coalesce(json_agg(e.doc ORDER BY e.id) FILTER (WHERE e.rn <= lim), '[]'),
           count(*) FILTER (WHERE e.rn <= lim),
           max(e.id) FILTER (WHERE e.rn <= lim),
           count(*) > lim,
           (SELECT max(x.id) FROM bridgecore.event x WHERE x.instance_id = inst_id),
           (SELECT max(p.through) FROM bridgecore.purged p
             WHERE p.instance_id = inst_id AND (p.model = ANY (wanted) OR p.model = '*'))
      INTO events_json, n, last_id, more, newest, purged
      FROM (SELECT ev.id, ev.doc, row_number() OVER (ORDER BY ev.id) AS rn
              FROM bridgecore.event ev
             WHERE ev.instance_id = inst_id
               AND ev.id > pos
               AND ev.model = ANY (wanted)
             ORDER BY ev.id
             LIMIT lim + 1) e;
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


-------------------------------------------------------------------------------
-- Administration: the secret goes only where it was configured to go
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bridgecore._check_instance_settings(
    name text, url text, database text, login text, secret text, source_model text,
    poll_interval interval, batch_size integer)
RETURNS void LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF name IS NOT NULL AND name !~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$' THEN
        RAISE EXCEPTION 'invalid instance name "%"', left(name, 64) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use 1 to 63 letters, digits, "_", "." or "-", starting with a letter or digit.';
    ELSIF url IS NOT NULL AND url !~* '^https?://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^[:space:]?#]*)?$' THEN
        RAISE EXCEPTION 'invalid url "%"', left(url, 200) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use the Odoo base URL, http:// or https://, such as https://erp.example.com.';
    ELSIF database = '' THEN
        RAISE EXCEPTION 'database must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use the name of the Odoo database.';
    ELSIF login = '' THEN
        RAISE EXCEPTION 'login must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use the Odoo user''s login.';
    ELSIF secret = '' THEN
        RAISE EXCEPTION 'secret must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use an Odoo API key (preferred) or the user''s password.';
    ELSIF length(secret) < 8 THEN
        -- Messages are masked wherever the secret appears in them: a short
        -- one would match ordinary text, mangling messages and revealing it.
        RAISE EXCEPTION 'secret must be at least 8 characters, got %', length(secret)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an Odoo API key (40 characters, preferred) or the user''s password.';
    ELSIF source_model IS NOT NULL AND source_model !~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$' THEN
        RAISE EXCEPTION 'invalid source_model "%"', left(source_model, 64) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use an Odoo model name such as update.webhook.';
    ELSIF poll_interval NOT BETWEEN interval '10 milliseconds' AND interval '1 day' THEN
        RAISE EXCEPTION 'poll_interval must be between 10 milliseconds and 1 day, got %', poll_interval
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 1 second.';
    ELSIF batch_size NOT BETWEEN 1 AND 10000 THEN
        RAISE EXCEPTION 'batch_size must be between 1 and 10000, got %', batch_size
            USING ERRCODE = 'invalid_parameter_value', HINT = 'The default is 500.';
    END IF;
END
$$;


CREATE OR REPLACE FUNCTION bridgecore.alter_instance(
    name text,
    url text DEFAULT NULL, database text DEFAULT NULL, login text DEFAULT NULL,
    secret text DEFAULT NULL, source_model text DEFAULT NULL,
    poll_interval interval DEFAULT NULL, batch_size integer DEFAULT NULL,
    enabled boolean DEFAULT NULL, verify_tls boolean DEFAULT NULL,
    new_name text DEFAULT NULL)
RETURNS SETOF bridgecore.instances LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    reconnect boolean;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the instance to change.';
    END IF;
    inst_id := bridgecore._instance_id(alter_instance.name);
    PERFORM bridgecore._check_instance_settings(new_name, url, database, login, secret,
                                                source_model, poll_interval, batch_size);
    IF new_name IS NOT NULL AND new_name <> name
       AND EXISTS (SELECT 1 FROM bridgecore.instance i WHERE i.name = new_name) THEN
        RAISE EXCEPTION 'instance "%" already exists', new_name USING ERRCODE = 'unique_violation',
            HINT = 'Choose another new_name.';
    END IF;
    -- The stored secret goes only where it was configured to go: sending it
    -- to another URL, or without checking the server's certificate, takes
    -- the secret again (or a superuser), so an admin cannot capture it by
    -- pointing the instance at a server of their own.
    IF alter_instance.secret IS NULL
       AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false)
       AND EXISTS (SELECT 1 FROM bridgecore.instance i
                    WHERE i.id = inst_id
                      AND ((alter_instance.url IS NOT NULL AND rtrim(alter_instance.url, '/') <> i.url)
                           OR (alter_instance.verify_tls IS FALSE AND i.verify_tls))) THEN
        RAISE EXCEPTION 'changing where the secret of instance "%" is sent requires the secret', name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A new url, or verify_tls => false, would send the stored secret to another server.',
                  HINT = 'Pass secret => the Odoo API key together with url or verify_tls, or ask a superuser.';
    END IF;
    -- New connection settings deserve an immediate new attempt.
    reconnect := coalesce(url, database, login, secret) IS NOT NULL OR enabled IS NOT NULL;
    UPDATE bridgecore.instance i
       SET name = coalesce(alter_instance.new_name, i.name),
           url = coalesce(rtrim(alter_instance.url, '/'), i.url),
           database = coalesce(alter_instance.database, i.database),
           login = coalesce(alter_instance.login, i.login),
           secret = coalesce(alter_instance.secret, i.secret),
           source_model = coalesce(alter_instance.source_model, i.source_model),
           poll_interval = coalesce(alter_instance.poll_interval, i.poll_interval),
           batch_size = coalesce(alter_instance.batch_size, i.batch_size),
           enabled = coalesce(alter_instance.enabled, i.enabled),
           verify_tls = coalesce(alter_instance.verify_tls, i.verify_tls),
           state = CASE WHEN reconnect THEN 'ok' ELSE i.state END,
           consecutive_failures = CASE WHEN reconnect THEN 0 ELSE i.consecutive_failures END,
           next_attempt_at = CASE WHEN reconnect THEN NULL ELSE i.next_attempt_at END,
           config_version = i.config_version + 1
     WHERE i.id = inst_id;
    PERFORM bridgecore._wake_poller();
    RETURN QUERY SELECT * FROM bridgecore.instances v WHERE v.name = coalesce(alter_instance.new_name, alter_instance.name);
END
$$;


-- An error inside these must not write the statement, which holds the
-- secret, to the server log (log_min_error_statement is error by default).
ALTER FUNCTION bridgecore.add_instance(text, text, text, text, text, text, interval, integer, boolean, boolean)
    SET log_min_error_statement = panic;
ALTER FUNCTION bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text)
    SET log_min_error_statement = panic;

-------------------------------------------------------------------------------
-- Worker support: gaps bounded by the batch
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bridgecore._advance_cursor(inst_id integer, seen bigint[], gap_window interval,
                                           inserted bigint, newest timestamptz,
                                           max_gaps integer DEFAULT 1000,
                                           OUT cursor bigint, OUT gaps bigint[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    old_cursor bigint;
    lowest bigint;
    budget integer;
    prev bigint;
    upto bigint;
    next_id bigint;
BEGIN
    SELECT i.cursor INTO old_cursor FROM bridgecore.instance i WHERE i.id = inst_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'instance % does not exist', inst_id USING ERRCODE = 'undefined_object';
    END IF;
    cursor := greatest(old_cursor, (SELECT max(x) FROM unnest(seen) x));
    -- Gaps given up on: a dead letter waiting for its re-fetch is pending again.
    WITH expired AS (
        DELETE FROM bridgecore.gap g WHERE g.instance_id = inst_id
           AND (g.odoo_id = ANY (seen) OR g.noticed_at < now() - gap_window)
        RETURNING g.odoo_id
    )
    UPDATE bridgecore.dead_letter d SET status = 'pending'
      FROM expired e
     WHERE d.instance_id = inst_id AND d.odoo_id = e.odoo_id AND d.status = 'retrying'
       AND e.odoo_id <> ALL (seen);
    -- New gaps: ids between the old cursor and the new one that Odoo did
    -- not return. On an instance's first batch also the ids just below its
    -- lowest one, which a long Odoo transaction may still commit. The work
    -- is bounded by the batch and max_gaps, never by the distance between
    -- ids: one hole at a time, in id order, each cut to what is left.
    IF cursor > old_cursor THEN
        budget := max_gaps - (SELECT count(*) FROM bridgecore.gap x WHERE x.instance_id = inst_id);
        lowest := CASE WHEN old_cursor = 0
                       THEN greatest(1, (SELECT min(x) FROM unnest(seen) x WHERE x > 0) - max_gaps)
                       ELSE old_cursor + 1 END;
        prev := lowest - 1;
        FOR next_id IN SELECT DISTINCT x FROM unnest(seen) x WHERE x >= lowest ORDER BY x LOOP
            EXIT WHEN budget <= 0;
            IF next_id > prev + 1 THEN
                upto := CASE WHEN next_id - prev - 1 <= budget THEN next_id - 1 ELSE prev + budget END;
                INSERT INTO bridgecore.gap (instance_id, odoo_id)
                SELECT inst_id, g FROM generate_series(prev + 1, upto) g
                ON CONFLICT DO NOTHING;
                budget := budget - (upto - prev)::integer;
            END IF;
            prev := next_id;
        END LOOP;
    END IF;
    gaps := ARRAY(SELECT g.odoo_id FROM bridgecore.gap g WHERE g.instance_id = inst_id ORDER BY g.odoo_id);

    UPDATE bridgecore.instance i
       SET cursor = _advance_cursor.cursor,
           state = 'ok', consecutive_failures = 0, next_attempt_at = NULL,
           last_success_at = now(),
           events_ingested = i.events_ingested + inserted,
           newest_event_at = greatest(i.newest_event_at, newest)
     WHERE i.id = inst_id;
END
$$;


-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA bridgecore FROM PUBLIC;
REVOKE ALL ON bridgecore.purged FROM PUBLIC;
GRANT SELECT ON bridgecore.purged TO bridgecore_admin;
