-- BridgeCore 0.3.0 -> 0.4.0: the event log at scale. Pulls cost what the
-- page holds: a per-model index serves devices whose models are rare.
-- Retention costs nothing: the log is partitioned by local id range and
-- retention drops whole partitions. Idle polls write nothing: their
-- heartbeat is in shared memory. A UTF8 database is required. Apps log in
-- (bridgecore.login: Odoo checks the credentials, BridgeCore signs a JWT)
-- and refresh their tokens; a pull that names no instance uses the one its
-- sync_token names.
\echo Use "ALTER EXTENSION bridgecore UPDATE TO '0.4.0'" to load this file. \quit

-- Odoo's text is Unicode and is stored as it comes: in a database of
-- another encoding the same bytes would mean other characters.
DO $$
BEGIN
    IF pg_catalog.getdatabaseencoding() <> 'UTF8' THEN
        RAISE EXCEPTION 'bridgecore needs a UTF8 database, and database "%" is %',
                        pg_catalog.current_database(), pg_catalog.getdatabaseencoding()
              USING ERRCODE = 'feature_not_supported',
                    HINT = 'Create the database with ENCODING ''UTF8'' (and a UTF-8 locale or C) and install the extension there.';
    END IF;
END
$$;

-- Per-model access for pulls of models that are rare in the log
-- (sync_pull reads the first ids of each wanted model from it). On a large
-- log it can be built beforehand with CREATE INDEX CONCURRENTLY under the
-- same name (docs/sql-api.md, Versions and upgrading).
CREATE INDEX IF NOT EXISTS event_instance_model_id_idx ON bridgecore.event (instance_id, model, id);

-- The token of a position, which the parser above reads back. Every
-- operator in the body is immutable (text || text, integer to text), so the
-- planner inlines the call instead of running a SQL function per pull.
CREATE OR REPLACE FUNCTION bridgecore._token(instance_id integer, pos bigint)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT 'bc1:' || instance_id::text || ':' || pos::text $$;

-------------------------------------------------------------------------------
-- The log becomes partitioned by local id range. The existing table becomes
-- its first partition, covering the ids handed out so far, as it is: one
-- read (the attach checks the range), no rewrite, no index build. Its
-- indexes stay its own, as every partition's are (see 10_schema_tables.sql);
-- its unique (instance_id, odoo_id) index serves the lookups of the store
-- path there.
-------------------------------------------------------------------------------
ALTER TABLE bridgecore.event RENAME TO event_unpartitioned;
-- The log has no foreign key to bridgecore.instance any more (see
-- 10_schema_tables.sql); remove_instance deletes an instance's events.
ALTER TABLE bridgecore.event_unpartitioned DROP CONSTRAINT event_instance_id_fkey;
ALTER EXTENSION bridgecore DROP TABLE bridgecore.event_unpartitioned;
ALTER EXTENSION bridgecore DROP SEQUENCE bridgecore.event_id_seq;
COMMENT ON TABLE bridgecore.event_unpartitioned IS NULL;
REVOKE ALL ON bridgecore.event_unpartitioned FROM bridgecore_admin;

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
SELECT pg_catalog.pg_extension_config_dump('bridgecore.event', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('bridgecore.event', 'id'), '');
GRANT SELECT ON bridgecore.event TO bridgecore_admin;
-- The new identity's sequence (event_id_seq1 while the old one exists) goes
-- on from the old one's position, and takes its name.
SELECT pg_catalog.setval('bridgecore.event_id_seq1', s.last_value, s.is_called) FROM bridgecore.event_id_seq s;
ALTER TABLE bridgecore.event_unpartitioned ALTER COLUMN id DROP IDENTITY;
ALTER SEQUENCE bridgecore.event_id_seq1 RENAME TO event_id_seq;

DO $$
DECLARE
    lo bigint := (SELECT min(e.id) FROM bridgecore.event_unpartitioned e);
    next_id bigint := (SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END
                         FROM bridgecore.event_id_seq s);
    part text := 'event_' || lo;
BEGIN
    IF lo IS NULL THEN
        DROP TABLE bridgecore.event_unpartitioned;
        RETURN;
    END IF;
    EXECUTE format('ALTER TABLE bridgecore.event_unpartitioned RENAME TO %I', part);
    EXECUTE format('ALTER INDEX bridgecore.event_pkey RENAME TO %I', part || '_pkey');
    EXECUTE format('ALTER INDEX bridgecore.event_instance_id_odoo_id_key RENAME TO %I', part || '_instance_id_odoo_id_key');
    EXECUTE format('ALTER INDEX bridgecore.event_instance_id_idx RENAME TO %I', part || '_instance_id_id_idx');
    EXECUTE format('ALTER INDEX bridgecore.event_occurred_at_idx RENAME TO %I', part || '_occurred_at_idx');
    EXECUTE format('ALTER INDEX bridgecore.event_instance_model_id_idx RENAME TO %I', part || '_instance_id_model_id_idx');
    EXECUTE format('ALTER TABLE bridgecore.event ATTACH PARTITION bridgecore.%I FOR VALUES FROM (%s) TO (%s)',
                   part, lo, next_id);
END
$$;
-- The instance id a 'bc1:' token names, NULL for any other token.
CREATE FUNCTION bridgecore._token_instance_id(token text)
RETURNS integer LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bridgecore_token_instance_id';
REVOKE ALL ON FUNCTION bridgecore._token_instance_id(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION bridgecore.sync_pull(
    user_id bigint,
    device_id text,
    app_type text,
    "limit" integer DEFAULT 100,
    models_filter text[] DEFAULT NULL,
    instance text DEFAULT NULL,
    sync_token text DEFAULT NULL,
    device_info jsonb DEFAULT NULL,
    app_version text DEFAULT NULL)
RETURNS json LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- Every statement is planned at each call, with the position, the page size
-- and the models known: a generic plan (which the plan cache would otherwise
-- switch to after a few calls, its estimate looking no worse) does not know
-- that a wanted model is rare or absent, and reads the log by id looking
-- for it, hundreds of milliseconds on a log of a million events.
SET plan_cache_mode = force_custom_plan
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    purged bigint;
    wanted text[];
    cursor_id bigint;
    prev_sync timestamptz;
    pos bigint;
    resync boolean := false;
    lim integer := sync_pull."limit";
    events_json json;
    n integer;
    last_id bigint;
    more boolean;
    newest bigint;
    per_model text;
    more_seen boolean;
BEGIN
    PERFORM bridgecore._check_device(sync_pull.user_id, sync_pull.device_id);
    PERFORM bridgecore._check_limit(lim, 'limit', 500);
    IF sync_pull.app_type IS NULL THEN
        RAISE EXCEPTION 'app_type must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Known app types: ' || (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM bridgecore.app_type a) || '.';
    END IF;
    SELECT a.models INTO wanted FROM bridgecore.app_type a WHERE a.name = sync_pull.app_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown app_type "%"', left(sync_pull.app_type, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known app types: ' || (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM bridgecore.app_type a) || '.';
    END IF;
    IF cardinality(models_filter) > 0 THEN
        PERFORM bridgecore._check_model_names(models_filter, 'models_filter');
        wanted := ARRAY(SELECT unnest(wanted) INTERSECT SELECT unnest(models_filter));
    END IF;

    -- An omitted instance is the one a 'bc1:' sync_token names, unless the
    -- JWT names one: apps that omit it keep working when an instance is added.
    inst_id := bridgecore._instance_id(coalesce(sync_pull.instance,
        (SELECT i.name FROM bridgecore.instance i
          WHERE i.id = bridgecore._token_instance_id(sync_pull.sync_token)
            AND nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'instance' IS NULL)));
    PERFORM bridgecore._rate_limit('sync_pull', inst_id, sync_pull.user_id, sync_pull.device_id);

    SELECT s.last_event_id, s.last_sync_time INTO cursor_id, prev_sync
      FROM bridgecore.sync_state s
     WHERE s.instance_id = inst_id AND s.user_id = sync_pull.user_id AND s.device_id = sync_pull.device_id
       FOR UPDATE;
    IF NOT FOUND THEN
        INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type)
        VALUES (inst_id, sync_pull.user_id, sync_pull.device_id, sync_pull.app_type)
        ON CONFLICT DO NOTHING;
        SELECT s.last_event_id, s.last_sync_time INTO cursor_id, prev_sync
          FROM bridgecore.sync_state s
         WHERE s.instance_id = inst_id AND s.user_id = sync_pull.user_id AND s.device_id = sync_pull.device_id
           FOR UPDATE;
    END IF;

    -- A token names the last answer the app processed: continue from there.
    -- "0" is the starting token: a device's first pull may pass it, so that
    -- a lost first answer can be asked for again.
    pos := cursor_id;
    IF sync_token IS NOT NULL THEN
        pos := bridgecore._token_position(sync_token, inst_id);
        IF pos > cursor_id THEN
            RAISE EXCEPTION 'sync_token is ahead of this device''s sync state'
                USING ERRCODE = 'invalid_parameter_value',
                      DETAIL = format('The token names event %s; the device''s state is at %s.', pos, cursor_id),
                      HINT = 'Pass a token this device received, or omit it to continue from the stored state.';
        END IF;
    END IF;

    -- Retention drops whole partitions, which no snapshot keeps: a query
    -- that waited for the drop's lock would run on a snapshot from before
    -- it, without the dropped rows and without their horizon. The log is
    -- locked first, so the snapshot of the page comes after any drop it
    -- waited for, and a drop waits for this pull.
    LOCK TABLE ONLY bridgecore.event IN ACCESS SHARE MODE;

    -- One statement, one snapshot: the page, the retention horizon and the
    -- newest visible id agree. Retention removes a prefix of the log, so
    -- every retained event above pos is on the page (or the next ones); the
    -- answer says resync_required exactly when retention removed an event
    -- of a model this device wants above its position (purged records the
    -- highest removed id per model; '*' stands for removals before 0.3.0,
    -- whose models were not recorded).
    --
    -- The page costs what the page holds, not what the log holds. First the
    -- log is read in id order, at most 4 * (lim + 1) events: enough for a
    -- device whose models are a quarter of the log or more, which is the
    -- usual case, and the cheapest read. A device whose models are rarer
    -- gets its page from the (instance, model, id) index instead: the first
    -- lim ids of each wanted model above pos, merged.
    --
    -- json_agg takes the page in the order of the subquery (sorted by id, a
    -- plain aggregate over one subquery), so it does not sort it again.
    SELECT coalesce(json_agg(e.doc), '[]'), count(*), max(e.id),
           (SELECT max(x.id) FROM bridgecore.event x WHERE x.instance_id = inst_id),
           (SELECT max(p.through) FROM bridgecore.purged p
             WHERE p.instance_id = inst_id AND (p.model = ANY (wanted) OR p.model = '*')),
           -- a wanted event after the page, within what was read
           EXISTS (SELECT 1 FROM (SELECT ev.id, ev.model
                                    FROM bridgecore.event ev
                                   WHERE ev.instance_id = inst_id AND ev.id > pos
                                   ORDER BY ev.id
                                   LIMIT 4 * (lim + 1)) s
                    WHERE s.model = ANY (wanted)
                    ORDER BY s.id OFFSET lim LIMIT 1)
      INTO events_json, n, last_id, newest, purged, more_seen
      FROM (SELECT s.id, s.doc
              FROM (SELECT ev.id, ev.doc, ev.model
                      FROM bridgecore.event ev
                     WHERE ev.instance_id = inst_id AND ev.id > pos
                     ORDER BY ev.id
                     LIMIT 4 * (lim + 1)) s
             WHERE s.model = ANY (wanted)
             ORDER BY s.id
             LIMIT lim) e;
    IF n < lim AND cardinality(wanted) > 0
       AND EXISTS (SELECT 1 FROM bridgecore.event x
                    WHERE x.instance_id = inst_id AND x.id > pos
                    ORDER BY x.id OFFSET 4 * (lim + 1) - 1 LIMIT 1) THEN
        -- One branch per wanted model, its name a literal: planned with the
        -- model's own statistics, so the (instance, model, id) index serves
        -- it (a model that is a parameter is planned as an average one, and
        -- a rare or absent one was then looked for by primary key).
        SELECT string_agg(format('(SELECT x.id FROM bridgecore.event x'
                                 ' WHERE x.instance_id = $1 AND x.model = %L AND x.id > $2'
                                 ' ORDER BY x.id LIMIT $3)', w), ' UNION ALL ')
          INTO per_model FROM (SELECT DISTINCT w FROM unnest(wanted) w) m;
        EXECUTE format('SELECT coalesce(json_agg(e.doc), ''[]''), count(*), max(e.id),'
                       '       (SELECT max(x.id) FROM bridgecore.event x WHERE x.instance_id = $1),'
                       '       (SELECT max(p.through) FROM bridgecore.purged p'
                       '         WHERE p.instance_id = $1 AND (p.model = ANY ($4) OR p.model = ''*''))'
                       '  FROM (SELECT ev.id, ev.doc'
                       '          FROM (SELECT k.id FROM (%s) k ORDER BY k.id LIMIT $3) page'
                       '          JOIN bridgecore.event ev ON ev.id = page.id'
                       '         ORDER BY ev.id) e', per_model)
           INTO events_json, n, last_id, newest, purged
          USING inst_id, pos, lim, wanted;
        more_seen := false;
    END IF;
    -- A full page: whether a wanted event follows it, one probe of each
    -- wanted model's index (the models as literals, as above). An event
    -- committed since the page was read has a higher id than any on it
    -- (events commit in id order), so a later snapshot here can only add to
    -- what follows.
    IF n = lim AND more_seen THEN
        more := true;
    ELSIF n = lim THEN
        EXECUTE (SELECT 'SELECT ' || string_agg(format('EXISTS (SELECT 1 FROM bridgecore.event x'
                                                     ' WHERE x.instance_id = $1 AND x.model = %L'
                                                     ' AND x.id > $2)', w), ' OR ')
                   FROM (SELECT DISTINCT w FROM unnest(wanted) w) m)
           INTO more USING inst_id, last_id;
    ELSE
        more := false;
    END IF;
    IF pos < purged THEN
        resync := true;
        IF NOT more THEN
            pos := greatest(pos, purged);
        END IF;
    END IF;

    -- With nothing more to send, the cursor moves past the events this
    -- device does not want, so they are not scanned again.
    IF more THEN
        pos := last_id;
    ELSE
        pos := greatest(pos, newest);
    END IF;

    -- The stored state never moves back: a token replayed from an earlier
    -- answer (a lost answer, a second sync path) is served from its own
    -- position, and every later token issued to this device stays valid.
    UPDATE bridgecore.sync_state s
       SET last_event_id = greatest(s.last_event_id, pos),
           last_sync_time = now(),
           sync_count = s.sync_count + 1,
           last_event_count = n,
           total_events_synced = s.total_events_synced + n,
           app_type = sync_pull.app_type,
           is_active = true,
           device_info = coalesce(sync_pull.device_info, s.device_info),
           app_version = coalesce(sync_pull.app_version, s.app_version)
     WHERE s.instance_id = inst_id AND s.user_id = sync_pull.user_id AND s.device_id = sync_pull.device_id;

    PERFORM bridgecore._count_sync_pull(inst_id, n);
    RETURN json_build_object(
        'status', 'success',
        'has_updates', n > 0,
        'new_events_count', n,
        'events', events_json,
        'next_sync_token', bridgecore._token(inst_id, pos),
        'last_sync_time', bridgecore._iso(prev_sync),
        'has_more', more,
        'resync_required', resync);
END
$$;

-------------------------------------------------------------------------------
-- The heartbeat of a successful poll lives in shared memory: an idle
-- instance writes nothing.  last_success_at shows the later of the row's
-- value (the last poll that stored something) and the heartbeat.
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._last_success(instance_id integer)
RETURNS timestamptz LANGUAGE c VOLATILE STRICT PARALLEL SAFE
AS 'MODULE_PATHNAME', 'bridgecore_last_success';
REVOKE ALL ON FUNCTION bridgecore._last_success(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridgecore._last_success(integer) TO bridgecore_monitor;

CREATE OR REPLACE VIEW bridgecore.instances WITH (security_barrier) AS
SELECT i.name, i.url, i.database, i.login, i.source_model, i.poll_interval,
       i.batch_size, i.enabled, i.verify_tls,
       CASE WHEN i.enabled THEN i.state ELSE 'disabled' END AS state,
       i.cursor, greatest(i.last_success_at, bridgecore._last_success(i.id)) AS last_success_at,
       i.last_error, i.last_error_at,
       i.consecutive_failures, i.next_attempt_at, i.events_ingested,
       now() - i.newest_event_at AS lag,
       i.purged_through, i.created_at
  FROM bridgecore.instance i;

CREATE OR REPLACE FUNCTION bridgecore.status()
RETURNS TABLE (instance text, state text, url text, lag interval, events_per_second numeric,
               events_ingested bigint, cursor bigint, last_success_at timestamptz,
               last_error text, last_error_at timestamptz, consecutive_failures integer,
               next_attempt_at timestamptz, dead_letters_pending bigint, gaps_open bigint,
               devices_active bigint, poller_pid integer)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.name, CASE WHEN i.enabled THEN i.state ELSE 'disabled' END, i.url,
           date_trunc('second', now() - i.newest_event_at),
           round(coalesce(s.events_per_second, 0)::numeric, 2),
           i.events_ingested, i.cursor, greatest(i.last_success_at, bridgecore._last_success(i.id)),
           i.last_error, i.last_error_at,
           i.consecutive_failures, i.next_attempt_at,
           (SELECT count(*) FROM bridgecore.dead_letter d
             WHERE d.instance_id = i.id AND d.status IN ('pending', 'retrying')),
           (SELECT count(*) FROM bridgecore.gap g WHERE g.instance_id = i.id),
           (SELECT count(*) FROM bridgecore.sync_state ss WHERE ss.instance_id = i.id AND ss.is_active),
           (SELECT a.pid FROM pg_catalog.pg_stat_activity a
             WHERE a.backend_type = 'bridgecore poller' AND a.datname = pg_catalog.current_database()
               AND a.pid = (SELECT l.pid FROM pg_catalog.pg_locks l
                             WHERE l.locktype = 'advisory' AND l.classid = 1112425298
                               AND l.objid = i.id AND l.granted LIMIT 1))
      FROM bridgecore.instance i
      LEFT JOIN bridgecore._stats_instances() s ON s.instance_id = i.id
     ORDER BY i.name
$$;

-------------------------------------------------------------------------------
-- Dead letters
-------------------------------------------------------------------------------
-- Retries one dead letter: its stored record first (the rules may accept it
-- now, or a valid version was stored meanwhile), unless it is an unstorable
-- record, whose copy is not exact; if it is still refused, the
-- poller is asked to fetch the row from Odoo again (it may have been
-- corrected there). Stored records keep their Odoo id: nothing is duplicated.
CREATE OR REPLACE FUNCTION bridgecore._retry_dead_letter(dl bridgecore.dead_letter)
RETURNS text LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    result jsonb;
BEGIN
    -- The copy of an unstorable record is not what Odoo sent (U+FFFD for
    -- invalid UTF-8, "NaN" as a string, a number quoted): storing it would
    -- change the record without saying so. Only Odoo's own row can fix it.
    IF dl.reason NOT LIKE 'unstorable record:%' THEN
        result := bridgecore._ingest(dl.instance_id, json_build_array(dl.record));
        IF (result ->> 'dead_lettered')::bigint = 0 THEN
            UPDATE bridgecore.dead_letter d SET status = 'resolved' WHERE d.id = dl.id;
            RETURN 'resolved';
        END IF;
    END IF;
    -- Still refused: a retry is not a new failure from Odoo.
    UPDATE bridgecore.dead_letter d SET attempts = dl.attempts, last_failed_at = dl.last_failed_at,
                                        status = dl.status
     WHERE d.id = dl.id;
    IF dl.odoo_id IS NULL THEN
        RETURN 'pending';       -- nothing to fetch again without an id
    END IF;
    INSERT INTO bridgecore.gap (instance_id, odoo_id) VALUES (dl.instance_id, dl.odoo_id)
    ON CONFLICT (instance_id, odoo_id) DO UPDATE SET noticed_at = now();
    UPDATE bridgecore.dead_letter d SET status = 'retrying' WHERE d.id = dl.id;
    RETURN 'retrying';
END
$$;
-- Partitions of the event log
-------------------------------------------------------------------------------
-- The partitions of bridgecore.event, oldest first, each holding the local
-- ids lo <= id < hi. Read from the catalog and relation caches, not through
-- the caller's snapshot: a REPEATABLE READ caller sees partitions attached
-- since it began.
CREATE FUNCTION bridgecore._partitions(OUT part regclass, OUT lo bigint, OUT hi bigint)
RETURNS SETOF record LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.relid::regclass, b[1]::bigint, b[2]::bigint
      FROM pg_partition_tree('bridgecore.event') t,
           regexp_match(pg_get_partition_constraintdef(t.relid),
                        '\(id >= ''(-?[0-9]+)''::bigint\) AND \(id < ''(-?[0-9]+)''::bigint\)') b
     WHERE t.isleaf AND b IS NOT NULL
     ORDER BY 2
$$;

-- Makes partitions, with their indexes (see bridgecore.event), until every
-- id up to upto has one; without upto, until there is room for a
-- partition's width (bridgecore.partition_size) of ids beyond the next id.
-- The launcher's maintenance calls it so, to make partitions ahead; the
-- store path (src/partition.c) calls it with the last id a batch may take
-- when that is past the last partition, so that ingestion never lacks one,
-- even without the launcher. Returns the first id without a partition.
--
-- CREATE TABLE and ATTACH PARTITION, not CREATE TABLE ... PARTITION OF: the
-- attach takes SHARE UPDATE EXCLUSIVE on bridgecore.event, which neither
-- pulls (ACCESS SHARE) nor ingestion (ROW EXCLUSIVE) wait for, where
-- PARTITION OF takes ACCESS EXCLUSIVE. (The log has no foreign key, whose
-- clone would lock bridgecore.instance too.) There is no default
-- partition: attaching a range next to one would have to scan it, and fail
-- if it held rows of that range.
CREATE FUNCTION bridgecore._ensure_partitions(upto bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    size bigint := current_setting('bridgecore.partition_size')::bigint;
    next_id bigint;
    wanted bigint;
    top bigint;
    part text;
BEGIN
    SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END INTO next_id
      FROM bridgecore.event_id_seq s;
    wanted := coalesce(upto, next_id + size - 1);
    SELECT max(p.hi) INTO top FROM bridgecore._partitions() p;
    IF top > wanted THEN
        RETURN top;
    END IF;
    -- One creator at a time; readers and writers go on.
    LOCK TABLE ONLY bridgecore.event IN SHARE UPDATE EXCLUSIVE MODE;
    SELECT coalesce(max(p.hi), next_id) INTO top FROM bridgecore._partitions() p;
    WHILE top <= wanted LOOP
        part := 'bridgecore.' || quote_ident('event_' || top);
        EXECUTE format('CREATE TABLE %s (LIKE bridgecore.event INCLUDING DEFAULTS INCLUDING GENERATED'
                       ' INCLUDING STORAGE INCLUDING COMPRESSION, PRIMARY KEY (id))', part);
        EXECUTE format('CREATE INDEX ON %s (instance_id, odoo_id)', part);
        EXECUTE format('CREATE INDEX ON %s (instance_id, id)', part);
        EXECUTE format('CREATE INDEX ON %s (occurred_at)', part);
        EXECUTE format('CREATE INDEX ON %s (instance_id, model, id)', part);
        EXECUTE format('ALTER TABLE bridgecore.event ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
                       part, top, top + size);
        top := top + size;
    END LOOP;
    RETURN top;
END
$$;

-- Retention drops whole partitions, oldest first, so that it costs a DROP
-- TABLE instead of a DELETE and its VACUUM: the log loses a prefix, as row
-- by row retention did, so every retained event above a device's position
-- is still delivered, and resync_required stays exact (purged, below).
--
-- Drops the oldest partition when every event in it is older than cutoff,
-- after recording its horizons. Never the partition holding the last id
-- handed out or the newest stored event, nor those ahead of it. Returns the
-- ids the dropped partition spanned, 0 when none was dropped.
--
-- Locks: SHARE on the partition first, which waits for its last writers
-- (none can come: new ids are above it) and no reader, so that it holds
-- still while it is read; then ACCESS EXCLUSIVE on bridgecore.event, which
-- DROP needs, for the few milliseconds of the drop. lock_timeout keeps a
-- long transaction on the log from queueing pulls behind the drop; the
-- launcher tries again at its next maintenance.
CREATE FUNCTION bridgecore._drop_partition(cutoff timestamptz)
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp SET lock_timeout = '200ms'
AS $$
DECLARE
    p record;
    last_id bigint;
    newest timestamptz;
    insts integer[];
    models text[];
    horizons bigint[];
BEGIN
    -- What is read below must include the partition's last writers.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'retention by partition needs a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Call bridgecore.cleanup() outside REPEATABLE READ and SERIALIZABLE transactions.';
    END IF;
    SELECT x.part, x.lo, x.hi INTO p FROM bridgecore._partitions() x ORDER BY x.lo LIMIT 1;
    SELECT s.last_value INTO last_id FROM bridgecore.event_id_seq s WHERE s.is_called;
    IF p.part IS NULL OR last_id IS NULL OR p.hi > last_id THEN
        RETURN 0;
    END IF;
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', p.part);
    IF NOT EXISTS (SELECT 1 FROM bridgecore.event e WHERE e.id >= p.hi) THEN
        RETURN 0;
    END IF;
    EXECUTE format('SELECT max(e.occurred_at) FROM %s e', p.part) INTO newest;
    IF newest >= cutoff THEN
        RETURN 0;
    END IF;
    -- The highest id of each (instance, model) in the partition: a loose
    -- scan of its (instance_id, model, id) index, a few probes per pair.
    EXECUTE format($q$
        WITH RECURSIVE k AS (
            (SELECT e.instance_id, e.model FROM %1$s e ORDER BY e.instance_id, e.model LIMIT 1)
            UNION ALL
            SELECT n.instance_id, n.model
              FROM k, LATERAL (SELECT e.instance_id, e.model FROM %1$s e
                                WHERE (e.instance_id, e.model) > (k.instance_id, k.model)
                                ORDER BY e.instance_id, e.model LIMIT 1) n
        )
        SELECT array_agg(k.instance_id), array_agg(k.model),
               array_agg((SELECT max(e.id) FROM %1$s e WHERE e.instance_id = k.instance_id AND e.model = k.model))
          FROM k$q$, p.part) INTO insts, models, horizons;

    -- Pulls read the horizons and the log in one snapshot: both change at commit.
    LOCK TABLE ONLY bridgecore.event IN ACCESS EXCLUSIVE MODE;
    INSERT INTO bridgecore.purged AS pu (instance_id, model, through)
    SELECT h.i, h.m, h.t FROM unnest(insts, models, horizons) h(i, m, t)
    ON CONFLICT (instance_id, model) DO UPDATE SET through = greatest(pu.through, EXCLUDED.through);
    UPDATE bridgecore.instance i SET purged_through = greatest(i.purged_through, h.t)
      FROM (SELECT u.i, max(u.t) AS t FROM unnest(insts, horizons) u(i, t) GROUP BY u.i) h
     WHERE i.id = h.i;
    EXECUTE format('DROP TABLE %s', p.part);
    RETURN p.hi - p.lo;
END
$$;

CREATE OR REPLACE FUNCTION bridgecore.cleanup(before timestamptz DEFAULT NULL, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    cutoff timestamptz := before;
    retention interval := current_setting('bridgecore.retention')::interval;
    batch integer := current_setting('bridgecore.cleanup_batch_size')::integer;
    n bigint;
    total bigint := 0;
    parts integer := 0;
    first_id bigint;
    busy boolean := false;
    oldest regclass;
    rows_in bigint;
    droppable boolean;
    deleted bigint := 0;
BEGIN
    IF cutoff IS NULL THEN
        IF retention <= interval '0' THEN
            RETURN jsonb_build_object('ok', true, 'deleted', 0, 'partitions_dropped', 0,
                'message', 'Retention is disabled (bridgecore.retention = 0); pass before to delete');
        END IF;
        cutoff := now() - retention;
    END IF;
    -- Omitted instance: every instance, unless a JWT confines the caller.
    IF cleanup.instance IS NOT NULL
       OR nullif(current_setting('request.jwt.claims', true), '')::jsonb ? 'instance' THEN
        inst_id := bridgecore._instance_id(cleanup.instance);
    END IF;

    IF inst_id IS NOT NULL THEN
        -- One instance: its events share partitions with the others', so
        -- they are deleted, in bounded batches; readers are never blocked by
        -- it. The instance loses a prefix of its log: an event newer than
        -- the cutoff keeps every later one, so a late row with an old
        -- timestamp waits until the events before it go.
        LOOP
            n := bridgecore._cleanup_step(cutoff, inst_id, batch);
            total := total + n;
            EXIT WHEN n = 0;
        END LOOP;
        RETURN jsonb_build_object(
            'ok', true, 'deleted', total, 'partitions_dropped', 0,
            'message', format('Deleted %s events older than %s (up to the first newer event of each instance)',
                              total, bridgecore._iso(cutoff)));
    END IF;

    -- Every instance: whole partitions go, oldest first, while every event
    -- in the next one is older than the cutoff. All of them in the
    -- caller's transaction, whose end releases the log to pulls.
    SELECT min(p.lo) INTO first_id FROM bridgecore._partitions() p;
    LOOP
        -- The events of the oldest partition, counted only when it may go
        -- (its newest event is older than the cutoff: one index probe), so
        -- that deleted is exact, as apps read it; the launcher's retention
        -- does not count.
        SELECT p.part INTO oldest FROM bridgecore._partitions() p ORDER BY p.lo LIMIT 1;
        rows_in := 0;
        IF oldest IS NOT NULL THEN
            -- Two statements: a count beside the max would make the max a
            -- full read too, and count a partition that stays.
            EXECUTE format('SELECT max(occurred_at) < $1 FROM %s', oldest) INTO droppable USING cutoff;
            IF droppable THEN
                EXECUTE format('SELECT count(*) FROM %s', oldest) INTO rows_in;
            END IF;
        END IF;
        BEGIN
            n := bridgecore._drop_partition(cutoff);
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            busy := true;
            n := 0;
        END;
        EXIT WHEN n = 0;
        parts := parts + 1;
        total := total + n;
        deleted := deleted + coalesce(rows_in, 0);
    END LOOP;

    RETURN jsonb_build_object(
        'ok', true, 'deleted', deleted, 'partitions_dropped', parts,
        'dropped_ids', CASE WHEN parts > 0 THEN jsonb_build_object('from', first_id, 'to', first_id + total - 1) END,
        'message', format('Dropped %s partitions (%s event ids) whose every event is older than %s. Retention '
                          'removes whole partitions of bridgecore.partition_size ids: an older event that '
                          'shares a partition with a newer one, or with the newest, stays until its '
                          'partition goes%s',
                          parts, total, bridgecore._iso(cutoff),
                          CASE WHEN busy THEN '; stopped at a partition in use (lock_timeout), call again' ELSE '' END));
END
$$;
COMMENT ON FUNCTION bridgecore.cleanup(timestamptz, text) IS 'Drops the partitions of events older than before (default: now - bridgecore.retention), whole partitions only; with an instance, deletes that instance''s older events.';

-- One maintenance step for the launcher, in its own short transaction:
-- partitions made ahead, then one partition dropped by retention, or (when
-- none is due) the idle-device sweep. Returns the event ids the dropped
-- partition spanned; the launcher repeats while one went. A partition in
-- use (lock_timeout) is tried again at the next maintenance.
CREATE OR REPLACE FUNCTION bridgecore._maintenance_step()
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    retention interval := current_setting('bridgecore.retention')::interval;
    n bigint := 0;
BEGIN
    PERFORM bridgecore._ensure_partitions();
    IF retention > interval '0' THEN
        BEGIN
            n := (bridgecore._drop_oldest_partition(now() - retention, bridgecore._retention_devices_until())).ids;
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            n := 0;
        END;
    END IF;
    IF n = 0 THEN
        PERFORM bridgecore.deactivate_idle_devices();
    END IF;
    RETURN n;
END
$$;

REVOKE ALL ON FUNCTION bridgecore._partitions(), bridgecore._ensure_partitions(bigint),
                       bridgecore._drop_partition(timestamptz) FROM PUBLIC;

-------------------------------------------------------------------------------
-- App logins and their tokens: HS256 JWTs signed with the superuser-only
-- setting bridgecore.jwt_secret, the secret PostgREST and the gateway share,
-- so a token of bridgecore.login() works with both. Claims: role, user_id
-- (the Odoo user id), instance (its name), iat, exp, auth_time (the login,
-- kept by refreshes).
-------------------------------------------------------------------------------
-- The role of requests without a token: it may only log in.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_anon') THEN
        CREATE ROLE bridgecore_anon NOLOGIN;
    END IF;
END
$roles$;

CREATE FUNCTION bridgecore._jwt_sign(claims jsonb)
RETURNS text LANGUAGE c STABLE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_jwt_sign';

-- The claims of a token this server's secret signed and that has not
-- expired; anything else raises "invalid token" (28000, PT401 through
-- PostgREST).
CREATE FUNCTION bridgecore._jwt_verify(token text)
RETURNS jsonb LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bridgecore_jwt_verify';

-- Odoo's common.authenticate for an app user: the Odoo user id, or 28P01
-- (PT401) for refused credentials, PT429 while Odoo refuses logins after
-- too many failures, 08006 when Odoo cannot be reached, 38000 for an Odoo
-- error.
CREATE FUNCTION bridgecore._odoo_authenticate(instance_id integer, login text, password text)
RETURNS bigint LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_odoo_authenticate';

-- A setting with a unit in seconds, as a number of seconds.
CREATE FUNCTION bridgecore._setting_seconds(name text)
RETURNS integer LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT extract(epoch FROM current_setting(name)::interval)::integer $$;

-- Signs claims with fresh iat and exp and returns the answer of login and
-- refresh_token.
CREATE FUNCTION bridgecore._issue_token(claims jsonb, lifetime integer)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    now_s bigint := floor(extract(epoch FROM clock_timestamp()))::bigint;
    full_claims jsonb := claims || jsonb_build_object('iat', now_s, 'exp', now_s + lifetime);
BEGIN
    RETURN jsonb_build_object(
        'access_token', bridgecore._jwt_sign(full_claims),
        'token_type', 'bearer',
        'expires_in', lifetime,
        'user_id', full_claims -> 'user_id',
        'instance', full_claims -> 'instance');
END
$$;

-- A failed login must not write the statement, which holds the password,
-- to the server log (as add_instance does for the secret).
CREATE FUNCTION bridgecore.login(username text, password text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    inst_id integer;
    uid bigint;
BEGIN
    IF login.username IS NULL THEN
        RAISE EXCEPTION 'username must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the user''s Odoo login.';
    ELSIF login.username = '' OR length(login.username) > 255 THEN
        RAISE EXCEPTION 'username must be 1 to 255 characters, got %', length(login.username)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the user''s Odoo login.';
    ELSIF login.password IS NULL THEN
        RAISE EXCEPTION 'password must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the user''s Odoo password or API key.';
    ELSIF login.password = '' OR length(login.password) > 4096 THEN
        RAISE EXCEPTION 'password must be 1 to 4096 characters' USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the user''s Odoo password or API key.';
    END IF;
    inst_id := bridgecore._instance_id(login.instance);
    PERFORM bridgecore._jwt_sign('{}');     -- fails before Odoo is asked when no secret is set
    PERFORM bridgecore._rate_limit('login', inst_id, 0, lower(login.username));
    uid := bridgecore._odoo_authenticate(inst_id, login.username, login.password);
    -- Every Odoo user gets an app token; admin tokens come from issue_token().
    RETURN bridgecore._issue_token(
        jsonb_build_object('role', 'bridgecore_app', 'user_id', uid,
                           'instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id),
                           'auth_time', floor(extract(epoch FROM clock_timestamp()))::bigint),
        bridgecore._setting_seconds('bridgecore.jwt_lifetime'));
END
$$;
COMMENT ON FUNCTION bridgecore.login(text, text, text)
    IS 'Checks an app user''s credentials against Odoo and returns a token.';

CREATE FUNCTION bridgecore.refresh_token(token text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t text := refresh_token.token;
    claims jsonb;
    auth numeric;
    refresh_limit integer := bridgecore._setting_seconds('bridgecore.jwt_refresh_limit');
BEGIN
    -- The request's own bearer token when none is given (PostgREST puts the
    -- headers in request.headers). A token is verified here, not taken from
    -- request.jwt.claims, which any direct client can set.
    IF t IS NULL THEN
        t := substring(nullif(current_setting('request.headers', true), '')::jsonb ->> 'authorization'
                       FROM '^[Bb][Ee][Aa][Rr][Ee][Rr] +([^ ]+) *$');
    END IF;
    claims := bridgecore._jwt_verify(t);
    IF jsonb_typeof(claims -> 'auth_time') = 'number' THEN
        auth := (claims ->> 'auth_time')::numeric;
    END IF;
    IF auth IS NULL OR extract(epoch FROM clock_timestamp()) - auth >= refresh_limit THEN
        RAISE EXCEPTION 'token can no longer be refreshed'
            USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                                 THEN 'invalid_authorization_specification' ELSE 'PT401' END,
                  DETAIL = CASE WHEN auth IS NULL THEN 'The token has no auth_time claim.'
                                ELSE format('Tokens can be refreshed for %s after the login (bridgecore.jwt_refresh_limit).',
                                            current_setting('bridgecore.jwt_refresh_limit')) END,
                  HINT = 'Log in again with bridgecore.login().';
    END IF;
    RETURN bridgecore._issue_token(claims - 'iat' - 'exp', bridgecore._setting_seconds('bridgecore.jwt_lifetime'));
END
$$;
COMMENT ON FUNCTION bridgecore.refresh_token(text)
    IS 'A new token with the claims of a valid one, without the password.';

CREATE FUNCTION bridgecore.verify_token(token text)
RETURNS jsonb LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT bridgecore._jwt_verify(token) $$;
COMMENT ON FUNCTION bridgecore.verify_token(text)
    IS 'The claims of a valid token signed with bridgecore.jwt_secret.';

CREATE FUNCTION bridgecore.issue_token(
    role text,
    user_id bigint DEFAULT NULL,
    instance text DEFAULT NULL,
    lifetime interval DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inst_name text;
    secs numeric := coalesce(extract(epoch FROM issue_token.lifetime),
                             bridgecore._setting_seconds('bridgecore.jwt_lifetime'));
BEGIN
    IF issue_token.role IS NULL THEN
        RAISE EXCEPTION 'role must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass bridgecore_app or bridgecore_admin.';
    ELSIF issue_token.role NOT IN ('bridgecore_app', 'bridgecore_admin') THEN
        RAISE EXCEPTION 'role must be bridgecore_app or bridgecore_admin, got "%"', left(issue_token.role, 64)
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass bridgecore_app or bridgecore_admin.';
    ELSIF issue_token.user_id <= 0 THEN
        RAISE EXCEPTION 'user_id must be positive, got %', issue_token.user_id
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the Odoo user id, or omit it.';
    ELSIF secs < 1 OR secs > 366 * 86400 THEN
        RAISE EXCEPTION 'lifetime must be between 1 second and 366 days, got %', issue_token.lifetime
            USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass an interval such as ''1 hour'', or omit it.';
    END IF;
    -- A caller confined to an instance issues tokens for it only.
    IF issue_token.instance IS NOT NULL
       OR nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'instance' IS NOT NULL THEN
        SELECT i.name INTO inst_name FROM bridgecore.instance i
         WHERE i.id = bridgecore._instance_id(issue_token.instance);
    END IF;
    RETURN bridgecore._issue_token(
        jsonb_strip_nulls(jsonb_build_object('role', issue_token.role, 'user_id', issue_token.user_id,
                                             'instance', inst_name,
                                             'auth_time', floor(extract(epoch FROM clock_timestamp()))::bigint)),
        floor(secs)::integer);
END
$$;
COMMENT ON FUNCTION bridgecore.issue_token(text, bigint, text, interval)
    IS 'A token for a role, user and instance chosen by an administrator.';

REVOKE ALL ON FUNCTION bridgecore._jwt_sign(jsonb), bridgecore._jwt_verify(text),
                       bridgecore._odoo_authenticate(integer, text, text),
                       bridgecore._setting_seconds(text), bridgecore._issue_token(jsonb, integer),
                       bridgecore.login(text, text, text), bridgecore.refresh_token(text),
                       bridgecore.verify_token(text),
                       bridgecore.issue_token(text, bigint, text, interval) FROM PUBLIC;
GRANT USAGE ON SCHEMA bridgecore TO bridgecore_anon;
GRANT EXECUTE ON FUNCTION bridgecore.login(text, text, text), bridgecore.verify_token(text)
    TO bridgecore_anon, bridgecore_app;
GRANT EXECUTE ON FUNCTION bridgecore.refresh_token(text) TO bridgecore_app;
GRANT EXECUTE ON FUNCTION bridgecore.issue_token(text, bigint, text, interval) TO bridgecore_admin;

-------------------------------------------------------------------------------
-- remove_instance deletes the instance's events itself (no foreign key)
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bridgecore.remove_instance(name text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    n_events bigint;
    n_states bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the instance to remove.';
    END IF;
    inst_id := bridgecore._instance_id(remove_instance.name);
    -- The row's lock first: the store paths write events only under it, so
    -- none arrive between the delete of the events and that of the row.
    PERFORM FROM bridgecore.instance i WHERE i.id = inst_id FOR UPDATE;
    DELETE FROM bridgecore.event e WHERE e.instance_id = inst_id;
    GET DIAGNOSTICS n_events = ROW_COUNT;
    SELECT count(*) INTO n_states FROM bridgecore.sync_state s WHERE s.instance_id = inst_id;
    DELETE FROM bridgecore.instance i WHERE i.id = inst_id;
    PERFORM bridgecore._wake_poller();
    RETURN jsonb_build_object('ok', true, 'instance', name,
                              'events_deleted', n_events, 'sync_states_deleted', n_states);
END
$$;

-------------------------------------------------------------------------------
-- The gateway's GraphQL and WebSocket edge: verify_token refuses tokens for
-- roles a request may not have (the gateway verifies every token with it),
-- and sync_scope tells a push channel which instance and models an app type
-- of the caller's follows.
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bridgecore.verify_token(token text)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    claims jsonb := bridgecore._jwt_verify(verify_token.token);
BEGIN
    IF jsonb_typeof(claims -> 'role') IS DISTINCT FROM 'string'
       OR claims ->> 'role' NOT IN ('bridgecore_app', 'bridgecore_admin') THEN
        RAISE EXCEPTION 'invalid token'
            USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                                 THEN 'invalid_authorization_specification' ELSE 'PT401' END,
                  DETAIL = 'The token''s role is not bridgecore_app or bridgecore_admin.',
                  HINT = 'Log in again with bridgecore.login().';
    END IF;
    RETURN claims;
END
$$;
COMMENT ON FUNCTION bridgecore.verify_token(text)
    IS 'The claims of a valid token signed with bridgecore.jwt_secret for bridgecore_app or bridgecore_admin.';

CREATE FUNCTION bridgecore.sync_scope(app_type text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    wanted text[];
BEGIN
    IF sync_scope.app_type IS NULL THEN
        RAISE EXCEPTION 'app_type must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Known app types: ' || (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM bridgecore.app_type a) || '.';
    END IF;
    SELECT a.models INTO wanted FROM bridgecore.app_type a WHERE a.name = sync_scope.app_type;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown app_type "%"', left(sync_scope.app_type, 64)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Known app types: ' || (SELECT string_agg(a.name, ', ' ORDER BY a.name) FROM bridgecore.app_type a) || '.';
    END IF;
    inst_id := bridgecore._instance_id(sync_scope.instance);
    RETURN jsonb_build_object('instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id),
                              'app_type', sync_scope.app_type, 'models', to_jsonb(wanted));
END
$$;
COMMENT ON FUNCTION bridgecore.sync_scope(text, text)
    IS 'The instance and models whose notifications concern an app type''s devices.';
REVOKE ALL ON FUNCTION bridgecore.sync_scope(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridgecore.sync_scope(text, text) TO bridgecore_app;

-------------------------------------------------------------------------------
-- The doorbell: push keys (alter_instance(push_key => ...)), wake(), ring()
-------------------------------------------------------------------------------
ALTER TABLE bridgecore.instance
    ADD COLUMN push_key_hash bytea UNIQUE CHECK (octet_length(push_key_hash) = 32);
CREATE OR REPLACE VIEW bridgecore.instances WITH (security_barrier) AS
SELECT i.name, i.url, i.database, i.login, i.source_model, i.poll_interval,
       i.batch_size, i.enabled, i.verify_tls,
       CASE WHEN i.enabled THEN i.state ELSE 'disabled' END AS state,
       i.cursor, greatest(i.last_success_at, bridgecore._last_success(i.id)) AS last_success_at,
       i.last_error, i.last_error_at,
       i.consecutive_failures, i.next_attempt_at, i.events_ingested,
       now() - i.newest_event_at AS lag,
       i.purged_through, i.created_at, i.push_key_hash IS NOT NULL AS has_push_key
  FROM bridgecore.instance i;

DROP FUNCTION bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text);
CREATE FUNCTION bridgecore.alter_instance(
    name text,
    url text DEFAULT NULL, database text DEFAULT NULL, login text DEFAULT NULL,
    secret text DEFAULT NULL, source_model text DEFAULT NULL,
    poll_interval interval DEFAULT NULL, batch_size integer DEFAULT NULL,
    enabled boolean DEFAULT NULL, verify_tls boolean DEFAULT NULL,
    new_name text DEFAULT NULL, push_key text DEFAULT NULL)
RETURNS SETOF bridgecore.instances LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    reconnect boolean;
    key_hash bytea;
    poller_settings boolean;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the instance to change.';
    END IF;
    inst_id := bridgecore._instance_id(alter_instance.name);
    PERFORM bridgecore._check_instance_settings(new_name, url, database, login, secret,
                                                source_model, poll_interval, batch_size);
    -- The doorbell's key (POST /api/v1/webhooks/receive, X-API-Key): NULL
    -- keeps it, '' removes it, anything else replaces it. Only its SHA-256
    -- is kept, so it must be long and random: nothing slows down guessing
    -- from a stolen hash.
    IF alter_instance.push_key IS NOT NULL AND alter_instance.push_key <> '' THEN
        IF length(alter_instance.push_key) NOT BETWEEN 32 AND 256
           OR alter_instance.push_key !~ '^[\x21-\x7e]+$' THEN
            RAISE EXCEPTION 'push_key must be 32 to 256 printable ASCII characters without spaces, got % characters',
                            length(alter_instance.push_key)
                USING ERRCODE = 'invalid_parameter_value',
                      HINT = 'Use a long random key, such as the output of: openssl rand -hex 32. Pass '''' to remove the key.';
        END IF;
        key_hash := pg_catalog.sha256(pg_catalog.convert_to(alter_instance.push_key, 'UTF8'));
        IF EXISTS (SELECT 1 FROM bridgecore.instance i WHERE i.push_key_hash = key_hash AND i.id <> inst_id) THEN
            RAISE EXCEPTION 'this push_key is already used by another instance'
                USING ERRCODE = 'unique_violation',
                      HINT = 'Every instance needs its own key: the key names the instance.';
        END IF;
    END IF;
    IF new_name IS NOT NULL AND new_name <> name
       AND EXISTS (SELECT 1 FROM bridgecore.instance i WHERE i.name = new_name) THEN
        RAISE EXCEPTION 'instance "%" already exists', new_name USING ERRCODE = 'unique_violation',
            HINT = 'Choose another new_name.';
    END IF;
    -- The stored secret goes only where it was configured to go: sending it
    -- to another URL, or without checking the server's certificate, takes
    -- the secret again (or a superuser), so an admin cannot capture it by
    -- pointing the instance at a server of their own.
    IF alter_instance.secret IS NULL
       AND NOT coalesce((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user), false)
       AND EXISTS (SELECT 1 FROM bridgecore.instance i
                    WHERE i.id = inst_id
                      AND ((alter_instance.url IS NOT NULL AND rtrim(alter_instance.url, '/') <> i.url)
                           OR (alter_instance.verify_tls IS FALSE AND i.verify_tls))) THEN
        RAISE EXCEPTION 'changing where the secret of instance "%" is sent requires the secret', name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'A new url, or verify_tls => false, would send the stored secret to another server.',
                  HINT = 'Pass secret => the Odoo API key together with url or verify_tls, or ask a superuser.';
    END IF;
    -- New connection settings deserve an immediate new attempt.
    reconnect := coalesce(url, database, login, secret) IS NOT NULL OR enabled IS NOT NULL;
    -- The poller restarts for its own settings only, not for a new push key.
    poller_settings := push_key IS NULL
        OR coalesce(url, database, login, secret, source_model, new_name) IS NOT NULL
        OR coalesce(poll_interval::text, batch_size::text, enabled::text, verify_tls::text) IS NOT NULL;
    UPDATE bridgecore.instance i
       SET name = coalesce(alter_instance.new_name, i.name),
           url = coalesce(rtrim(alter_instance.url, '/'), i.url),
           database = coalesce(alter_instance.database, i.database),
           login = coalesce(alter_instance.login, i.login),
           secret = coalesce(alter_instance.secret, i.secret),
           source_model = coalesce(alter_instance.source_model, i.source_model),
           poll_interval = coalesce(alter_instance.poll_interval, i.poll_interval),
           batch_size = coalesce(alter_instance.batch_size, i.batch_size),
           enabled = coalesce(alter_instance.enabled, i.enabled),
           verify_tls = coalesce(alter_instance.verify_tls, i.verify_tls),
           state = CASE WHEN reconnect THEN 'ok' ELSE i.state END,
           consecutive_failures = CASE WHEN reconnect THEN 0 ELSE i.consecutive_failures END,
           next_attempt_at = CASE WHEN reconnect THEN NULL ELSE i.next_attempt_at END,
           config_version = i.config_version + CASE WHEN poller_settings THEN 1 ELSE 0 END,
           push_key_hash = CASE WHEN alter_instance.push_key IS NULL THEN i.push_key_hash
                                WHEN alter_instance.push_key = '' THEN NULL
                                ELSE key_hash END
     WHERE i.id = inst_id;
    PERFORM bridgecore._wake_poller();
    RETURN QUERY SELECT * FROM bridgecore.instances v WHERE v.name = coalesce(alter_instance.new_name, alter_instance.name);
END
$$;
COMMENT ON FUNCTION bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text, text)
    IS 'Changes an Odoo instance; omitted (null) arguments keep their value; push_key => '''' removes the doorbell key.';
GRANT EXECUTE ON FUNCTION
    bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text, text)
    TO bridgecore_admin;
REVOKE ALL ON FUNCTION
    bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text, text)
    FROM PUBLIC;

-------------------------------------------------------------------------------
-- The doorbell: Odoo (the auto_webhook addon's subscriber) rings after it
-- commits a row, and the instance's poller fetches at once instead of at its
-- next poll. A ring stores nothing: the poll stays the one durable path, so
-- a lost or refused ring costs at most one poll interval, never an event.
-- Rings during one fetch cause at most one more fetch (src/doorbell.c).
-------------------------------------------------------------------------------
-- Rings the running poller of an instance: 'woken', 'coalesced' (a ring
-- was pending already) or 'no_poller' (none runs: disabled, or starting).
CREATE FUNCTION bridgecore._ring(instance_id integer)
RETURNS text LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_ring_instance';

-- Per running poller of this database: rings since it started, those that
-- found a ring pending, and the fetches rings started.
CREATE FUNCTION bridgecore._doorbell_stats(OUT instance_id integer, OUT rings bigint,
                                           OUT coalesced bigint, OUT fetches bigint)
RETURNS SETOF record LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_doorbell_stats';

CREATE FUNCTION bridgecore.wake(instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- A caller confined to an instance by its token wakes that one only.
    inst_id integer := bridgecore._instance_id(wake.instance);
BEGIN
    RETURN jsonb_build_object('instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id),
                              'outcome', bridgecore._ring(inst_id));
END
$$;
COMMENT ON FUNCTION bridgecore.wake(text)
    IS 'Wakes the instance''s poller at once (rings in a burst coalesce into one fetch).';

-- The doorbell for a caller that holds only a push key (the gateway's
-- X-API-Key, PostgREST's /rpc/ring): the key names the instance. Keys are
-- looked up by their SHA-256, so the comparison's timing depends on the
-- digest of the guess, which tells nothing about a key. Refused keys count
-- against bridgecore.rate_limit_push_key per client (and all clients
-- together): once a client's budget is spent, its keys are not even
-- checked until the window ends. A failed call must not write the
-- statement, which holds the key, to the server log.
CREATE FUNCTION bridgecore.ring(push_key text DEFAULT NULL, client text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET log_min_error_statement = panic
AS $$
DECLARE
    k text := ring.push_key;
    who text := coalesce(nullif(left(ring.client, 64), ''), '*');
    inst_id integer;
    inst_name text;
BEGIN
    -- PostgREST puts the request's headers in request.headers.
    IF k IS NULL THEN
        k := nullif(current_setting('request.headers', true), '')::jsonb ->> 'x-api-key';
    END IF;
    IF k IS NULL OR k = '' THEN
        RAISE EXCEPTION 'a push key is required'
            USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                                 THEN 'invalid_authorization_specification' ELSE 'PT401' END,
                  HINT = 'Send the instance''s push key (bridgecore.alter_instance(name, push_key => ...)) as X-API-Key.';
    END IF;
    PERFORM bridgecore._rate_limit('push_key_check', 0, 0, who);
    IF length(k) <= 256 THEN
        SELECT i.id, i.name INTO inst_id, inst_name FROM bridgecore.instance i
         WHERE i.push_key_hash = sha256(convert_to(k, 'UTF8'));
    END IF;
    IF inst_id IS NULL THEN
        PERFORM bridgecore._rate_limit('push_key', 0, 0, who);
        RAISE EXCEPTION 'invalid push key'
            USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                                 THEN 'invalid_authorization_specification' ELSE 'PT401' END,
                  HINT = 'Send the instance''s push key (bridgecore.alter_instance(name, push_key => ...)) as X-API-Key.';
    END IF;
    RETURN jsonb_build_object('instance', inst_name, 'outcome', bridgecore._ring(inst_id));
END
$$;
COMMENT ON FUNCTION bridgecore.ring(text, text)
    IS 'Wakes the poller of the instance whose push key is given (the doorbell of Odoo''s pushes).';

-- Admins ring any instance (a token naming one confines them to it); a
-- caller without a token rings with a key; apps ring nothing. Monitoring
-- reads the doorbell's counters.
REVOKE ALL ON FUNCTION bridgecore._ring(integer), bridgecore._doorbell_stats(),
                       bridgecore.wake(text), bridgecore.ring(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridgecore.wake(text) TO bridgecore_admin;
GRANT EXECUTE ON FUNCTION bridgecore.ring(text, text) TO bridgecore_anon, bridgecore_admin;
GRANT EXECUTE ON FUNCTION bridgecore._doorbell_stats() TO bridgecore_monitor;

-------------------------------------------------------------------------------
-- sync_pull in C: the page read by index scans of the partitions, no planner
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bridgecore.sync_pull(
    user_id bigint,
    device_id text,
    app_type text,
    "limit" integer DEFAULT 100,
    models_filter text[] DEFAULT NULL,
    instance text DEFAULT NULL,
    sync_token text DEFAULT NULL,
    device_info jsonb DEFAULT NULL,
    app_version text DEFAULT NULL)
RETURNS json LANGUAGE c VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- In C (src/sync_pull.c): the page is read by index scans of the log's
-- partitions, without the planner, so that a pull costs what its page holds
-- whatever the size of the log and however rare the device's models are.
-- It makes the checks of _check_device and _check_limit itself, with the
-- same messages, and calls _check_model_names, _instance_id, _rate_limit and
-- _count_sync_pull.
AS 'MODULE_PATHNAME', 'bridgecore_sync_pull';

-------------------------------------------------------------------------------
-- Retention reads what a partition holds from a summary kept at ingest
-- (bridgecore.partition_summary) instead of the partition's rows: the drop
-- costs what a bare DROP TABLE does.
-------------------------------------------------------------------------------
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
SELECT pg_catalog.pg_extension_config_dump('bridgecore.partition_summary', '');
GRANT SELECT ON bridgecore.partition_summary TO bridgecore_admin;

-- The partitions of the log, oldest first, as operators inspect them: the
-- ids each covers, the events it holds (from bridgecore.partition_summary,
-- not counted), its newest event by the Odoo timestamp (one index probe;
-- retention drops the partition once that is past the cutoff) and its size
-- on disk with its indexes.
CREATE FUNCTION bridgecore.partitions(OUT part regclass, OUT first_id bigint, OUT last_id bigint,
                                      OUT events bigint, OUT newest_event_at timestamptz,
                                      OUT total_bytes bigint)
RETURNS SETOF record LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    p record;
BEGIN
    FOR p IN SELECT x.part, x.lo, x.hi FROM bridgecore._partitions() x ORDER BY x.lo LOOP
        part := p.part;
        first_id := p.lo;
        last_id := p.hi - 1;
        SELECT coalesce(sum(CASE WHEN s.deleted THEN -s.events ELSE s.events END), 0) INTO events
          FROM bridgecore.partition_summary s WHERE s.part = p.part;
        EXECUTE format('SELECT max(e.occurred_at) FROM %s e', p.part) INTO newest_event_at;
        total_bytes := pg_total_relation_size(p.part);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION bridgecore.partitions() IS 'The partitions of bridgecore.event, oldest first: ids covered, events held, newest event, size on disk.';

-------------------------------------------------------------------------------
-- Retention and device housekeeping (run by the launcher, or by hand)
-------------------------------------------------------------------------------
-- Retention drops whole partitions, oldest first, so that it costs a DROP
-- TABLE instead of a DELETE and its VACUUM: the log loses a prefix, as row
-- by row retention did, so every retained event above a device's position
-- is still delivered, and resync_required stays exact (purged, below).
--
-- Drops the oldest partition when every event in it is older than cutoff,
-- after recording its horizons. Never the partition holding the last id
-- handed out or the newest stored event, nor those ahead of it. Returns the
-- first id the dropped partition spanned (lo), how many ids (ids, 0 when
-- none was dropped) and how many events it held (events).
--
-- With devices_until (bridgecore.retention_max), a partition due by cutoff
-- whose newest event is not older than devices_until waits for the active
-- devices that have not passed it: those of an instance it holds events of
-- whose position is below that instance's last event in it. It is kept, and
-- devices_behind says how many there are (a read of the active devices'
-- states of those instances).
--
-- Whether it is due, what it holds, and so the horizons, come from
-- bridgecore.partition_summary, a few rows, not from the partition: the
-- drop reads no block of it and frees its files at commit, which is what a
-- bare DROP TABLE costs.
--
-- Locks: SHARE on the partition first, which waits for its last writers
-- (none can come: new ids are above it), whose summary rows are then
-- committed, and for no reader, so that it holds still while it is judged;
-- then ACCESS EXCLUSIVE on bridgecore.event, which DROP needs, until the
-- commit. lock_timeout keeps a long transaction on the log from queueing
-- pulls behind the drop; the launcher tries again at its next maintenance.
CREATE FUNCTION bridgecore._drop_oldest_partition(cutoff timestamptz, devices_until timestamptz DEFAULT NULL,
                                                  OUT lo bigint, OUT ids bigint, OUT events bigint,
                                                  OUT devices_behind bigint)
RETURNS record LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp SET lock_timeout = '200ms'
AS $$
DECLARE
    p record;
    last_id bigint;
    newest timestamptz;
BEGIN
    ids := 0;
    events := 0;
    devices_behind := 0;
    -- What is read below must include the partition's last writers.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'retention by partition needs a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Call bridgecore.cleanup() outside REPEATABLE READ and SERIALIZABLE transactions.';
    END IF;
    SELECT x.part, x.lo, x.hi INTO p FROM bridgecore._partitions() x ORDER BY x.lo LIMIT 1;
    SELECT s.last_value INTO last_id FROM bridgecore.event_id_seq s WHERE s.is_called;
    IF p.part IS NULL OR last_id IS NULL OR p.hi > last_id THEN
        RETURN;
    END IF;
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', p.part);
    IF NOT EXISTS (SELECT 1 FROM bridgecore.event e WHERE e.id >= p.hi) THEN
        RETURN;
    END IF;
    -- Its newest event, from the summary: nothing of the partition is read,
    -- so that a partition no cache holds any more costs no disk read. A
    -- partition without summary rows (empty, or filled by other means than
    -- ingestion) is counted from its rows first, under the lock above that
    -- keeps writers out: its drop then records the horizons of its models
    -- and counts its events like any other's.
    SELECT max(s.newest_at) INTO newest FROM bridgecore.partition_summary s
     WHERE s.part = p.part AND NOT s.deleted;
    IF newest IS NULL THEN
        EXECUTE format('INSERT INTO bridgecore.partition_summary'
                       ' (part, instance_id, model, deleted, events, max_id, newest_at)'
                       ' SELECT $1, e.instance_id, e.model, false, count(*), max(e.id), max(e.occurred_at)'
                       '   FROM %s e GROUP BY e.instance_id, e.model', p.part) USING p.part;
        SELECT max(s.newest_at) INTO newest FROM bridgecore.partition_summary s
         WHERE s.part = p.part AND NOT s.deleted;
    END IF;
    IF newest >= cutoff THEN
        RETURN;
    END IF;
    IF newest >= devices_until THEN
        SELECT count(*) INTO devices_behind
          FROM (SELECT s.instance_id, max(s.max_id) AS last_id FROM bridgecore.partition_summary s
                 WHERE s.part = p.part AND NOT s.deleted GROUP BY s.instance_id) held
          JOIN bridgecore.sync_state st ON st.instance_id = held.instance_id
         WHERE st.is_active AND st.last_event_id < held.last_id;
        IF devices_behind > 0 THEN
            RETURN;
        END IF;
    END IF;

    -- Pulls read the horizons and the log in one snapshot: both change at commit.
    LOCK TABLE ONLY bridgecore.event IN ACCESS EXCLUSIVE MODE;
    WITH gone AS (
        DELETE FROM bridgecore.partition_summary s WHERE s.part = p.part
        RETURNING s.instance_id, s.model, s.deleted, s.events, s.max_id
    ), horizon AS (
        INSERT INTO bridgecore.purged AS pu (instance_id, model, through)
        SELECT g.instance_id, g.model, max(g.max_id) FROM gone g GROUP BY g.instance_id, g.model
        ON CONFLICT (instance_id, model) DO UPDATE SET through = greatest(pu.through, EXCLUDED.through)
        RETURNING 1
    ), marked AS (
        UPDATE bridgecore.instance i SET purged_through = greatest(i.purged_through, h.t)
          FROM (SELECT g.instance_id, max(g.max_id) AS t FROM gone g GROUP BY g.instance_id) h
         WHERE i.id = h.instance_id
        RETURNING 1
    )
    SELECT coalesce(sum(CASE WHEN g.deleted THEN -g.events ELSE g.events END), 0) INTO events FROM gone g
     WHERE (SELECT count(*) FROM horizon) >= 0 AND (SELECT count(*) FROM marked) >= 0;
    EXECUTE format('DROP TABLE %s', p.part);
    lo := p.lo;
    ids := p.hi - p.lo;
END
$$;

-- Makes bridgecore.partition_summary again from the rows of the log, a read
-- of every partition, under the ordering lock (no batch is stored while it
-- counts). The update from 0.3.0 calls it for the table that becomes the
-- first partition; an operator calls it after writing events into the log
-- by other means than ingestion. Returns the rows it made.
CREATE FUNCTION bridgecore._summarize_partitions()
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n bigint;
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'counting the partitions needs a READ COMMITTED transaction'
            USING ERRCODE = 'invalid_transaction_state',
                  HINT = 'Call bridgecore._summarize_partitions() outside REPEATABLE READ and SERIALIZABLE transactions.';
    END IF;
    PERFORM pg_advisory_xact_lock('bridgecore.event'::regclass::oid::integer, 0);
    -- Deletes too (a cleanup of one instance takes no ordering lock): one
    -- that committed between the DELETE and the count below would be
    -- counted twice.
    LOCK TABLE bridgecore.event IN SHARE MODE;
    DELETE FROM bridgecore.partition_summary;
    INSERT INTO bridgecore.partition_summary (part, instance_id, model, deleted, events, max_id, newest_at)
    SELECT e.tableoid, e.instance_id, e.model, false, count(*), max(e.id), max(e.occurred_at)
      FROM bridgecore.event e GROUP BY e.tableoid, e.instance_id, e.model;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

-- The same, returning the ids the dropped partition spanned, 0 when none
-- was dropped: the launcher's maintenance step.
CREATE OR REPLACE FUNCTION bridgecore._drop_partition(cutoff timestamptz)
RETURNS bigint LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT d.ids FROM bridgecore._drop_oldest_partition(cutoff) d $$;

-- Deletes, per instance (one, or all), at most batch events from the start
-- of its log that are older than cutoff, stopping at its first newer event,
-- and records the horizons. Returns the events deleted. cleanup() of one
-- instance deletes so (the other instances' events share its partitions);
-- a prefix of one instance's log and a prefix of the whole log together
-- are still a prefix of that instance's log.
CREATE OR REPLACE FUNCTION bridgecore._cleanup_step(cutoff timestamptz, inst_id integer, batch integer)
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    target integer;
    n bigint;
    total bigint := 0;
BEGIN
    FOR target IN SELECT x.id FROM bridgecore.instance x
                   WHERE inst_id IS NULL OR x.id = inst_id ORDER BY x.id LOOP
        WITH head AS (
            SELECT ev.id, ev.occurred_at < cutoff AS old FROM bridgecore.event ev
             WHERE ev.instance_id = target ORDER BY ev.id LIMIT batch
        ), victims AS (
            SELECT h.id FROM head h
             WHERE h.id < coalesce((SELECT min(k.id) FROM head k WHERE NOT k.old), 9223372036854775807)
        ), deleted AS (
            DELETE FROM bridgecore.event ev USING victims v
             WHERE ev.id = v.id
            RETURNING ev.id, ev.model, ev.tableoid, ev.occurred_at
        ), counted AS (
            INSERT INTO bridgecore.partition_summary AS s (part, instance_id, model, deleted, events, max_id, newest_at)
            SELECT d.tableoid, target, d.model, true, count(*), max(d.id), max(d.occurred_at) FROM deleted d
             GROUP BY d.tableoid, d.model
            ON CONFLICT (part, instance_id, model, deleted) DO UPDATE
               SET events = s.events + EXCLUDED.events, max_id = greatest(s.max_id, EXCLUDED.max_id),
                   newest_at = greatest(s.newest_at, EXCLUDED.newest_at)
            RETURNING 1
        ), horizon AS (
            INSERT INTO bridgecore.purged AS p (instance_id, model, through)
            SELECT target, d.model, max(d.id) FROM deleted d GROUP BY d.model
            ON CONFLICT (instance_id, model) DO UPDATE SET through = greatest(p.through, EXCLUDED.through)
            RETURNING 1
        ), marked AS (
            UPDATE bridgecore.instance i
               SET purged_through = greatest(i.purged_through, (SELECT max(d.id) FROM deleted d))
             WHERE i.id = target AND EXISTS (SELECT 1 FROM deleted)
            RETURNING 1
        )
        SELECT count(*) INTO n FROM deleted
         WHERE (SELECT count(*) FROM horizon) >= 0 AND (SELECT count(*) FROM marked) >= 0
           AND (SELECT count(*) FROM counted) >= 0;
        total := total + n;
    END LOOP;
    RETURN total;
END
$$;

CREATE OR REPLACE FUNCTION bridgecore.cleanup(before timestamptz DEFAULT NULL, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    cutoff timestamptz := before;
    retention interval := current_setting('bridgecore.retention')::interval;
    batch integer := current_setting('bridgecore.cleanup_batch_size')::integer;
    n bigint;
    total bigint := 0;
    parts integer := 0;
    first_id bigint;
    busy boolean := false;
    d record;
    deleted bigint := 0;
    devices_until timestamptz;
    behind bigint := 0;
BEGIN
    IF cutoff IS NULL THEN
        IF retention <= interval '0' THEN
            RETURN jsonb_build_object('ok', true, 'deleted', 0, 'partitions_dropped', 0,
                'message', 'Retention is disabled (bridgecore.retention = 0); pass before to delete');
        END IF;
        cutoff := now() - retention;
        -- The retention's own cutoff waits for devices (bridgecore.retention_max);
        -- a cutoff the caller gives does not.
        devices_until := bridgecore._retention_devices_until();
    END IF;
    -- Omitted instance: every instance, unless a JWT confines the caller.
    IF cleanup.instance IS NOT NULL
       OR nullif(current_setting('request.jwt.claims', true), '')::jsonb ? 'instance' THEN
        inst_id := bridgecore._instance_id(cleanup.instance);
    END IF;

    IF inst_id IS NOT NULL THEN
        -- One instance: its events share partitions with the others', so
        -- they are deleted, in bounded batches; readers are never blocked by
        -- it. The instance loses a prefix of its log: an event newer than
        -- the cutoff keeps every later one, so a late row with an old
        -- timestamp waits until the events before it go.
        LOOP
            n := bridgecore._cleanup_step(cutoff, inst_id, batch);
            total := total + n;
            EXIT WHEN n = 0;
        END LOOP;
        RETURN jsonb_build_object(
            'ok', true, 'deleted', total, 'partitions_dropped', 0,
            'message', format('Deleted %s events older than %s (up to the first newer event of each instance)',
                              total, bridgecore._iso(cutoff)));
    END IF;

    -- Every instance: whole partitions go, oldest first, while every event
    -- in the next one is older than the cutoff. All of them in the
    -- caller's transaction, whose end releases the log to pulls.
    -- deleted is exact, as apps read it: the count of each partition is
    -- kept in bridgecore.partition_summary, so nothing here reads the rows.
    LOOP
        BEGIN
            d := bridgecore._drop_oldest_partition(cutoff, devices_until);
        EXCEPTION WHEN lock_not_available OR deadlock_detected THEN
            busy := true;
            EXIT;
        END;
        behind := d.devices_behind;
        EXIT WHEN d.ids = 0;
        first_id := coalesce(first_id, d.lo);
        parts := parts + 1;
        total := total + d.ids;
        deleted := deleted + d.events;
    END LOOP;

    RETURN jsonb_build_object(
        'ok', true, 'deleted', deleted, 'partitions_dropped', parts,
        'dropped_ids', CASE WHEN parts > 0 THEN jsonb_build_object('from', first_id, 'to', first_id + total - 1) END,
        'message', format('Dropped %s partitions (%s event ids) whose every event is older than %s. Retention '
                          'removes whole partitions of bridgecore.partition_size ids: an older event that '
                          'shares a partition with a newer one, or with the newest, stays until its '
                          'partition goes%s%s',
                          parts, total, bridgecore._iso(cutoff),
                          CASE WHEN behind > 0
                               THEN format('; the next partition due waits for %s active devices that have not '
                                           'pulled past it, until its newest event is older than %s '
                                           '(bridgecore.retention_max)', behind, bridgecore._iso(devices_until))
                               ELSE '' END,
                          CASE WHEN busy THEN '; stopped at a partition in use (lock_timeout), call again' ELSE '' END));
END
$$;
COMMENT ON FUNCTION bridgecore.cleanup(timestamptz, text) IS 'Drops the partitions of events older than before (default: now - bridgecore.retention), whole partitions only; with an instance, deletes that instance''s older events.';

CREATE OR REPLACE FUNCTION bridgecore.remove_instance(name text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    n_events bigint;
    n_states bigint;
BEGIN
    IF name IS NULL THEN
        RAISE EXCEPTION 'name must not be null' USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the instance to remove.';
    END IF;
    inst_id := bridgecore._instance_id(remove_instance.name);
    -- The row's lock first: the store paths write events only under it, so
    -- none arrive between the delete of the events and that of the row.
    PERFORM FROM bridgecore.instance i WHERE i.id = inst_id FOR UPDATE;
    DELETE FROM bridgecore.event e WHERE e.instance_id = inst_id;
    GET DIAGNOSTICS n_events = ROW_COUNT;
    DELETE FROM bridgecore.partition_summary s WHERE s.instance_id = inst_id;
    SELECT count(*) INTO n_states FROM bridgecore.sync_state s WHERE s.instance_id = inst_id;
    DELETE FROM bridgecore.instance i WHERE i.id = inst_id;
    PERFORM bridgecore._wake_poller();
    RETURN jsonb_build_object('ok', true, 'instance', name,
                              'events_deleted', n_events, 'sync_states_deleted', n_states);
END
$$;
COMMENT ON FUNCTION bridgecore.remove_instance(text) IS 'Removes an Odoo instance with its events, sync states and dead letters.';

REVOKE ALL ON FUNCTION bridgecore.partitions(), bridgecore._drop_oldest_partition(timestamptz, timestamptz),
                       bridgecore._summarize_partitions() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridgecore.partitions() TO bridgecore_admin;
-- The events already in the log, counted once.
SELECT bridgecore._summarize_partitions();

-------------------------------------------------------------------------------
-- The device checks of every sync function in C, the one sync_pull calls
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bridgecore._check_device(user_id bigint, device_id text)
RETURNS void LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bridgecore_check_device';

-------------------------------------------------------------------------------
-- The limit check in C, the one sync_pull calls
-------------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION bridgecore._check_limit(value integer, name text, max_value integer)
RETURNS void LANGUAGE c IMMUTABLE
AS 'MODULE_PATHNAME', 'bridgecore_check_limit';

-- A batch without holes opens no gap: _advance_cursor skips its loop over the batch.
CREATE OR REPLACE FUNCTION bridgecore._advance_cursor(inst_id integer, seen bigint[], gap_window interval,
                                           inserted bigint, newest timestamptz,
                                           max_gaps integer DEFAULT 1000,
                                           OUT cursor bigint, OUT gaps bigint[])
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    old_cursor bigint;
    lowest bigint;
    budget integer;
    prev bigint;
    upto bigint;
    next_id bigint;
BEGIN
    SELECT i.cursor INTO old_cursor FROM bridgecore.instance i WHERE i.id = inst_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'instance % does not exist', inst_id USING ERRCODE = 'undefined_object';
    END IF;
    cursor := greatest(old_cursor, (SELECT max(x) FROM unnest(seen) x));
    -- Gaps given up on: a dead letter waiting for its re-fetch is pending again.
    WITH expired AS (
        DELETE FROM bridgecore.gap g WHERE g.instance_id = inst_id
           AND (g.odoo_id = ANY (seen) OR g.noticed_at < now() - gap_window)
        RETURNING g.odoo_id
    )
    UPDATE bridgecore.dead_letter d SET status = 'pending'
      FROM expired e
     WHERE d.instance_id = inst_id AND d.odoo_id = e.odoo_id AND d.status = 'retrying'
       AND e.odoo_id <> ALL (seen);
    -- New gaps: ids between the old cursor and the new one that Odoo did
    -- not return. On an instance's first batch also the ids just below its
    -- lowest one, which a long Odoo transaction may still commit. The work
    -- is bounded by the batch and max_gaps, never by the distance between
    -- ids: one hole at a time, in id order, each cut to what is left.
    IF cursor > old_cursor THEN
        lowest := CASE WHEN old_cursor = 0
                       THEN greatest(1, (SELECT min(x) FROM unnest(seen) x WHERE x > 0) - max_gaps)
                       ELSE old_cursor + 1 END;
        -- Every id from lowest to the new cursor seen (a batch without
        -- holes, the common case): no gap to open, no loop over the batch.
        IF (SELECT count(DISTINCT x) FROM unnest(seen) x WHERE x >= lowest) < cursor - lowest + 1 THEN
            budget := max_gaps - (SELECT count(*) FROM bridgecore.gap x WHERE x.instance_id = inst_id);
            prev := lowest - 1;
            FOR next_id IN SELECT DISTINCT x FROM unnest(seen) x WHERE x >= lowest ORDER BY x LOOP
                EXIT WHEN budget <= 0;
                IF next_id > prev + 1 THEN
                    upto := CASE WHEN next_id - prev - 1 <= budget THEN next_id - 1 ELSE prev + budget END;
                    INSERT INTO bridgecore.gap (instance_id, odoo_id)
                    SELECT inst_id, g FROM generate_series(prev + 1, upto) g
                    ON CONFLICT DO NOTHING;
                    budget := budget - (upto - prev)::integer;
                END IF;
                prev := next_id;
            END LOOP;
        END IF;
    END IF;
    gaps := ARRAY(SELECT g.odoo_id FROM bridgecore.gap g WHERE g.instance_id = inst_id ORDER BY g.odoo_id);

    UPDATE bridgecore.instance i
       SET cursor = _advance_cursor.cursor,
           state = 'ok', consecutive_failures = 0, next_attempt_at = NULL,
           last_success_at = now(),
           events_ingested = i.events_ingested + inserted,
           newest_event_at = greatest(i.newest_event_at, newest)
     WHERE i.id = inst_id;
END
$$;

-- Hot standbys: sync_pull answers there from the token alone; a standby's
-- token carries the device's resets, which sync_reset now counts.
ALTER TABLE bridgecore.sync_state ADD COLUMN resets bigint NOT NULL DEFAULT 0;

-- Functions that write refuse to run on a hot standby with a hint (the
-- server's own refusal, "cannot execute UPDATE in a read-only transaction",
-- names no way out).
CREATE FUNCTION bridgecore._primary_only(what text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF pg_is_in_recovery() THEN
        RAISE EXCEPTION '% cannot run on a standby', what
            USING ERRCODE = 'read_only_sql_transaction',
                  DETAIL = 'This server is a hot standby: it accepts no writes.',
                  HINT = 'Call it on the primary.';
    END IF;
END
$$;
REVOKE ALL ON FUNCTION bridgecore._primary_only(text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION bridgecore.sync_reset(user_id bigint, device_id text, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
BEGIN
    PERFORM bridgecore._check_device(sync_reset.user_id, sync_reset.device_id);
    PERFORM bridgecore._primary_only('bridgecore.sync_reset');
    inst_id := bridgecore._instance_id(sync_reset.instance);
    PERFORM bridgecore._rate_limit('sync_reset', inst_id, sync_reset.user_id, sync_reset.device_id);
    UPDATE bridgecore.sync_state s
       SET last_event_id = 0, sync_count = 0, last_event_count = 0, resets = s.resets + 1
     WHERE s.instance_id = inst_id AND s.user_id = sync_reset.user_id AND s.device_id = sync_reset.device_id;
    IF NOT FOUND THEN
        PERFORM bridgecore._raise_state_not_found(sync_reset.user_id, sync_reset.device_id);
    END IF;
    RETURN jsonb_build_object('status', 'success', 'message', 'Sync state reset successfully');
END
$$;

CREATE OR REPLACE FUNCTION bridgecore.sync_reset_all(user_id bigint, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    inst_id integer;
    n bigint;
BEGIN
    -- Same checks as sync_reset: valid user, and a JWT's user only.
    PERFORM bridgecore._check_device(sync_reset_all.user_id, '*');
    PERFORM bridgecore._primary_only('bridgecore.sync_reset_all');
    inst_id := bridgecore._instance_id(sync_reset_all.instance);
    PERFORM bridgecore._rate_limit('sync_reset', inst_id, sync_reset_all.user_id, '*');
    UPDATE bridgecore.sync_state s
       SET last_event_id = 0, sync_count = 0, last_event_count = 0, resets = s.resets + 1
     WHERE s.instance_id = inst_id AND s.user_id = sync_reset_all.user_id;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN jsonb_build_object('status', 'success', 'devices_reset', n,
                              'message', format('Sync state reset for %s devices', n));
END
$$;

-------------------------------------------------------------------------------
-- Retention that waits for the devices that have not passed a partition
-- (bridgecore.retention_max)
-------------------------------------------------------------------------------
DROP FUNCTION bridgecore._drop_partition(timestamptz);
CREATE FUNCTION bridgecore._retention_devices_until()
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT now() - greatest(current_setting('bridgecore.retention')::interval, m.wait)
      FROM (SELECT current_setting('bridgecore.retention_max')::interval AS wait) m
     WHERE m.wait > interval '0'
$$;

REVOKE ALL ON FUNCTION bridgecore._retention_devices_until() FROM PUBLIC;

-- Shards behind a router (bridgecore_router): the router's entry point, moved
-- instances' positions, the steps of a move; partitions made for ranges below
-- the next id (sql/src/65_shards.sql, 80_dead_letters_retention.sql).
-- The partition bridgecore.event_<lo> of the ids lo <= id < hi, with its
-- indexes (see bridgecore.event). The caller holds SHARE UPDATE EXCLUSIVE
-- on bridgecore.event (one creator at a time).
CREATE FUNCTION bridgecore._create_partition(lo bigint, hi bigint)
RETURNS void LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    part text := 'bridgecore.' || quote_ident('event_' || lo);
BEGIN
    EXECUTE format('CREATE TABLE %s (LIKE bridgecore.event INCLUDING DEFAULTS INCLUDING GENERATED'
                   ' INCLUDING STORAGE INCLUDING COMPRESSION, PRIMARY KEY (id))', part);
    EXECUTE format('CREATE INDEX ON %s (instance_id, odoo_id)', part);
    EXECUTE format('CREATE INDEX ON %s (instance_id, id)', part);
    EXECUTE format('CREATE INDEX ON %s (occurred_at)', part);
    EXECUTE format('CREATE INDEX ON %s (instance_id, model, id)', part);
    EXECUTE format('ALTER TABLE bridgecore.event ATTACH PARTITION %s FOR VALUES FROM (%s) TO (%s)',
                   part, lo, hi);
END
$$;

CREATE OR REPLACE FUNCTION bridgecore._ensure_partitions(upto bigint DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    size bigint := current_setting('bridgecore.partition_size')::bigint;
    next_id bigint;
    wanted bigint;
    top bigint;
BEGIN
    SELECT CASE WHEN s.is_called THEN s.last_value + 1 ELSE s.last_value END INTO next_id
      FROM bridgecore.event_id_seq s;
    wanted := coalesce(upto, next_id + size - 1);
    SELECT max(p.hi) INTO top FROM bridgecore._partitions() p;
    IF top > wanted THEN
        RETURN top;
    END IF;
    -- One creator at a time; readers and writers go on.
    LOCK TABLE ONLY bridgecore.event IN SHARE UPDATE EXCLUSIVE MODE;
    SELECT coalesce(max(p.hi), next_id) INTO top FROM bridgecore._partitions() p;
    WHILE top <= wanted LOOP
        PERFORM bridgecore._create_partition(top, top + size);
        top := top + size;
    END LOOP;
    RETURN top;
END
$$;

-------------------------------------------------------------------------------
-- A shard behind a router: the bridgecore_router extension, in a database of
-- its own, exposes the same SQL API and forwards each call over PL/Proxy to
-- the shard that holds the call's instance (docs/scaling.md, Shards). Here:
-- the entry point of the forwarded calls, and the steps of moving an
-- instance from one shard to another.
-------------------------------------------------------------------------------
-- The role of the router's connections to this shard. It acts as any caller
-- (it sets the caller's role and JWT claims) and reads the instances'
-- secrets when it moves one: grant it only to the login the router's
-- bridgecore.shard rows name.
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_router') THEN
        CREATE ROLE bridgecore_router NOLOGIN;
    END IF;
END
$roles$;
GRANT bridgecore_admin, bridgecore_anon TO bridgecore_router;

-- An instance moved here from another shard keeps its devices' positions:
-- its events were stored here with their ids plus shift, and a position its
-- devices got from the old shard (at most through, the old shard's last id
-- when the move began) names the same place here plus shift. Applied in
-- the order of through: an instance moved twice has a row per move, and
-- each move's shift takes the position into the next shard's ids (every id
-- the new shard gives the instance is above the old shard's through).
CREATE TABLE bridgecore.moved_position (
    instance_id     integer NOT NULL REFERENCES bridgecore.instance ON DELETE CASCADE,
    through         bigint NOT NULL CHECK (through >= 0),
    shift           bigint NOT NULL CHECK (shift > through),
    moved_at        timestamptz NOT NULL DEFAULT now(),
    -- false while the move copies: the instance is not yet served here.
    complete        boolean NOT NULL DEFAULT false,
    PRIMARY KEY (instance_id, through)
);
COMMENT ON TABLE bridgecore.moved_position IS 'How positions of an instance moved from another shard map onto this shard''s event ids.';
SELECT pg_catalog.pg_extension_config_dump('bridgecore.moved_position', '');

-- An instance this shard is giving to another (move_instance() runs): the
-- store path refuses its events (src/ingest.c), so that the copy is final.
-- Goes with the instance (out_finish), or by hand when a move is given up
-- (docs/scaling.md).
CREATE TABLE bridgecore.moving_out (
    instance_id     integer PRIMARY KEY REFERENCES bridgecore.instance ON DELETE CASCADE,
    since           timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE bridgecore.moving_out IS 'Instances being moved to another shard: their events are no longer stored here.';
SELECT pg_catalog.pg_extension_config_dump('bridgecore.moving_out', '');

-- A position of a device of instance_id in this shard's ids (sync_pull
-- calls it for a sync_token's position, src/sync_pull.c). 0, the start of
-- the log, stays 0. A position of the shard the instance first left is
-- shifted by every move (each move's shift takes it above the next move's
-- through); one of a later shard by the moves from there on: so by the
-- shifts of the moves whose through is at or above it.
CREATE FUNCTION bridgecore._moved_position(instance_id integer, pos bigint)
RETURNS bigint LANGUAGE sql STABLE
AS $$
    SELECT pos + coalesce(sum(p.shift), 0)::bigint
      FROM bridgecore.moved_position p
     WHERE p.instance_id = _moved_position.instance_id AND p.through >= pos AND pos > 0
$$;

-- A call forwarded by a router: bridgecore.<fn> with the named arguments of
-- args (every argument of the function, a JSON null for an SQL NULL: the
-- router's functions pass them all, with the defaults of their own
-- signatures, which are the ones here), run as caller_role with the
-- caller's request settings (those PostgREST sets, which the functions
-- read: request.jwt.claims, request.headers, request.method), as if the
-- caller had made it here. Its answer as text. Not SECURITY DEFINER: it
-- sets the role, which a definer's function may not, and the call's
-- privileges are then checked as that role. The settings are local to the
-- transaction, and a PL/Proxy call is a transaction of its own. Each call
-- is written out, so that its plan is kept from one call to the next.
-- No SET search_path, which would make every call replan the called
-- function's statements once the role changed (measured: 0.8 ms a pull);
-- it runs as the router's login only, and names nothing unqualified but
-- pg_catalog's operators, which are searched first.
CREATE FUNCTION bridgecore._routed_call(fn text, args jsonb, caller_role text, request jsonb)
RETURNS text LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
    a jsonb := args;
    models text[];
BEGIN
    IF caller_role IS NULL OR caller_role NOT IN ('bridgecore_anon', 'bridgecore_app', 'bridgecore_admin', 'bridgecore_monitor') THEN
        RAISE EXCEPTION 'a routed call must act as a bridgecore role, not %', coalesce(pg_catalog.quote_ident(caller_role), 'null')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF pg_catalog.jsonb_typeof(args) IS DISTINCT FROM 'object' OR pg_catalog.jsonb_typeof(request) IS DISTINCT FROM 'object' THEN
        RAISE EXCEPTION 'the arguments and the request settings of a routed call must be JSON objects'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF request <> '{}' THEN
        IF EXISTS (SELECT FROM pg_catalog.jsonb_each_text(request) r
                    WHERE r.key NOT IN ('request.jwt.claims', 'request.headers', 'request.method') OR r.value IS NULL) THEN
            RAISE EXCEPTION 'a routed call may only set request.jwt.claims, request.headers and request.method'
                USING ERRCODE = 'invalid_parameter_value';
        END IF;
        PERFORM pg_catalog.set_config(r.key, r.value, true) FROM pg_catalog.jsonb_each_text(request) r;
    END IF;
    PERFORM pg_catalog.set_config('role', caller_role, true);
    CASE fn
    WHEN 'sync_pull' THEN
        IF pg_catalog.jsonb_typeof(a -> 'models_filter') = 'array' THEN
            models := ARRAY(SELECT pg_catalog.jsonb_array_elements_text(a -> 'models_filter'));
        END IF;
        RETURN bridgecore.sync_pull(user_id => (a ->> 'user_id')::bigint, device_id => a ->> 'device_id',
            app_type => a ->> 'app_type', "limit" => (a ->> 'limit')::integer, models_filter => models,
            instance => a ->> 'instance', sync_token => a ->> 'sync_token',
            device_info => nullif(a -> 'device_info', 'null'), app_version => a ->> 'app_version')::text;
    WHEN 'sync_state' THEN
        RETURN bridgecore.sync_state((a ->> 'user_id')::bigint, a ->> 'device_id', a ->> 'instance')::text;
    WHEN 'sync_scope' THEN
        RETURN bridgecore.sync_scope(a ->> 'app_type', a ->> 'instance')::text;
    WHEN 'sync_reset' THEN
        RETURN bridgecore.sync_reset((a ->> 'user_id')::bigint, a ->> 'device_id', a ->> 'instance')::text;
    WHEN 'sync_reset_all' THEN
        RETURN bridgecore.sync_reset_all((a ->> 'user_id')::bigint, a ->> 'instance')::text;
    WHEN 'events' THEN
        RETURN bridgecore.events(a ->> 'model_name', (a ->> 'record_id')::bigint, a ->> 'event',
            (a ->> 'since')::timestamptz, (a ->> 'limit')::integer, (a ->> 'offset')::integer,
            a ->> 'priority', a ->> 'category', a ->> 'instance')::text;
    WHEN 'check_updates' THEN
        RETURN bridgecore.check_updates((a ->> 'since')::timestamptz, (a ->> 'limit')::integer, a ->> 'instance')::text;
    WHEN 'cleanup' THEN
        RETURN bridgecore.cleanup((a ->> 'before')::timestamptz, a ->> 'instance')::text;
    WHEN 'deactivate_idle_devices' THEN
        RETURN bridgecore.deactivate_idle_devices((a ->> 'idle')::interval, a ->> 'instance')::text;
    WHEN 'login' THEN
        RETURN bridgecore.login(a ->> 'username', a ->> 'password', a ->> 'instance')::text;
    WHEN 'refresh_token' THEN
        RETURN bridgecore.refresh_token(a ->> 'token')::text;
    WHEN 'verify_token' THEN
        RETURN bridgecore.verify_token(a ->> 'token')::text;
    WHEN 'issue_token' THEN
        RETURN bridgecore.issue_token(a ->> 'role', (a ->> 'user_id')::bigint, a ->> 'instance',
                                      (a ->> 'lifetime')::interval)::text;
    WHEN 'wake' THEN
        RETURN bridgecore.wake(a ->> 'instance')::text;
    WHEN 'metrics' THEN
        RETURN bridgecore.metrics();
    WHEN 'ring' THEN
        RETURN bridgecore.ring(a ->> 'push_key', a ->> 'client')::text;
    ELSE
        RAISE EXCEPTION 'bridgecore.% cannot be called through a router', coalesce(pg_catalog.left(fn, 64), '<null>')
            USING ERRCODE = 'undefined_function', HINT = 'Call it on the shard.';
    END CASE;
END
$$;

-- Makes a partition for each range of lo .. hi that none holds, each at
-- most bridgecore.partition_size ids wide (an instance moved here brings
-- events with ids below the log's next id).
CREATE FUNCTION bridgecore._cover_ids(lo bigint, hi bigint)
RETURNS void LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    size bigint := current_setting('bridgecore.partition_size')::bigint;
    p record;
    next_lo bigint;
BEGIN
    LOCK TABLE ONLY bridgecore.event IN SHARE UPDATE EXCLUSIVE MODE;
    WHILE lo <= hi LOOP
        SELECT x.lo, x.hi INTO p FROM bridgecore._partitions() x WHERE x.lo <= _cover_ids.lo AND _cover_ids.lo < x.hi;
        IF FOUND THEN
            lo := p.hi;
            CONTINUE;
        END IF;
        SELECT min(x.lo) INTO next_lo FROM bridgecore._partitions() x WHERE x.lo > _cover_ids.lo;
        PERFORM bridgecore._create_partition(lo, least(lo + size, coalesce(next_lo, lo + size)));
        lo := least(lo + size, coalesce(next_lo, lo + size));
    END LOOP;
END
$$;

-- The steps of bridgecore.move_instance() on the router (its source is the
-- shard the instance leaves, its destination the one it goes to), each a
-- transaction of its own. Returns what the router passes on.
--   out_begin {instance}: stops the instance's poller here (enabled false);
--     returns its id and whether it was enabled.
--   out_paused {id}: whether the poller let go of the instance.
--   out_meta {id}: once it did, what the destination needs: the instance
--     row with its secret, its models, gaps, horizons, earlier moves, the
--     app types, and through, the log's last id.
--   out_events {id, after, n}: the next n events above after, in id order.
--   out_states {id, after_user, after_device, n}: device states, in key order.
--   out_dead_letters {id}: the instance's dead letters.
--   out_purged {id}: its retention horizons (retention goes on during the
--     copy), for in_purged {id, shift, purged}.
--   out_finish {instance}: removes the instance here, with its events.
--   in_begin {meta}: creates the instance here, not yet polled, and returns
--     the shift of its ids. A half-made copy of an earlier try goes first.
--   in_events {id, shift, events}, in_states {id, shift, states},
--   in_dead_letters {id, rows}: store the copies.
--   in_finish {id, enabled}: the move is complete; the poller starts here.
-- And for bridgecore.sync_placement() on the router:
--   instances {all?}: the instances served here: not those a move is
--     copying in or out (with all, those too).
--   moving {}: the names of those (for the router's status()).
-- And for bridgecore.ring() on the router:
--   push_key_check {client}: the rate limit a ring checks before its lookup;
--   push_key_instance {hash}: the instance whose push key has that SHA-256.
CREATE FUNCTION bridgecore._shard_step(step text, args jsonb)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inst_id integer := (args ->> 'id')::integer;
    meta jsonb;
    shift bigint;
    through bigint;
    first_id bigint;
    last_id bigint;
    n bigint;
    r jsonb;
    conflicts text;
BEGIN
    PERFORM bridgecore._primary_only('bridgecore._shard_step');
    CASE step
    WHEN 'out_begin' THEN
        SELECT i.id INTO inst_id FROM bridgecore.instance i WHERE i.name = args ->> 'instance' FOR UPDATE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'unknown instance "%"', left(args ->> 'instance', 64)
                USING ERRCODE = 'invalid_parameter_value', HINT = 'The router''s placement names a shard that does not hold it.';
        END IF;
        SELECT jsonb_build_object('id', i.id, 'enabled', i.enabled) INTO meta
          FROM bridgecore.instance i WHERE i.id = inst_id;
        INSERT INTO bridgecore.moving_out (instance_id) VALUES (inst_id) ON CONFLICT DO NOTHING;
        UPDATE bridgecore.instance i SET enabled = false, config_version = i.config_version + 1 WHERE i.id = inst_id;
        PERFORM bridgecore._wake_poller();
        RETURN meta;
    WHEN 'out_meta' THEN
        -- After the poller let go (out_paused), and after any other store
        -- that began before moving_out was committed (the ordering lock,
        -- src/ingest.c): nothing is stored for the instance any more, so
        -- through is above every id it will have here.
        PERFORM pg_advisory_xact_lock('bridgecore.event'::regclass::oid::integer, 0);
        SELECT jsonb_build_object(
                   'instance', to_jsonb(i) || jsonb_build_object('push_key_hash', encode(i.push_key_hash, 'hex')),
                   'models', (SELECT coalesce(jsonb_agg(to_jsonb(m)), '[]') FROM bridgecore.odoo_model m WHERE m.instance_id = i.id),
                   'gaps', (SELECT coalesce(jsonb_agg(to_jsonb(g)), '[]') FROM bridgecore.gap g WHERE g.instance_id = i.id),
                   'purged', (SELECT coalesce(jsonb_agg(to_jsonb(p)), '[]') FROM bridgecore.purged p WHERE p.instance_id = i.id),
                   'moves', (SELECT coalesce(jsonb_agg(to_jsonb(p) ORDER BY p.through), '[]') FROM bridgecore.moved_position p WHERE p.instance_id = i.id),
                   'app_types', (SELECT coalesce(jsonb_agg(to_jsonb(a)), '[]') FROM bridgecore.app_type a WHERE NOT a.is_default),
                   'through', (SELECT s.last_value FROM bridgecore.event_id_seq s),
                   'events', (SELECT count(*) FROM bridgecore.event e WHERE e.instance_id = i.id))
          INTO meta FROM bridgecore.instance i WHERE i.id = inst_id;
        IF meta IS NULL THEN
            RAISE EXCEPTION 'unknown instance id %', inst_id USING ERRCODE = 'invalid_parameter_value';
        END IF;
        RETURN meta;
    WHEN 'instances' THEN
        -- With all, the half-made copies of a move too.
        RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('id', i.id, 'name', i.name) ORDER BY i.id), '[]')
                  FROM bridgecore.instance i
                 WHERE coalesce((args ->> 'all')::boolean, false)
                    OR (NOT EXISTS (SELECT FROM bridgecore.moved_position p WHERE p.instance_id = i.id AND NOT p.complete)
                        AND NOT EXISTS (SELECT FROM bridgecore.moving_out m WHERE m.instance_id = i.id)));
    WHEN 'moving' THEN
        -- The names of the instances a move is copying in or out here.
        RETURN (SELECT coalesce(jsonb_agg(i.name), '[]') FROM bridgecore.instance i
                 WHERE EXISTS (SELECT FROM bridgecore.moved_position p WHERE p.instance_id = i.id AND NOT p.complete)
                    OR EXISTS (SELECT FROM bridgecore.moving_out m WHERE m.instance_id = i.id));
    WHEN 'push_key_check' THEN
        -- A ring's first check (bridgecore.ring()): may this client try a key?
        PERFORM bridgecore._rate_limit('push_key_check', 0, 0, coalesce(nullif(left(args ->> 'client', 64), ''), '*'));
        RETURN jsonb_build_object('ok', true);
    WHEN 'push_key_instance' THEN
        -- Which instance here has the push key of this SHA-256 (hex), if any.
        RETURN to_jsonb((SELECT i.name FROM bridgecore.instance i
                          WHERE i.push_key_hash = decode(args ->> 'hash', 'hex')
                            AND NOT EXISTS (SELECT FROM bridgecore.moving_out m WHERE m.instance_id = i.id)));
    WHEN 'out_paused' THEN
        -- The poller of an instance holds this advisory lock (src/poller.c).
        RETURN to_jsonb(NOT EXISTS (SELECT FROM pg_locks l
                                     WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                                       AND l.classid = 1112425298 AND l.objid = inst_id AND l.objsubid = 2));
    WHEN 'out_events' THEN
        SELECT coalesce(jsonb_agg(to_jsonb(e) - 'doc' ORDER BY e.id), '[]') INTO r
          FROM (SELECT * FROM bridgecore.event e
                 WHERE e.instance_id = inst_id AND e.id > (args ->> 'after')::bigint
                 ORDER BY e.id LIMIT (args ->> 'n')::integer) e;
        RETURN r;
    WHEN 'out_states' THEN
        SELECT coalesce(jsonb_agg(to_jsonb(s) ORDER BY s.user_id, s.device_id), '[]') INTO r
          FROM (SELECT * FROM bridgecore.sync_state s
                 WHERE s.instance_id = inst_id
                   AND (s.user_id, s.device_id) > ((args ->> 'after_user')::bigint, args ->> 'after_device')
                 ORDER BY s.user_id, s.device_id LIMIT (args ->> 'n')::integer) s;
        RETURN r;
    WHEN 'out_purged' THEN
        -- Retention may have gone on here during the copy.
        RETURN jsonb_build_object(
            'purged', (SELECT coalesce(jsonb_agg(to_jsonb(p)), '[]') FROM bridgecore.purged p WHERE p.instance_id = inst_id),
            'purged_through', (SELECT i.purged_through FROM bridgecore.instance i WHERE i.id = inst_id));
    WHEN 'out_dead_letters' THEN
        -- The record as its text: json, which may hold what jsonb cannot.
        SELECT coalesce(jsonb_agg(to_jsonb(d) - 'record' || jsonb_build_object('record', d.record::text) ORDER BY d.id), '[]') INTO r
          FROM (SELECT d.id, d.odoo_id, d.record, d.reason, d.first_failed_at, d.last_failed_at, d.attempts, d.status, d.note
                  FROM bridgecore.dead_letter d WHERE d.instance_id = inst_id) d;
        RETURN r;
    WHEN 'out_finish' THEN
        RETURN bridgecore.remove_instance(args ->> 'instance');
    WHEN 'in_begin' THEN
        meta := args -> 'meta';
        inst_id := (meta #>> '{instance,id}')::integer;
        -- An earlier try that did not complete left a copy: start again.
        IF EXISTS (SELECT FROM bridgecore.moved_position p WHERE p.instance_id = inst_id AND NOT p.complete) THEN
            PERFORM bridgecore.remove_instance(meta #>> '{instance,name}');
        END IF;
        IF EXISTS (SELECT FROM bridgecore.instance i WHERE i.id = inst_id OR i.name = meta #>> '{instance,name}') THEN
            RAISE EXCEPTION 'this shard already has an instance with the id % or the name "%"', inst_id, meta #>> '{instance,name}'
                USING ERRCODE = 'unique_violation',
                      HINT = 'Instance ids must be unique across shards: give each shard its own range (ALTER TABLE bridgecore.instance ALTER COLUMN id RESTART WITH ...).';
        END IF;
        SELECT string_agg(a.name, ', ') INTO conflicts
          FROM jsonb_array_elements(meta -> 'app_types') x, bridgecore.app_type a
         WHERE a.name = x ->> 'name' AND to_jsonb(a.models) <> x -> 'models';
        IF conflicts IS NOT NULL THEN
            RAISE EXCEPTION 'an app type of instance "%" has other models on this shard', meta #>> '{instance,name}'
                USING ERRCODE = 'object_not_in_prerequisite_state', DETAIL = 'App types: ' || conflicts || '.',
                      HINT = 'Make them the same on both shards with bridgecore.set_app_type(), then move the instance.';
        END IF;
        through := (meta ->> 'through')::bigint;
        -- Every id the instance gets here, copied or new, is above every
        -- position of the old shard, so that the two never mix. Under the
        -- ordering lock that every store holds (src/ingest.c): no id is
        -- taken here between the read of the sequence and its move.
        PERFORM pg_advisory_xact_lock('bridgecore.event'::regclass::oid::integer, 0);
        SELECT greatest(s.last_value, through) + 1 INTO shift FROM bridgecore.event_id_seq s;
        INSERT INTO bridgecore.instance OVERRIDING SYSTEM VALUE
        SELECT (jsonb_populate_record(NULL::bridgecore.instance, (meta -> 'instance') - 'push_key_hash')).*;
        UPDATE bridgecore.instance i
           SET enabled = false, push_key_hash = decode(meta #>> '{instance,push_key_hash}', 'hex'),
               purged_through = CASE WHEN i.purged_through > 0 THEN i.purged_through + shift ELSE 0 END
         WHERE i.id = inst_id;
        INSERT INTO bridgecore.odoo_model SELECT (jsonb_populate_record(NULL::bridgecore.odoo_model, m)).* FROM jsonb_array_elements(meta -> 'models') m;
        INSERT INTO bridgecore.gap SELECT (jsonb_populate_record(NULL::bridgecore.gap, g)).* FROM jsonb_array_elements(meta -> 'gaps') g;
        INSERT INTO bridgecore.purged
        SELECT p.instance_id, p.model, p.through + shift
          FROM jsonb_array_elements(meta -> 'purged') x, jsonb_populate_record(NULL::bridgecore.purged, x) p;
        INSERT INTO bridgecore.app_type (name, models, is_default, updated_at)
        SELECT a.name, a.models, false, a.updated_at
          FROM jsonb_array_elements(meta -> 'app_types') x, jsonb_populate_record(NULL::bridgecore.app_type, x) a
        ON CONFLICT (name) DO NOTHING;
        INSERT INTO bridgecore.moved_position (instance_id, through, shift, moved_at, complete)
        SELECT p.instance_id, p.through, p.shift, p.moved_at, true
          FROM jsonb_array_elements(meta -> 'moves') x, jsonb_populate_record(NULL::bridgecore.moved_position, x) p;
        INSERT INTO bridgecore.moved_position (instance_id, through, shift) VALUES (inst_id, through, shift);
        -- The log's next id goes past the copy (forward only), with a
        -- partition for it.
        PERFORM bridgecore._cover_ids(through + shift + 1, through + shift + 1);
        PERFORM setval('bridgecore.event_id_seq', greatest(through + shift, (SELECT s.last_value FROM bridgecore.event_id_seq s)));
        RETURN jsonb_build_object('shift', shift);
    WHEN 'in_events' THEN
        shift := (args ->> 'shift')::bigint;
        SELECT min((e ->> 'id')::bigint) + shift, max((e ->> 'id')::bigint) + shift INTO first_id, last_id
          FROM jsonb_array_elements(args -> 'events') e;
        IF first_id IS NULL THEN
            RETURN jsonb_build_object('stored', 0);
        END IF;
        PERFORM bridgecore._cover_ids(first_id, last_id);
        WITH stored AS (
            INSERT INTO bridgecore.event (id, instance_id, odoo_id, model, record_id, event, priority, category,
                                          payload, changed_fields, odoo_user_id, odoo_user_name, occurred_at, received_at)
            OVERRIDING SYSTEM VALUE
            SELECT e.id + shift, inst_id, e.odoo_id, e.model, e.record_id, e.event, e.priority, e.category,
                   e.payload, e.changed_fields, e.odoo_user_id, e.odoo_user_name, e.occurred_at, e.received_at
              FROM jsonb_array_elements(args -> 'events') x, jsonb_populate_record(NULL::bridgecore.event, x - 'doc') e
            RETURNING tableoid, id, model, occurred_at)
        INSERT INTO bridgecore.partition_summary AS s (part, instance_id, model, deleted, events, max_id, newest_at)
        SELECT st.tableoid::regclass, inst_id, st.model, false, count(*), max(st.id), max(st.occurred_at)
          FROM stored st GROUP BY st.tableoid, st.model
        ON CONFLICT (part, instance_id, model, deleted) DO UPDATE
           SET events = s.events + excluded.events, max_id = greatest(s.max_id, excluded.max_id),
               newest_at = greatest(s.newest_at, excluded.newest_at);
        RETURN jsonb_build_object('stored', jsonb_array_length(args -> 'events'));
    WHEN 'in_states' THEN
        -- Positions in this shard's ids (the move's row is in place).
        INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type, last_event_id,
                                           last_sync_time, sync_count, last_event_count, total_events_synced,
                                           is_active, device_info, app_version, created_at, resets)
        SELECT inst_id, s.user_id, s.device_id, s.app_type, bridgecore._moved_position(inst_id, s.last_event_id),
               s.last_sync_time, s.sync_count, s.last_event_count, s.total_events_synced,
               s.is_active, s.device_info, s.app_version, s.created_at, s.resets
          FROM jsonb_array_elements(args -> 'states') x, jsonb_populate_record(NULL::bridgecore.sync_state, x) s;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN jsonb_build_object('stored', n);
    WHEN 'in_purged' THEN
        shift := (args ->> 'shift')::bigint;
        INSERT INTO bridgecore.purged AS t (instance_id, model, through)
        SELECT inst_id, p.model, p.through + shift
          FROM jsonb_array_elements(args #> '{purged,purged}') x, jsonb_populate_record(NULL::bridgecore.purged, x) p
        ON CONFLICT (instance_id, model) DO UPDATE SET through = greatest(t.through, excluded.through);
        UPDATE bridgecore.instance i
           SET purged_through = greatest(i.purged_through, (args #>> '{purged,purged_through}')::bigint + shift)
         WHERE i.id = inst_id AND (args #>> '{purged,purged_through}')::bigint > 0;
        RETURN jsonb_build_object('ok', true);
    WHEN 'in_dead_letters' THEN
        INSERT INTO bridgecore.dead_letter (instance_id, odoo_id, record, reason, first_failed_at, last_failed_at,
                                            attempts, status, note)
        SELECT inst_id, d.odoo_id, (x ->> 'record')::json, d.reason, d.first_failed_at, d.last_failed_at, d.attempts, d.status, d.note
          FROM jsonb_array_elements(args -> 'rows') x, jsonb_populate_record(NULL::bridgecore.dead_letter, x - 'record') d;
        GET DIAGNOSTICS n = ROW_COUNT;
        RETURN jsonb_build_object('stored', n);
    WHEN 'in_finish' THEN
        UPDATE bridgecore.moved_position p SET complete = true WHERE p.instance_id = inst_id AND NOT p.complete;
        UPDATE bridgecore.instance i SET enabled = (args ->> 'enabled')::boolean, config_version = i.config_version + 1
         WHERE i.id = inst_id;
        PERFORM bridgecore._wake_poller();
        RETURN jsonb_build_object('ok', true);
    ELSE
        RAISE EXCEPTION 'unknown move step "%"', left(step, 64) USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END
$$;

REVOKE ALL ON FUNCTION bridgecore._create_partition(bigint, bigint), bridgecore._cover_ids(bigint, bigint),
                       bridgecore._moved_position(integer, bigint),
                       bridgecore._routed_call(text, jsonb, text, jsonb), bridgecore._shard_step(text, jsonb)
    FROM PUBLIC;
REVOKE ALL ON bridgecore.moved_position, bridgecore.moving_out FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridgecore._routed_call(text, jsonb, text, jsonb), bridgecore._shard_step(text, jsonb)
    TO bridgecore_router;
GRANT SELECT ON bridgecore.moved_position, bridgecore.moving_out TO bridgecore_admin;

-- The token's check and the instance rule in C (src/jwt.c, src/claims.c):
-- a request's claims are parsed once, not by each function that reads them,
-- and verify_token runs without a change of user or search_path (it reads
-- the secret from the setting's variable, never through SQL). Same
-- signatures, results and errors; grants and comments are kept.
CREATE OR REPLACE FUNCTION bridgecore._instance_id(instance text)
RETURNS integer LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bridgecore_instance_id';
CREATE OR REPLACE FUNCTION bridgecore.verify_token(token text)
RETURNS jsonb LANGUAGE c STABLE
AS 'MODULE_PATHNAME', 'bridgecore_verify_token';

-- What a gateway with one pool of connections for every user runs first in
-- a request's transaction, as bridgecore_anon: verify_token's check, then
-- the token's role and its claims in request.jwt.claims, both local to the
-- transaction (the role as SET ROLE allows it: the session's user must be a
-- member). In C (src/jwt.c): the claims are then known without parsing.
CREATE FUNCTION bridgecore.authorize(token text)
RETURNS void LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_authorize';
COMMENT ON FUNCTION bridgecore.authorize(text)
    IS 'Verifies a token, then acts as it for the rest of the transaction: its role and request.jwt.claims.';
REVOKE ALL ON FUNCTION bridgecore.authorize(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION bridgecore.authorize(text) TO bridgecore_anon;
