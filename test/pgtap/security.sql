-- Roles, grants, the secret column, SECURITY DEFINER hygiene and the JWT
-- user check.
\ir setup.psql

SELECT plan(74);

DO $$ BEGIN
    PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.ingest('main', '[{"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"}]');
END $$;

-- Names of the bridgecore functions a role may execute.
CREATE FUNCTION pg_temp.executable(role text) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(DISTINCT p.proname::text ORDER BY p.proname::text), '{}')
      FROM pg_proc p
     WHERE p.pronamespace = 'bridgecore'::regnamespace
       AND has_function_privilege(role, p.oid, 'EXECUTE')
$$;
-- "relation:privilege" a role holds on bridgecore relations.
CREATE FUNCTION pg_temp.table_privs(role text) RETURNS text[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg(c.relname || ':' || pr ORDER BY c.relname, pr), '{}')
      FROM pg_class c
     CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) pr
     WHERE c.relnamespace = 'bridgecore'::regnamespace AND c.relkind IN ('r', 'v', 'p')
       AND has_table_privilege(role, c.oid, pr)
$$;

-------------------------------------------------------------------------------
-- Roles
-------------------------------------------------------------------------------
SELECT has_role('bridgecore_app', 'role bridgecore_app exists');
SELECT has_role('bridgecore_admin', 'role bridgecore_admin exists');
SELECT is((SELECT bool_or(rolcanlogin OR rolsuper OR rolcreaterole OR rolbypassrls) FROM pg_roles
            WHERE rolname IN ('bridgecore_app', 'bridgecore_admin')), false,
          'both roles are NOLOGIN group roles without special attributes');
SELECT is_member_of('bridgecore_app', 'bridgecore_admin', 'bridgecore_admin is a member of bridgecore_app');

-------------------------------------------------------------------------------
-- Function privileges
-------------------------------------------------------------------------------
SELECT is(pg_temp.executable('bridgecore_app'),
          ARRAY['check_updates', 'events', 'login', 'refresh_token', 'sync_pull', 'sync_reset', 'sync_reset_all',
                'sync_scope', 'sync_state', 'verify_token'],
          'the app role can execute exactly the sync, query and token functions');
SELECT is(pg_temp.executable('bridgecore_anon'), ARRAY['authorize', 'login', 'ring', 'verify_token'],
          'the anonymous role can only log in, verify tokens (and act as one: authorize) and ring with a push key');
-- Admins are monitors too; the stats views and bridgecore.instances read
-- shared memory through the read-only _stats/_error_kinds/_last_success
-- helpers, so monitors may call them (and _doorbell_stats, the doorbell's).
SELECT is(pg_temp.executable('bridgecore_admin'),
          ARRAY['_doorbell_stats', '_error_kinds', '_last_success', '_stats_instances', '_stats_models',
                'add_instance', 'alter_instance', 'check_updates', 'cleanup',
                'deactivate_idle_devices', 'discover_models', 'events', 'ignore_dead_letter', 'ingest',
                'initialize_audit', 'issue_token', 'login', 'metrics', 'partitions', 'refresh_token', 'remove_instance',
                'retry_dead_letter', 'retry_dead_letters', 'ring', 'set_app_type', 'stats_reset', 'status', 'sync_pull',
                'sync_reset', 'sync_reset_all', 'sync_scope', 'sync_state', 'verify_token', 'wake'],
          'the admin role can execute the API, and of the internal helpers only the read-only counters');
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname)
             FROM pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
            WHERE p.pronamespace = 'bridgecore'::regnamespace AND a.grantee = 0),
          NULL, 'no bridgecore function is executable by PUBLIC');
SELECT cmp_ok((SELECT count(*)::int FROM pg_proc WHERE pronamespace = 'bridgecore'::regnamespace), '>=', 20,
              '... checked over every function of the schema');
SELECT is(pg_temp.executable('public'), '{}', 'has_function_privilege agrees for PUBLIC');

-------------------------------------------------------------------------------
-- Table privileges and the secret
-------------------------------------------------------------------------------
SELECT is((SELECT array_agg(c.relname::text ORDER BY c.relname)
             FROM pg_class c, aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
            WHERE c.relnamespace = 'bridgecore'::regnamespace AND a.grantee = 0),
          NULL, 'PUBLIC has no privilege on any bridgecore relation');
SELECT is(pg_temp.table_privs('bridgecore_app'), '{}', 'the app role has no table privilege (it goes through the functions)');
SELECT is((SELECT array_agg(p ORDER BY p) FROM unnest(pg_temp.table_privs('bridgecore_admin')) p WHERE p NOT LIKE '%:SELECT'),
          NULL, 'the admin role may only read');
SELECT ok(pg_temp.table_privs('bridgecore_admin')
              @> ARRAY['app_type:SELECT', 'dead_letter:SELECT', 'event:SELECT', 'instances:SELECT', 'sync_state:SELECT'],
          'the admin role reads the instances view, events, sync states, app types and dead letters');
SELECT is(has_table_privilege('bridgecore_admin', 'bridgecore.instance', 'SELECT'), false,
          'the admin role cannot read the instance table');
SELECT is((SELECT array_agg(r.rolname::text ORDER BY r.rolname) FROM pg_roles r
            WHERE has_column_privilege(r.oid, 'bridgecore.instance'::regclass, 'secret', 'SELECT')
              AND NOT r.rolsuper
              -- Built in: reads every table by definition; granting it is a superuser's decision.
              AND r.rolname <> 'pg_read_all_data'),
          NULL, 'no ordinary role can read instance.secret');
SELECT is((SELECT count(*)::int FROM information_schema.column_privileges
            WHERE table_schema = 'bridgecore' AND table_name = 'instance' AND column_name = 'secret'
              AND grantee IN ('bridgecore_app', 'bridgecore_admin', 'PUBLIC')),
          0, 'no column grant on instance.secret');
SELECT hasnt_column('bridgecore', 'instances', 'secret', 'the instances view has no secret column');
SELECT has_column('bridgecore', 'instance', 'secret', '(the table does have one)');

-------------------------------------------------------------------------------
-- SECURITY DEFINER hygiene
-------------------------------------------------------------------------------
SELECT is((SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc
            WHERE pronamespace = 'bridgecore'::regnamespace AND prosecdef
              AND NOT coalesce(proconfig @> ARRAY['search_path=pg_catalog, pg_temp'], false)),
          NULL, 'every SECURITY DEFINER function pins search_path = pg_catalog, pg_temp');
SELECT is((SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc
            WHERE pronamespace = 'bridgecore'::regnamespace AND prosecdef),
          -- _shard_step: granted to bridgecore_router only (a router's moves).
          ARRAY['_shard_step', 'add_instance', 'alter_instance', 'check_updates', 'cleanup',
                'deactivate_idle_devices', 'discover_models', 'events', 'ignore_dead_letter', 'ingest',
                'initialize_audit', 'issue_token', 'login', 'metrics', 'partitions', 'refresh_token', 'remove_instance',
                'retry_dead_letter', 'retry_dead_letters', 'ring', 'set_app_type', 'stats_reset', 'status', 'sync_pull',
                'sync_reset', 'sync_reset_all', 'sync_scope', 'sync_state', 'wake'],
          'the SECURITY DEFINER functions are exactly the granted API (and a router''s move steps), but for the two below');
-- The granted functions that run as their caller: C that runs no SQL (the
-- secret is read from the setting's variable), so nothing for a definer's
-- rights to protect.
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
            WHERE p.pronamespace = 'bridgecore'::regnamespace AND NOT p.prosecdef
              AND p.proname !~ '^_'    -- the API; the views' C readers (_stats_models...) are not
              AND (has_function_privilege('bridgecore_anon', p.oid, 'EXECUTE')
                   OR has_function_privilege('bridgecore_app', p.oid, 'EXECUTE')
                   OR has_function_privilege('bridgecore_monitor', p.oid, 'EXECUTE')
                   OR has_function_privilege('bridgecore_admin', p.oid, 'EXECUTE'))),
          ARRAY['authorize', 'verify_token'],
          'the granted API functions that are not SECURITY DEFINER are authorize and verify_token, C that runs no SQL');
SELECT is((SELECT array_agg(p.proname::text ORDER BY p.proname) FROM pg_proc p
            WHERE p.oid IN ('bridgecore.authorize(text)'::regprocedure, 'bridgecore.verify_token(text)'::regprocedure)
              AND p.prolang = (SELECT oid FROM pg_language WHERE lanname = 'c')),
          ARRAY['authorize', 'verify_token'], '(both are C)');
-- A router's entry points: its login only (it acts as any role, and moves read secrets).
SELECT ok(NOT has_function_privilege('bridgecore_admin', 'bridgecore._shard_step(text, jsonb)', 'EXECUTE')
          AND NOT has_function_privilege('bridgecore_app', 'bridgecore._shard_step(text, jsonb)', 'EXECUTE'),
          'neither admins nor apps may run a move''s steps');
SELECT ok(NOT has_function_privilege('bridgecore_admin', 'bridgecore._routed_call(text, jsonb, text, jsonb)', 'EXECUTE')
          AND NOT has_function_privilege('bridgecore_app', 'bridgecore._routed_call(text, jsonb, text, jsonb)', 'EXECUTE'),
          'neither admins nor apps may make a routed call');
SELECT ok(has_function_privilege('bridgecore_router', 'bridgecore._shard_step(text, jsonb)', 'EXECUTE')
          AND has_function_privilege('bridgecore_router', 'bridgecore._routed_call(text, jsonb, text, jsonb)', 'EXECUTE'),
          'bridgecore_router may');
SELECT ok(NOT EXISTS (SELECT FROM pg_auth_members m WHERE m.roleid = 'bridgecore_router'::regrole
                         AND m.member IN ('bridgecore_app'::regrole, 'bridgecore_admin'::regrole, 'bridgecore_anon'::regrole,
                                          'bridgecore_monitor'::regrole)),
          'no BridgeCore role is a member of bridgecore_router');
SELECT is((SELECT array_agg(proname::text ORDER BY proname) FROM pg_proc
            WHERE pronamespace = 'bridgecore'::regnamespace AND prosecdef
              AND NOT (SELECT rolsuper FROM pg_roles WHERE oid = proowner)),
          NULL, 'SECURITY DEFINER functions are owned by the (superuser) extension owner');

-------------------------------------------------------------------------------
-- Acting as the app role
-------------------------------------------------------------------------------
SET LOCAL ROLE bridgecore_app;
SELECT is(current_user::text, 'bridgecore_app', 'now acting as bridgecore_app');
SELECT is(to_jsonb(bridgecore.sync_pull(1, 'dev-1', 'sales_app'))->'new_events_count', '1'::jsonb, 'app role: sync_pull works');
SELECT is(to_jsonb(bridgecore.sync_state(1, 'dev-1'))->'sync_count', '1'::jsonb, 'app role: sync_state works');
SELECT is(to_jsonb(bridgecore.sync_reset(1, 'dev-1'))->>'status', 'success', 'app role: sync_reset works');
SELECT is(to_jsonb(bridgecore.events())->'count', '1'::jsonb, 'app role: events works');
SELECT is(to_jsonb(bridgecore.check_updates())->'has_update', 'true'::jsonb, 'app role: check_updates works');
SELECT throws_ok($$ SELECT bridgecore.ingest('main', '[]') $$, '42501', NULL, 'app role: ingest denied');
SELECT throws_ok($$ SELECT bridgecore.cleanup(now()) $$, '42501', NULL, 'app role: cleanup denied');
SELECT throws_ok($$ SELECT bridgecore.add_instance('x', 'https://x.example.com', 'd', 'l', 's-secret-key') $$, '42501', NULL,
                 'app role: add_instance denied');
SELECT throws_ok($$ SELECT bridgecore.alter_instance('main', enabled => false) $$, '42501', NULL, 'app role: alter_instance denied');
SELECT throws_ok($$ SELECT bridgecore.remove_instance('main') $$, '42501', NULL, 'app role: remove_instance denied');
SELECT throws_ok($$ SELECT bridgecore.set_app_type('x', '{sale.order}') $$, '42501', NULL, 'app role: set_app_type denied');
SELECT throws_ok($$ SELECT bridgecore._rate_limit('sync_pull', 1, 1, 'd') $$, '42501', NULL,
                 'app role: cannot touch other devices'' rate limits');
SELECT throws_ok($$ SELECT count(*) FROM bridgecore.event $$, '42501', NULL, 'app role: cannot read event directly');
SELECT throws_ok($$ SELECT count(*) FROM bridgecore.instances $$, '42501', NULL, 'app role: cannot read instances');
SELECT throws_ok($$ SET bridgecore.rate_limit_sync_pull = 0 $$, '42501', NULL, 'app role: cannot lift its rate limit');
SELECT throws_ok($$ SELECT set_config('bridgecore.rate_limit_sync_pull', '0', true) $$, '42501', NULL,
                 'app role: cannot lift its rate limit through set_config');
SELECT throws_ok($$ SET bridgecore.rate_limit_per_user_factor = 0 $$, '42501', NULL, 'app role: cannot lift its per-user rate limit');
SELECT throws_ok($$ SET bridgecore.rate_limit_new_devices = 0 $$, '42501', NULL, 'app role: cannot lift its cap on new devices');

-- JWT: a PostgREST caller whose token carries user_id acts only for that user.
SELECT is(set_config('request.jwt.claims', '{"user_id": 7, "role": "bridgecore_app"}', true) IS NOT NULL, true, 'JWT claims set for user 7');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(8, 'dev-1', 'sales_app') $$, '42501', NULL, 'JWT user 7: sync_pull for user 8 denied');
SELECT throws_ok($$ SELECT bridgecore.sync_state(8, 'dev-1') $$, '42501', NULL, 'JWT user 7: sync_state for user 8 denied');
SELECT throws_ok($$ SELECT bridgecore.sync_reset(8, 'dev-1') $$, '42501', NULL, 'JWT user 7: sync_reset for user 8 denied');
SELECT is(to_jsonb(bridgecore.sync_pull(7, 'dev-1', 'sales_app'))->>'status', 'success', 'JWT user 7: sync_pull for user 7 works');
SELECT is(set_config('request.jwt.claims', '{"user_id": "7"}', true) IS NOT NULL, true, 'JWT user_id as a string');
SELECT is(to_jsonb(bridgecore.sync_state(7, 'dev-1'))->'user_id', '7'::jsonb, 'JWT "7": sync_state for user 7 works');
SELECT throws_ok($$ SELECT bridgecore.sync_state(77, 'dev-1') $$, '42501', NULL, 'JWT "7": user 77 denied (no prefix match)');
SELECT is(set_config('request.jwt.claims', '{"role": "bridgecore_app"}', true) IS NOT NULL, true, 'JWT without user_id');
SELECT is(to_jsonb(bridgecore.sync_pull(8, 'dev-1', 'sales_app'))->>'status', 'success', 'no user_id claim: any user may be named');
SELECT is(set_config('request.jwt.claims', '', true) IS NOT NULL, true, 'JWT claims cleared');
SELECT is(to_jsonb(bridgecore.sync_pull(9, 'dev-1', 'sales_app'))->>'status', 'success', 'empty claims: no user check');
RESET ROLE;

-------------------------------------------------------------------------------
-- Acting as the admin role
-------------------------------------------------------------------------------
SET LOCAL ROLE bridgecore_admin;
SELECT is(to_jsonb(bridgecore.ingest('main', '[{"id": 2, "model": "sale.order", "record_id": 2, "event": "write", "timestamp": "2025-11-16 10:30:00"}]'))->'inserted',
          '1'::jsonb, 'admin role: ingest works');
SELECT is((SELECT url FROM bridgecore.instances WHERE name = 'main'), 'https://erp.example.com', 'admin role: reads the instances view');
SELECT throws_ok($$ SELECT secret FROM bridgecore.instance $$, '42501', NULL, 'admin role: cannot read instance.secret');
SELECT throws_ok($$ DELETE FROM bridgecore.event $$, '42501', NULL, 'admin role: cannot delete events directly');
RESET ROLE;

-------------------------------------------------------------------------------
-- JWT instance claim: a PostgREST caller whose token names an instance is
-- confined to it.
-------------------------------------------------------------------------------
DO $$ BEGIN
    PERFORM bridgecore.add_instance('second', 'https://other.example.com', 'db2', 'bot', 'x-secret-key');
    PERFORM bridgecore.ingest('second', '[{"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2020-01-01 00:00:00"}]');
    PERFORM bridgecore.ingest('main', '[{"id": 3, "model": "sale.order", "record_id": 3, "event": "create", "timestamp": "2020-01-01 00:00:00"}]');
END $$;
CREATE FUNCTION pg_temp.nev(inst text) RETURNS integer LANGUAGE sql AS $$
    SELECT count(*)::int FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id WHERE i.name = inst
$$;

SET LOCAL ROLE bridgecore_app;
SELECT is(set_config('request.jwt.claims', '{"user_id": 7, "instance": "main"}', true) IS NOT NULL, true, 'JWT claims for user 7 on instance main');
SELECT throws_ok($$ SELECT bridgecore.sync_pull(7, 'dev-1', 'sales_app', instance => 'second') $$, '42501', NULL,
                 'instance claim: another instance is refused');
SELECT is(to_jsonb(bridgecore.sync_pull(7, 'dev-9', 'sales_app'))->>'status', 'success',
          'instance claim: instance may be omitted although two instances exist');
SELECT is(to_jsonb(bridgecore.sync_state(7, 'dev-9'))->'sync_count', '1'::jsonb,
          '... and the state was created on the claimed instance');
SELECT throws_ok($$ SELECT bridgecore.events(instance => 'second') $$, '42501', NULL, 'instance claim: events of another instance refused');
RESET ROLE;

SET LOCAL ROLE bridgecore_admin;
SELECT is(set_config('request.jwt.claims', '{"role": "ops", "instance": "main"}', true) IS NOT NULL, true, 'admin JWT confined to instance main');
SELECT throws_ok($$ SELECT bridgecore.ingest('second', '[]') $$, '42501', NULL, 'instance claim: ingest into another instance refused');
SELECT throws_ok($$ SELECT bridgecore.cleanup(now(), instance => 'second') $$, '42501', NULL,
                 'instance claim: cleanup of a named other instance refused');
SELECT throws_ok($$ SELECT bridgecore.remove_instance('second') $$, '42501', NULL, 'instance claim: removing another instance refused');
-- cleanup() with instance omitted is confined to the claimed instance too.
SELECT is(to_jsonb(bridgecore.cleanup('2026-01-01'))->'deleted', '3'::jsonb,
          'instance claim: cleanup without instance deletes only the claimed instance''s old events');
RESET ROLE;
SELECT is(pg_temp.nev('second'), 1, 'instance claim: cleanup without instance leaves other instances alone');

SELECT * FROM finish();
ROLLBACK;
