-- Privileges: nothing for PUBLIC, sync and queries for apps, the rest for admins.
SELECT p.proname, pg_get_function_identity_arguments(p.oid) AS args,
       has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec,
       has_function_privilege('bridgecore_app', p.oid, 'EXECUTE') AS app_exec,
       has_function_privilege('bridgecore_admin', p.oid, 'EXECUTE') AS admin_exec,
       p.prosecdef AS definer,
       p.proconfig
  FROM pg_proc p
 WHERE p.pronamespace = 'bridgecore'::regnamespace
 ORDER BY p.proname, args;

-- Tables: apps see none; admins read all but the instance table (its view
-- has no secret); nobody but the owner writes. The partitions of the event
-- log are read through bridgecore.event only.
SELECT c.relname, c.relispartition AS partition,
       has_table_privilege('bridgecore_app', c.oid, 'SELECT') AS app_select,
       has_table_privilege('bridgecore_admin', c.oid, 'SELECT') AS admin_select,
       has_table_privilege('bridgecore_admin', c.oid, 'INSERT,UPDATE,DELETE,TRUNCATE,TRIGGER') AS admin_write
  FROM pg_class c
 WHERE c.relnamespace = 'bridgecore'::regnamespace AND c.relkind IN ('r', 'p', 'v')
 ORDER BY c.relname;
SELECT count(*) AS secret_columns FROM information_schema.columns
 WHERE table_schema = 'bridgecore' AND table_name = 'instances' AND column_name = 'secret';

-- As the app role.
SET bridgecore.rate_limit_sync_pull = 0;
SET bridgecore.rate_limit_sync_state = 0;
CREATE ROLE regress_bc_device LOGIN IN ROLE bridgecore_app;
SET ROLE regress_bc_device;
SELECT try($$ SELECT bridgecore.sync_pull(1, 'app-device', 'sales_app') -> 'status' $$);
SELECT try($$ SELECT bridgecore.ingest('main', '[]') $$);
SELECT try($$ SELECT bridgecore.cleanup(now()) $$);
SELECT try($$ SELECT bridgecore.add_instance('evil', 'http://evil.example', 'db', 'u', 'k-secret-key') $$);
SELECT try($$ SELECT secret FROM bridgecore.instance $$);
SELECT try($$ SELECT * FROM bridgecore.sync_state $$);
SELECT try($$ UPDATE bridgecore.sync_state SET last_event_id = 0 $$);
SELECT try($$ SELECT bridgecore._rate_limit('sync_pull', 1, 1, 'x') $$);

-- PostgREST's JWT claims: a device may only act for its own user.
SELECT set_config('request.jwt.claims', '{"role": "regress_bc_device", "user_id": 7}', false) IS NOT NULL AS claims_set;
SELECT try($$ SELECT bridgecore.sync_pull(8, 'app-device', 'sales_app') $$);
SELECT try($$ SELECT bridgecore.sync_reset(8, 'app-device') $$);
SELECT try($$ SELECT bridgecore.sync_state(8, 'app-device') $$);
SELECT try($$ SELECT bridgecore.sync_pull(7, 'app-device', 'sales_app') -> 'status' $$);
SELECT set_config('request.jwt.claims', '{"role": "regress_bc_device", "user_id": "7"}', false) IS NOT NULL AS claims_set;
SELECT try($$ SELECT bridgecore.sync_state(7, 'app-device') -> 'user_id' $$);
-- A token naming an instance confines the caller to it.
SELECT set_config('request.jwt.claims', '{"role": "regress_bc_device", "user_id": 7, "instance": "main"}', false) IS NOT NULL AS claims_set;
SELECT try($$ SELECT bridgecore.sync_pull(7, 'app-device', 'sales_app', instance => 'other') $$);
SELECT try($$ SELECT bridgecore.events(instance => 'other') $$);
SELECT try($$ SELECT bridgecore.sync_pull(7, 'app-device', 'sales_app', instance => 'main') -> 'status' $$);
SELECT try($$ SELECT bridgecore.check_updates() -> 'has_update' $$);
SELECT set_config('request.jwt.claims', '{"role": "regress_bc_device", "user_id": 7, "instance": "gone"}', false) IS NOT NULL AS claims_set;
SELECT try($$ SELECT bridgecore.sync_pull(7, 'app-device', 'sales_app') $$);
-- Unknown device: P0002 for SQL callers, PT404 (HTTP 404) through PostgREST.
SELECT set_config('request.jwt.claims', '{"role": "regress_bc_device", "user_id": 7}', false) IS NOT NULL AS claims_set;
SELECT try($$ SELECT bridgecore.sync_state(7, 'no-such-device') $$);
SELECT set_config('request.method', 'POST', false) IS NOT NULL AS via_postgrest;
SELECT try($$ SELECT bridgecore.sync_state(7, 'no-such-device') $$);
SELECT try($$ SELECT bridgecore.sync_reset(7, 'no-such-device') $$);
SELECT set_config('request.method', '', false) IS NOT NULL AS method_cleared;
SELECT set_config('request.jwt.claims', '', false) IS NOT NULL AS claims_cleared;
RESET ROLE;

-- As an admin.
CREATE ROLE regress_bc_admin LOGIN IN ROLE bridgecore_admin;
SET ROLE regress_bc_admin;
SELECT try($$ SELECT count(*) FROM bridgecore.instances $$);
SELECT try($$ SELECT secret FROM bridgecore.instance $$);
SELECT try($$ DELETE FROM bridgecore.event $$);
SELECT try($$ SELECT bridgecore.set_app_type('admin_app', '{res.partner}') $$);
RESET ROLE;

-- Rate limits: over the limit raises PT429 (PostgREST answers HTTP 429).
-- Windows live in shared memory, so each run uses fresh device ids.
SELECT 'rl-' || md5(random()::text) AS dev_a, 'rl-' || md5(random()::text) AS dev_b \gset
SET bridgecore.rate_limit_sync_reset = 2;
SELECT bridgecore.sync_pull(7, :'dev_a', 'sales_app') -> 'status' AS created_a;
SELECT bridgecore.sync_pull(7, :'dev_b', 'sales_app') -> 'status' AS created_b;
SELECT regexp_replace(try(format($$ SELECT bridgecore.sync_reset(7, %L) $$, :'dev_a')), '[0-9]+ seconds', 'N seconds') AS reset
  FROM generate_series(1, 3);
-- Another device of the same user has its own window.
SELECT try(format($$ SELECT bridgecore.sync_reset(7, %L) $$, :'dev_b')) AS other_device;
RESET bridgecore.rate_limit_sync_reset;

-- The instance rule (C, no SET search_path of its own) prepares its
-- statements in the caller's session: they name the schema of every
-- operator and function, so an operator earlier in the search_path is not
-- theirs. A new session, so that they are prepared here.
\c
CREATE SCHEMA regress_bc_evil;
CREATE FUNCTION regress_bc_evil.text_eq(a text, b text) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'regress_bc_evil.= called'; RETURN a OPERATOR(pg_catalog.=) b; END $$;
CREATE FUNCTION regress_bc_evil.int_eq(a integer, b integer) RETURNS boolean LANGUAGE plpgsql AS
$$ BEGIN RAISE NOTICE 'regress_bc_evil.= called'; RETURN a OPERATOR(pg_catalog.=) b; END $$;
CREATE OPERATOR regress_bc_evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = regress_bc_evil.text_eq);
CREATE OPERATOR regress_bc_evil.= (LEFTARG = integer, RIGHTARG = integer, FUNCTION = regress_bc_evil.int_eq);
SET search_path = regress_bc_evil, pg_catalog, public;
SELECT bridgecore._instance_id('main') OPERATOR(pg_catalog.=) (SELECT id FROM bridgecore.instance WHERE name OPERATOR(pg_catalog.=) 'main') AS by_name;
SELECT bridgecore._instance_id(NULL) IS NOT NULL AS the_only_one;
SET bridgecore.rate_limit_sync_pull = 0;
SELECT (bridgecore.sync_pull(7, 'evil-path-device', 'sales_app',
                             sync_token => 'bc1:' || (SELECT id FROM bridgecore.instance WHERE name OPERATOR(pg_catalog.=) 'main') || ':0')
        ->> 'status') AS pulled;
-- Claims are parsed once per distinct text, and read anew when it changes;
-- claims that are not JSON are refused as before.
SELECT set_config('request.jwt.claims', '{"instance": "gone"}', false) IS NOT NULL AS claims_set;
SELECT try($$ SELECT bridgecore._instance_id(NULL) $$);
SELECT set_config('request.jwt.claims', '{"instance": "main"}', false) IS NOT NULL AS claims_set;
SELECT try($$ SELECT bridgecore._instance_id('gone') $$);
SELECT bridgecore._instance_id(NULL) IS NOT NULL AS confined;
SELECT set_config('request.jwt.claims', '{"instance": ', false) IS NOT NULL AS claims_set;
SELECT try($$ SELECT bridgecore._instance_id(NULL) $$);
SELECT set_config('request.jwt.claims', '', false) IS NOT NULL AS claims_cleared;
RESET search_path;
DROP SCHEMA regress_bc_evil CASCADE;

DROP OWNED BY regress_bc_device, regress_bc_admin;
DROP ROLE regress_bc_device;
DROP ROLE regress_bc_admin;
