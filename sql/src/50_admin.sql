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

-- An error inside add_instance or alter_instance must not write the
-- statement, which holds the secret, to the server log (log_min_error_statement
-- is error by default).
CREATE FUNCTION bridgecore.add_instance(
    name text, url text, database text, login text, secret text,
    source_model text DEFAULT 'update.webhook',
    poll_interval interval DEFAULT '1 second',
    batch_size integer DEFAULT 500,
    enabled boolean DEFAULT true,
    verify_tls boolean DEFAULT true)
RETURNS SETOF bridgecore.instances LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
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
    new_name text DEFAULT NULL, push_key text DEFAULT NULL)
RETURNS SETOF bridgecore.instances LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    reconnect boolean;
    key_hash bytea;
    poller_settings boolean;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the instance to change.';
    END IF;
    inst_id := bridgecore._instance_id(alter_instance.name);
    PERFORM bridgecore._check_instance_settings(new_name, url, database, login, secret,
                                                source_model, poll_interval, batch_size);
    -- The doorbell's key (POST /api/v1/webhooks/receive, X-API-Key): NULL
    -- keeps it, '' removes it, anything else replaces it. Only its SHA-256
    -- is kept, so it must be long and random: nothing slows down guessing
    -- from a stolen hash.
    IF alter_instance.push_key IS NOT NULL AND alter_instance.push_key <> '' THEN
        IF length(alter_instance.push_key) NOT BETWEEN 32 AND 256
           OR alter_instance.push_key !~ '^[\x21-\x7e]+$' THEN
            RAISE EXCEPTION 'push_key must be 32 to 256 printable ASCII characters without spaces, got % characters',
                            length(alter_instance.push_key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a long random key, such as the output of: openssl rand -hex 32. Pass '''' to remove the key.';
        END IF;
        key_hash := pg_catalog.sha256(pg_catalog.convert_to(alter_instance.push_key, 'UTF8'));
        IF EXISTS (SELECT 1 FROM bridgecore.instance i WHERE i.push_key_hash = key_hash AND i.id <> inst_id) THEN
            RAISE EXCEPTION 'this push_key is already used by another instance'
                USING ERRCODE = 'unique_violation',
                      HINT = 'Every instance needs its own key: the key names the instance.';
        END IF;
    END IF;
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
    -- The poller restarts for its own settings only, not for a new push key.
    poller_settings := push_key IS NULL
        OR coalesce(url, database, login, secret, source_model, new_name) IS NOT NULL
        OR coalesce(poll_interval::text, batch_size::text, enabled::text, verify_tls::text) IS NOT NULL;
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
           config_version = i.config_version + CASE WHEN poller_settings THEN 1 ELSE 0 END,
           push_key_hash = CASE WHEN alter_instance.push_key IS NULL THEN i.push_key_hash
                                WHEN alter_instance.push_key = '' THEN NULL
                                ELSE key_hash END
     WHERE i.id = inst_id;
    PERFORM bridgecore._wake_poller();
    RETURN QUERY SELECT * FROM bridgecore.instances v WHERE v.name = coalesce(alter_instance.new_name, alter_instance.name);
END
$$;
COMMENT ON FUNCTION bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text, text)
    IS 'Changes an Odoo instance; omitted (null) arguments keep their value; push_key => '''' removes the doorbell key.';

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
    -- The row's lock first: the store paths write events only under it, so
    -- none arrive between the delete of the events and that of the row.
    PERFORM FROM bridgecore.instance i WHERE i.id = inst_id FOR UPDATE;
    DELETE FROM bridgecore.event e WHERE e.instance_id = inst_id;
    GET DIAGNOSTICS n_events = ROW_COUNT;
    DELETE FROM bridgecore.partition_summary s WHERE s.instance_id = inst_id;
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
-- Model discovery and audit setup (HTTP to Odoo from this backend)
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._odoo_call(instance_id integer, model text, method text,
                                      args json, kwargs json)
RETURNS json LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_odoo_call';
COMMENT ON FUNCTION bridgecore._odoo_call(integer, text, text, json, json)
    IS 'One JSON-RPC execute_kw call; returns {"result": ...} or {"error": {"name", "message"}}.';

-- The classification the middleware uses (checked in this order).
CREATE FUNCTION bridgecore._classify_model(model text, transient boolean,
                                           OUT classification text, OUT priority bridgecore.priority)
LANGUAGE sql IMMUTABLE
AS $$
    SELECT c, p FROM (SELECT
        CASE
            WHEN transient THEN 'transient'
            WHEN model LIKE ANY ('{%ir.%,%base.%,%mail.message%,%mail.followers%,%mail.activity%,%bus.bus%,%report.%,%wizard%}')
                THEN 'ignored'
            WHEN model IN ('sale.order', 'purchase.order', 'account.move', 'stock.picking',
                           'res.partner', 'account.payment') THEN 'critical'
            WHEN model LIKE ANY ('{sale.%,purchase.%,stock.%,account.%,product.%,hr.%,project.%,crm.%}')
                THEN 'important'
            ELSE 'standard'
        END AS c) x,
        LATERAL (SELECT CASE x.c WHEN 'critical' THEN 'high' WHEN 'important' THEN 'medium'
                                 WHEN 'standard' THEN 'low' END::bridgecore.priority AS p) y
$$;

-- Raises the error of an Odoo error envelope returned by _odoo_call().
CREATE FUNCTION bridgecore._odoo_result(answer json, what text)
RETURNS json LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF answer -> 'error' IS NOT NULL THEN
        RAISE EXCEPTION 'Odoo refused %: %', what, answer -> 'error' ->> 'message'
            USING ERRCODE = 'external_routine_exception',
                  DETAIL = 'Odoo error: ' || coalesce(answer -> 'error' ->> 'name', 'unknown'),
                  HINT = 'Check the Odoo user''s access rights and that the auto_webhook addon is installed.';
    END IF;
    RETURN answer -> 'result';
END
$$;

CREATE FUNCTION bridgecore.discover_models(instance text)
RETURNS TABLE (model text, name text, transient boolean, classification text, priority text)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer := bridgecore._instance_id(discover_models.instance);
    answer json;
    found json;
    full_list boolean := true;
BEGIN
    -- ir.model needs "Access Rights" from Odoo 15 on; ordinary users fall
    -- back to get_available_models() (Odoo 16+), which has no transient flag.
    answer := bridgecore._odoo_call(inst_id, 'ir.model', 'search_read', '[[]]',
                                    '{"fields": ["model", "name", "state", "transient"], "order": "model"}');
    IF answer -> 'error' ->> 'name' = 'odoo.exceptions.AccessError' THEN
        full_list := false;
        answer := bridgecore._odoo_call(inst_id, 'ir.model', 'get_available_models', '[]', '{}');
    END IF;
    found := bridgecore._odoo_result(answer, 'the list of models');
    IF json_typeof(found) IS DISTINCT FROM 'array' THEN
        RAISE EXCEPTION 'Odoo answered the list of models with %', coalesce(json_typeof(found), 'nothing')
            USING ERRCODE = 'external_routine_exception', HINT = 'Is the url an Odoo server?';
    END IF;

    DELETE FROM bridgecore.odoo_model m WHERE m.instance_id = inst_id;
    INSERT INTO bridgecore.odoo_model (instance_id, model, name, transient, odoo_model_id,
                                       classification, priority)
    SELECT inst_id, r ->> 'model',
           coalesce(r ->> 'name', r ->> 'display_name'),
           CASE WHEN full_list THEN coalesce((r ->> 'transient')::boolean, false) END,
           CASE WHEN full_list THEN (r ->> 'id')::integer END,
           c.classification, c.priority
      FROM json_array_elements(found) r,
           LATERAL bridgecore._classify_model(r ->> 'model', coalesce((r ->> 'transient')::boolean, false)) c
     WHERE r ->> 'model' IS NOT NULL
    ON CONFLICT DO NOTHING;

    RETURN QUERY SELECT m.model, m.name, m.transient, m.classification, m.priority::text
                   FROM bridgecore.odoo_model m WHERE m.instance_id = inst_id
                  ORDER BY array_position('{critical,important,standard,ignored,transient}'::text[], m.classification),
                           m.model;
END
$$;
COMMENT ON FUNCTION bridgecore.discover_models(text) IS 'Reads and classifies the Odoo instance''s models.';

CREATE FUNCTION bridgecore.initialize_audit(instance text, dry_run boolean DEFAULT true,
                                            include_standard boolean DEFAULT false)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer := bridgecore._instance_id(initialize_audit.instance);
    configs json;
    existing text[];
    m record;
    created jsonb := '[]';
    planned jsonb := '[]';
    kept jsonb := '[]';
    vals jsonb;
BEGIN
    IF dry_run IS NULL OR include_standard IS NULL THEN
        RAISE EXCEPTION 'dry_run and include_standard must not be null'
            USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit them for their defaults.';
    END IF;
    PERFORM count(*) FROM bridgecore.discover_models(initialize_audit.instance);
    configs := bridgecore._odoo_result(
        bridgecore._odoo_call(inst_id, 'webhook.config', 'search_read', '[[]]',
                              '{"fields": ["model_name", "enabled", "priority", "events"]}'),
        'the webhook configurations');
    existing := ARRAY(SELECT c ->> 'model_name' FROM json_array_elements(configs) c);

    FOR m IN
        SELECT om.model, om.odoo_model_id, om.classification, om.priority
          FROM bridgecore.odoo_model om
         WHERE om.instance_id = inst_id
           AND (om.classification IN ('critical', 'important')
                OR (include_standard AND om.classification = 'standard'))
         ORDER BY om.priority DESC, om.model
    LOOP
        IF m.model = ANY (existing) THEN
            kept := kept || to_jsonb(m.model);
            CONTINUE;
        END IF;
        vals := jsonb_build_object('model_name', m.model, 'enabled', true,
                                   'priority', m.priority, 'category', 'business',
                                   'events', 'create,write,unlink');
        IF m.odoo_model_id IS NOT NULL THEN
            vals := vals || jsonb_build_object('model_id', m.odoo_model_id);
        END IF;
        IF dry_run THEN
            planned := planned || jsonb_build_object('model', m.model, 'priority', m.priority);
        ELSE
            PERFORM bridgecore._odoo_result(
                bridgecore._odoo_call(inst_id, 'webhook.config', 'create',
                                      json_build_array(vals::json), '{}'),
                'to create the webhook configuration of ' || m.model);
            created := created || jsonb_build_object('model', m.model, 'priority', m.priority);
        END IF;
    END LOOP;
    RETURN jsonb_build_object('instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id),
                              'dry_run', dry_run,
                              'created', created, 'would_create', planned,
                              'already_configured', kept);
END
$$;
COMMENT ON FUNCTION bridgecore.initialize_audit(text, boolean, boolean)
    IS 'Makes sure Odoo tracks every critical and important model (webhook.config).';
