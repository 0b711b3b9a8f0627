-- bridgecore.sync_pull() over a log of many partitions: every page is the
-- first "limit" wanted events above the device's position, in id order,
-- whichever way it is read (the (instance_id, id) index with the models
-- filtered, or each model's (instance_id, model, id) index merged), across
-- partition boundaries, with partitions that hold no wanted event, rare and
-- absent models, caught-up devices, instances sharing partitions, and
-- partitions and indexes dropped or made between two pulls of one session.
\ir setup.psql
SET LOCAL bridgecore.partition_size = 10;

SELECT plan(35);

CREATE TEMP TABLE r (k text PRIMARY KEY, v jsonb);
CREATE FUNCTION pg_temp.r(key text) RETURNS jsonb LANGUAGE sql AS $$ SELECT v FROM r WHERE k = key $$;
CREATE FUNCTION pg_temp.inst(name text) RETURNS integer LANGUAGE sql AS $$
    SELECT id FROM bridgecore.instance i WHERE i.name = inst.name
$$;
-- Records of the given Odoo ids and models, one each.
CREATE FUNCTION pg_temp.recs(first_id bigint, models text[]) RETURNS json LANGUAGE sql AS $$
    SELECT json_agg(json_build_object('id', first_id + o - 1, 'model', m, 'record_id', first_id + o - 1,
                                      'event', 'write', 'timestamp', '2025-01-01 00:00:00') ORDER BY o)
      FROM unnest(models) WITH ORDINALITY AS u(m, o)
$$;

-- Pulls a device until it has nothing more and checks every answer against
-- what the log holds: the page is the first lim events of the app's models
-- above the position, has_more says whether one follows, and the token
-- names the last event of the page, or the instance's newest event when
-- nothing follows.  Returns NULL, or the first difference.
CREATE FUNCTION pg_temp.drain(uid bigint, dev text, app text, lim integer, inst text, max_pulls integer DEFAULT 100)
RETURNS text LANGUAGE plpgsql AS $$
DECLARE
    iid integer := pg_temp.inst(inst);
    models text[] := (SELECT a.models FROM bridgecore.app_type a WHERE a.name = app);
    pos bigint;
    got jsonb;
    want jsonb;
    want_more boolean;
    want_pos bigint;
    last bigint;
    pulls integer := 0;
BEGIN
    LOOP
        pos := coalesce((SELECT s.last_event_id FROM bridgecore.sync_state s
                          WHERE s.instance_id = iid AND s.user_id = uid AND s.device_id = dev), 0);
        SELECT coalesce(jsonb_agg(x.doc::jsonb ORDER BY x.id), '[]'), max(x.id) INTO want, last
          FROM (SELECT e.id, e.doc FROM bridgecore.event e
                 WHERE e.instance_id = iid AND e.id > pos AND e.model = ANY (models)
                 ORDER BY e.id LIMIT lim) x;
        want_more := jsonb_array_length(want) = lim AND EXISTS (
            SELECT 1 FROM bridgecore.event e WHERE e.instance_id = iid AND e.id > last AND e.model = ANY (models));
        want_pos := CASE WHEN want_more THEN last
                         ELSE greatest(pos, (SELECT max(e.id) FROM bridgecore.event e WHERE e.instance_id = iid)) END;
        got := bridgecore.sync_pull(uid, dev, app, lim, instance => inst)::jsonb;
        pulls := pulls + 1;
        IF got -> 'events' IS DISTINCT FROM want THEN
            RETURN format('pull %s from %s: events %s, expected %s', pulls, pos,
                          jsonb_path_query_array(got, '$.events[*].id'), jsonb_path_query_array(want, '$[*].id'));
        ELSIF (got ->> 'has_more')::boolean IS DISTINCT FROM want_more THEN
            RETURN format('pull %s from %s: has_more %s, expected %s', pulls, pos, got ->> 'has_more', want_more);
        ELSIF got ->> 'next_sync_token' IS DISTINCT FROM format('bc1:%s:%s', iid, want_pos) THEN
            RETURN format('pull %s from %s: token %s, expected bc1:%s:%s', pulls, pos,
                          got ->> 'next_sync_token', iid, want_pos);
        ELSIF (got ->> 'new_events_count')::int <> jsonb_array_length(want) THEN
            RETURN format('pull %s: new_events_count %s', pulls, got ->> 'new_events_count');
        END IF;
        EXIT WHEN NOT want_more;
        IF pulls >= max_pulls THEN
            RETURN 'too many pulls';
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

DO $$ BEGIN
    PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.add_instance('other', 'https://erp2.example.com', 'prod', 'bot', 's3cret-secret-key');
    PERFORM bridgecore.set_app_type('picking_app', '{stock.picking}');
    PERFORM bridgecore.set_app_type('quant_app', '{stock.quant}');
END $$;

-- main: Odoo ids 1..60 (local ids 1..60, six partitions of ten ids):
--   1..10   sale.order and stock.move alternating
--   11..30  stock.move only: two partitions without an event sales_app wants
--   31..60  sale.order, res.partner, stock.move, with stock.picking at 35 and 58
SELECT lives_ok($$SELECT bridgecore.ingest('main', pg_temp.recs(1,
    (SELECT array_agg(CASE WHEN g <= 10 THEN (CASE WHEN g % 2 = 1 THEN 'sale.order' ELSE 'stock.move' END)
                           WHEN g <= 30 THEN 'stock.move'
                           WHEN g IN (35, 58) THEN 'stock.picking'
                           ELSE (ARRAY['sale.order', 'res.partner', 'stock.move'])[1 + g % 3] END ORDER BY g)
       FROM generate_series(1, 60) g)))$$, 'main: 60 events over six partitions');
SELECT ok((SELECT count(*) FROM bridgecore._partitions()) >= 6, 'the log has at least six partitions');

-------------------------------------------------------------------------------
-- Pages across partitions of one instance
-------------------------------------------------------------------------------
SELECT is(pg_temp.drain(1, 'a', 'sales_app', 100, 'main'), NULL, 'one page holds every wanted event, across partitions');
SELECT is(pg_temp.drain(2, 'a', 'sales_app', 3, 'main'), NULL,
          'pages of 3 across partition boundaries and past two partitions without a wanted event');
SELECT is(pg_temp.drain(3, 'a', 'sales_app', 1, 'main'), NULL,
          'pages of 1: the skip over the partitions without a wanted event is read model by model');
SELECT is(pg_temp.drain(4, 'a', 'picking_app', 1, 'main'), NULL, 'a rare model, one event a page');
SELECT is(pg_temp.drain(5, 'a', 'picking_app', 100, 'main'), NULL, 'a rare model, one page');
INSERT INTO r VALUES ('absent', bridgecore.sync_pull(6, 'a', 'quant_app', 100, instance => 'main')::jsonb);
SELECT is(pg_temp.r('absent') -> 'events', '[]'::jsonb, 'an absent model: no events');
SELECT is(pg_temp.r('absent') ->> 'next_sync_token', format('bc1:%s:60', pg_temp.inst('main')),
          '... and the cursor moves to the newest event of the instance');
SELECT is(pg_temp.drain(7, 'a', 'quant_app', 1, 'main'), NULL, 'an absent model, pages of 1');

-- Caught up: nothing more, the token stays.
SELECT is(pg_temp.drain(1, 'a', 'sales_app', 100, 'main'), NULL, 'a caught-up device gets an empty page');
INSERT INTO r VALUES ('caught', bridgecore.sync_pull(1, 'a', 'sales_app', 100, instance => 'main')::jsonb);
SELECT is(pg_temp.r('caught') - 'last_sync_time',
          jsonb_build_object('status', 'success', 'has_updates', false, 'new_events_count', 0, 'events', '[]'::jsonb,
                             'next_sync_token', format('bc1:%s:60', pg_temp.inst('main')),
                             'has_more', false, 'resync_required', false),
          '... the whole answer of a caught-up device');
SELECT is(bridgecore.sync_pull(1, 'a', 'sales_app', 100, instance => 'main')::text,
          format('{"status" : "success", "has_updates" : false, "new_events_count" : 0, "events" : [], '
                 '"next_sync_token" : "bc1:%s:60", "last_sync_time" : "%s", "has_more" : false, "resync_required" : false}',
                 pg_temp.inst('main'), bridgecore._iso(now())),
          '... as text, as json_build_object wrote it');

-------------------------------------------------------------------------------
-- Instances sharing partitions
-------------------------------------------------------------------------------
-- other's events take local ids 61..75, interleaved with main's 76..90.
SELECT lives_ok($$SELECT bridgecore.ingest('other', pg_temp.recs(1,
    (SELECT array_agg(CASE WHEN g % 2 = 0 THEN 'sale.order' ELSE 'stock.picking' END) FROM generate_series(1, 15) g)))$$,
    'other: 15 events');
SELECT lives_ok($$SELECT bridgecore.ingest('main', pg_temp.recs(61,
    (SELECT array_agg(CASE WHEN g % 4 = 0 THEN 'stock.picking' ELSE 'stock.move' END) FROM generate_series(1, 15) g)))$$,
    'main: 15 more events, in the partitions other''s share');
SELECT lives_ok($$SELECT bridgecore.ingest('other', pg_temp.recs(16, '{sale.order,res.partner,stock.move}'))$$,
    'other: 3 more');
SELECT is(pg_temp.drain(10, 'a', 'sales_app', 2, 'other'), NULL, 'other: pages of its own events only');
SELECT is(pg_temp.drain(11, 'a', 'picking_app', 1, 'other'), NULL, 'other: a rare model, pages of 1');
SELECT is(pg_temp.drain(4, 'a', 'picking_app', 1, 'main'), NULL, 'main: the device continues with main''s events only');
SELECT is(pg_temp.drain(1, 'a', 'sales_app', 100, 'main'), NULL,
          'main: nothing it wants was added; the cursor moves to main''s newest, not other''s');
SELECT is(bridgecore.sync_pull(6, 'a', 'quant_app', 100, instance => 'main')::jsonb ->> 'next_sync_token',
          format('bc1:%s:%s', pg_temp.inst('main'),
                 (SELECT max(e.id) FROM bridgecore.event e WHERE e.instance_id = pg_temp.inst('main'))),
          'an absent model: the newest event of the instance, in a partition other''s events share');

-------------------------------------------------------------------------------
-- Partitions and indexes change between two pulls of one session
-------------------------------------------------------------------------------
-- A device in the middle of main's log, then the oldest partitions go.
SELECT is(pg_temp.drain(20, 'a', 'sales_app', 100, 'main'), NULL, 'a device reads everything');
SELECT lives_ok($$SELECT bridgecore.sync_reset(20, 'a', 'main')$$, '... and is reset');
SELECT lives_ok($$DROP TABLE bridgecore.event_1, bridgecore.event_11$$, 'two partitions dropped');
SELECT is(pg_temp.drain(20, 'a', 'sales_app', 3, 'main'), NULL, 'the next pulls read the partitions that are left');
-- An index of a partition made again: a pull finds the new one.
SELECT lives_ok($$DROP INDEX bridgecore.event_31_instance_id_id_idx;
                  DROP INDEX bridgecore.event_31_instance_id_model_id_idx;
                  CREATE INDEX ON bridgecore.event_31 (instance_id, model, id);
                  CREATE INDEX ON bridgecore.event_31 (instance_id, id)$$, 'the indexes of a partition made again');
SELECT lives_ok($$SELECT bridgecore.sync_reset(20, 'a', 'main')$$, 'the device is reset');
SELECT is(pg_temp.drain(20, 'a', 'picking_app', 1, 'main'), NULL, 'pulls read the new indexes');
-- Descending indexes on the same columns are not the pull's (read forwards
-- they would hand out the newest ids first), even when they come first.
SELECT lives_ok($$CREATE INDEX event_31_id_desc ON bridgecore.event_31 (instance_id, id DESC);
                  CREATE INDEX event_31_model_id_desc ON bridgecore.event_31 (instance_id, model, id DESC);
                  DROP INDEX bridgecore.event_31_instance_id_id_idx;
                  DROP INDEX bridgecore.event_31_instance_id_model_id_idx;
                  CREATE INDEX ON bridgecore.event_31 (instance_id, model, id);
                  CREATE INDEX ON bridgecore.event_31 (instance_id, id)$$,
                'descending indexes made before the ascending ones');
SELECT lives_ok($$SELECT bridgecore.sync_reset(20, 'a', 'main')$$, 'the device is reset');
SELECT is(pg_temp.drain(20, 'a', 'sales_app', 3, 'main'), NULL, 'pulls read the ascending (instance_id, id) index');
SELECT lives_ok($$SELECT bridgecore.sync_reset(20, 'a', 'main')$$, 'the device is reset');
SELECT is(pg_temp.drain(20, 'a', 'picking_app', 1, 'main'), NULL, '... and the ascending (instance_id, model, id) one');
-- New partitions while the session's caches are warm.
SELECT lives_ok($$SELECT bridgecore.ingest('main', pg_temp.recs(100,
    (SELECT array_agg(CASE WHEN g % 5 = 0 THEN 'sale.order' ELSE 'stock.move' END) FROM generate_series(1, 40) g)))$$,
    'main: 40 more events, in new partitions');
SELECT is(pg_temp.drain(1, 'a', 'sales_app', 2, 'main'), NULL, 'a caught-up device reads the new partitions');

SELECT * FROM finish();
ROLLBACK;
