-------------------------------------------------------------------------------
-- Poller (background worker) support
-------------------------------------------------------------------------------
-- Wakes the poller when the current transaction commits (a rollback wakes
-- nobody), so instance changes take effect at once without polling a table.
CREATE FUNCTION bridgecore._wake_poller()
RETURNS void LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_wake_poller';

-- Moves an instance's cursor past a stored batch, in the transaction that
-- stored it (so a crash at any point neither loses nor duplicates events).
-- seen lists every Odoo id of the batch, stored or dead-lettered. Ids
-- between the old cursor and the new one that Odoo did not return become
-- gaps, asked for again until gap_window has passed. Returns the new cursor
-- and the gaps still open.
CREATE FUNCTION bridgecore._advance_cursor(inst_id integer, seen bigint[], gap_window interval,
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

-- Records a failed poll in the instance status (the message is already
-- free of secrets).
CREATE FUNCTION bridgecore._record_failure(inst_id integer, new_state text, message text,
                                           retry_at timestamptz)
RETURNS integer LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE bridgecore.instance i
       SET state = new_state, last_error = left(message, 1000), last_error_at = now(),
           consecutive_failures = i.consecutive_failures + 1, next_attempt_at = retry_at
     WHERE i.id = inst_id
    RETURNING i.consecutive_failures
$$;
