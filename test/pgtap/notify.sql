-- NOTIFY bridgecore_events: one wake-up per model and batch, sent at commit.
--
-- NOTIFY is only delivered at commit, which a rolled-back pgTAP file never
-- reaches. Part 1 therefore uses dblink to commit in a scratch database and
-- receive the payloads on a second connection; part 2 checks the
-- "notifications" count ingest returns, inside this transaction.
--
-- Order matters: the scratch database's CREATE EXTENSION creates the
-- cluster-wide roles in its own (committed) session, so this transaction
-- must not create them first (the remote CREATE ROLE would wait for us).
BEGIN;
SET LOCAL client_min_messages = warning;
SET LOCAL statement_timeout = '60s';
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION IF NOT EXISTS dblink;

SELECT plan(16);

-- Roles that only exist because of this file are dropped after ROLLBACK.
SELECT NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname IN ('bridgecore_app', 'bridgecore_admin')) AS drop_roles \gset

CREATE FUNCTION pg_temp.conninfo(db text) RETURNS text LANGUAGE sql AS $$
    SELECT format('host=%s port=%s user=%s dbname=%s',
                  coalesce(nullif(trim(split_part(current_setting('unix_socket_directories'), ',', 1)), ''), 'localhost'),
                  current_setting('port'), current_user, db)
$$;
CREATE FUNCTION pg_temp.scratch() RETURNS text LANGUAGE sql AS $$
    SELECT 'bridgecore_notify_' || pg_backend_pid()
$$;
-- Pumps the listener connection, then returns what it received.
CREATE FUNCTION pg_temp.received() RETURNS TABLE (channel text, pid integer, payload jsonb) LANGUAGE plpgsql AS $$
BEGIN
    -- A round trip makes the listener's backend send what it has pending.
    PERFORM dblink_exec('listener', 'DO $p$ BEGIN END $p$');
    RETURN QUERY SELECT n.notify_name, n.be_pid, n.extra::jsonb FROM dblink_get_notify('listener') n;
END
$$;
CREATE TEMP TABLE got (k text, channel text, pid integer, payload jsonb);

-------------------------------------------------------------------------------
-- Part 1: real notifications through a committed scratch database
-------------------------------------------------------------------------------
-- Also removes what an aborted earlier run may have left behind.
SELECT count(dblink_exec(pg_temp.conninfo(current_database()), format('DROP DATABASE IF EXISTS %I WITH (FORCE)', datname))) >= 0 AS ok
  FROM pg_database WHERE datname LIKE 'bridgecore\_notify\_%' OR datname = pg_temp.scratch() \gset
SELECT dblink_exec(pg_temp.conninfo(current_database()), format('CREATE DATABASE %I', pg_temp.scratch())) IS NOT NULL AS ok \gset
SELECT dblink_connect('writer', pg_temp.conninfo(pg_temp.scratch())) IS NOT NULL AS ok \gset
SELECT dblink_connect('listener', pg_temp.conninfo(pg_temp.scratch())) IS NOT NULL AS ok \gset
SELECT dblink_exec('writer', $$
    SET client_min_messages = warning;
    CREATE EXTENSION bridgecore;
    DO $r$ BEGIN PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key'); END $r$;
$$) IS NOT NULL AS ok \gset
SELECT dblink_exec('listener', 'LISTEN bridgecore_events') IS NOT NULL AS ok \gset

SELECT is((SELECT count(*)::int FROM pg_temp.received()), 0, 'nothing received before any ingest');

-- A committed batch: three sale.order (one high priority), one res.partner,
-- and a dead letter that must not be announced.
SELECT is((SELECT ingest FROM dblink('writer', $q$
    SELECT bridgecore.ingest('main', '[
      {"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00", "priority": "high"},
      {"id": 2, "model": "sale.order", "record_id": 2, "event": "create", "timestamp": "2025-11-16 10:30:00", "priority": "low"},
      {"id": 3, "model": "res.partner", "record_id": 3, "event": "write", "timestamp": "2025-11-16 10:30:00"},
      {"id": 4, "model": "sale.order", "record_id": 4, "event": "unlink", "timestamp": "2025-11-16 10:30:00"},
      {"id": 5, "model": "stock.move", "record_id": 5, "event": "nope", "timestamp": "2025-11-16 10:30:00"}
    ]')$q$) AS t(ingest jsonb))->'notifications',
    '2'::jsonb, 'committed ingest reports two notifications');
INSERT INTO got SELECT 'batch1', * FROM pg_temp.received();

SELECT is((SELECT count(*)::int FROM got WHERE k = 'batch1'), 2, 'listener receives one notification per model');
SELECT is((SELECT array_agg(DISTINCT channel) FROM got WHERE k = 'batch1'), ARRAY['bridgecore_events'],
          'on channel bridgecore_events');
SELECT is((SELECT array_agg(DISTINCT pid) FROM got WHERE k = 'batch1'),
          (SELECT array_agg(pid) FROM dblink('writer', 'SELECT pg_backend_pid()') AS t(pid integer)),
          'sent by the ingesting session');
SELECT is((SELECT payload FROM got WHERE k = 'batch1' AND payload->>'model' = 'sale.order'),
          (SELECT jsonb_build_object('instance', 'main', 'model', 'sale.order', 'count', 3, 'max_id', max_id, 'high', 1)
             FROM dblink('writer', $q$ SELECT max(id) FROM bridgecore.event WHERE model = 'sale.order' $q$) AS t(max_id bigint)),
          'sale.order payload: instance, model, count, max_id (local id), high');
SELECT is((SELECT payload FROM got WHERE k = 'batch1' AND payload->>'model' = 'res.partner'),
          (SELECT jsonb_build_object('instance', 'main', 'model', 'res.partner', 'count', 1, 'max_id', max_id, 'high', 0)
             FROM dblink('writer', $q$ SELECT max(id) FROM bridgecore.event WHERE model = 'res.partner' $q$) AS t(max_id bigint)),
          'res.partner payload');
SELECT is((SELECT count(*)::int FROM got WHERE k = 'batch1' AND payload->>'model' = 'stock.move'), 0,
          'dead-lettered records are not announced');

-- Rolled back: nothing is delivered.
SELECT dblink_exec('writer', $q$
    BEGIN;
    DO $r$ BEGIN PERFORM bridgecore.ingest('main', '[{"id": 10, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"}]'); END $r$;
    ROLLBACK;
$q$) IS NOT NULL AS ok \gset
SELECT is((SELECT count(*)::int FROM pg_temp.received()), 0, 'a rolled-back ingest notifies nobody');

-- Only duplicates: nothing new, no wake-up.
SELECT dblink_exec('writer', $q$
    DO $r$ BEGIN PERFORM bridgecore.ingest('main', '[{"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"}]'); END $r$;
$q$) IS NOT NULL AS ok \gset
SELECT is((SELECT count(*)::int FROM pg_temp.received()), 0, 'a batch of duplicates notifies nobody');

-- A large batch still sends one bounded notification per model.
SELECT dblink_exec('writer', $q$
    DO $r$ BEGIN PERFORM bridgecore.ingest('main', (SELECT json_agg(json_build_object('id', 100 + g, 'model', 'product.product',
                                                                        'record_id', g, 'event', 'write',
                                                                        'timestamp', '2025-11-16 10:30:00'))
                                        FROM generate_series(1, 2000) g)); END $r$;
$q$) IS NOT NULL AS ok \gset
INSERT INTO got SELECT 'big', * FROM pg_temp.received();
SELECT is((SELECT count(*)::int FROM got WHERE k = 'big'), 1, '2000 events of one model: one notification');
SELECT is((SELECT payload->'count' FROM got WHERE k = 'big'), '2000'::jsonb, '... carrying the count');

SELECT dblink_disconnect('listener') IS NOT NULL AS ok \gset
SELECT dblink_disconnect('writer') IS NOT NULL AS ok \gset
SELECT dblink_exec(pg_temp.conninfo(current_database()), format('DROP DATABASE %I WITH (FORCE)', pg_temp.scratch())) IS NOT NULL AS ok \gset

-------------------------------------------------------------------------------
-- Part 2: the notifications count, inside this transaction
-------------------------------------------------------------------------------
CREATE EXTENSION bridgecore;
DO $$ BEGIN PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key'); END $$;

SELECT is(to_jsonb(bridgecore.ingest('main', '[
    {"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
    {"id": 2, "model": "sale.order", "record_id": 2, "event": "create", "timestamp": "2025-11-16 10:30:00"},
    {"id": 3, "model": "res.partner", "record_id": 3, "event": "create", "timestamp": "2025-11-16 10:30:00"},
    {"id": 4, "model": "mail.message", "record_id": 4, "event": "create", "timestamp": "2025-11-16 10:30:00"}
  ]'))->'notifications', '3'::jsonb, 'one notification per model with new events');
SELECT is(to_jsonb(bridgecore.ingest('main', '[
    {"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
    {"id": 5, "model": "res.partner", "record_id": 3, "event": "write", "timestamp": "2025-11-16 10:30:00"}
  ]'))->'notifications', '1'::jsonb, 'a model with only duplicates is not notified');
SELECT is(to_jsonb(bridgecore.ingest('main', '[
    {"id": 6, "model": "sale.order", "record_id": 1, "event": "bogus", "timestamp": "2025-11-16 10:30:00"}
  ]'))->'notifications', '0'::jsonb, 'a batch of dead letters notifies nobody');
SELECT is(pg_notification_queue_usage(), 0::double precision, 'nothing is queued before commit');

SELECT * FROM finish();
ROLLBACK;

-- Outside the test transaction: drop the roles if the scratch database's
-- extension created them (they are cluster-wide and outlive it).
\if :drop_roles
SET client_min_messages = warning;
DROP ROLE IF EXISTS bridgecore_admin;
DROP ROLE IF EXISTS bridgecore_app;
\endif
