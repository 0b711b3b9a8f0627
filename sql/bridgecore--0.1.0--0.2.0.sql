-- BridgeCore 0.1.0 -> 0.2.0: operations. Statistics and Prometheus metrics,
-- model discovery and audit setup, dead-letter handling, automatic
-- retention and device housekeeping, status().
\echo Use "ALTER EXTENSION bridgecore UPDATE TO '0.2.0'" to load this file. \quit

-- A read-only role for monitoring (Prometheus exporters, dashboards).
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_monitor') THEN
        CREATE ROLE bridgecore_monitor NOLOGIN;
    END IF;
END
$roles$;
GRANT bridgecore_monitor TO bridgecore_admin;
GRANT USAGE ON SCHEMA bridgecore TO bridgecore_monitor;

-------------------------------------------------------------------------------
-- Statistics (shared memory; no table writes)
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._stats_instances(
    OUT instance_id integer, OUT polls bigint, OUT failed_polls bigint,
    OUT events_ingested bigint, OUT duplicates bigint, OUT dead_letters bigint,
    OUT bytes_received bigint, OUT sync_pulls bigint, OUT events_delivered bigint,
    OUT notifications bigint, OUT errors bigint[],
    OUT poll_buckets bigint[], OUT poll_seconds_sum float8,
    OUT ingest_buckets bigint[], OUT ingest_seconds_sum float8,
    OUT events_last_minute bigint, OUT events_per_second float8, OUT since timestamptz)
RETURNS SETOF record LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_stats_instances';

CREATE FUNCTION bridgecore._stats_models(
    OUT instance_id integer, OUT model text, OUT events bigint,
    OUT buckets bigint[], OUT seconds_sum float8)
RETURNS SETOF record LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_stats_models';

CREATE FUNCTION bridgecore._stats_reset() RETURNS void LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_stats_reset';

CREATE FUNCTION bridgecore._stats_forget(instance_id integer) RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_stats_forget';

-- A removed instance's counters are forgotten (a later instance may get its id).
CREATE FUNCTION bridgecore._instance_removed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bridgecore._stats_forget(OLD.id);
    RETURN OLD;
END
$$;
CREATE TRIGGER instance_removed AFTER DELETE ON bridgecore.instance
    FOR EACH ROW EXECUTE FUNCTION bridgecore._instance_removed();

CREATE FUNCTION bridgecore._count_sync_pull(instance_id integer, delivered integer)
RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_count_sync_pull';

CREATE FUNCTION bridgecore._count_ingest(instance_id integer, inserted bigint, duplicates bigint,
                                         dead_letters bigint, notifications bigint)
RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_count_ingest';

-- Kinds of failed polls, in the order of _stats_instances().errors.
CREATE FUNCTION bridgecore._error_kinds() RETURNS text[] LANGUAGE sql IMMUTABLE
AS $$ SELECT '{transport,too_large,http,bad_response,rpc,access_denied,session_expired,auth_failed,store}'::text[] $$;

-- Upper bounds of the histogram buckets (seconds); the last bucket is +Inf.
CREATE FUNCTION bridgecore._bucket_bounds() RETURNS float8[] LANGUAGE sql IMMUTABLE
AS $$ SELECT '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10}'::float8[] $$;

CREATE VIEW bridgecore.stats AS
SELECT i.name AS instance, s.polls, s.failed_polls, s.events_ingested, s.duplicates,
       s.dead_letters, s.bytes_received, s.sync_pulls, s.events_delivered, s.notifications,
       coalesce((SELECT jsonb_object_agg(k, e) FROM unnest(bridgecore._error_kinds(), s.errors) AS u(k, e)
                  WHERE e > 0), '{}') AS errors,
       (SELECT sum(b) FROM unnest(s.poll_buckets) b)::bigint AS poll_count,
       s.poll_seconds_sum,
       (SELECT sum(b) FROM unnest(s.ingest_buckets) b)::bigint AS ingest_count,
       s.ingest_seconds_sum,
       round(s.events_per_second::numeric, 2) AS events_per_second,
       s.since
  FROM bridgecore._stats_instances() s
  JOIN bridgecore.instance i ON i.id = s.instance_id;
COMMENT ON VIEW bridgecore.stats IS 'Per-instance counters kept in shared memory since the server start or stats_reset().';

CREATE VIEW bridgecore.stats_errors AS
SELECT i.name AS instance, u.kind, u.count
  FROM bridgecore._stats_instances() s
  JOIN bridgecore.instance i ON i.id = s.instance_id,
       unnest(bridgecore._error_kinds(), s.errors) AS u(kind, count);
COMMENT ON VIEW bridgecore.stats_errors IS 'Failed polls per instance and kind of failure.';

CREATE VIEW bridgecore.stats_models AS
SELECT i.name AS instance, m.model, m.events,
       (SELECT sum(b) FROM unnest(m.buckets) b)::bigint AS batches,
       m.seconds_sum AS processing_seconds_sum
  FROM bridgecore._stats_models() m
  JOIN bridgecore.instance i ON i.id = m.instance_id;
COMMENT ON VIEW bridgecore.stats_models IS 'Events stored per instance and model, with processing time.';

CREATE FUNCTION bridgecore.stats_reset() RETURNS void LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT bridgecore._stats_reset() $$;
COMMENT ON FUNCTION bridgecore.stats_reset() IS 'Zeroes the shared-memory statistics.';

-------------------------------------------------------------------------------
-- Prometheus metrics
-------------------------------------------------------------------------------
-- One metric family: HELP and TYPE lines, then its samples.
CREATE FUNCTION bridgecore._metric_family(name text, kind text, help text, samples text)
RETURNS text LANGUAGE sql IMMUTABLE
AS $$
    SELECT format(E'# HELP %s %s\n# TYPE %s %s\n', name, help, name, kind) || coalesce(samples, '')
$$;

-- The sample lines of one histogram: cumulative buckets, +Inf, sum, count.
CREATE FUNCTION bridgecore._histogram_samples(name text, labels text, buckets bigint[], seconds_sum float8)
RETURNS text LANGUAGE sql IMMUTABLE
AS $$
    SELECT string_agg(format(E'%s_bucket{%s,le="%s"} %s\n', name, labels,
                             coalesce(b.bound::text, '+Inf'), b.cumulative), '' ORDER BY b.ord)
           || format(E'%s_sum{%s} %s\n%s_count{%s} %s\n', name, labels, seconds_sum,
                     name, labels, (SELECT sum(x) FROM unnest(buckets) x))
      FROM (SELECT u.ord, (bridgecore._bucket_bounds())[u.ord] AS bound,
                   sum(u.n) OVER (ORDER BY u.ord) AS cumulative
              FROM unnest(buckets) WITH ORDINALITY AS u(n, ord)) b
$$;

CREATE FUNCTION bridgecore.metrics() RETURNS text LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
WITH inst AS (
    SELECT i.id, format('instance="%s"', i.name) AS l, i.name,
           CASE WHEN i.enabled THEN i.state ELSE 'disabled' END AS state,
           i.cursor, extract(epoch FROM now() - i.newest_event_at) AS lag,
           s.polls, s.failed_polls, s.events_ingested, s.duplicates, s.dead_letters,
           s.bytes_received, s.sync_pulls, s.events_delivered, s.notifications, s.errors,
           s.poll_buckets, s.poll_seconds_sum, s.ingest_buckets, s.ingest_seconds_sum,
           coalesce(s.events_per_second, 0) AS events_per_second,
           (SELECT count(*) FROM bridgecore.dead_letter d
             WHERE d.instance_id = i.id AND d.status IN ('pending', 'retrying')) AS dead_pending,
           (SELECT count(*) FROM bridgecore.gap g WHERE g.instance_id = i.id) AS gaps,
           (SELECT count(*) FROM bridgecore.sync_state ss
             WHERE ss.instance_id = i.id AND ss.is_active) AS devices_active
      FROM bridgecore.instance i
      LEFT JOIN bridgecore._stats_instances() s ON s.instance_id = i.id
), counter(name, help, col) AS (
    VALUES ('webhook_received_total', 'Events stored from Odoo.', 'events_ingested'),
           ('sync_pull_requests_total', 'Sync pulls served.', 'sync_pulls'),
           ('bridgecore_polls_total', 'Polls of Odoo (search_read rounds), failed ones included.', 'polls'),
           ('bridgecore_failed_polls_total', 'Polls that failed.', 'failed_polls'),
           ('bridgecore_duplicates_total', 'Odoo rows received again and skipped.', 'duplicates'),
           ('bridgecore_dead_letters_total', 'Records sent to dead_letter.', 'dead_letters'),
           ('bridgecore_bytes_received_total', 'Bytes received from Odoo (after decompression).', 'bytes_received'),
           ('bridgecore_sync_events_delivered_total', 'Events delivered by sync pulls.', 'events_delivered'),
           ('bridgecore_notifications_total', 'NOTIFYs sent on bridgecore_events.', 'notifications')
), gauge(name, help, col) AS (
    VALUES ('webhook_queue_size', 'Records waiting for attention: pending dead letters plus open gaps.', 'queue'),
           ('bridgecore_lag_seconds', 'Now minus the newest Odoo timestamp stored.', 'lag'),
           ('bridgecore_cursor', 'Highest Odoo id stored.', 'cursor'),
           ('bridgecore_dead_letters_pending', 'Dead letters pending or being retried.', 'dead_pending'),
           ('bridgecore_gaps_open', 'Odoo ids skipped and still asked for.', 'gaps'),
           ('bridgecore_devices_active', 'Active devices (sync states).', 'devices_active'),
           ('bridgecore_events_per_second', 'Events stored per second over the last minute.', 'events_per_second')
)
SELECT string_agg(family, '' ORDER BY ord)
  FROM (
    SELECT 1 AS ord, c.name AS n, bridgecore._metric_family(c.name, 'counter', c.help,
               (SELECT string_agg(format(E'%s{%s} %s\n', c.name, inst.l,
                          coalesce((to_jsonb(inst) ->> c.col)::numeric, 0)), '' ORDER BY inst.name)
                  FROM inst)) AS family
      FROM counter c
    UNION ALL
    SELECT 2, 'webhook_errors_total', bridgecore._metric_family('webhook_errors_total', 'counter',
               'Failed polls by kind of failure.',
               (SELECT string_agg(format(E'webhook_errors_total{%s,kind="%s"} %s\n', inst.l, k.kind,
                                         coalesce(inst.errors[k.ord], 0)), '' ORDER BY inst.name, k.ord)
                  FROM inst, unnest(bridgecore._error_kinds()) WITH ORDINALITY AS k(kind, ord)))
    UNION ALL
    SELECT 3, g.name, bridgecore._metric_family(g.name, 'gauge', g.help,
               (SELECT string_agg(format(E'%s{%s} %s\n', g.name, inst.l, v.value), '' ORDER BY inst.name)
                  FROM inst,
                       LATERAL (SELECT CASE g.col WHEN 'queue' THEN (inst.dead_pending + inst.gaps)::numeric
                                       ELSE (to_jsonb(inst) ->> g.col)::numeric END AS value) v
                 WHERE v.value IS NOT NULL))
      FROM gauge g
    UNION ALL
    SELECT 4, 'bridgecore_instance_state', bridgecore._metric_family('bridgecore_instance_state', 'gauge',
               'Instance state: 1 for the current one.',
               (SELECT string_agg(format(E'bridgecore_instance_state{%s,state="%s"} %s\n', inst.l, st,
                                         (inst.state = st)::int), '' ORDER BY inst.name, st)
                  FROM inst, unnest('{ok,backoff,auth_failed,disabled}'::text[]) st))
    UNION ALL
    SELECT 5, 'webhook_processing_seconds', bridgecore._metric_family('webhook_processing_seconds', 'histogram',
               'Time to decode and store a batch, counted once per model in the batch.',
               (SELECT string_agg(bridgecore._histogram_samples('webhook_processing_seconds',
                          format('instance="%s",model="%s"', i.name, m.model), m.buckets, m.seconds_sum),
                          '' ORDER BY i.name, m.model)
                  FROM bridgecore._stats_models() m JOIN bridgecore.instance i ON i.id = m.instance_id))
    UNION ALL
    SELECT 6, 'bridgecore_poll_seconds', bridgecore._metric_family('bridgecore_poll_seconds', 'histogram',
               'Duration of a poll of Odoo, storing included.',
               (SELECT string_agg(bridgecore._histogram_samples('bridgecore_poll_seconds', inst.l,
                          inst.poll_buckets, inst.poll_seconds_sum), '' ORDER BY inst.name)
                  FROM inst WHERE inst.poll_buckets IS NOT NULL))
    UNION ALL
    SELECT 7, 'bridgecore_ingest_seconds', bridgecore._metric_family('bridgecore_ingest_seconds', 'histogram',
               'Duration of the transaction that stores a batch.',
               (SELECT string_agg(bridgecore._histogram_samples('bridgecore_ingest_seconds', inst.l,
                          inst.ingest_buckets, inst.ingest_seconds_sum), '' ORDER BY inst.name)
                  FROM inst WHERE inst.ingest_buckets IS NOT NULL))
  ) f
$$;
COMMENT ON FUNCTION bridgecore.metrics() IS 'Metrics in the Prometheus text exposition format.';

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

CREATE TABLE bridgecore.odoo_model (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    model           text NOT NULL,
    name            text,
    transient       boolean,
    odoo_model_id   integer,
    classification  text NOT NULL
                    CHECK (classification IN ('transient', 'ignored', 'critical', 'important', 'standard')),
    priority        bridgecore.priority,
    discovered_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, model)
);
COMMENT ON TABLE bridgecore.odoo_model IS 'Odoo models found by discover_models(), classified.';
SELECT pg_catalog.pg_extension_config_dump('bridgecore.odoo_model', '');

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

-------------------------------------------------------------------------------
-- Dead letters
-------------------------------------------------------------------------------
CREATE VIEW bridgecore.dead_letters AS
SELECT d.id, i.name AS instance, d.odoo_id, d.reason, d.status, d.attempts,
       d.first_failed_at, d.last_failed_at, d.note, d.record
  FROM bridgecore.dead_letter d
  JOIN bridgecore.instance i ON i.id = d.instance_id;
COMMENT ON VIEW bridgecore.dead_letters IS 'Records that could not be stored, with their instance name.';

-- "Not found": SQLSTATE P0002 for SQL callers, PT404 (HTTP 404) through
-- PostgREST, as for sync states.
CREATE FUNCTION bridgecore._raise_not_found(message text, hint text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%', message
        USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                             THEN 'P0002' ELSE 'PT404' END,
              HINT = hint;
END
$$;

-- Retries one dead letter: its stored record first (the rules may accept it
-- now); if that still fails, the poller is asked to fetch the row from Odoo
-- again (it may have been corrected there). Stored records keep their Odoo
-- id, so nothing is duplicated.
CREATE FUNCTION bridgecore._retry_dead_letter(dl bridgecore.dead_letter)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    storable boolean;
BEGIN
    BEGIN
        SELECT problem IS NULL INTO storable FROM bridgecore._decode(dl.record::jsonb);
    EXCEPTION WHEN OTHERS THEN
        storable := false;      -- still what jsonb cannot hold
    END;
    IF storable THEN
        PERFORM bridgecore._ingest(dl.instance_id, json_build_array(dl.record));
        UPDATE bridgecore.dead_letter d SET status = 'resolved' WHERE d.id = dl.id;
        RETURN 'resolved';
    END IF;
    IF dl.odoo_id IS NULL THEN
        RETURN 'pending';       -- nothing to fetch again without an id
    END IF;
    INSERT INTO bridgecore.gap (instance_id, odoo_id) VALUES (dl.instance_id, dl.odoo_id)
    ON CONFLICT (instance_id, odoo_id) DO UPDATE SET noticed_at = now();
    UPDATE bridgecore.dead_letter d SET status = 'retrying' WHERE d.id = dl.id;
    RETURN 'retrying';
END
$$;

CREATE FUNCTION bridgecore.retry_dead_letter(id bigint)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dl bridgecore.dead_letter;
BEGIN
    SELECT * INTO dl FROM bridgecore.dead_letter d WHERE d.id = retry_dead_letter.id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM bridgecore._raise_not_found(format('dead letter %s does not exist', retry_dead_letter.id),
                                            'bridgecore.dead_letters lists them.');
    ELSIF dl.status IN ('resolved', 'ignored') THEN
        RAISE EXCEPTION 'dead letter % is %', dl.id, dl.status USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Only pending or retrying dead letters can be retried.';
    END IF;
    RETURN jsonb_build_object('id', dl.id, 'status', bridgecore._retry_dead_letter(dl));
END
$$;

CREATE FUNCTION bridgecore.retry_dead_letters(instance text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inst_id integer := bridgecore._instance_id(retry_dead_letters.instance);
    dl bridgecore.dead_letter;
    counts jsonb := '{"resolved": 0, "retrying": 0, "pending": 0}';
    outcome text;
BEGIN
    FOR dl IN SELECT * FROM bridgecore.dead_letter d
               WHERE d.instance_id = inst_id AND d.status IN ('pending', 'retrying')
               ORDER BY d.odoo_id NULLS LAST, d.id FOR UPDATE
    LOOP
        outcome := bridgecore._retry_dead_letter(dl);
        counts := jsonb_set(counts, ARRAY[outcome], to_jsonb((counts ->> outcome)::int + 1));
    END LOOP;
    RETURN jsonb_build_object('instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id)) || counts;
END
$$;

CREATE FUNCTION bridgecore.ignore_dead_letter(id bigint, note text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE bridgecore.dead_letter d SET status = 'ignored', note = ignore_dead_letter.note
     WHERE d.id = ignore_dead_letter.id AND d.status <> 'resolved';
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM bridgecore.dead_letter d WHERE d.id = ignore_dead_letter.id) THEN
            RAISE EXCEPTION 'dead letter % is resolved', ignore_dead_letter.id
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A resolved record was stored; there is nothing to ignore.';
        END IF;
        PERFORM bridgecore._raise_not_found(format('dead letter %s does not exist', ignore_dead_letter.id),
                                            'bridgecore.dead_letters lists them.');
    END IF;
    -- Not fetched again from Odoo either.
    DELETE FROM bridgecore.gap g USING bridgecore.dead_letter d
     WHERE d.id = ignore_dead_letter.id AND g.instance_id = d.instance_id AND g.odoo_id = d.odoo_id;
    RETURN jsonb_build_object('id', ignore_dead_letter.id, 'status', 'ignored', 'note', ignore_dead_letter.note);
END
$$;

-------------------------------------------------------------------------------
-- Retention and device housekeeping (run by the launcher, or by hand)
-------------------------------------------------------------------------------
-- Deletes at most batch events older than cutoff (of one instance, or all),
-- and records the highest deleted id, so devices below it resynchronise.
CREATE FUNCTION bridgecore._cleanup_step(cutoff timestamptz, inst_id integer, batch integer)
RETURNS bigint LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
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
    SELECT count(*) FROM deleted WHERE (SELECT count(*) FROM marked) >= 0
$$;

CREATE FUNCTION bridgecore.deactivate_idle_devices(idle interval DEFAULT NULL, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    limit_age interval := coalesce(idle, current_setting('bridgecore.device_idle_timeout')::interval);
    inst_id integer;
    n bigint;
BEGIN
    IF limit_age <= interval '0' THEN
        RETURN jsonb_build_object('ok', true, 'deactivated', 0,
            'message', CASE WHEN idle IS NULL THEN 'Idle devices are kept active (bridgecore.device_idle_timeout = 0)'
                            ELSE 'Nothing deactivated: idle must be positive' END);
    END IF;
    -- Omitted instance: every instance, unless a JWT confines the caller.
    IF deactivate_idle_devices.instance IS NOT NULL
       OR nullif(current_setting('request.jwt.claims', true), '')::jsonb ? 'instance' THEN
        inst_id := bridgecore._instance_id(deactivate_idle_devices.instance);
    END IF;
    UPDATE bridgecore.sync_state s SET is_active = false
     WHERE s.is_active AND coalesce(s.last_sync_time, s.created_at) < now() - limit_age
       AND (inst_id IS NULL OR s.instance_id = inst_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN jsonb_build_object('ok', true, 'deactivated', n,
        'message', format('Deactivated %s devices idle for more than %s', n, limit_age));
END
$$;
COMMENT ON FUNCTION bridgecore.deactivate_idle_devices(interval, text)
    IS 'Marks devices idle longer than bridgecore.device_idle_timeout inactive; their next pull reactivates them.';

-- One maintenance step for the launcher, in its own short transaction:
-- a batch of retention, or (when none is due) the idle-device sweep.
-- Returns the events deleted; the launcher repeats while a full batch went.
CREATE FUNCTION bridgecore._maintenance_step()
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    retention interval := current_setting('bridgecore.retention')::interval;
    n bigint := 0;
BEGIN
    IF retention > interval '0' THEN
        n := bridgecore._cleanup_step(now() - retention, NULL,
                                      current_setting('bridgecore.cleanup_batch_size')::integer);
    END IF;
    IF n = 0 THEN
        PERFORM bridgecore.deactivate_idle_devices();
    END IF;
    RETURN n;
END
$$;

-------------------------------------------------------------------------------
-- Devices
-------------------------------------------------------------------------------
CREATE VIEW bridgecore.devices AS
SELECT i.name AS instance, s.user_id, s.device_id, s.app_type, s.is_active,
       s.last_event_id, s.last_sync_time, s.sync_count, s.last_event_count,
       s.total_events_synced, s.app_version, s.device_info, s.created_at,
       s.last_event_id < i.purged_through AS resync_required,
       now() - coalesce(s.last_sync_time, s.created_at) AS idle
  FROM bridgecore.sync_state s
  JOIN bridgecore.instance i ON i.id = s.instance_id;
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
-- status(): one readable row per instance (try \x in psql)
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore.status()
RETURNS TABLE (instance text, state text, url text, lag interval, events_per_second numeric,
               events_ingested bigint, cursor bigint, last_success_at timestamptz,
               last_error text, last_error_at timestamptz, consecutive_failures integer,
               next_attempt_at timestamptz, dead_letters_pending bigint, gaps_open bigint,
               devices_active bigint, poller_pid integer)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.name, CASE WHEN i.enabled THEN i.state ELSE 'disabled' END, i.url,
           date_trunc('second', now() - i.newest_event_at),
           round(coalesce(s.events_per_second, 0)::numeric, 2),
           i.events_ingested, i.cursor, i.last_success_at, i.last_error, i.last_error_at,
           i.consecutive_failures, i.next_attempt_at,
           (SELECT count(*) FROM bridgecore.dead_letter d
             WHERE d.instance_id = i.id AND d.status IN ('pending', 'retrying')),
           (SELECT count(*) FROM bridgecore.gap g WHERE g.instance_id = i.id),
           (SELECT count(*) FROM bridgecore.sync_state ss WHERE ss.instance_id = i.id AND ss.is_active),
           (SELECT a.pid FROM pg_catalog.pg_stat_activity a
             WHERE a.backend_type = 'bridgecore poller' AND a.datname = pg_catalog.current_database()
               AND a.pid = (SELECT l.pid FROM pg_catalog.pg_locks l
                             WHERE l.locktype = 'advisory' AND l.classid = 1112425298
                               AND l.objid = i.id AND l.granted LIMIT 1))
      FROM bridgecore.instance i
      LEFT JOIN bridgecore._stats_instances() s ON s.instance_id = i.id
     ORDER BY i.name
$$;
COMMENT ON FUNCTION bridgecore.status() IS 'One row per instance: state, lag, rate, last error, cursor, backlog.';

-------------------------------------------------------------------------------
-- Existing functions, now counting statistics, resolving dead letters of
-- records that finally got stored, and sharing the cleanup step
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bridgecore._ingest(inst_id integer, events json)
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
                        last_failed_at = now(), attempts = d.attempts + 1,
                        status = CASE d.status WHEN 'ignored' THEN d.status ELSE 'pending' END;
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
        RETURNING id, odoo_id, model, priority
    ), resolved AS (
        -- A record stored now settles its earlier dead letter.
        UPDATE bridgecore.dead_letter d SET status = 'resolved'
         WHERE d.instance_id = inst_id AND d.status IN ('pending', 'retrying', 'ignored')
           AND d.odoo_id IN (SELECT odoo_id FROM inserted)
        RETURNING 1
    ), dead AS (
        INSERT INTO bridgecore.dead_letter AS d (instance_id, odoo_id, record, reason)
        SELECT DISTINCT ON (coalesce(odoo_id, -ord)) inst_id, odoo_id, r::json, problem
          FROM decoded
         WHERE problem IS NOT NULL
         ORDER BY coalesce(odoo_id, -ord), ord DESC
        ON CONFLICT (instance_id, odoo_id) WHERE odoo_id IS NOT NULL DO UPDATE
            SET record = EXCLUDED.record, reason = EXCLUDED.reason,
                last_failed_at = now(), attempts = d.attempts + 1,
                status = CASE d.status WHEN 'ignored' THEN d.status ELSE 'pending' END
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
    PERFORM bridgecore._count_ingest(inst_id, (result ->> 'inserted')::bigint,
                                     (result ->> 'duplicates')::bigint,
                                     (result ->> 'dead_lettered')::bigint,
                                     (result ->> 'notifications')::bigint);
    RETURN result;
END
$$;

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
    -- it, and devices whose cursor is below a deleted id get resync_required.
    LOOP
        n := bridgecore._cleanup_step(cutoff, inst_id, batch);
        total := total + n;
        EXIT WHEN n < batch;
    END LOOP;

    RETURN jsonb_build_object(
        'ok', true, 'deleted', total,
        'message', format('Deleted %s events older than %s', total, bridgecore._iso(cutoff)));
END
$$;

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

-------------------------------------------------------------------------------
-- Privileges
-------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA bridgecore FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridgecore.sync_reset_all(bigint, text) TO bridgecore_app;
GRANT EXECUTE ON FUNCTION bridgecore.metrics() TO bridgecore_monitor;
GRANT SELECT ON bridgecore.stats, bridgecore.stats_errors, bridgecore.stats_models TO bridgecore_monitor;
-- The views read the counters through these (functions run as the caller).
GRANT EXECUTE ON FUNCTION bridgecore._stats_instances(), bridgecore._stats_models(),
                          bridgecore._error_kinds() TO bridgecore_monitor;
GRANT EXECUTE ON FUNCTION
    bridgecore.stats_reset(),
    bridgecore.discover_models(text),
    bridgecore.initialize_audit(text, boolean, boolean),
    bridgecore.retry_dead_letter(bigint),
    bridgecore.retry_dead_letters(text),
    bridgecore.ignore_dead_letter(bigint, text),
    bridgecore.deactivate_idle_devices(interval, text),
    bridgecore.status()
    TO bridgecore_admin;
GRANT SELECT ON bridgecore.dead_letters, bridgecore.devices, bridgecore.user_stats,
                bridgecore.odoo_model TO bridgecore_admin;

-- Counters of an earlier installation in this database do not carry over.
SELECT bridgecore._stats_reset();
