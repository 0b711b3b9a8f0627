-------------------------------------------------------------------------------
-- The doorbell: Odoo (the auto_webhook addon's subscriber) rings after it
-- commits a row, and the instance's poller fetches at once instead of at its
-- next poll. A ring stores nothing: the poll stays the one durable path, so
-- a lost or refused ring costs at most one poll interval, never an event.
-- Rings during one fetch cause at most one more fetch (src/doorbell.c).
-------------------------------------------------------------------------------
-- Rings the running poller of an instance: 'woken', 'coalesced' (a ring
-- was pending already) or 'no_poller' (none runs: disabled, or starting).
CREATE FUNCTION bridgecore._ring(instance_id integer)
RETURNS text LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_ring_instance';

-- Per running poller of this database: rings since it started, those that
-- found a ring pending, and the fetches rings started.
CREATE FUNCTION bridgecore._doorbell_stats(OUT instance_id integer, OUT rings bigint,
                                           OUT coalesced bigint, OUT fetches bigint)
RETURNS SETOF record LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_doorbell_stats';

CREATE FUNCTION bridgecore.wake(instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- A caller confined to an instance by its token wakes that one only.
    inst_id integer := bridgecore._instance_id(wake.instance);
BEGIN
    RETURN jsonb_build_object('instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id),
                              'outcome', bridgecore._ring(inst_id));
END
$$;
COMMENT ON FUNCTION bridgecore.wake(text)
    IS 'Wakes the instance''s poller at once (rings in a burst coalesce into one fetch).';

-- The doorbell for a caller that holds only a push key (the gateway's
-- X-API-Key, PostgREST's /rpc/ring): the key names the instance. Keys are
-- looked up by their SHA-256, so the comparison's timing depends on the
-- digest of the guess, which tells nothing about a key. Refused keys count
-- against bridgecore.rate_limit_push_key per client (and all clients
-- together): once a client's budget is spent, its keys are not even
-- checked until the window ends. A failed call must not write the
-- statement, which holds the key, to the server log.
CREATE FUNCTION bridgecore.ring(push_key text DEFAULT NULL, client text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    k text := ring.push_key;
    who text := coalesce(nullif(left(ring.client, 64), ''), '*');
    inst_id integer;
    inst_name text;
BEGIN
    -- PostgREST puts the request's headers in request.headers.
    IF k IS NULL THEN
        k := nullif(current_setting('request.headers', true), '')::jsonb ->> 'x-api-key';
    END IF;
    IF k IS NULL OR k = '' THEN
        RAISE EXCEPTION 'a push key is required'
            USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                                 THEN 'invalid_authorization_specification' ELSE 'PT401' END,
                  HINT = 'Send the instance''s push key (bridgecore.alter_instance(name, push_key => ...)) as X-API-Key.';
    END IF;
    PERFORM bridgecore._rate_limit('push_key_check', 0, 0, who);
    IF length(k) <= 256 THEN
        SELECT i.id, i.name INTO inst_id, inst_name FROM bridgecore.instance i
         WHERE i.push_key_hash = sha256(convert_to(k, 'UTF8'));
    END IF;
    IF inst_id IS NULL THEN
        PERFORM bridgecore._rate_limit('push_key', 0, 0, who);
        RAISE EXCEPTION 'invalid push key'
            USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                                 THEN 'invalid_authorization_specification' ELSE 'PT401' END,
                  HINT = 'Send the instance''s push key (bridgecore.alter_instance(name, push_key => ...)) as X-API-Key.';
    END IF;
    RETURN jsonb_build_object('instance', inst_name, 'outcome', bridgecore._ring(inst_id));
END
$$;
COMMENT ON FUNCTION bridgecore.ring(text, text)
    IS 'Wakes the poller of the instance whose push key is given (the doorbell of Odoo''s pushes).';

-- Admins ring any instance (a token naming one confines them to it); a
-- caller without a token rings with a key; apps ring nothing. Monitoring
-- reads the doorbell's counters.
REVOKE ALL ON FUNCTION bridgecore._ring(integer), bridgecore._doorbell_stats(),
                       bridgecore.wake(text), bridgecore.ring(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridgecore.wake(text) TO bridgecore_admin;
GRANT EXECUTE ON FUNCTION bridgecore.ring(text, text) TO bridgecore_anon, bridgecore_admin;
GRANT EXECUTE ON FUNCTION bridgecore._doorbell_stats() TO bridgecore_monitor;
