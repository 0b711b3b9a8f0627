-------------------------------------------------------------------------------
-- Dead letters
-------------------------------------------------------------------------------
CREATE VIEW bridgecore.dead_letters AS
SELECT d.id, i.name AS instance, d.odoo_id, d.reason, d.status, d.attempts,
       d.first_failed_at, d.last_failed_at, d.note, d.record
  FROM bridgecore.dead_letter d
  JOIN bridgecore.instance i ON i.id = d.instance_id;
COMMENT ON VIEW bridgecore.dead_letters IS 'Records that could not be stored, with their instance name.';

-- "Not found": SQLSTATE P0002 for SQL callers, PT404 (HTTP 404) through
-- PostgREST, as for sync states.
CREATE FUNCTION bridgecore._raise_not_found(message text, hint text)
RETURNS void LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION '%', message
        USING ERRCODE = CASE WHEN coalesce(current_setting('request.method', true), '') = ''
                             THEN 'P0002' ELSE 'PT404' END,
              HINT = hint;
END
$$;

-- Retries one dead letter: its stored record first (the rules may accept it
-- now, or a valid version was stored meanwhile), unless it is an unstorable
-- record, whose copy is not exact; if it is still refused, the
-- poller is asked to fetch the row from Odoo again (it may have been
-- corrected there). Stored records keep their Odoo id: nothing is duplicated.
CREATE FUNCTION bridgecore._retry_dead_letter(dl bridgecore.dead_letter)
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

CREATE FUNCTION bridgecore.retry_dead_letter(id bigint)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    dl bridgecore.dead_letter;
BEGIN
    SELECT * INTO dl FROM bridgecore.dead_letter d WHERE d.id = retry_dead_letter.id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM bridgecore._raise_not_found(format('dead letter %s does not exist', retry_dead_letter.id),
                                            'bridgecore.dead_letters lists them.');
    ELSIF dl.status IN ('resolved', 'ignored') THEN
        RAISE EXCEPTION 'dead letter % is %', dl.id, dl.status USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Only pending or retrying dead letters can be retried.';
    END IF;
    RETURN jsonb_build_object('id', dl.id, 'status', bridgecore._retry_dead_letter(dl));
END
$$;

CREATE FUNCTION bridgecore.retry_dead_letters(instance text)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    inst_id integer := bridgecore._instance_id(retry_dead_letters.instance);
    dl bridgecore.dead_letter;
    counts jsonb := '{"resolved": 0, "retrying": 0, "pending": 0}';
    outcome text;
BEGIN
    FOR dl IN SELECT * FROM bridgecore.dead_letter d
               WHERE d.instance_id = inst_id AND d.status IN ('pending', 'retrying')
               ORDER BY d.odoo_id NULLS LAST, d.id FOR UPDATE
    LOOP
        outcome := bridgecore._retry_dead_letter(dl);
        counts := jsonb_set(counts, ARRAY[outcome], to_jsonb((counts ->> outcome)::int + 1));
    END LOOP;
    RETURN jsonb_build_object('instance', (SELECT i.name FROM bridgecore.instance i WHERE i.id = inst_id)) || counts;
END
$$;

CREATE FUNCTION bridgecore.ignore_dead_letter(id bigint, note text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE bridgecore.dead_letter d SET status = 'ignored', note = ignore_dead_letter.note
     WHERE d.id = ignore_dead_letter.id AND d.status <> 'resolved';
    IF NOT FOUND THEN
        IF EXISTS (SELECT 1 FROM bridgecore.dead_letter d WHERE d.id = ignore_dead_letter.id) THEN
            RAISE EXCEPTION 'dead letter % is resolved', ignore_dead_letter.id
                USING ERRCODE = 'invalid_parameter_value', HINT = 'A resolved record was stored; there is nothing to ignore.';
        END IF;
        PERFORM bridgecore._raise_not_found(format('dead letter %s does not exist', ignore_dead_letter.id),
                                            'bridgecore.dead_letters lists them.');
    END IF;
    -- Not fetched again from Odoo either.
    DELETE FROM bridgecore.gap g USING bridgecore.dead_letter d
     WHERE d.id = ignore_dead_letter.id AND g.instance_id = d.instance_id AND g.odoo_id = d.odoo_id;
    RETURN jsonb_build_object('id', ignore_dead_letter.id, 'status', 'ignored', 'note', ignore_dead_letter.note);
END
$$;

-------------------------------------------------------------------------------
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

-- The instant from which partitions due by bridgecore.retention wait for
-- the active devices that have not passed them (bridgecore.retention_max,
-- at least bridgecore.retention); NULL when retention waits for no device.
CREATE FUNCTION bridgecore._retention_devices_until()
RETURNS timestamptz LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT now() - greatest(current_setting('bridgecore.retention')::interval, m.wait)
      FROM (SELECT current_setting('bridgecore.retention_max')::interval AS wait) m
     WHERE m.wait > interval '0'
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

-- Deletes, per instance (one, or all), at most batch events from the start
-- of its log that are older than cutoff, stopping at its first newer event,
-- and records the horizons. Returns the events deleted. cleanup() of one
-- instance deletes so (the other instances' events share its partitions);
-- a prefix of one instance's log and a prefix of the whole log together
-- are still a prefix of that instance's log.
CREATE FUNCTION bridgecore._cleanup_step(cutoff timestamptz, inst_id integer, batch integer)
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

CREATE FUNCTION bridgecore.cleanup(before timestamptz DEFAULT NULL, instance text DEFAULT NULL)
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

CREATE FUNCTION bridgecore.deactivate_idle_devices(idle interval DEFAULT NULL, instance text DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    limit_age interval := coalesce(idle, current_setting('bridgecore.device_idle_timeout')::interval);
    inst_id integer;
    n bigint;
BEGIN
    IF limit_age <= interval '0' THEN
        RETURN jsonb_build_object('ok', true, 'deactivated', 0,
            'message', CASE WHEN idle IS NULL THEN 'Idle devices are kept active (bridgecore.device_idle_timeout = 0)'
                            ELSE 'Nothing deactivated: idle must be positive' END);
    END IF;
    -- Omitted instance: every instance, unless a JWT confines the caller.
    IF deactivate_idle_devices.instance IS NOT NULL
       OR nullif(current_setting('request.jwt.claims', true), '')::jsonb ? 'instance' THEN
        inst_id := bridgecore._instance_id(deactivate_idle_devices.instance);
    END IF;
    UPDATE bridgecore.sync_state s SET is_active = false
     WHERE s.is_active AND coalesce(s.last_sync_time, s.created_at) < now() - limit_age
       AND (inst_id IS NULL OR s.instance_id = inst_id);
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN jsonb_build_object('ok', true, 'deactivated', n,
        'message', format('Deactivated %s devices idle for more than %s', n, limit_age));
END
$$;
COMMENT ON FUNCTION bridgecore.deactivate_idle_devices(interval, text)
    IS 'Marks devices idle longer than bridgecore.device_idle_timeout inactive; their next pull reactivates them.';

-- One maintenance step for the launcher, in its own short transaction:
-- partitions made ahead, then one partition dropped by retention, or (when
-- none is due) the idle-device sweep. Returns the event ids the dropped
-- partition spanned; the launcher repeats while one went. A partition in
-- use (lock_timeout) is tried again at the next maintenance.
CREATE FUNCTION bridgecore._maintenance_step()
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
