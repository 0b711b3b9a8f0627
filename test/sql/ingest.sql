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
