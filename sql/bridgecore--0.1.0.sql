-- BridgeCore 0.1.0: Odoo change streaming and per-device smart sync.
\echo Use "CREATE EXTENSION bridgecore" to load this file. \quit

-------------------------------------------------------------------------------
-- Roles. Roles are cluster-wide, so they outlive DROP EXTENSION and are only
-- created when missing.
-------------------------------------------------------------------------------
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_app') THEN
        CREATE ROLE bridgecore_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_admin') THEN
        CREATE ROLE bridgecore_admin NOLOGIN;
    END IF;
END
$roles$;
GRANT bridgecore_app TO bridgecore_admin;

-------------------------------------------------------------------------------
-- Types
-------------------------------------------------------------------------------
-- Declared in rank order, so ORDER BY and comparisons follow the rank.
CREATE TYPE bridgecore.priority AS ENUM ('low', 'medium', 'high');
CREATE TYPE bridgecore.event_kind AS ENUM ('create', 'write', 'unlink');
CREATE TYPE bridgecore.dead_letter_status AS ENUM ('pending', 'retrying', 'resolved', 'ignored');

-------------------------------------------------------------------------------
-- Tables
-------------------------------------------------------------------------------
CREATE TABLE bridgecore.instance (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE
                    CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    url             text NOT NULL CHECK (url ~* '^https?://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^[:space:]?#]*)?$'),
    database        text NOT NULL CHECK (database <> ''),
    login           text NOT NULL CHECK (login <> ''),
    secret          text NOT NULL CHECK (secret <> ''),
    source_model    text NOT NULL DEFAULT 'update.webhook'
                    CHECK (source_model ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$'),
    poll_interval   interval NOT NULL DEFAULT '1 second'
                    CHECK (poll_interval BETWEEN '10 milliseconds' AND '1 day'),
    batch_size      integer NOT NULL DEFAULT 500 CHECK (batch_size BETWEEN 1 AND 10000),
    enabled         boolean NOT NULL DEFAULT true,
    verify_tls      boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Runtime status, written by the poller.
    state           text NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'backoff', 'auth_failed')),
    cursor          bigint NOT NULL DEFAULT 0 CHECK (cursor >= 0),
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    events_ingested bigint NOT NULL DEFAULT 0,
    newest_event_at timestamptz,
    -- Highest local event id that cleanup has removed: a device whose
    -- cursor is below it has missed events and must resynchronise.
    purged_through  bigint NOT NULL DEFAULT 0,
    -- Bumped by alter_instance: a running poller restarts with the new settings.
    config_version  integer NOT NULL DEFAULT 1
);
COMMENT ON TABLE bridgecore.instance IS 'One row per Odoo instance (tenant). The secret is readable by no role but the owner.';

-- ISO 8601 UTC, as apps parse it today ("2025-11-16T10:30:00Z").
CREATE FUNCTION bridgecore._iso(ts timestamptz)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;

-- The JSON of one event as sync_pull delivers it. It depends only on the
-- event's own columns, so it is rendered once, when the event is stored
-- (event.doc), and a pull concatenates instead of re-rendering: every event
-- is read by many devices. IMMUTABLE holds: the timestamp format is fixed
-- and UTC, and every other input is a plain value.
CREATE FUNCTION bridgecore._event_doc(
    id bigint, model text, record_id bigint, event bridgecore.event_kind,
    occurred_at timestamptz, priority bridgecore.priority, category text,
    payload jsonb, changed_fields text[], odoo_user_id bigint)
RETURNS json LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.json_build_object(
        'id', id, 'model', model, 'record_id', record_id, 'event', event,
        'timestamp', bridgecore._iso(occurred_at),
        'priority', priority, 'category', category, 'payload', payload,
        'changed_fields', changed_fields, 'user_id', odoo_user_id)
$$;

CREATE TABLE bridgecore.event (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    odoo_id         bigint NOT NULL,
    model           text NOT NULL,
    record_id       bigint NOT NULL,
    event           bridgecore.event_kind NOT NULL,
    priority        bridgecore.priority,
    category        text,
    payload         jsonb,
    changed_fields  text[],
    odoo_user_id    bigint,
    odoo_user_name  text,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    doc             json NOT NULL GENERATED ALWAYS AS (bridgecore._event_doc(
                        id, model, record_id, event, occurred_at, priority, category,
                        payload, changed_fields, odoo_user_id)) STORED,
    UNIQUE (instance_id, odoo_id)
);
COMMENT ON TABLE bridgecore.event IS 'Odoo change events; id is the devices'' cursor and follows commit order.';
CREATE INDEX event_instance_id_idx ON bridgecore.event (instance_id, id);
CREATE INDEX event_occurred_at_idx ON bridgecore.event (occurred_at);

-- Ids below an instance's cursor that Odoo did not show yet: an Odoo
-- transaction that took a lower id may commit after a higher one. The poller
-- asks for them again until bridgecore.gap_window has passed.
CREATE TABLE bridgecore.gap (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    odoo_id         bigint NOT NULL,
    noticed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, odoo_id)
);

CREATE TABLE bridgecore.app_type (
    name            text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    models          text[] NOT NULL,
    is_default      boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bridgecore.app_type IS 'Which Odoo models each kind of app syncs.';

INSERT INTO bridgecore.app_type (name, models, is_default) VALUES
    ('sales_app', '{sale.order,sale.order.line,res.partner,product.template,product.product,product.category,mail.message,mail.channel}', true),
    ('delivery_app', '{stock.picking,stock.move,stock.move.line,res.partner,mail.message,mail.channel}', true),
    ('warehouse_app', '{stock.picking,stock.move,stock.move.line,stock.quant,product.product,stock.location,mail.message,mail.channel}', true),
    ('manager_app', '{sale.order,purchase.order,account.move,res.partner,hr.expense,project.project,mail.message,mail.channel}', true),
    ('mobile_app', '{sale.order,res.partner,product.template,product.product,mail.message,mail.channel}', true),
    ('messaging_app', '{mail.message,mail.channel,res.partner,res.users}', true);

CREATE TABLE bridgecore.sync_state (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    user_id         bigint NOT NULL CHECK (user_id > 0),
    device_id       text NOT NULL,
    app_type        text NOT NULL,
    last_event_id   bigint NOT NULL DEFAULT 0,
    last_sync_time  timestamptz,
    sync_count      bigint NOT NULL DEFAULT 0,
    last_event_count integer NOT NULL DEFAULT 0,
    total_events_synced bigint NOT NULL DEFAULT 0,
    is_active       boolean NOT NULL DEFAULT true,
    device_info     jsonb,
    app_version     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, user_id, device_id)
);
COMMENT ON TABLE bridgecore.sync_state IS 'Per (instance, user, device) sync cursor.';

CREATE TABLE bridgecore.dead_letter (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    odoo_id         bigint,
    -- json, not jsonb: the raw record may hold what jsonb cannot (\u0000).
    record          json NOT NULL,
    reason          text NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 1,
    status          bridgecore.dead_letter_status NOT NULL DEFAULT 'pending',
    note            text
);
COMMENT ON TABLE bridgecore.dead_letter IS 'Odoo records that could not be ingested, with the reason.';
CREATE UNIQUE INDEX dead_letter_instance_odoo_id_idx
    ON bridgecore.dead_letter (instance_id, odoo_id) WHERE odoo_id IS NOT NULL;

-- pg_dump keeps user-defined app types; on restore, a dumped override of a
-- built-in app type replaces the row CREATE EXTENSION inserted.
CREATE FUNCTION bridgecore._app_type_replace_default() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM bridgecore.app_type a WHERE a.name = NEW.name AND a.is_default;
    RETURN NEW;
END
$$;
CREATE TRIGGER app_type_replace_default BEFORE INSERT ON bridgecore.app_type
    FOR EACH ROW WHEN (NOT NEW.is_default) EXECUTE FUNCTION bridgecore._app_type_replace_default();

-- pg_dump keeps the data of configuration tables.
SELECT pg_catalog.pg_extension_config_dump('bridgecore.instance', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.event', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.sync_state', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.dead_letter', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.gap', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.app_type', 'WHERE NOT is_default');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('bridgecore.instance', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('bridgecore.event', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('bridgecore.dead_letter', 'id'), '');

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------
CREATE VIEW bridgecore.instances WITH (security_barrier) AS
SELECT i.name, i.url, i.database, i.login, i.source_model, i.poll_interval,
       i.batch_size, i.enabled, i.verify_tls,
       CASE WHEN i.enabled THEN i.state ELSE 'disabled' END AS state,
       i.cursor, i.last_success_at, i.last_error, i.last_error_at,
       i.consecutive_failures, i.next_attempt_at, i.events_ingested,
       now() - i.newest_event_at AS lag,
       i.purged_through, i.created_at
  FROM bridgecore.instance i;
COMMENT ON VIEW bridgecore.instances IS 'Odoo instances and their poller status, without secrets.';

-------------------------------------------------------------------------------
-- Internal helpers (not granted to anyone; called by the functions below,
-- which run as the extension owner)
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._rate_limit(kind text, instance_id integer, user_id bigint, device_id text)
RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_rate_limit';

CREATE FUNCTION bridgecore._odoo_timestamp(text)
RETURNS timestamptz LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bridgecore_odoo_timestamp';
COMMENT ON FUNCTION bridgecore._odoo_timestamp(text) IS 'Odoo naive UTC datetime text to timestamptz; NULL when malformed.';

-- Resolves an instance name to its id. NULL is allowed only when exactly
-- one instance exists.
CREATE FUNCTION bridgecore._instance_id(instance text)
RETURNS integer LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_id integer;
    n bigint;
    claims text := nullif(current_setting('request.jwt.claims', true), '');
    claimed text;
BEGIN
    -- A PostgREST caller whose JWT names an instance is confined to it.
    IF claims IS NOT NULL THEN
        claimed := claims::jsonb ->> 'instance';
        IF claimed IS NOT NULL THEN
            IF instance IS NOT NULL AND instance IS DISTINCT FROM claimed THEN
                RAISE EXCEPTION 'instance "%" does not match the authenticated instance', left(instance, 64)
                    USING ERRCODE = 'insufficient_privilege',
                          HINT = 'Omit instance, or pass the one your token is for.';
            END IF;
            instance := claimed;
        END IF;
    END IF;
    IF instance IS NOT NULL THEN
        SELECT i.id INTO found_id FROM bridgecore.instance i WHERE i.name = instance;
        IF NOT FOUND THEN
            -- A caller confined by its token learns no other instance's name.
            RAISE EXCEPTION 'unknown instance "%"', instance
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = CASE WHEN claimed IS NOT NULL THEN 'Check the instance named by your token.'
                                  ELSE 'Known instances: ' || coalesce((SELECT string_agg(i.name, ', ' ORDER BY i.name) FROM bridgecore.instance i), 'none') || '.' END;
        END IF;
        RETURN found_id;
    END IF;
    SELECT min(i.id), count(*) INTO found_id, n FROM bridgecore.instance i;
    IF n = 1 THEN
        RETURN found_id;
    ELSIF n = 0 THEN
        RAISE EXCEPTION 'no Odoo instance is configured'
            USING ERRCODE = 'object_not_in_prerequisite_state',
                  HINT = 'An administrator adds one with bridgecore.add_instance().';
    END IF;
    RAISE EXCEPTION 'instance must be given when several instances exist'
        USING ERRCODE = 'null_value_not_allowed',
              HINT = 'Pass instance => one of: ' || (SELECT string_agg(i.name, ', ' ORDER BY i.name) FROM bridgecore.instance i) || '.';
END
$$;

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

-- Sync tokens: 'bc1:<instance id>:<event id>'. Today's plain decimal event
-- id is accepted too. Returns the event id.
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

CREATE FUNCTION bridgecore._token_position(token text, instance_id integer)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    parts text[];
BEGIN
    IF token ~ '^[0-9]{1,18}$' THEN
        RETURN token::bigint;
    END IF;
    parts := regexp_match(token, '^bc1:([0-9]{1,9}):([0-9]{1,18})$');
    IF parts IS NULL THEN
        RAISE EXCEPTION 'malformed sync_token "%"', left(token, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass back the next_sync_token of a previous answer unchanged, or omit it.';
    END IF;
    IF parts[1]::integer <> instance_id THEN
        RAISE EXCEPTION 'sync_token belongs to another instance'
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass the token with the instance whose answer it came from, or omit it.';
    END IF;
    RETURN parts[2]::bigint;
END
$$;

CREATE FUNCTION bridgecore._token(instance_id integer, pos bigint)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 'bc1:' || instance_id || ':' || pos $$;

CREATE FUNCTION bridgecore._check_limit(value integer, name text, max_value integer)
RETURNS void LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF value IS NULL THEN
        RAISE EXCEPTION '% must not be null', name USING ERRCODE = 'null_value_not_allowed',
            HINT = format('Pass a value from 1 to %s, or omit it for the default.', max_value);
    ELSIF value NOT BETWEEN 1 AND max_value THEN
        RAISE EXCEPTION '% must be between 1 and %, got %', name, max_value, value
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = format('Pass a value from 1 to %s.', max_value);
    END IF;
END
$$;

CREATE FUNCTION bridgecore._check_model_names(models text[], name text)
RETURNS void LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF array_position(models, NULL) IS NOT NULL THEN
        RAISE EXCEPTION '% must not contain null', name USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass Odoo model names such as sale.order.';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(models) m WHERE m !~ '^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$' OR length(m) > 128) THEN
        RAISE EXCEPTION '% holds an invalid model name', name USING ERRCODE = 'invalid_parameter_value',
            DETAIL = 'Invalid: ' || (SELECT string_agg(quote_literal(left(m, 64)), ', ')
                                       FROM unnest(models) m
                                      WHERE m !~ '^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$' OR length(m) > 128) || '.',
            HINT = 'Pass Odoo model names such as sale.order.';
    END IF;
END
$$;

-------------------------------------------------------------------------------
-- Ingestion
-------------------------------------------------------------------------------
-- Decodes one record as Odoo's search_read returns it. problem is NULL for a
-- storable record, else the reason it goes to dead_letter. A single SQL
-- SELECT, so the planner inlines it into ingestion's set-based INSERT
-- (one row in, one row out) instead of calling it per record.
CREATE FUNCTION bridgecore._decode(r jsonb)
RETURNS TABLE (odoo_id bigint, model text, record_id bigint, event bridgecore.event_kind,
               priority bridgecore.priority, category text, payload jsonb,
               changed_fields text[], odoo_user_id bigint, odoo_user_name text,
               occurred_at timestamptz, problem text)
LANGUAGE sql STABLE
AS $$
SELECT v.odoo_id, v.model, v.record_id, v.event, v.priority, v.category, v.payload,
       v.changed_fields, v.odoo_user_id, v.odoo_user_name, v.occurred_at,
       CASE
           WHEN jsonb_typeof(r) IS DISTINCT FROM 'object' THEN 'record is not a JSON object'
           WHEN v.odoo_id IS NULL THEN 'missing or invalid id'
           WHEN v.model IS NULL THEN 'missing model'
           WHEN length(v.model) > 128 OR v.model !~ '^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$' THEN 'invalid model name'
           WHEN v.record_id IS NULL THEN 'missing or invalid record_id'
           WHEN v.event IS NULL THEN 'unknown event ' || coalesce(left((r -> 'event')::text, 64), 'null')
           WHEN v.occurred_at IS NULL THEN 'invalid timestamp ' || coalesce(left((r -> 'timestamp')::text, 64), 'null')
           -- Optional fields: missing, null and Odoo's false all mean "empty".
           WHEN v.priority IS NULL AND coalesce(r -> 'priority', 'null') NOT IN ('null', 'false')
               THEN 'unknown priority ' || left((r -> 'priority')::text, 64)
           WHEN v.category IS NULL AND coalesce(r -> 'category', 'null') NOT IN ('null', 'false')
               THEN 'invalid category ' || left((r -> 'category')::text, 64)
           WHEN v.odoo_user_id IS NULL AND coalesce(r -> 'user_id', 'null') NOT IN ('null', 'false')
               THEN 'invalid user_id ' || left((r -> 'user_id')::text, 64)
       END
  FROM (SELECT
            CASE WHEN n.id = trunc(n.id) AND n.id BETWEEN 1 AND 9223372036854775807 THEN n.id::bigint END AS odoo_id,
            CASE WHEN jsonb_typeof(r -> 'model') = 'string' AND r ->> 'model' <> '' THEN r ->> 'model' END AS model,
            CASE WHEN n.rec = trunc(n.rec) AND n.rec <> 0
                      AND n.rec BETWEEN -9223372036854775808 AND 9223372036854775807 THEN n.rec::bigint END AS record_id,
            CASE WHEN jsonb_typeof(r -> 'event') = 'string' AND r ->> 'event' IN ('create', 'write', 'unlink')
                 THEN (r ->> 'event')::bridgecore.event_kind END AS event,
            CASE WHEN jsonb_typeof(r -> 'timestamp') = 'string'
                 THEN bridgecore._odoo_timestamp(r ->> 'timestamp') END AS occurred_at,
            CASE WHEN jsonb_typeof(r -> 'priority') = 'string' AND r ->> 'priority' IN ('low', 'medium', 'high')
                 THEN (r ->> 'priority')::bridgecore.priority END AS priority,
            CASE WHEN jsonb_typeof(r -> 'category') = 'string' AND length(r ->> 'category') BETWEEN 1 AND 64
                 THEN r ->> 'category' END AS category,
            CASE WHEN coalesce(r -> 'payload', 'null') NOT IN ('null', 'false') THEN r -> 'payload' END AS payload,
            CASE WHEN jsonb_typeof(r -> 'payload' -> '_changed_fields') = 'array'
                 THEN ARRAY(SELECT jsonb_array_elements_text(r -> 'payload' -> '_changed_fields')) END AS changed_fields,
            CASE WHEN n.uid = trunc(n.uid) AND n.uid BETWEEN 1 AND 9223372036854775807 THEN n.uid::bigint END AS odoo_user_id,
            CASE WHEN n.uid IS NOT NULL THEN r -> 'user_id' ->> 1 END AS odoo_user_name
          FROM (SELECT
                    CASE WHEN jsonb_typeof(r -> 'id') = 'number' THEN (r ->> 'id')::numeric END AS id,
                    CASE WHEN jsonb_typeof(r -> 'record_id') = 'number' THEN (r ->> 'record_id')::numeric END AS rec,
                    CASE WHEN jsonb_typeof(r -> 'user_id') = 'array' AND jsonb_array_length(r -> 'user_id') = 2
                              AND jsonb_typeof(r -> 'user_id' -> 0) = 'number'
                              AND jsonb_typeof(r -> 'user_id' -> 1) = 'string'
                         THEN (r -> 'user_id' ->> 0)::numeric END AS uid) n) v
$$;

-- The top-level "id" of a record that jsonb cannot hold. Reading a json
-- value de-escapes every string, so escapes are neutralised first: string
-- contents get mangled, which does not matter for the id.
CREATE FUNCTION bridgecore._raw_odoo_id(elem json)
RETURNS bigint LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    neutral json := regexp_replace(replace(elem::text, '\\', '__'), '\\u[0-9A-Fa-f]{4}', '______', 'g')::json;
    id_text text;
BEGIN
    IF json_typeof(neutral) = 'object' AND json_typeof(neutral -> 'id') = 'number' THEN
        id_text := neutral ->> 'id';
        IF id_text ~ '^[0-9]{1,18}(\.0*)?$' THEN
            RETURN trunc(id_text::numeric)::bigint;
        END IF;
    END IF;
    RETURN NULL;
END
$$;

-- The ingestion path shared by bridgecore.ingest() and the poller.
CREATE FUNCTION bridgecore._ingest(inst_id integer, events json)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_name text;
    batch jsonb;
    elem json;
    good jsonb := '[]';
    unstorable integer := 0;
    unstorable_max bigint;
    raw_id bigint;
    result jsonb;
BEGIN
    IF events IS NULL THEN
        RAISE EXCEPTION 'events must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass a JSON array of update.webhook records as search_read returns them.';
    ELSIF json_typeof(events) <> 'array' THEN
        RAISE EXCEPTION 'events must be a JSON array, got %', json_typeof(events)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Pass a JSON array of update.webhook records as search_read returns them.';
    END IF;
    SELECT i.name INTO inst_name FROM bridgecore.instance i WHERE i.id = inst_id;

    -- Ordering guarantee: event ids are assigned under this lock, held until
    -- commit, so ids become visible in increasing order and a device that
    -- has seen id N never later misses an id below N.
    PERFORM pg_advisory_xact_lock('bridgecore.event'::regclass::oid::integer, 0);

    -- Fast path: the whole batch converts to jsonb. It fails only when a
    -- string holds what jsonb cannot store (\u0000, lone surrogates); then
    -- each record is converted alone and the unstorable ones dead-lettered.
    BEGIN
        batch := events::jsonb;
    EXCEPTION WHEN OTHERS THEN
        batch := NULL;
    END;
    IF batch IS NULL THEN
        FOR elem IN SELECT e FROM json_array_elements(events) e LOOP
            BEGIN
                good := good || jsonb_build_array(elem::jsonb);
            EXCEPTION WHEN OTHERS THEN
                raw_id := bridgecore._raw_odoo_id(elem);
                INSERT INTO bridgecore.dead_letter AS d (instance_id, odoo_id, record, reason)
                VALUES (inst_id, raw_id, elem, 'unstorable record: ' || SQLERRM)
                ON CONFLICT (instance_id, odoo_id) WHERE odoo_id IS NOT NULL DO UPDATE
                    SET record = EXCLUDED.record, reason = EXCLUDED.reason,
                        last_failed_at = now(), attempts = d.attempts + 1, status = 'pending';
                unstorable := unstorable + 1;
                unstorable_max := greatest(unstorable_max, raw_id);
            END;
        END LOOP;
        batch := good;
    END IF;

    WITH decoded AS (
        SELECT t.ord, t.r, d.*
          FROM jsonb_array_elements(batch) WITH ORDINALITY AS t(r, ord),
               LATERAL bridgecore._decode(t.r) AS d
    ), inserted AS (
        INSERT INTO bridgecore.event (instance_id, odoo_id, model, record_id, event, priority,
                                      category, payload, changed_fields, odoo_user_id,
                                      odoo_user_name, occurred_at)
        SELECT inst_id, odoo_id, model, record_id, event, priority, category, payload,
               changed_fields, odoo_user_id, odoo_user_name, occurred_at
          FROM decoded
         WHERE problem IS NULL
         ORDER BY odoo_id
        ON CONFLICT (instance_id, odoo_id) DO NOTHING
        RETURNING id, model, priority
    ), dead AS (
        INSERT INTO bridgecore.dead_letter AS d (instance_id, odoo_id, record, reason)
        SELECT DISTINCT ON (coalesce(odoo_id, -ord)) inst_id, odoo_id, r::json, problem
          FROM decoded
         WHERE problem IS NOT NULL
         ORDER BY coalesce(odoo_id, -ord), ord DESC
        ON CONFLICT (instance_id, odoo_id) WHERE odoo_id IS NOT NULL DO UPDATE
            SET record = EXCLUDED.record, reason = EXCLUDED.reason,
                last_failed_at = now(), attempts = d.attempts + 1, status = 'pending'
        RETURNING 1
    ), notified AS (
        -- One NOTIFY per model; the payload is bounded (instance names and
        -- model names are length-checked), whatever the batch size.
        SELECT count(pg_notify('bridgecore_events', json_build_object(
                   'instance', inst_name, 'model', g.model, 'count', g.n,
                   'max_id', g.max_id, 'high', g.high)::text)) AS channels
          FROM (SELECT model, count(*) AS n, max(id) AS max_id,
                       count(*) FILTER (WHERE priority = 'high') AS high
                  FROM inserted GROUP BY model) g
    )
    SELECT jsonb_build_object(
               'instance', inst_name,
               'inserted', (SELECT count(*) FROM inserted),
               'duplicates', (SELECT count(*) FROM decoded WHERE problem IS NULL) - (SELECT count(*) FROM inserted),
               'dead_lettered', (SELECT count(*) FROM dead) + unstorable,
               'max_odoo_id', greatest((SELECT max(odoo_id) FROM decoded), unstorable_max),
               'notifications', (SELECT channels FROM notified))
      INTO result;
    RETURN result;
END
$$;
CREATE FUNCTION bridgecore.ingest(instance text, events json)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._ingest(bridgecore._instance_id(instance), events);
END
$$;
COMMENT ON FUNCTION bridgecore.ingest(text, json) IS 'Stores a batch of update.webhook records exactly once; malformed ones go to dead_letter.';

-------------------------------------------------------------------------------
-- Smart sync (per user and device)
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

    -- One statement, one snapshot: the page, the cleanup horizon and the
    -- newest visible id agree. If cleanup removed events this device never
    -- saw (its position is below the horizon), the page starts at the
    -- horizon and the answer says resync_required.
    SELECT coalesce(json_agg(e.doc ORDER BY e.id) FILTER (WHERE e.rn <= lim), '[]'),
           count(*) FILTER (WHERE e.rn <= lim),
           max(e.id) FILTER (WHERE e.rn <= lim),
           count(*) > lim,
           (SELECT max(x.id) FROM bridgecore.event x WHERE x.instance_id = inst_id),
           (SELECT i.purged_through FROM bridgecore.instance i WHERE i.id = inst_id)
      INTO events_json, n, last_id, more, newest, purged
      FROM (SELECT ev.id, ev.doc, row_number() OVER (ORDER BY ev.id) AS rn
              FROM bridgecore.event ev
             WHERE ev.instance_id = inst_id
               AND ev.id > greatest(pos, (SELECT i.purged_through FROM bridgecore.instance i WHERE i.id = inst_id))
               AND ev.model = ANY (wanted)
             ORDER BY ev.id
             LIMIT lim + 1) e;
    IF pos < purged THEN
        resync := true;
        pos := purged;
    END IF;

    -- With nothing more to send, the cursor moves past the events this
    -- device does not want, so they are not scanned again.
    IF more THEN
        pos := last_id;
    ELSE
        pos := greatest(pos, newest);
    END IF;

    UPDATE bridgecore.sync_state s
       SET last_event_id = pos,
           last_sync_time = now(),
           sync_count = s.sync_count + 1,
           last_event_count = n,
           total_events_synced = s.total_events_synced + n,
           app_type = sync_pull.app_type,
           is_active = true,
           device_info = coalesce(sync_pull.device_info, s.device_info),
           app_version = coalesce(sync_pull.app_version, s.app_version)
     WHERE s.instance_id = inst_id AND s.user_id = sync_pull.user_id AND s.device_id = sync_pull.device_id;

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

-------------------------------------------------------------------------------
-- Event queries (v1)
-------------------------------------------------------------------------------
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
#variable_conflict use_column
DECLARE
    inst_id integer;
    kind bridgecore.event_kind;
    prio bridgecore.priority;
    data jsonb;
    n integer;
BEGIN
    PERFORM bridgecore._check_limit(events."limit", 'limit', 1000);
    IF events."offset" IS NULL OR events."offset" < 0 THEN
        RAISE EXCEPTION 'offset must be zero or positive, got %', coalesce(events."offset"::text, 'null')
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass 0 or more, or omit it.';
    END IF;
    IF events.event IS NOT NULL THEN
        IF events.event NOT IN ('create', 'write', 'unlink') THEN
            RAISE EXCEPTION 'unknown event type "%"', left(events.event, 64)
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Event types: create, write, unlink.';
        END IF;
        kind := events.event::bridgecore.event_kind;
    END IF;
    IF events.priority IS NOT NULL THEN
        IF events.priority NOT IN ('low', 'medium', 'high') THEN
            RAISE EXCEPTION 'unknown priority "%"', left(events.priority, 64)
                USING ERRCODE = 'invalid_parameter_value', HINT = 'Priorities: high, medium, low.';
        END IF;
        prio := events.priority::bridgecore.priority;
    END IF;
    inst_id := bridgecore._instance_id(events.instance);

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'id', e.id, 'model', e.model, 'record_id', e.record_id, 'event', e.event,
               'occurred_at', bridgecore._iso(e.occurred_at), 'priority', e.priority,
               'category', e.category, 'payload', e.payload,
               'changed_fields', e.changed_fields, 'user_id', e.odoo_user_id,
               'user_name', e.odoo_user_name) ORDER BY e.id DESC), '[]'),
           count(*)
      INTO data, n
      FROM (SELECT ev.* FROM bridgecore.event ev
             WHERE ev.instance_id = inst_id
               AND (events.model_name IS NULL OR ev.model = events.model_name)
               AND (events.record_id IS NULL OR ev.record_id = events.record_id)
               AND (kind IS NULL OR ev.event = kind)
               AND (events.since IS NULL OR ev.occurred_at >= events.since)
               AND (prio IS NULL OR ev.priority = prio)
               AND (events.category IS NULL OR ev.category = events.category)
             ORDER BY ev.id DESC
             LIMIT events."limit" OFFSET events."offset") e;
    RETURN jsonb_build_object('status', 'success', 'count', n, 'data', data);
END
$$;
COMMENT ON FUNCTION bridgecore.events(text, bigint, text, timestamptz, integer, integer, text, text, text)
    IS 'Stored events, newest first, with optional filters.';

CREATE FUNCTION bridgecore.check_updates(
    since timestamptz DEFAULT NULL,
    "limit" integer DEFAULT 200,
    instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    result jsonb;
BEGIN
    PERFORM bridgecore._check_limit(check_updates."limit", 'limit', 1000);
    inst_id := bridgecore._instance_id(check_updates.instance);
    -- Summarises the newest "limit" events at or after since.
    WITH recent AS (
        SELECT ev.model, ev.occurred_at FROM bridgecore.event ev
         WHERE ev.instance_id = inst_id
           AND (check_updates.since IS NULL OR ev.occurred_at >= check_updates.since)
         ORDER BY ev.id DESC
         LIMIT check_updates."limit"
    )
    SELECT jsonb_build_object(
               'has_update', count(*) > 0,
               'last_update_at', bridgecore._iso(max(r.occurred_at)),
               'summary', coalesce((SELECT jsonb_agg(jsonb_build_object('model', g.model, 'count', g.n)
                                                     ORDER BY g.n DESC, g.model)
                                      FROM (SELECT model, count(*) AS n FROM recent GROUP BY model) g), '[]'))
      INTO result
      FROM recent r;
    RETURN result;
END
$$;
COMMENT ON FUNCTION bridgecore.check_updates(timestamptz, integer, text) IS 'Per-model summary of recent events.';

-------------------------------------------------------------------------------
-- Cleanup
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore.cleanup(before timestamptz DEFAULT NULL, instance text DEFAULT NULL)
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
    -- it, and devices whose cursor is below a deleted id get resync_required.
    LOOP
        WITH victims AS (
            SELECT ev.id FROM bridgecore.event ev
             WHERE ev.occurred_at < cutoff AND (inst_id IS NULL OR ev.instance_id = inst_id)
             LIMIT batch
        ), deleted AS (
            DELETE FROM bridgecore.event ev USING victims v
             WHERE ev.id = v.id
            RETURNING ev.instance_id, ev.id
        ), marked AS (
            UPDATE bridgecore.instance i
               SET purged_through = greatest(i.purged_through, m.max_id)
              FROM (SELECT d.instance_id, max(d.id) AS max_id FROM deleted d GROUP BY d.instance_id) m
             WHERE i.id = m.instance_id
            RETURNING 1
        )
        SELECT count(*) INTO n FROM deleted WHERE (SELECT count(*) FROM marked) >= 0;
        total := total + n;
        EXIT WHEN n < batch;
    END LOOP;

    RETURN jsonb_build_object(
        'ok', true, 'deleted', total,
        'message', format('Deleted %s events older than %s', total, bridgecore._iso(cutoff)));
END
$$;
COMMENT ON FUNCTION bridgecore.cleanup(timestamptz, text) IS 'Deletes events older than before (default: now - bridgecore.retention).';

-------------------------------------------------------------------------------
-- Administration
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._check_instance_settings(
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

CREATE FUNCTION bridgecore.add_instance(
    name text, url text, database text, login text, secret text,
    source_model text DEFAULT 'update.webhook',
    poll_interval interval DEFAULT '1 second',
    batch_size integer DEFAULT 500,
    enabled boolean DEFAULT true,
    verify_tls boolean DEFAULT true)
RETURNS SETOF bridgecore.instances LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF name IS NULL OR url IS NULL OR database IS NULL OR login IS NULL OR secret IS NULL
       OR source_model IS NULL OR poll_interval IS NULL OR batch_size IS NULL
       OR enabled IS NULL OR verify_tls IS NULL THEN
        RAISE EXCEPTION 'add_instance arguments must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Give name, url, database, login and secret; omit the others for their defaults.';
    END IF;
    PERFORM bridgecore._check_instance_settings(name, url, database, login, secret,
                                                source_model, poll_interval, batch_size);
    IF EXISTS (SELECT 1 FROM bridgecore.instance i WHERE i.name = add_instance.name) THEN
        RAISE EXCEPTION 'instance "%" already exists', name USING ERRCODE = 'unique_violation',
            HINT = 'Use bridgecore.alter_instance() to change it.';
    END IF;
    INSERT INTO bridgecore.instance (name, url, database, login, secret, source_model,
                                     poll_interval, batch_size, enabled, verify_tls)
    VALUES (add_instance.name, rtrim(add_instance.url, '/'), add_instance.database,
            add_instance.login, add_instance.secret, add_instance.source_model,
            add_instance.poll_interval, add_instance.batch_size, add_instance.enabled,
            add_instance.verify_tls);
    PERFORM bridgecore._wake_poller();
    RETURN QUERY SELECT * FROM bridgecore.instances v WHERE v.name = add_instance.name;
END
$$;
COMMENT ON FUNCTION bridgecore.add_instance(text, text, text, text, text, text, interval, integer, boolean, boolean)
    IS 'Registers an Odoo instance to pull events from.';

CREATE FUNCTION bridgecore.alter_instance(
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
COMMENT ON FUNCTION bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text)
    IS 'Changes an Odoo instance; omitted (null) arguments keep their value.';

CREATE FUNCTION bridgecore.remove_instance(name text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    n_events bigint;
    n_states bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the instance to remove.';
    END IF;
    inst_id := bridgecore._instance_id(remove_instance.name);
    SELECT count(*) INTO n_events FROM bridgecore.event e WHERE e.instance_id = inst_id;
    SELECT count(*) INTO n_states FROM bridgecore.sync_state s WHERE s.instance_id = inst_id;
    DELETE FROM bridgecore.instance i WHERE i.id = inst_id;
    PERFORM bridgecore._wake_poller();
    RETURN jsonb_build_object('ok', true, 'instance', name,
                              'events_deleted', n_events, 'sync_states_deleted', n_states);
END
$$;
COMMENT ON FUNCTION bridgecore.remove_instance(text) IS 'Removes an Odoo instance with its events, sync states and dead letters.';

CREATE FUNCTION bridgecore.set_app_type(name text, models text[])
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    clean text[];
BEGIN
    IF name IS NULL OR models IS NULL THEN
        RAISE EXCEPTION 'name and models must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Example: bridgecore.set_app_type(''field_app'', ARRAY[''project.task'', ''res.partner'']).';
    ELSIF name !~ '^[A-Za-z0-9_.-]{1,64}$' THEN
        RAISE EXCEPTION 'invalid app type name "%"', left(name, 64) USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use 1 to 64 letters, digits, "_", "." or "-".';
    ELSIF cardinality(models) = 0 THEN
        RAISE EXCEPTION 'models must not be empty' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'List the Odoo models the app syncs.';
    END IF;
    PERFORM bridgecore._check_model_names(models, 'models');
    clean := ARRAY(SELECT DISTINCT m FROM unnest(models) m ORDER BY m);
    INSERT INTO bridgecore.app_type AS a (name, models, is_default)
    VALUES (set_app_type.name, clean, false)
    ON CONFLICT (name) DO UPDATE SET models = EXCLUDED.models, is_default = false, updated_at = now();
    RETURN jsonb_build_object('name', name, 'models', to_jsonb(clean));
END
$$;
COMMENT ON FUNCTION bridgecore.set_app_type(text, text[]) IS 'Creates or replaces an app type and its models.';

-------------------------------------------------------------------------------
-- Poller (background worker) support
-------------------------------------------------------------------------------
-- Wakes the poller when the current transaction commits (a rollback wakes
-- nobody), so instance changes take effect at once without polling a table.
CREATE FUNCTION bridgecore._wake_poller()
RETURNS void LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_wake_poller';

-- Moves an instance's cursor past a stored batch, in the transaction that
-- stored it (so a crash at any point neither loses nor duplicates events).
-- seen lists every Odoo id of the batch, stored or dead-lettered. Ids
-- between the old cursor and the new one that Odoo did not return become
-- gaps, asked for again until gap_window has passed. Returns the new cursor
-- and the gaps still open.
CREATE FUNCTION bridgecore._advance_cursor(inst_id integer, seen bigint[], gap_window interval,
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
BEGIN
    SELECT i.cursor INTO old_cursor FROM bridgecore.instance i WHERE i.id = inst_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'instance % does not exist', inst_id USING ERRCODE = 'undefined_object';
    END IF;
    cursor := greatest(old_cursor, (SELECT max(x) FROM unnest(seen) x));
    DELETE FROM bridgecore.gap g WHERE g.instance_id = inst_id
       AND (g.odoo_id = ANY (seen) OR g.noticed_at < now() - gap_window);
    -- New gaps, unless the ids above the old cursor came without holes
    -- (the usual case); on an instance's first batch only above its lowest id.
    lowest := CASE WHEN old_cursor = 0 THEN (SELECT min(x) FROM unnest(seen) x) ELSE old_cursor + 1 END;
    IF cursor - lowest + 1 > (SELECT count(DISTINCT x) FROM unnest(seen) x WHERE x >= lowest) THEN
        INSERT INTO bridgecore.gap (instance_id, odoo_id)
        SELECT inst_id, g
          FROM generate_series(lowest, cursor - 1) g
         WHERE NOT EXISTS (SELECT 1 FROM unnest(seen) x WHERE x = g)
         LIMIT greatest(max_gaps - (SELECT count(*) FROM bridgecore.gap x WHERE x.instance_id = inst_id), 0)
        ON CONFLICT DO NOTHING;
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

-- Records a failed poll in the instance status (the message is already
-- free of secrets).
CREATE FUNCTION bridgecore._record_failure(inst_id integer, new_state text, message text,
                                           retry_at timestamptz)
RETURNS integer LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE bridgecore.instance i
       SET state = new_state, last_error = left(message, 1000), last_error_at = now(),
           consecutive_failures = i.consecutive_failures + 1, next_attempt_at = retry_at
     WHERE i.id = inst_id
    RETURNING i.consecutive_failures
$$;

-------------------------------------------------------------------------------
-- Privileges: nothing to PUBLIC; apps sync and query; admins do everything.
-------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA bridgecore FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA bridgecore FROM PUBLIC;
GRANT USAGE ON SCHEMA bridgecore TO bridgecore_app, bridgecore_admin;

GRANT EXECUTE ON FUNCTION
    bridgecore.sync_pull(bigint, text, text, integer, text[], text, text, jsonb, text),
    bridgecore.sync_state(bigint, text, text),
    bridgecore.sync_reset(bigint, text, text),
    bridgecore.events(text, bigint, text, timestamptz, integer, integer, text, text, text),
    bridgecore.check_updates(timestamptz, integer, text)
    TO bridgecore_app;

GRANT EXECUTE ON FUNCTION
    bridgecore.ingest(text, json),
    bridgecore.cleanup(timestamptz, text),
    bridgecore.add_instance(text, text, text, text, text, text, interval, integer, boolean, boolean),
    bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text),
    bridgecore.remove_instance(text),
    bridgecore.set_app_type(text, text[])
    TO bridgecore_admin;

GRANT SELECT ON bridgecore.instances, bridgecore.event, bridgecore.sync_state,
                bridgecore.app_type, bridgecore.dead_letter TO bridgecore_admin;
GRANT SELECT ON bridgecore.gap TO bridgecore_admin;

-- A poller waiting for the extension starts on this commit.
SELECT bridgecore._wake_poller();
