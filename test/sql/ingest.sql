-- Ingestion of Odoo search_read records: exactly once, in order, bad
-- records dead-lettered while the rest of the batch is stored.
CREATE TABLE before AS SELECT max(id) AS max_id FROM bridgecore.event;

SELECT bridgecore.ingest('main', $$[
 {"id": 22, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-17 08:00:02"},
 {"id": 20, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-17 08:00:00"},
 {"id": 21, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-17 08:00:01.250000"},
 {"id": 23, "model": "sale.order", "record_id": -1, "event": "create", "timestamp": "2025-11-17T08:00:03Z"},
 {"id": 3000000000.0, "model": "res.partner", "record_id": 5, "event": "unlink", "timestamp": "2025-11-17 08:00:04"}
]$$);
-- Local ids follow Odoo id order, whatever the order in the batch.
SELECT odoo_id, record_id, event, occurred_at,
       id - (SELECT max_id FROM before) AS local_offset
  FROM bridgecore.event WHERE odoo_id >= 20 ORDER BY id;

-- The same rows again: all duplicates, nothing stored twice.
SELECT bridgecore.ingest('main', $$[
 {"id": 20, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-17 08:00:00"},
 {"id": 20, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-17 08:00:00"},
 {"id": 21, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-17 08:00:01"}
]$$);
SELECT count(*) FROM bridgecore.event WHERE odoo_id IN (20, 21);

-- Legacy addon: only model, record_id, event, timestamp.
SELECT bridgecore.ingest('main', '[{"id": 30, "model": "stock.move", "record_id": 3, "event": "create", "timestamp": "2025-11-17 09:00:00"}]');
SELECT odoo_id, priority, category, payload, changed_fields, odoo_user_id FROM bridgecore.event WHERE odoo_id = 30;

-- Malformed records go to dead_letter; the good ones in the batch are stored.
SELECT bridgecore.ingest('main', $$[
 {"id": 40, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-17 10:00:00"},
 {"id": 41, "record_id": 1, "event": "write", "timestamp": "2025-11-17 10:00:00"},
 {"id": 42, "model": "sale.order", "record_id": 1, "event": "archive", "timestamp": "2025-11-17 10:00:00"},
 {"id": 43, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-02-30 10:00:00"},
 {"id": 44, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": false},
 {"id": 45, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-17 10:00:00", "priority": "urgent"},
 {"id": 46, "model": "sale.order", "record_id": 0, "event": "write", "timestamp": "2025-11-17 10:00:00"},
 {"id": 47, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-17 10:00:00", "user_id": "bob"},
 {"id": 48.5, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-17 10:00:00"},
 "not an object",
 {"id": 49, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-17 10:00:00"}
]$$);
SELECT odoo_id, reason, attempts, status FROM bridgecore.dead_letter ORDER BY odoo_id NULLS LAST, reason;

-- \u0000 cannot be stored in jsonb: that record alone is dead-lettered.
SELECT bridgecore.ingest('main', $$[
 {"id": 50, "model": "mail.message", "record_id": 1, "event": "create", "timestamp": "2025-11-17 11:00:00", "payload": {"body": "a\u0000b"}},
 {"id": 51, "model": "mail.message", "record_id": 2, "event": "create", "timestamp": "2025-11-17 11:00:00", "payload": {"body": "a\\u0000b \u00e9 \ud83d\ude00"}}
]$$);
SELECT odoo_id, payload->>'body' AS body FROM bridgecore.event WHERE odoo_id IN (50, 51);
SELECT odoo_id, reason, record::text LIKE '%\u0000%' AS raw_kept FROM bridgecore.dead_letter WHERE odoo_id = 50;

-- A record that fails again counts another attempt.
SELECT bridgecore.ingest('main', '[{"id": 43, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-02-31 10:00:00"}]') -> 'dead_lettered' AS dead;
SELECT odoo_id, reason, attempts FROM bridgecore.dead_letter WHERE odoo_id = 43;

-- An empty batch is fine.
SELECT bridgecore.ingest('main', '[]');
DROP TABLE before;

-- The store path renders doc in C: it is _event_doc()'s text, byte for byte,
-- whatever the values (escapes, nulls, nested payloads, arrays with nulls).
SELECT bridgecore.ingest('main', $$[
 {"id": 60, "model": "res.partner", "record_id": 9, "event": "unlink", "timestamp": "0001-01-01 00:00:00", "priority": "high", "category": "a \"quoted\" \\ café\t", "payload": {"z": 1, "a": [1.50, -0, 1e3, null, true, {"k": "\u00e9\n"}], "_changed_fields": ["name", "x\"y", null, 3, {"a": 1}]}, "user_id": [7, "Ünïcode \"name\""]},
 {"id": 61, "model": "res.partner", "record_id": -9, "event": "write", "timestamp": "9999-12-31 23:59:59", "priority": false, "category": false, "payload": false, "user_id": false},
 {"id": 62, "model": "res.partner", "record_id": 10, "event": "create", "timestamp": "2025-11-18 00:00:00", "payload": {"_changed_fields": []}},
 {"id": 63, "model": "res.partner", "record_id": 11, "event": "create", "timestamp": "2025-11-18 00:00:00", "payload": [1, "two"]},
 {"id": 62, "model": "res.partner", "record_id": 12, "event": "create", "timestamp": "2025-11-18 00:00:00"}
]$$);
SELECT odoo_id, record_id, doc FROM bridgecore.event WHERE odoo_id BETWEEN 60 AND 63 ORDER BY id;
SELECT count(*) AS docs_unlike_event_doc FROM bridgecore.event
 WHERE doc::text IS DISTINCT FROM bridgecore._event_doc(id, model, record_id, event, occurred_at, priority,
                                                          category, payload, changed_fields, odoo_user_id)::text;
SELECT count(*) = count(DISTINCT id) AND min(received_at) > '2025-01-01' AS ids_unique FROM bridgecore.event;

-- A log the direct path does not know (here: a partition with a trigger)
-- is stored by the INSERT statement, with the same result.
CREATE FUNCTION pg_temp.noop() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
SELECT format('CREATE TRIGGER t BEFORE INSERT ON %s FOR EACH ROW EXECUTE FUNCTION pg_temp.noop()',
              (SELECT tableoid::regclass FROM bridgecore.event ORDER BY id DESC LIMIT 1)) \gexec
SELECT bridgecore.ingest('main', $$[
 {"id": 80, "model": "stock.move", "record_id": 3, "event": "write", "timestamp": "2025-11-18 00:00:00", "payload": {"b": 2, "a": 1}},
 {"id": 70, "model": "stock.move", "record_id": 1, "event": "create", "timestamp": "2025-11-18 00:00:00"}
]$$);
SELECT odoo_id, doc FROM bridgecore.event WHERE odoo_id = 80;
SELECT format('DROP TRIGGER t ON %s', (SELECT tableoid::regclass FROM bridgecore.event ORDER BY id DESC LIMIT 1)) \gexec
DROP FUNCTION pg_temp.noop();

-- The payload's jsonb is built from the parsed record: the same value
-- jsonb_in makes of its text, for scalars, big and odd numbers, nesting.
CREATE TEMP TABLE payloads AS
SELECT 90 + n AS odoo_id, p FROM unnest(ARRAY[
  '5', '"text \u00e9 \ud83d\ude00"', 'true', '[]', '{}', '-0', '-0.0', '1.50', '1e400', '-1E-7',
  '18446744073709551615', '9223372036854775807', '-9223372036854775808', '0.000000000000000000001',
  '{"b": {"c": [1, [2, [3, {"d": null}]]]}, "a": "\"\\\/\b\f\n\r\t\u0001"}'
]) WITH ORDINALITY u(p, n);
SELECT bridgecore.ingest('main', (SELECT json_agg(json_build_object('id', odoo_id, 'model', 'x.payload',
        'record_id', 1, 'event', 'write', 'timestamp', '2025-11-18 00:00:00', 'payload', p::json)) FROM payloads))
       - 'instance' AS stored;
SELECT p.odoo_id, p.p, e.payload FROM payloads p LEFT JOIN bridgecore.event e ON e.odoo_id = p.odoo_id AND e.model = 'x.payload'
 WHERE e.payload IS DISTINCT FROM p.p::jsonb OR e.payload::text IS DISTINCT FROM p.p::jsonb::text;
SELECT bridgecore.ingest('main', '[{"id": 120, "model": "x.payload", "record_id": 1, "event": "write", "timestamp": "2025-11-18 00:00:00", "payload": {"a": 1, "b": 2, "a": 3}}]') -> 'inserted' AS inserted;
SELECT payload, payload = '{"a": 1, "b": 2, "a": 3}'::jsonb AS as_jsonb_in FROM bridgecore.event WHERE odoo_id = 120;
DROP TABLE payloads;
SELECT count(*) AS docs_unlike_event_doc FROM bridgecore.event
 WHERE doc::text IS DISTINCT FROM bridgecore._event_doc(id, model, record_id, event, occurred_at, priority,
                                                          category, payload, changed_fields, odoo_user_id)::text;

-- A record stored now settles its earlier dead letter, inside a batch's range of ids.
SELECT bridgecore.ingest('main', '[{"id": 131, "model": "bad model", "record_id": 1, "event": "write", "timestamp": "2025-11-18 00:00:00"}]') -> 'dead_lettered' AS dead;
SELECT bridgecore.ingest('main', '[{"id": 130, "model": "x.fixed", "record_id": 1, "event": "write", "timestamp": "2025-11-18 00:00:00"}, {"id": 131, "model": "x.fixed", "record_id": 1, "event": "write", "timestamp": "2025-11-18 00:00:00"}, {"id": 132, "model": "x.fixed", "record_id": 1, "event": "write", "timestamp": "2025-11-18 00:00:00"}]') -> 'inserted' AS inserted;
SELECT odoo_id, status FROM bridgecore.dead_letter WHERE odoo_id = 131;

-- A log whose columns differ from what this version makes (another type, a
-- typmod, another NOT NULL) is stored by the INSERT statement, which checks
-- them: the direct path builds values of the known types and checks no
-- constraint.
\set VERBOSITY terse
UPDATE bridgecore.event SET category = coalesce(category, 'business');
ALTER TABLE bridgecore.event ALTER COLUMN category SET NOT NULL;
SELECT bridgecore.ingest('main', '[{"id": 140, "model": "x.checked", "record_id": 1, "event": "write", "timestamp": "2025-11-18 00:00:00"}]');
ALTER TABLE bridgecore.event ALTER COLUMN category DROP NOT NULL;
ALTER TABLE bridgecore.event ALTER COLUMN odoo_user_name TYPE varchar(40);
SELECT bridgecore.ingest('main', '[{"id": 141, "model": "x.checked", "record_id": 1, "event": "write", "timestamp": "2025-11-18 00:00:00", "user_id": [2, "Mitchell Admin of a name longer than forty characters"]}]');
ALTER TABLE bridgecore.event ALTER COLUMN odoo_user_name TYPE text;
ALTER TABLE bridgecore.event ALTER COLUMN odoo_id TYPE numeric;
SELECT bridgecore.ingest('main', '[{"id": 142, "model": "x.checked", "record_id": 1, "event": "write", "timestamp": "2025-11-18 00:00:00"}]') -> 'inserted' AS inserted;
ALTER TABLE bridgecore.event ALTER COLUMN odoo_id TYPE bigint;
\set VERBOSITY default
SELECT odoo_id, category FROM bridgecore.event WHERE model = 'x.checked' ORDER BY odoo_id;
