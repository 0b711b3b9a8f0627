-- The event log by partition: partitions made ahead, ingestion across
-- partition boundaries (order, exactly once), retention by dropping whole
-- partitions (never the newest, horizons per model, resync_required), and
-- the summary of each partition retention reads instead of its rows.
\ir setup.psql
SET LOCAL bridgecore.partition_size = 10;

SELECT plan(65);

CREATE TEMP TABLE r (k text PRIMARY KEY, v jsonb);
CREATE FUNCTION pg_temp.r(key text) RETURNS jsonb LANGUAGE sql AS $$ SELECT v FROM r WHERE k = key $$;
-- Records of Odoo ids ids, all at instant ts.
CREATE FUNCTION pg_temp.recs(ids bigint[], ts timestamptz, model text DEFAULT 'sale.order')
RETURNS json LANGUAGE sql AS $$
    SELECT json_agg(json_build_object('id', i, 'model', model, 'record_id', i, 'event', 'write',
                                      'timestamp', to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')) ORDER BY i)
      FROM unnest(ids) i
$$;
CREATE FUNCTION pg_temp.parts() RETURNS text LANGUAGE sql AS $$
    SELECT string_agg(format('[%s,%s)', p.lo, p.hi), ' ' ORDER BY p.lo) FROM bridgecore._partitions() p
$$;
CREATE FUNCTION pg_temp.ingest(ids bigint[], ts timestamptz, model text DEFAULT 'sale.order') RETURNS jsonb
LANGUAGE sql AS $$ SELECT bridgecore.ingest('main', pg_temp.recs(ids, ts, model)) - 'instance' - 'max_odoo_id' $$;
CREATE FUNCTION pg_temp.pulled(p jsonb) RETURNS bigint[] LANGUAGE sql AS $$
    SELECT coalesce(array_agg((e ->> 'record_id')::bigint ORDER BY (e ->> 'id')::bigint), '{}')
      FROM jsonb_array_elements(p -> 'events') e
$$;

-- Rows of bridgecore.partition_summary that disagree with the log: events
-- per (partition, instance, model), stored less deleted, and a max_id below
-- the highest id there.
CREATE FUNCTION pg_temp.summary_wrong() RETURNS bigint LANGUAGE sql AS $$
    WITH s AS (SELECT s.part::oid AS part, s.instance_id, s.model,
                      sum(CASE WHEN s.deleted THEN -s.events ELSE s.events END) AS n,
                      max(s.max_id) FILTER (WHERE NOT s.deleted) AS max_id
                 FROM bridgecore.partition_summary s GROUP BY 1, 2, 3),
         e AS (SELECT e.tableoid AS part, e.instance_id, e.model, count(*) AS n, max(e.id) AS max_id
                 FROM bridgecore.event e GROUP BY 1, 2, 3)
    SELECT count(*) FROM s FULL JOIN e USING (part, instance_id, model)
     WHERE coalesce(s.n, 0) <> coalesce(e.n, 0) OR s.max_id < e.max_id
        OR s.part NOT IN (SELECT p.part FROM bridgecore._partitions() p)
$$;

DO $$ BEGIN PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key'); END $$;

-------------------------------------------------------------------------------
-- Partitions ahead
-------------------------------------------------------------------------------
SELECT is(pg_temp.parts(), NULL, 'a fresh install has no partition yet');
SELECT is(bridgecore._maintenance_step(), 0::bigint, 'maintenance with nothing to retain drops nothing');
SELECT is(pg_temp.parts(), '[1,11)', 'maintenance makes a partition ahead of the ids');
SELECT is((SELECT count(*)::int FROM pg_depend d WHERE d.objid = 'bridgecore.event_1'::regclass AND d.deptype = 'e'), 0,
          'a partition is no member of the extension (pg_dump keeps it)');
SELECT is((SELECT array_agg(pg_get_indexdef(i.indexrelid) ORDER BY pg_get_indexdef(i.indexrelid))
             FROM pg_index i WHERE i.indrelid = 'bridgecore.event_1'::regclass),
          ARRAY['CREATE INDEX event_1_instance_id_id_idx ON bridgecore.event_1 USING btree (instance_id, id)',
                'CREATE INDEX event_1_instance_id_model_id_idx ON bridgecore.event_1 USING btree (instance_id, model, id)',
                'CREATE INDEX event_1_instance_id_odoo_id_idx ON bridgecore.event_1 USING btree (instance_id, odoo_id)',
                'CREATE INDEX event_1_occurred_at_idx ON bridgecore.event_1 USING btree (occurred_at)',
                'CREATE UNIQUE INDEX event_1_pkey ON bridgecore.event_1 USING btree (id)'],
          'each partition has the primary key on id and the indexes of the log');

-------------------------------------------------------------------------------
-- Ingestion across partition boundaries
-------------------------------------------------------------------------------
-- Odoo ids 1..25 in one batch: three partitions, ids in Odoo id order.
INSERT INTO r VALUES ('i1', pg_temp.ingest(ARRAY(SELECT generate_series(1, 25)::bigint), '2020-01-01'));
SELECT is(pg_temp.r('i1')->'inserted', '25'::jsonb, 'a batch wider than the partitions is stored');
SELECT is(pg_temp.parts(), '[1,11) [11,21) [21,31)', '... the store path made the partitions it needed');
SELECT is((SELECT array_agg(e.odoo_id ORDER BY e.id) FROM bridgecore.event e),
          ARRAY(SELECT generate_series(1, 25)::bigint), '... local ids follow Odoo ids across partitions');
SELECT is((SELECT array_agg(DISTINCT e.tableoid::regclass::text ORDER BY e.tableoid::regclass::text) FROM bridgecore.event e),
          ARRAY['bridgecore.event_1', 'bridgecore.event_11', 'bridgecore.event_21'], '... in three partitions');

-- Duplicates of events in older partitions, in a batch with new ones.
INSERT INTO r VALUES ('i2', pg_temp.ingest('{3,12,26,27,26}', '2020-01-01'));
SELECT is(pg_temp.r('i2') - 'notifications', '{"inserted": 2, "duplicates": 3, "dead_lettered": 0}'::jsonb,
          'events stored in other partitions are refused, and a batch''s own repeat');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE odoo_id IN (3, 12, 26)), 3, '... each stored once');

-- A gap fill below the instance's highest Odoo id, then its re-delivery.
INSERT INTO r VALUES ('i3', pg_temp.ingest('{40}', '2020-01-01'));
INSERT INTO r VALUES ('i4', pg_temp.ingest('{35}', '2020-01-01'));
INSERT INTO r VALUES ('i5', pg_temp.ingest('{35,40}', '2020-01-01'));
SELECT is(ARRAY[pg_temp.r('i3')->>'inserted', pg_temp.r('i4')->>'inserted', pg_temp.r('i5')->>'inserted'],
          ARRAY['1', '1', '0'], 'a gap fill is stored once, its re-delivery is a duplicate');
SELECT is((SELECT array_agg(e.odoo_id ORDER BY e.id) FROM bridgecore.event e WHERE e.odoo_id > 25),
          '{26,27,40,35}'::bigint[], '... in commit order');

-- Dead letters of stored ids stay duplicates in any partition.
INSERT INTO r VALUES ('i6', bridgecore.ingest('main', '[{"id": 2, "model": "sale.order", "record_id": 1, "event": "bogus", "timestamp": "2020-01-01 00:00:00"}]'));
SELECT is(pg_temp.r('i6')->'duplicates', '1'::jsonb, 'a bad copy of an id stored in an old partition is a duplicate');

-- What each partition holds, kept at ingestion.
SELECT is(pg_temp.summary_wrong(), 0::bigint,
          'the partition summary counts the stored events per partition, instance and model, duplicates left out');
SELECT is((SELECT array_agg(format('%s %s %s %s', s.part, s.model, s.events, s.max_id) ORDER BY s.part::text)
             FROM bridgecore.partition_summary s),
          ARRAY['bridgecore.event_1 sale.order 10 10', 'bridgecore.event_11 sale.order 10 20',
                'bridgecore.event_21 sale.order 9 29'],
          '... with the highest id of each');

-------------------------------------------------------------------------------
-- Retention by partition
-------------------------------------------------------------------------------
-- Now: ids 1..29 old (2020); the partition [21,31) holds the newest event.
-- Devices: one that saw everything, one at local id 5, a warehouse device
-- (no sale.order) from the start.
DO $$ BEGIN
    PERFORM bridgecore.sync_pull(1, 'all', 'sales_app', 500);
    PERFORM bridgecore.sync_pull(1, 'wh', 'warehouse_app', 500);
    PERFORM bridgecore.sync_pull(1, 'early', 'sales_app', 5);
    UPDATE bridgecore.sync_state SET last_event_id = 0 WHERE device_id = 'wh';
END $$;
-- Odoo ids 50..52 of stock.quant land in [21,31) and [31,41).
INSERT INTO r VALUES ('i7', pg_temp.ingest('{50,51,52}', '2020-01-01', 'stock.quant'));
SELECT is(pg_temp.parts(), '[1,11) [11,21) [21,31) [31,41)', 'ids 30..32 took the next partition');

SELECT is((SELECT array_agg(format('%s %s-%s %s %s', x.part, x.first_id, x.last_id, x.events,
                                   to_char(x.newest_event_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')) ORDER BY x.first_id)
             FROM bridgecore.partitions() x),
          ARRAY['bridgecore.event_1 1-10 10 2020-01-01', 'bridgecore.event_11 11-20 10 2020-01-01',
                'bridgecore.event_21 21-30 10 2020-01-01', 'bridgecore.event_31 31-40 2 2020-01-01'],
          'partitions() lists the partitions with the ids they cover, their events and the newest one');
SELECT ok((SELECT bool_and(x.total_bytes > 0) FROM bridgecore.partitions() x), '... and their size on disk');

INSERT INTO r VALUES ('c1', bridgecore.cleanup('2021-01-01'));
SELECT is(pg_temp.r('c1') - 'message',
          '{"ok": true, "deleted": 30, "partitions_dropped": 3, "dropped_ids": {"from": 1, "to": 30}}'::jsonb,
          'cleanup drops the whole partitions past the cutoff, oldest first, and counts their events');
SELECT matches(pg_temp.r('c1')->>'message', '^Dropped 3 partitions \(30 event ids\) whose every event is older than 2021-01-01T00:00:00Z\. Retention removes whole partitions',
               '... and says that it rounds to whole partitions');
SELECT is(pg_temp.parts(), '[31,41)', '... but never the partition holding the newest event');
SELECT is((SELECT array_agg(e.odoo_id ORDER BY e.id) FROM bridgecore.event e), '{51,52}'::bigint[],
          '... whose old events stay');
SELECT is(to_regclass('bridgecore.event_1'), NULL, 'the dropped partitions are gone');
SELECT is((SELECT array_agg(format('%s %s', p.model, p.through) ORDER BY p.model) FROM bridgecore.purged p),
          ARRAY['sale.order 29', 'stock.quant 30'], 'the horizon of each model is recorded');
SELECT is((SELECT purged_through FROM bridgecore.instances), 30::bigint, '... and the instance''s');
SELECT is(pg_temp.summary_wrong(), 0::bigint, 'the summary rows of the dropped partitions went with them');

INSERT INTO r VALUES ('p_all', to_jsonb(bridgecore.sync_pull(1, 'all', 'sales_app', 500)));
INSERT INTO r VALUES ('p_early', to_jsonb(bridgecore.sync_pull(1, 'early', 'sales_app', 500)));
INSERT INTO r VALUES ('p_wh', to_jsonb(bridgecore.sync_pull(1, 'wh', 'warehouse_app', 500)));
SELECT is(pg_temp.r('p_all')->'resync_required', 'false'::jsonb, 'a device past the dropped events needs no resync');
SELECT is(pg_temp.r('p_early')->'resync_required', 'true'::jsonb, 'a device below dropped events it wants must resync');
SELECT is(pg_temp.r('p_early')->'events', '[]'::jsonb, '... and gets what is left of its models (none)');
SELECT is(pg_temp.r('p_wh')->'resync_required', 'true'::jsonb, 'a warehouse device below a dropped stock.quant must resync');
SELECT is(pg_temp.pulled(pg_temp.r('p_wh')), '{51,52}'::bigint[], '... and gets the retained ones');

-- Nothing left to drop: the newest partition stays, and so does a partition
-- whose every event is old behind one that is not.
INSERT INTO r VALUES ('c2', bridgecore.cleanup('2021-01-01'));
SELECT is(pg_temp.r('c2')->'partitions_dropped', '0'::jsonb, 'the newest partition is never dropped');

-- A late row with an old timestamp, after newer events: it keeps its
-- partition (which holds newer events) and is delivered.
DO $$ BEGIN
    PERFORM pg_temp.ingest('{60,61,62,63,64,65,66,67}', now());           -- ids 33..40
    PERFORM pg_temp.ingest('{70}', '2019-06-01');                         -- id 41, late and old
    PERFORM pg_temp.ingest('{71,72,73,74,75,76,77,78,79,80}', now());     -- ids 42..51
END $$;
SELECT is(pg_temp.parts(), '[31,41) [41,51) [51,61)', 'partitions for the new ids');
INSERT INTO r VALUES ('c3', bridgecore.cleanup('2021-01-01'));
SELECT is(pg_temp.r('c3')->'partitions_dropped', '0'::jsonb, 'a partition with a newer event is kept');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE odoo_id = 70), 1, '... and with it the late old row');
INSERT INTO r VALUES ('p_late', to_jsonb(bridgecore.sync_pull(1, 'all', 'sales_app', 500)));
SELECT ok(70 = ANY (pg_temp.pulled(pg_temp.r('p_late'))) AND pg_temp.r('p_late')->'resync_required' = 'false',
          '... which devices get, without a resync');

-- Every event of [31,41) past the cutoff: the launcher drops one partition
-- per step, and says how many ids it spanned.
SET LOCAL bridgecore.retention = '1h';
UPDATE bridgecore.event SET occurred_at = '2020-01-01' WHERE id < 41;
-- Written around ingestion: the summary is made again.
DO $$ BEGIN PERFORM bridgecore._summarize_partitions(); END $$;
SELECT is(bridgecore._maintenance_step(), 10::bigint, 'a maintenance step drops one partition');
SELECT is(bridgecore._maintenance_step(), 0::bigint, '... the next finds none due');
SELECT is(pg_temp.parts(), '[41,51) [51,61) [61,71)', '... and partitions are made ahead');

-- Retention per instance still deletes rows, in any partition.
INSERT INTO r VALUES ('c4', bridgecore.cleanup(now() + interval '1 day', 'main'));
SELECT is(pg_temp.r('c4')->'deleted', '11'::jsonb, 'cleanup of one instance deletes its events, in any partition');
SELECT is(pg_temp.summary_wrong(), 0::bigint, '... and counts them out of the summary');

-- Partitions whose events were partly deleted before: cleanup's deleted
-- counts what the drop removes. Ids 52..66: 9 in [51,61), 6 in [61,71).
DO $$ BEGIN PERFORM pg_temp.ingest(ARRAY(SELECT generate_series(90, 104)::bigint), now()); END $$;
UPDATE bridgecore.event SET occurred_at = '2020-01-01' WHERE id < 61;
-- Written around ingestion: the summary is made again.
DO $$ BEGIN PERFORM bridgecore._summarize_partitions(); END $$;
INSERT INTO r VALUES ('c5', bridgecore.cleanup('2021-01-01'));
SELECT is(pg_temp.r('c5') - 'message',
          '{"ok": true, "deleted": 9, "partitions_dropped": 2, "dropped_ids": {"from": 41, "to": 60}}'::jsonb,
          'a drop counts the events a partition holds, less those deleted before');
SELECT is(pg_temp.summary_wrong(), 0::bigint, '... and the summary still matches the log');

-- remove_instance takes its events out of the summary.
DO $$ BEGIN
    PERFORM bridgecore.add_instance('other', 'https://erp2.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.ingest('other', pg_temp.recs('{1,2,3}', now()));
END $$;
SELECT is((SELECT sum(s.events)::int FROM bridgecore.partition_summary s JOIN bridgecore.instance i ON i.id = s.instance_id
            WHERE i.name = 'other'), 3, 'another instance''s events are summarized apart');
SELECT is((bridgecore.remove_instance('other'))->'events_deleted', '3'::jsonb, 'remove_instance deletes them');
SELECT is(pg_temp.summary_wrong(), 0::bigint, '... and takes them out of the summary');

-- A batch that rolls back leaves the summary as it was.
CREATE TEMP TABLE summary_before AS SELECT * FROM bridgecore.partition_summary;
DO $$ BEGIN
    PERFORM pg_temp.ingest('{200,201,202}', now(), 'res.partner');
    RAISE EXCEPTION 'roll back';
EXCEPTION WHEN raise_exception THEN NULL;
END $$;
SELECT set_eq('SELECT * FROM bridgecore.partition_summary', 'SELECT * FROM summary_before',
              'a rolled-back batch leaves nothing in the summary');
SELECT is(pg_temp.summary_wrong(), 0::bigint, '... which still matches the log');

-- A partition without summary rows (filled by other means than ingestion)
-- is judged by its own newest event, and _summarize_partitions() makes the
-- summary again from the rows.
DO $$ BEGIN PERFORM pg_temp.ingest(ARRAY(SELECT generate_series(300, 320)::bigint), now()); END $$;
CREATE TEMP TABLE oldest AS SELECT p.part FROM bridgecore._partitions() p ORDER BY p.lo LIMIT 1;
DELETE FROM bridgecore.partition_summary s USING oldest o WHERE s.part = o.part;
SELECT is((SELECT d.ids FROM bridgecore._drop_oldest_partition('2021-01-01') d), 0::bigint,
          'a partition without summary rows is judged by its own newest event (recent: kept)');
SELECT cmp_ok((SELECT bridgecore._summarize_partitions()), '>', 0::bigint, '_summarize_partitions() makes the summary again');
SELECT is(pg_temp.summary_wrong(), 0::bigint, '... and it matches the log');

-- An old partition without summary rows is counted from its rows before it
-- goes: the drop counts its events and records the horizons of its models,
-- so a device below them is told to resync.
CREATE TEMP TABLE old_part AS
SELECT p.part, p.lo, p.hi, (SELECT count(*) FROM bridgecore.event e WHERE e.id >= p.lo AND e.id < p.hi) AS n
  FROM bridgecore._partitions() p ORDER BY p.lo LIMIT 1;
UPDATE bridgecore.event SET occurred_at = '2020-01-01' WHERE id < (SELECT hi FROM old_part);
DELETE FROM bridgecore.partition_summary s USING old_part o WHERE s.part = o.part;
INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id)
SELECT i.id, 1, 'behind', 'sales_app', (SELECT lo - 1 FROM old_part) FROM bridgecore.instance i WHERE i.name = 'main';
SELECT is((bridgecore.sync_pull(1, 'behind', 'sales_app', 1, sync_token => (SELECT (lo - 1)::text FROM old_part)))::jsonb
            -> 'resync_required', 'false'::jsonb, 'a device just below an old partition without summary rows: nothing removed yet');
INSERT INTO r VALUES ('c6', bridgecore.cleanup('2021-01-01'));
SELECT is(pg_temp.r('c6') -> 'deleted', to_jsonb((SELECT n FROM old_part)),
          'its drop counts its events from its rows');
SELECT is((SELECT count(*)::int FROM bridgecore._partitions() p, old_part o WHERE p.part::oid = o.part::oid), 0,
          '... and the partition is gone');
SELECT is((bridgecore.sync_pull(1, 'behind', 'sales_app', 1, sync_token => (SELECT (lo - 1)::text FROM old_part)))::jsonb
            -> 'resync_required', 'true'::jsonb, '... with its horizon: the device below it is told to resync');

-------------------------------------------------------------------------------
-- Retention that waits for the devices that have not passed a partition
-- (bridgecore.retention_max)
-------------------------------------------------------------------------------
-- Events over several partitions, all ten days old but the newest
-- partition's; the devices of the tests above out of the way.
DO $$ BEGIN PERFORM pg_temp.ingest(ARRAY(SELECT generate_series(400, 445)::bigint), now()); END $$;
UPDATE bridgecore.event SET occurred_at = now() - interval '10 days'
 WHERE id < (SELECT max(p.lo) FROM bridgecore._partitions() p WHERE p.lo <= (SELECT max(e.id) FROM bridgecore.event e));
DO $$ BEGIN PERFORM bridgecore._summarize_partitions(); END $$;
UPDATE bridgecore.sync_state SET is_active = false;
CREATE TEMP TABLE wp AS
SELECT row_number() OVER (ORDER BY p.lo) AS n, p.lo, p.hi FROM bridgecore._partitions() p;
INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id)
SELECT i.id, 7, 'waiting', 'sales_app', (SELECT lo - 1 FROM wp WHERE n = 1) FROM bridgecore.instance i WHERE i.name = 'main';
SET LOCAL bridgecore.retention = '1d';
SET LOCAL bridgecore.retention_max = '30d';

SELECT is(bridgecore._maintenance_step(), 0::bigint,
          'with retention_max, a partition past the retention waits for an active device below it');
INSERT INTO r VALUES ('w1', bridgecore.cleanup());
SELECT ok((pg_temp.r('w1') ->> 'partitions_dropped') = '0'
          AND (pg_temp.r('w1') ->> 'message') LIKE '%waits for 1 active devices that have not pulled past it%',
          '... and cleanup() without before says what it waits for');

-- The device pulls past the first partition: that one goes, the next waits.
UPDATE bridgecore.sync_state SET last_event_id = (SELECT hi - 1 FROM wp WHERE n = 1) WHERE device_id = 'waiting';
SELECT is(bridgecore._maintenance_step(), 10::bigint, 'a partition every active device has passed goes');
SELECT is(bridgecore._maintenance_step(), 0::bigint, '... and the next, which the device has not passed, waits');

-- An inactive device holds nothing.
UPDATE bridgecore.sync_state SET is_active = false WHERE device_id = 'waiting';
SELECT is(bridgecore._maintenance_step(), 10::bigint, 'an inactive device below a partition does not keep it');

-- Past retention_max a partition goes whatever the devices, and the device
-- below it is told to resync.
UPDATE bridgecore.sync_state SET is_active = true WHERE device_id = 'waiting';
UPDATE bridgecore.event SET occurred_at = now() - interval '40 days' WHERE id < (SELECT hi FROM wp WHERE n = 3);
DO $$ BEGIN PERFORM bridgecore._summarize_partitions(); END $$;
SELECT is(bridgecore._maintenance_step(), 10::bigint, 'a partition older than retention_max goes without waiting');
SELECT is((bridgecore.sync_pull(7, 'waiting', 'sales_app', 1))::jsonb -> 'resync_required', 'true'::jsonb,
          '... and the device below it must resync');

-- A cutoff the caller gives waits for no device.
UPDATE bridgecore.sync_state SET last_event_id = (SELECT lo - 1 FROM wp WHERE n = 4) WHERE device_id = 'waiting';
INSERT INTO r VALUES ('w2', bridgecore.cleanup(now() - interval '1 day'));
SELECT cmp_ok((pg_temp.r('w2') ->> 'partitions_dropped')::int, '>=', 1, 'cleanup(before) does not wait for devices');
SELECT is(pg_temp.summary_wrong(), 0::bigint, '... and the summary still matches the log');

SELECT * FROM finish();
ROLLBACK;
