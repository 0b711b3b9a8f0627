-------------------------------------------------------------------------------
-- Ingestion
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._odoo_timestamp(text)
RETURNS timestamptz LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bridgecore_odoo_timestamp';
COMMENT ON FUNCTION bridgecore._odoo_timestamp(text) IS 'Odoo naive UTC datetime text to timestamptz; NULL when malformed.';

-- The ingestion path shared by bridgecore.ingest(), dead-letter retries and
-- the poller, in C.
CREATE FUNCTION bridgecore._ingest(inst_id integer, events json)
RETURNS jsonb LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_ingest_json';

CREATE FUNCTION bridgecore.ingest(instance text, events json)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN bridgecore._ingest(bridgecore._instance_id(instance), events);
END
$$;
COMMENT ON FUNCTION bridgecore.ingest(text, json) IS 'Stores a batch of update.webhook records exactly once; malformed ones go to dead_letter.';
