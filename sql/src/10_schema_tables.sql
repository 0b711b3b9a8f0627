-------------------------------------------------------------------------------
-- Types
-------------------------------------------------------------------------------
-- Declared in rank order, so ORDER BY and comparisons follow the rank.
CREATE TYPE bridgecore.priority AS ENUM ('low', 'medium', 'high');
CREATE TYPE bridgecore.event_kind AS ENUM ('create', 'write', 'unlink');
CREATE TYPE bridgecore.dead_letter_status AS ENUM ('pending', 'retrying', 'resolved', 'ignored');

-------------------------------------------------------------------------------
-- Tables
-------------------------------------------------------------------------------
CREATE TABLE bridgecore.instance (
    id              integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name            text NOT NULL UNIQUE
                    CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$'),
    url             text NOT NULL CHECK (url ~* '^https?://([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?(/[^[:space:]?#]*)?$'),
    database        text NOT NULL CHECK (database <> ''),
    login           text NOT NULL CHECK (login <> ''),
    secret          text NOT NULL CHECK (secret <> ''),
    source_model    text NOT NULL DEFAULT 'update.webhook'
                    CHECK (source_model ~ '^[a-z0-9_]+(\.[a-z0-9_]+)*$'),
    poll_interval   interval NOT NULL DEFAULT '1 second'
                    CHECK (poll_interval BETWEEN '10 milliseconds' AND '1 day'),
    batch_size      integer NOT NULL DEFAULT 500 CHECK (batch_size BETWEEN 1 AND 10000),
    enabled         boolean NOT NULL DEFAULT true,
    verify_tls      boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Runtime status, written by the poller.
    state           text NOT NULL DEFAULT 'ok' CHECK (state IN ('ok', 'backoff', 'auth_failed')),
    cursor          bigint NOT NULL DEFAULT 0 CHECK (cursor >= 0),
    last_success_at timestamptz,
    last_error      text,
    last_error_at   timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    events_ingested bigint NOT NULL DEFAULT 0,
    newest_event_at timestamptz,
    -- Highest local event id that cleanup has removed: a device whose
    -- cursor is below it has missed events and must resynchronise.
    purged_through  bigint NOT NULL DEFAULT 0,
    -- Bumped by alter_instance: a running poller restarts with the new settings.
    config_version  integer NOT NULL DEFAULT 1,
    -- SHA-256 of the doorbell's push key (alter_instance(push_key => ...)),
    -- NULL when the instance has none; the key itself is stored nowhere.
    push_key_hash   bytea UNIQUE CHECK (octet_length(push_key_hash) = 32)
);
COMMENT ON TABLE bridgecore.instance IS 'One row per Odoo instance (tenant). The secret is readable by no role but the owner.';

-- ISO 8601 UTC, as apps parse it today ("2025-11-16T10:30:00Z").
CREATE FUNCTION bridgecore._iso(ts timestamptz)
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT pg_catalog.to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') $$;

-- The JSON of one event as sync_pull delivers it. It depends only on the
-- event's own columns, so it is rendered once, when the event is stored
-- (event.doc), and a pull concatenates instead of re-rendering: every event
-- is read by many devices. IMMUTABLE holds: the timestamp format is fixed
-- and UTC, and every other input is a plain value.
CREATE FUNCTION bridgecore._event_doc(
    id bigint, model text, record_id bigint, event bridgecore.event_kind,
    occurred_at timestamptz, priority bridgecore.priority, category text,
    payload jsonb, changed_fields text[], odoo_user_id bigint)
RETURNS json LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT pg_catalog.json_build_object(
        'id', id, 'model', model, 'record_id', record_id, 'event', event,
        'timestamp', bridgecore._iso(occurred_at),
        'priority', priority, 'category', category, 'payload', payload,
        'changed_fields', changed_fields, 'user_id', odoo_user_id)
$$;

-- instance_id has no foreign key: a partition made at run time would take
-- a lock on bridgecore.instance for it inside the ingest that makes it, and
-- every event is written under its instance row's lock anyway;
-- remove_instance deletes the instance's events itself.
CREATE TABLE bridgecore.event (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    instance_id     integer NOT NULL,
    odoo_id         bigint NOT NULL,
    model           text NOT NULL,
    record_id       bigint NOT NULL,
    event           bridgecore.event_kind NOT NULL,
    priority        bridgecore.priority,
    category        text,
    payload         jsonb,
    changed_fields  text[],
    odoo_user_id    bigint,
    odoo_user_name  text,
    occurred_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL DEFAULT now(),
    doc             json NOT NULL GENERATED ALWAYS AS (bridgecore._event_doc(
                        id, model, record_id, event, occurred_at, priority, category,
                        payload, changed_fields, odoo_user_id)) STORED
) PARTITION BY RANGE (id);
COMMENT ON TABLE bridgecore.event IS 'Odoo change events; id is the devices'' cursor and follows commit order.';
-- Partitioned by local id range, bridgecore.partition_size ids each, so that
-- retention drops whole partitions instead of deleting rows. The partitions,
-- bridgecore.event_<first id>, are made at run time, ahead of the ids, by
-- _ensure_partitions (80_dead_letters_retention.sql): they are not members of
-- the extension, and pg_dump keeps them with their rows.
--
-- Each partition has its own indexes, made with it: the primary key on id
-- (unique in the whole log, since id is the partition key), (instance_id,
-- odoo_id), (instance_id, id), (occurred_at) and (instance_id, model, id).
-- They are not partitioned indexes of this table: a restore re-creates this
-- table by CREATE EXTENSION, and attaching a dumped partition to a table with
-- partitioned indexes would build them, so the dump's own indexes of the
-- partition would then fail to restore.
--
-- Exactly once per (instance, Odoo id) cannot be a unique index of a log
-- partitioned by local id: the store path keeps it, under the ordering lock
-- every insert holds (src/ingest.c), looking up the (instance_id, odoo_id)
-- indexes.

-- What each partition holds, per instance and model: how many events were
-- stored there, the highest id and the newest Odoo timestamp, and how many
-- of them were deleted since (deleted rows: cleanup(before, instance) and
-- remove_instance take events out of a partition without dropping it).
-- Retention reads it instead of the partition: whether the partition is due
-- (its newest event older than the cutoff), the number of events a drop
-- removes (cleanup's exact deleted: stored less deleted) and the per-model
-- horizons it records in bridgecore.purged, for the price of a few rows;
-- the drop then only frees the partition's files. Kept exact in the
-- transaction that changes the log: the store path adds its events here in
-- the statement that inserts them (src/ingest.c), under the ordering lock,
-- so a rolled-back batch leaves nothing; a delete counts its events in the
-- deleted row, which no insert writes, so an uncommitted cleanup of one
-- instance never holds up the ingestion of its newer events. max_id and
-- newest_at are the highest id and the newest timestamp ever stored there,
-- which is what retention needs: every event of the partition is gone once
-- it is dropped, the deleted ones with their horizons recorded when they
-- went, and a deleted event can only make the partition's true newest
-- older (retention may keep a partition longer, never drop one too early).
-- part is a regclass, so a dump names the partition and its restore finds
-- the partition's new oid. bridgecore._summarize_partitions() makes it
-- again from the rows.
CREATE TABLE bridgecore.partition_summary (
    part            regclass NOT NULL,
    instance_id     integer NOT NULL,
    model           text NOT NULL,
    deleted         boolean NOT NULL,
    events          bigint NOT NULL CHECK (events >= 0),
    max_id          bigint NOT NULL,
    newest_at       timestamptz NOT NULL,
    PRIMARY KEY (part, instance_id, model, deleted)
);
COMMENT ON TABLE bridgecore.partition_summary IS 'Events stored in each partition of bridgecore.event per instance and model, with the highest id and the newest timestamp, and (deleted) those deleted from it since: what retention removes, without reading the partition.';

-- Ids below an instance's cursor that Odoo did not show yet: an Odoo
-- transaction that took a lower id may commit after a higher one. The poller
-- asks for them again until bridgecore.gap_window has passed.
CREATE TABLE bridgecore.gap (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    odoo_id         bigint NOT NULL,
    noticed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, odoo_id)
);

CREATE TABLE bridgecore.app_type (
    name            text PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.-]{1,64}$'),
    models          text[] NOT NULL,
    is_default      boolean NOT NULL DEFAULT false,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bridgecore.app_type IS 'Which Odoo models each kind of app syncs.';

INSERT INTO bridgecore.app_type (name, models, is_default) VALUES
    ('sales_app', '{sale.order,sale.order.line,res.partner,product.template,product.product,product.category,mail.message,mail.channel}', true),
    ('delivery_app', '{stock.picking,stock.move,stock.move.line,res.partner,mail.message,mail.channel}', true),
    ('warehouse_app', '{stock.picking,stock.move,stock.move.line,stock.quant,product.product,stock.location,mail.message,mail.channel}', true),
    ('manager_app', '{sale.order,purchase.order,account.move,res.partner,hr.expense,project.project,mail.message,mail.channel}', true),
    ('mobile_app', '{sale.order,res.partner,product.template,product.product,mail.message,mail.channel}', true),
    ('messaging_app', '{mail.message,mail.channel,res.partner,res.users}', true);

CREATE TABLE bridgecore.sync_state (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    user_id         bigint NOT NULL CHECK (user_id > 0),
    device_id       text NOT NULL,
    app_type        text NOT NULL,
    last_event_id   bigint NOT NULL DEFAULT 0,
    last_sync_time  timestamptz,
    sync_count      bigint NOT NULL DEFAULT 0,
    last_event_count integer NOT NULL DEFAULT 0,
    total_events_synced bigint NOT NULL DEFAULT 0,
    is_active       boolean NOT NULL DEFAULT true,
    device_info     jsonb,
    app_version     text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- sync_resets of the device: a standby's sync tokens carry it.
    resets          bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (instance_id, user_id, device_id)
);
COMMENT ON TABLE bridgecore.sync_state IS 'Per (instance, user, device) sync cursor.';

CREATE TABLE bridgecore.dead_letter (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    odoo_id         bigint,
    -- json, not jsonb: the raw record may hold what jsonb cannot (\u0000).
    record          json NOT NULL,
    reason          text NOT NULL,
    first_failed_at timestamptz NOT NULL DEFAULT now(),
    last_failed_at  timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 1,
    status          bridgecore.dead_letter_status NOT NULL DEFAULT 'pending',
    note            text
);
COMMENT ON TABLE bridgecore.dead_letter IS 'Odoo records that could not be ingested, with the reason.';
CREATE UNIQUE INDEX dead_letter_instance_odoo_id_idx
    ON bridgecore.dead_letter (instance_id, odoo_id) WHERE odoo_id IS NOT NULL;

-- A record without a usable id is kept once per distinct content.
CREATE INDEX dead_letter_idless_idx ON bridgecore.dead_letter (instance_id, pg_catalog.md5(record::text))
    WHERE odoo_id IS NULL;

CREATE TABLE bridgecore.odoo_model (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    model           text NOT NULL,
    name            text,
    transient       boolean,
    odoo_model_id   integer,
    classification  text NOT NULL
                    CHECK (classification IN ('transient', 'ignored', 'critical', 'important', 'standard')),
    priority        bridgecore.priority,
    discovered_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, model)
);
COMMENT ON TABLE bridgecore.odoo_model IS 'Odoo models found by discover_models(), classified.';

-- The highest local id retention removed, per instance and model: a device
-- is told resync_required exactly when an event of a model it wants was
-- removed above its position. '*': removals made before 0.3.0.
CREATE TABLE bridgecore.purged (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    model           text NOT NULL,
    through         bigint NOT NULL,
    PRIMARY KEY (instance_id, model)
);
COMMENT ON TABLE bridgecore.purged IS 'Highest event id removed by retention, per instance and model (''*'': any model, before 0.3.0).';

-- pg_dump keeps user-defined app types; on restore, a dumped override of a
-- built-in app type replaces the row CREATE EXTENSION inserted.
CREATE FUNCTION bridgecore._app_type_replace_default() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM bridgecore.app_type a WHERE a.name = NEW.name AND a.is_default;
    RETURN NEW;
END
$$;
CREATE TRIGGER app_type_replace_default BEFORE INSERT ON bridgecore.app_type
    FOR EACH ROW WHEN (NOT NEW.is_default) EXECUTE FUNCTION bridgecore._app_type_replace_default();

-- pg_dump keeps the data of configuration tables.
SELECT pg_catalog.pg_extension_config_dump('bridgecore.instance', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.event', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.sync_state', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.dead_letter', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.gap', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.app_type', 'WHERE NOT is_default');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('bridgecore.instance', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('bridgecore.event', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('bridgecore.dead_letter', 'id'), '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.odoo_model', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.purged', '');
SELECT pg_catalog.pg_extension_config_dump('bridgecore.partition_summary', '');

-------------------------------------------------------------------------------
-- Views
-------------------------------------------------------------------------------
-- The heartbeat of a successful poll lives in shared memory, so an idle
-- instance writes nothing; last_success_at shows the later of the row's
-- value (the last poll that stored something) and the heartbeat.
CREATE FUNCTION bridgecore._last_success(instance_id integer)
RETURNS timestamptz LANGUAGE c VOLATILE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bridgecore_last_success';

CREATE VIEW bridgecore.instances WITH (security_barrier) AS
SELECT i.name, i.url, i.database, i.login, i.source_model, i.poll_interval,
       i.batch_size, i.enabled, i.verify_tls,
       CASE WHEN i.enabled THEN i.state ELSE 'disabled' END AS state,
       i.cursor, greatest(i.last_success_at, bridgecore._last_success(i.id)) AS last_success_at,
       i.last_error, i.last_error_at,
       i.consecutive_failures, i.next_attempt_at, i.events_ingested,
       now() - i.newest_event_at AS lag,
       i.purged_through, i.created_at, i.push_key_hash IS NOT NULL AS has_push_key
  FROM bridgecore.instance i;
COMMENT ON VIEW bridgecore.instances IS 'Odoo instances and their poller status, without secrets.';
