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
