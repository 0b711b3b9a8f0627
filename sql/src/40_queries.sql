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
