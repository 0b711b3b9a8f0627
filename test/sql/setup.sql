-- Installs the extension and a helper that shows an error as SQLSTATE,
-- message and hint (stable across server versions, unlike VERBOSITY verbose).
CREATE EXTENSION bridgecore;
SELECT extversion FROM pg_extension WHERE extname = 'bridgecore';

CREATE FUNCTION try(query text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    state text; msg text; hint text;
BEGIN
    EXECUTE query;
    RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
    RETURN state || ': ' || msg || CASE WHEN hint <> '' THEN ' (hint: ' || hint || ')' ELSE '' END;
END
$$;

-- No instance yet: every API says so.
SELECT try($$ SELECT bridgecore.sync_pull(1, 'd1', 'sales_app') $$);

SELECT name, url, state, cursor FROM bridgecore.add_instance('main', 'https://erp.example.com/', 'prod', 'bot', 's3cret-secret-key');
SELECT name, models, is_default FROM bridgecore.app_type ORDER BY name;
