-- bridgecore.ingest(): exactly-once storage of update.webhook records,
-- Odoo-shaped values, dead letters and the returned counts.
BEGIN;
SET LOCAL client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS pgtap;
CREATE EXTENSION bridgecore;

SELECT plan(88);

CREATE TEMP TABLE r (k text PRIMARY KEY, v jsonb);
CREATE FUNCTION pg_temp.r(key text) RETURNS jsonb LANGUAGE sql AS $$ SELECT v FROM r WHERE k = key $$;
-- A minimal valid record (the legacy custom-model-webhook field set).
CREATE FUNCTION pg_temp.rec(oid_ numeric, model text DEFAULT 'sale.order', extra jsonb DEFAULT '{}')
RETURNS jsonb LANGUAGE sql AS $$
    SELECT jsonb_build_object('id', oid_, 'model', model, 'record_id', 7,
                              'event', 'write', 'timestamp', '2025-11-16 10:30:00') || extra
$$;
CREATE FUNCTION pg_temp.nev() RETURNS integer LANGUAGE sql AS $$ SELECT count(*)::int FROM bridgecore.event $$;
CREATE FUNCTION pg_temp.dl(odoo bigint) RETURNS bridgecore.dead_letter LANGUAGE sql AS $$
    SELECT * FROM bridgecore.dead_letter WHERE odoo_id = odoo
$$;

SELECT throws_ok($$ SELECT bridgecore.ingest(NULL, '[]') $$, '55000', NULL,
                 'ingest without any configured instance');

DO $$ BEGIN PERFORM bridgecore.add_instance('main', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key'); END $$;

-------------------------------------------------------------------------------
-- Argument checks
-------------------------------------------------------------------------------
SELECT throws_ok($$ SELECT bridgecore.ingest('main', NULL) $$, '22004', NULL, 'null events');
SELECT throws_ok($$ SELECT bridgecore.ingest('main', '{"id": 1}') $$, '22023', NULL, 'events must be an array');
SELECT throws_ok($$ SELECT bridgecore.ingest('nope', '[]') $$, '22023', NULL, 'unknown instance');
SELECT is(to_jsonb(bridgecore.ingest('main', '[]')),
          '{"instance": "main", "inserted": 0, "duplicates": 0, "dead_lettered": 0, "max_odoo_id": null, "notifications": 0}'::jsonb,
          'empty batch');
SELECT is(to_jsonb(bridgecore.ingest(NULL, '[]'))->>'instance', 'main', 'instance may be omitted when only one exists');

-------------------------------------------------------------------------------
-- Exactly once, Odoo id order
-------------------------------------------------------------------------------
INSERT INTO r SELECT 'b1', bridgecore.ingest('main', jsonb_build_array(
    pg_temp.rec(30), pg_temp.rec(10, 'res.partner'), pg_temp.rec(20))::json);
SELECT is(pg_temp.r('b1'),
          '{"instance": "main", "inserted": 3, "duplicates": 0, "dead_lettered": 0, "max_odoo_id": 30, "notifications": 2}'::jsonb,
          'first batch: counts, max_odoo_id, one notification per model');
SELECT is((SELECT array_agg(odoo_id ORDER BY id) FROM bridgecore.event), ARRAY[10, 20, 30]::bigint[],
          'local ids follow Odoo id order within a batch');

INSERT INTO r SELECT 'b1again', bridgecore.ingest('main', jsonb_build_array(
    pg_temp.rec(30), pg_temp.rec(10, 'res.partner'), pg_temp.rec(20))::json);
SELECT is(pg_temp.r('b1again'),
          '{"instance": "main", "inserted": 0, "duplicates": 3, "dead_lettered": 0, "max_odoo_id": 30, "notifications": 0}'::jsonb,
          're-ingesting the same batch counts duplicates only');
SELECT is(pg_temp.nev(), 3, 're-ingest stores no new rows');

INSERT INTO r SELECT 'b2', bridgecore.ingest('main', jsonb_build_array(
    pg_temp.rec(40), pg_temp.rec(20), pg_temp.rec(30))::json);
SELECT is(pg_temp.r('b2')->'inserted', '1'::jsonb, 'overlapping batch: only the new record is inserted');
SELECT is(pg_temp.r('b2')->'duplicates', '2'::jsonb, 'overlapping batch: two duplicates');
SELECT cmp_ok((SELECT id FROM bridgecore.event WHERE odoo_id = 40), '>',
              (SELECT max(id) FROM bridgecore.event WHERE odoo_id < 40), 'a later batch gets higher local ids');

INSERT INTO r SELECT 'b3', bridgecore.ingest('main', jsonb_build_array(pg_temp.rec(50), pg_temp.rec(50))::json);
SELECT is(pg_temp.r('b3')->'inserted', '1'::jsonb, 'the same Odoo id twice in one batch is stored once');
SELECT is(pg_temp.r('b3')->'duplicates', '1'::jsonb, '... and counted as a duplicate');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE odoo_id = 50), 1, 'one row for Odoo id 50');

-------------------------------------------------------------------------------
-- Odoo-shaped values
-------------------------------------------------------------------------------
INSERT INTO r SELECT 'shapes', bridgecore.ingest('main', $j$[
  {"id": 3000000000.0, "model": "sale.order", "record_id": 2500000000.0, "event": "create",
   "timestamp": "2025-11-16 10:30:00"},
  {"id": 60, "model": "res.partner", "record_id": 8, "event": "unlink", "timestamp": "2025-11-16 10:30:00",
   "priority": false, "category": false, "payload": false, "user_id": false},
  {"id": 61, "model": "sale.order", "record_id": 9, "event": "write", "timestamp": "2025-11-16T10:30:00.25Z",
   "priority": "high", "category": "business", "user_id": [7, "Mitchell Admin"],
   "payload": {"name": "S1", "partner_id": {"id": 3, "name": "Azure"}, "date_order": false,
               "_changed_fields": ["name", "partner_id"]}},
  {"id": 62, "model": "sale.order", "record_id": -1, "event": "create", "timestamp": "2024-02-29 23:59:59",
   "priority": null, "category": null, "payload": null, "user_id": null},
  {"id": 63, "model": "product.product", "record_id": 4, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "priority": "low", "category": "system", "payload": {"list_price": 10.5},
   "is_processed": false, "is_archived": false, "config_id": [2, "Products"]}
]$j$);
SELECT is(pg_temp.r('shapes')->'inserted', '5'::jsonb, 'all Odoo-shaped records are stored');
SELECT is(pg_temp.r('shapes')->'dead_lettered', '0'::jsonb, 'none is dead-lettered');
SELECT is(pg_temp.r('shapes')->'max_odoo_id', '3000000000'::jsonb, 'max_odoo_id with a float id above 2^31');

SELECT results_eq(
    $$ SELECT odoo_id, record_id, event::text FROM bridgecore.event WHERE odoo_id = 3000000000 $$,
    $$ VALUES (3000000000::bigint, 2500000000::bigint, 'create') $$,
    'float id and record_id (integers above 2^31 arrive as floats) become bigints');
SELECT results_eq(
    $$ SELECT priority::text, category, payload, changed_fields, odoo_user_id, odoo_user_name
         FROM bridgecore.event WHERE odoo_id = 60 $$,
    $$ VALUES (NULL::text, NULL::text, NULL::jsonb, NULL::text[], NULL::bigint, NULL::text) $$,
    'Odoo false for empty fields becomes NULL');
SELECT results_eq(
    $$ SELECT priority::text, category, changed_fields, odoo_user_id, odoo_user_name, occurred_at
         FROM bridgecore.event WHERE odoo_id = 61 $$,
    $$ VALUES ('high', 'business', ARRAY['name', 'partner_id'], 7::bigint, 'Mitchell Admin',
               '2025-11-16 10:30:00.25+00'::timestamptz) $$,
    'many2one user_id [id, "name"], _changed_fields and a T/Z/fraction timestamp');
SELECT is((SELECT payload FROM bridgecore.event WHERE odoo_id = 61),
          '{"name": "S1", "partner_id": {"id": 3, "name": "Azure"}, "date_order": false, "_changed_fields": ["name", "partner_id"]}'::jsonb,
          'payload stored unchanged');
SELECT results_eq(
    $$ SELECT record_id, occurred_at, priority::text, payload FROM bridgecore.event WHERE odoo_id = 62 $$,
    $$ VALUES (-1::bigint, '2024-02-29 23:59:59+00'::timestamptz, NULL::text, NULL::jsonb) $$,
    'test event (record_id -1), leap day, explicit nulls');
SELECT results_eq(
    $$ SELECT priority::text, category, payload FROM bridgecore.event WHERE odoo_id = 63 $$,
    $$ VALUES ('low', 'system', '{"list_price": 10.5}'::jsonb) $$,
    'extra Odoo fields (is_processed, config_id) are ignored');
SELECT results_eq(
    $$ SELECT model, record_id, event::text, occurred_at, priority::text, category, payload, odoo_user_id
         FROM bridgecore.event WHERE odoo_id = 10 $$,
    $$ VALUES ('res.partner', 7::bigint, 'write', '2025-11-16 10:30:00+00'::timestamptz,
               NULL::text, NULL::text, NULL::jsonb, NULL::bigint) $$,
    'legacy field set (id, model, record_id, event, timestamp only) is stored');

-------------------------------------------------------------------------------
-- Priority ranks
-------------------------------------------------------------------------------
DO $$ BEGIN PERFORM bridgecore.ingest('main', jsonb_build_array(
    pg_temp.rec(70, 'sale.order', '{"priority": "medium"}'))::json); END $$;
SELECT is((SELECT array_agg(priority::text ORDER BY priority) FROM bridgecore.event WHERE priority IS NOT NULL),
          ARRAY['low', 'medium', 'high'], 'ORDER BY priority follows the rank low < medium < high');
SELECT is((SELECT max(priority)::text FROM bridgecore.event), 'high', 'max(priority) is high');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE priority >= 'medium'), 2, 'priority >= medium compares by rank');

-------------------------------------------------------------------------------
-- Dead letters: one of each malformed kind, with good records around them
-------------------------------------------------------------------------------
INSERT INTO r SELECT 'bad', bridgecore.ingest('main', $j$[
  {"id": 100, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
  {"id": 101, "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
  {"id": 102, "model": "sale.order", "record_id": 1, "event": "delete", "timestamp": "2025-11-16 10:30:00"},
  {"id": 103, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-02-30 10:30:00"},
  42,
  {"id": 104, "model": "sale order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
  {"id": 105, "model": "sale.order", "record_id": 0, "event": "create", "timestamp": "2025-11-16 10:30:00"},
  {"id": 106, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00",
   "user_id": 7},
  {"id": 107, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00",
   "category": 5},
  {"id": "108", "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
  {"id": 109, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
  {"id": 110, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00",
   "priority": "urgent"}
]$j$);
SELECT is(pg_temp.r('bad'),
          '{"instance": "main", "inserted": 2, "duplicates": 0, "dead_lettered": 10, "max_odoo_id": 110, "notifications": 1}'::jsonb,
          'mixed batch: good records stored, the others dead-lettered, max_odoo_id covers dead letters');
SELECT is((SELECT array_agg(odoo_id ORDER BY odoo_id) FROM bridgecore.event WHERE odoo_id BETWEEN 100 AND 199),
          ARRAY[100, 109]::bigint[], 'the rest of the batch is stored');
SELECT is((pg_temp.dl(101)).reason, 'missing model', 'missing model');
SELECT is((pg_temp.dl(102)).reason, 'unknown event "delete"', 'unknown event');
SELECT is((pg_temp.dl(103)).reason, 'invalid timestamp "2025-02-30 10:30:00"', 'impossible date 2025-02-30');
SELECT is((pg_temp.dl(104)).reason, 'invalid model name', 'invalid model name');
SELECT is((pg_temp.dl(105)).reason, 'missing or invalid record_id', 'record_id 0');
SELECT is((pg_temp.dl(106)).reason, 'invalid user_id 7', 'user_id that is not a many2one pair');
SELECT is((pg_temp.dl(107)).reason, 'invalid category 5', 'category that is not a string');
SELECT is((pg_temp.dl(110)).reason, 'unknown priority "urgent"', 'unknown priority');
SELECT results_eq(
    $$ SELECT reason, record::text FROM bridgecore.dead_letter WHERE odoo_id IS NULL ORDER BY reason $$,
    $$ VALUES ('missing or invalid id', '{"id":"108","model":"sale.order","record_id":1,"event":"create","timestamp":"2025-11-16 10:30:00"}'),
              ('record is not a JSON object', '42') $$,
    'non-object record and string id are kept without an Odoo id');
SELECT is((SELECT record::jsonb FROM bridgecore.dead_letter WHERE odoo_id = 110),
          '{"id": 110, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00", "priority": "urgent"}'::jsonb,
          'the raw record is kept');
SELECT results_eq(
    $$ SELECT attempts, status::text FROM bridgecore.dead_letter WHERE odoo_id = 103 $$,
    $$ VALUES (1, 'pending') $$, 'new dead letter: one attempt, pending');

-- Re-failure: same batch again (one was being retried, one an operator ignored).
UPDATE bridgecore.dead_letter SET status = 'retrying' WHERE odoo_id = 102;
UPDATE bridgecore.dead_letter SET status = 'ignored' WHERE odoo_id = 103;
INSERT INTO r SELECT 'bad2', bridgecore.ingest('main', $j$[
  {"id": 102, "model": "sale.order", "record_id": 1, "event": "remove", "timestamp": "2025-11-16 10:30:00"},
  {"id": 103, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-02-30 10:30:00"},
  {"id": 100, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"}
]$j$);
SELECT is(pg_temp.r('bad2'),
          '{"instance": "main", "inserted": 0, "duplicates": 1, "dead_lettered": 2, "max_odoo_id": 103, "notifications": 0}'::jsonb,
          're-failing batch: counts');
SELECT is((pg_temp.dl(103)).attempts, 2, 'dead letter attempts increment on re-failure');
SELECT is((SELECT count(*)::int FROM bridgecore.dead_letter WHERE odoo_id = 103), 1, '... without a second row');
SELECT is((pg_temp.dl(102)).status::text, 'pending', 're-failure sets a retrying dead letter back to pending');
SELECT is((pg_temp.dl(103)).status::text, 'ignored', '... but an ignored one stays ignored');
SELECT is((pg_temp.dl(102)).reason, 'unknown event "remove"', 're-failure records the latest reason');

-- The same bad id twice in one batch: one dead letter, last record wins.
INSERT INTO r SELECT 'bad3', bridgecore.ingest('main', $j$[
  {"id": 120, "model": "sale.order", "record_id": 1, "event": "x1", "timestamp": "2025-11-16 10:30:00"},
  {"id": 120, "model": "sale.order", "record_id": 1, "event": "x2", "timestamp": "2025-11-16 10:30:00"}
]$j$);
SELECT is(pg_temp.r('bad3')->'dead_lettered', '1'::jsonb, 'duplicate bad id in one batch: one dead letter');
SELECT is((pg_temp.dl(120)).reason, 'unknown event "x2"', '... holding the last occurrence');

-- A good and a bad version of one Odoo id: the stored one wins, in either
-- order, and no dead letter is left pending for it.
INSERT INTO r SELECT 'goodbad', bridgecore.ingest('main', $j$[
  {"id": 130, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"},
  {"id": 130, "model": "sale.order", "record_id": 1, "event": "bogus", "timestamp": "2025-11-16 10:30:00"},
  {"id": 131, "model": "sale.order", "record_id": 1, "event": "bogus", "timestamp": "2025-11-16 10:30:00"},
  {"id": 131, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00"}
]$j$);
SELECT is(pg_temp.r('goodbad') - 'instance' - 'max_odoo_id',
          '{"inserted": 2, "duplicates": 2, "dead_lettered": 0, "notifications": 1}'::jsonb,
          'good and bad versions of one id, in either order: the good one stored, the bad one a duplicate');
SELECT is((SELECT count(*)::int FROM bridgecore.dead_letter WHERE odoo_id IN (130, 131) AND status <> 'resolved'), 0,
          '... no pending dead letter for a stored id');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE odoo_id IN (130, 131)), 2, '... each stored once');

-- A number jsonb's numeric cannot hold is a bad record, not a failed batch.
INSERT INTO r SELECT 'numeric', bridgecore.ingest('main', $j$[
  {"id": 150, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00", "payload": {"x": 1e-20000}},
  {"id": 151, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00", "payload": {"x": 1.5e300}}
]$j$);
SELECT is(pg_temp.r('numeric') -> 'inserted', '1'::jsonb, 'a payload number numeric can hold is stored');
SELECT is((pg_temp.dl(150)).reason, 'unstorable record: value overflows numeric format',
          'one numeric cannot hold is dead-lettered');

-- Integers beyond 64 bits are refused, not saturated to the extremes.
INSERT INTO r SELECT 'huge', bridgecore.ingest('main', $j$[
  {"id": 140, "model": "sale.order", "record_id": -100000000000000000000, "event": "create", "timestamp": "2025-11-16 10:30:00"},
  {"id": 9223372036854775807, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00"}
]$j$);
SELECT is((pg_temp.dl(140)).reason, 'unstorable record: integer outside the 64-bit range',
          'a record_id below -2^63 is refused, with the reason');
SELECT is((SELECT count(*)::int FROM bridgecore.dead_letter WHERE odoo_id IS NULL AND record::text LIKE '%9223372036854775807%'), 1,
          'id 2^63-1 is refused as an id (kept without one)');

-------------------------------------------------------------------------------
-- Records jsonb cannot hold (\u0000, lone surrogates), through the json parameter
-------------------------------------------------------------------------------
INSERT INTO r SELECT 'nul', bridgecore.ingest('main', $j$[
  {"id": 200, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00",
   "payload": {"note": "back\\slash \\u0000 is text here"}},
  {"id": 205, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00",
   "payload": {"name": "nul\u0000byte"}},
  {"id": 201, "model": "res.partner", "record_id": 2, "event": "write", "timestamp": "2025-11-16 10:30:00"},
  {"id": 3000000001.0, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00",
   "payload": {"name": "lone \ud800 surrogate"}}
]$j$::json);
SELECT is(pg_temp.r('nul'),
          '{"instance": "main", "inserted": 2, "duplicates": 0, "dead_lettered": 2, "max_odoo_id": 3000000001, "notifications": 2}'::jsonb,
          '\u0000 batch: the storable records are stored, the other dead-lettered, max_odoo_id covers them');
SELECT is((SELECT payload->>'note' FROM bridgecore.event WHERE odoo_id = 200), 'back\slash \u0000 is text here',
          'an escaped backslash before u0000 is ordinary text');
SELECT ok((pg_temp.dl(205)).reason LIKE 'unstorable record: %', '\u0000 record dead-lettered as unstorable');
SELECT ok(strpos((pg_temp.dl(205)).record::text, '"nul\u0000byte"') > 0, 'the raw \u0000 record is kept verbatim (json)');
SELECT is((pg_temp.dl(3000000001)).reason, 'unstorable record: unsupported Unicode escape sequence',
          'a lone surrogate escape is not replaced: the record is dead-lettered, float id read');

DO $$ BEGIN PERFORM bridgecore.ingest('main', '[{"id": 205, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:30:00", "payload": {"name": "nul\u0000byte"}}]'::json); END $$;
SELECT is((pg_temp.dl(205)).attempts, 2, 'unstorable record: attempts increment on re-failure');

-------------------------------------------------------------------------------
-- What json-c's values lose, read from the text: integers beyond 64 bits,
-- \u0000 in keys, unpaired surrogate escapes. Stored exactly or dead-lettered.
-------------------------------------------------------------------------------
INSERT INTO r SELECT 'lossy', bridgecore.ingest('main', $j$[
  {"id": 300, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "payload": {"big": 123456789012345678901234567890}},
  {"id": 301, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "payload": {"neg": [-123456789012345678901234567890]}},
  {"id": 302, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "payload": {"u": 18446744073709551615, "i": 9223372036854775808, "m": -9223372036854775808,
               "x": 9223372036854775807, "z": -0, "e": 1e2, "d": 1, "d": 2, "f": 1e400}},
  {"id": 303, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "payload": {"a": 1, "a\u0000b": 2}},
  {"id": 304, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "payload": {"\ud800": 1}},
  {"id": 305, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "payload": {"s": "\udc00x"}},
  {"id": 306, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "payload": {"s": "\ud800\u0041"}},
  {"id": 307, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:30:00",
   "payload": {"s": "\ud83d\ude00 \u00e9"}},
  {"id": 308, "model": "sale.order", "record_id": 18446744073709551616, "event": "write", "timestamp": "2025-11-16 10:30:00"},
  {"id": 309, "model": "res.partner", "record_id": 2, "event": "create", "timestamp": "2025-11-16 10:30:00"}
]$j$);
SELECT is(pg_temp.r('lossy') - 'instance',
          '{"inserted": 3, "duplicates": 0, "dead_lettered": 7, "max_odoo_id": 309, "notifications": 2}'::jsonb,
          'lossy batch: the exact records are stored, the others dead-lettered, max_odoo_id past them');
SELECT is((pg_temp.dl(300)).reason, 'unstorable record: integer outside the 64-bit range',
          'an integer above 2^64-1 in the payload is not saturated: dead-lettered with the reason');
SELECT is((pg_temp.dl(301)).reason, 'unstorable record: integer outside the 64-bit range',
          'an integer below -2^63 in the payload likewise');
SELECT is((pg_temp.dl(308)).reason, 'unstorable record: integer outside the 64-bit range',
          'a record_id beyond 64 bits likewise');
SELECT ok(strpos((pg_temp.dl(300)).record::text, '123456789012345678901234567890') > 0,
          'the dead letter keeps the integer as sent');
SELECT ok(strpos((pg_temp.dl(301)).record::text, '-123456789012345678901234567890') > 0,
          'the dead letter keeps the negative integer as sent');
SELECT is((SELECT payload FROM bridgecore.event WHERE odoo_id = 302),
          '{"u": 18446744073709551615, "i": 9223372036854775808, "m": -9223372036854775808,
            "x": 9223372036854775807, "z": -0, "e": 1e2, "d": 1, "d": 2, "f": 1e400}'::jsonb,
          'integers up to 2^64-1 and down to -2^63, -0, 1e2, 1e400 and a repeated key are stored as jsonb reads the text');
SELECT is((SELECT payload->>'u' FROM bridgecore.event WHERE odoo_id = 302), '18446744073709551615',
          '2^64-1 round-trips exactly');
SELECT is((pg_temp.dl(303)).reason, 'unstorable record: unsupported Unicode escape sequence in a key',
          '\u0000 in a key: dead-lettered, not truncated onto another key');
SELECT ok(strpos((pg_temp.dl(303)).record::text, '"a\u0000b"') > 0, 'the dead letter keeps the key as sent');
SELECT is((pg_temp.dl(304)).reason, 'unstorable record: unsupported Unicode escape sequence in a key',
          'a lone high surrogate escape in a key: dead-lettered');
SELECT is((pg_temp.dl(305)).reason, 'unstorable record: unsupported Unicode escape sequence',
          'a lone low surrogate escape in a string: dead-lettered');
SELECT is((pg_temp.dl(306)).reason, 'unstorable record: unsupported Unicode escape sequence',
          'a high surrogate escape followed by another escape: dead-lettered');
SELECT ok(strpos((pg_temp.dl(306)).record::text, '\ud800\u0041') > 0, 'the dead letter keeps the escapes as sent');
SELECT is((SELECT payload->>'s' FROM bridgecore.event WHERE odoo_id = 307), E'\U0001F600 \u00e9',
          'a surrogate pair is stored as its character');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE odoo_id BETWEEN 300 AND 309), 3,
          'nothing of the lossy records is stored');
-- A retry reads the dead letter's copy: it is refused again, never stored changed.
SELECT is(bridgecore.retry_dead_letter((pg_temp.dl(300)).id)->>'status', 'retrying',
          'retrying the beyond-64-bit record refuses it again');
SELECT is(bridgecore.retry_dead_letter((pg_temp.dl(303)).id)->>'status', 'retrying',
          'retrying the \u0000-key record refuses it again');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE odoo_id IN (300, 303)), 0,
          'retries store nothing changed');

-------------------------------------------------------------------------------
-- Instances
-------------------------------------------------------------------------------
DO $$ BEGIN PERFORM bridgecore.add_instance('second', 'https://other.example.com', 'db2', 'bot', 'x-secret-key'); END $$;
SELECT throws_ok($$ SELECT bridgecore.ingest(NULL, '[]') $$, '22004', NULL, 'instance omitted with two instances');
INSERT INTO r SELECT 'inst2', bridgecore.ingest('second', jsonb_build_array(pg_temp.rec(10), pg_temp.rec(30))::json);
SELECT is(pg_temp.r('inst2')->'inserted', '2'::jsonb, 'the same Odoo ids are new in another instance');
SELECT is(pg_temp.r('inst2')->>'instance', 'second', 'result names the instance');
SELECT is((SELECT count(*)::int FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id
            WHERE i.name = 'second'), 2, 'events belong to their instance');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE received_at = now()), pg_temp.nev(), 'received_at is the ingest time');
SELECT is((SELECT count(*)::int FROM bridgecore.event WHERE odoo_id = 10), 2, 'Odoo id 10 once per instance');

SELECT * FROM finish();
ROLLBACK;
