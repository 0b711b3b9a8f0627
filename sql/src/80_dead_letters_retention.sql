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
-- Retention and device housekeeping (run by the launcher, or by hand)
-------------------------------------------------------------------------------
-- Deletes, per instance (one, or all), at most batch events from the start
-- of its log that are older than cutoff, stopping at its first newer event,
-- and records the horizons. Returns the events deleted.
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
            RETURNING ev.id, ev.model
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
         WHERE (SELECT count(*) FROM horizon) >= 0 AND (SELECT count(*) FROM marked) >= 0;
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
BEGIN
    IF cutoff IS NULL THEN
        IF retention <= interval '0' THEN
            RETURN jsonb_build_object('ok', true, 'deleted', 0,
                'message', 'Retention is disabled (bridgecore.retention = 0); pass before to delete');
        END IF;
        cutoff := now() - retention;
    END IF;
    -- Omitted instance: every instance, unless a JWT confines the caller.
    IF cleanup.instance IS NOT NULL
       OR nullif(current_setting('request.jwt.claims', true), '')::jsonb ? 'instance' THEN
        inst_id := bridgecore._instance_id(cleanup.instance);
    END IF;

    -- Bounded batches keep each DELETE short; readers are never blocked by
    -- it. Each instance loses a prefix of its log: an event newer than the
    -- cutoff keeps every later one, so a late row with an old timestamp
    -- waits until the events before it go.
    LOOP
        n := bridgecore._cleanup_step(cutoff, inst_id, batch);
        total := total + n;
        EXIT WHEN n = 0;
    END LOOP;

    RETURN jsonb_build_object(
        'ok', true, 'deleted', total,
        'message', format('Deleted %s events older than %s (up to the first newer event of each instance)',
                          total, bridgecore._iso(cutoff)));
END
$$;
COMMENT ON FUNCTION bridgecore.cleanup(timestamptz, text) IS 'Deletes events older than before (default: now - bridgecore.retention).';

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
-- a batch of retention, or (when none is due) the idle-device sweep.
-- Returns the events deleted; the launcher repeats while a full batch went.
CREATE FUNCTION bridgecore._maintenance_step()
RETURNS bigint LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    retention interval := current_setting('bridgecore.retention')::interval;
    n bigint := 0;
BEGIN
    IF retention > interval '0' THEN
        n := bridgecore._cleanup_step(now() - retention, NULL,
                                      current_setting('bridgecore.cleanup_batch_size')::integer);
    END IF;
    IF n = 0 THEN
        PERFORM bridgecore.deactivate_idle_devices();
    END IF;
    RETURN n;
END
$$;
