-------------------------------------------------------------------------------
-- Internal helpers shared by the concerns below (not granted to anyone;
-- called by functions that run as the extension owner)
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._rate_limit(kind text, instance_id integer, user_id bigint, device_id text)
RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_rate_limit';

-- The instance a call acts on: the token's, when the request's claims name
-- one (a call naming another is refused, 42501); else the one named; else
-- the only one there is (none: 55000; several: 22004). In C (src/claims.c),
-- which sync_pull calls directly: one implementation of the rule.
CREATE FUNCTION bridgecore._instance_id(instance text)
RETURNS integer LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bridgecore_instance_id';

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
