-------------------------------------------------------------------------------
-- Internal helpers shared by the concerns below (not granted to anyone;
-- called by functions that run as the extension owner)
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._rate_limit(kind text, instance_id integer, user_id bigint, device_id text)
RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_rate_limit';

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

-- A page size or count from 1 to max_value. In C (src/sync_pull.c), which
-- sync_pull calls directly: one implementation of the rule.
CREATE FUNCTION bridgecore._check_limit(value integer, name text, max_value integer)
RETURNS void LANGUAGE c IMMUTABLE
AS 'MODULE_PATHNAME', 'bridgecore_check_limit';

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

-- Functions that write refuse to run on a hot standby with a hint (the
-- server's own refusal, "cannot execute UPDATE in a read-only transaction",
-- names no way out).
CREATE FUNCTION bridgecore._primary_only(what text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION '% cannot run on a standby', what
            USING ERRCODE = 'read_only_sql_transaction',
                  DETAIL = 'This server is a hot standby: it accepts no writes.',
                  HINT = 'Call it on the primary.';
    END IF;
END
$$;
