-------------------------------------------------------------------------------
-- Statistics (shared memory; no table writes)
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore._stats_instances(
    OUT instance_id integer, OUT polls bigint, OUT failed_polls bigint,
    OUT events_ingested bigint, OUT duplicates bigint, OUT dead_letters bigint,
    OUT bytes_received bigint, OUT sync_pulls bigint, OUT events_delivered bigint,
    OUT notifications bigint, OUT errors bigint[],
    OUT poll_buckets bigint[], OUT poll_seconds_sum float8,
    OUT ingest_buckets bigint[], OUT ingest_seconds_sum float8,
    OUT events_last_minute bigint, OUT events_per_second float8, OUT since timestamptz)
RETURNS SETOF record LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_stats_instances';

CREATE FUNCTION bridgecore._stats_models(
    OUT instance_id integer, OUT model text, OUT events bigint,
    OUT buckets bigint[], OUT seconds_sum float8)
RETURNS SETOF record LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_stats_models';

CREATE FUNCTION bridgecore._stats_reset() RETURNS void LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'bridgecore_stats_reset';

CREATE FUNCTION bridgecore._stats_forget(instance_id integer) RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_stats_forget';

-- A removed instance's counters are forgotten (a later instance may get its id).
CREATE FUNCTION bridgecore._instance_removed() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM bridgecore._stats_forget(OLD.id);
    RETURN OLD;
END
$$;
CREATE TRIGGER instance_removed AFTER DELETE ON bridgecore.instance
    FOR EACH ROW EXECUTE FUNCTION bridgecore._instance_removed();

CREATE FUNCTION bridgecore._count_sync_pull(instance_id integer, delivered integer)
RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_count_sync_pull';

CREATE FUNCTION bridgecore._count_ingest(instance_id integer, inserted bigint, duplicates bigint,
                                         dead_letters bigint, notifications bigint)
RETURNS void LANGUAGE c VOLATILE STRICT
AS 'MODULE_PATHNAME', 'bridgecore_count_ingest';

-- Kinds of failed polls, in the order of _stats_instances().errors.
CREATE FUNCTION bridgecore._error_kinds() RETURNS text[] LANGUAGE sql IMMUTABLE
AS $$ SELECT '{transport,too_large,http,bad_response,rpc,access_denied,session_expired,auth_failed,store}'::text[] $$;

-- Upper bounds of the histogram buckets (seconds); the last bucket is +Inf.
CREATE FUNCTION bridgecore._bucket_bounds() RETURNS float8[] LANGUAGE sql IMMUTABLE
AS $$ SELECT '{0.005,0.01,0.025,0.05,0.1,0.25,0.5,1,2.5,5,10}'::float8[] $$;

CREATE VIEW bridgecore.stats AS
SELECT i.name AS instance, s.polls, s.failed_polls, s.events_ingested, s.duplicates,
       s.dead_letters, s.bytes_received, s.sync_pulls, s.events_delivered, s.notifications,
       coalesce((SELECT jsonb_object_agg(k, e) FROM unnest(bridgecore._error_kinds(), s.errors) AS u(k, e)
                  WHERE e > 0), '{}') AS errors,
       (SELECT sum(b) FROM unnest(s.poll_buckets) b)::bigint AS poll_count,
       s.poll_seconds_sum,
       (SELECT sum(b) FROM unnest(s.ingest_buckets) b)::bigint AS ingest_count,
       s.ingest_seconds_sum,
       round(s.events_per_second::numeric, 2) AS events_per_second,
       s.since
  FROM bridgecore._stats_instances() s
  JOIN bridgecore.instance i ON i.id = s.instance_id;
COMMENT ON VIEW bridgecore.stats IS 'Per-instance counters kept in shared memory since the server start or stats_reset().';

CREATE VIEW bridgecore.stats_errors AS
SELECT i.name AS instance, u.kind, u.count
  FROM bridgecore._stats_instances() s
  JOIN bridgecore.instance i ON i.id = s.instance_id,
       unnest(bridgecore._error_kinds(), s.errors) AS u(kind, count);
COMMENT ON VIEW bridgecore.stats_errors IS 'Failed polls per instance and kind of failure.';

CREATE VIEW bridgecore.stats_models AS
SELECT i.name AS instance, m.model, m.events,
       (SELECT sum(b) FROM unnest(m.buckets) b)::bigint AS batches,
       m.seconds_sum AS processing_seconds_sum
  FROM bridgecore._stats_models() m
  JOIN bridgecore.instance i ON i.id = m.instance_id;
COMMENT ON VIEW bridgecore.stats_models IS 'Events stored per instance and model, with processing time.';

CREATE FUNCTION bridgecore.stats_reset() RETURNS void LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$ SELECT bridgecore._stats_reset() $$;
COMMENT ON FUNCTION bridgecore.stats_reset() IS 'Zeroes the shared-memory statistics.';

-------------------------------------------------------------------------------
-- Prometheus metrics
-------------------------------------------------------------------------------
-- One metric family: HELP and TYPE lines, then its samples.
CREATE FUNCTION bridgecore._metric_family(name text, kind text, help text, samples text)
RETURNS text LANGUAGE sql IMMUTABLE
AS $$
    SELECT format(E'# HELP %s %s\n# TYPE %s %s\n', name, help, name, kind) || coalesce(samples, '')
$$;

-- The sample lines of one histogram: cumulative buckets, +Inf, sum, count.
CREATE FUNCTION bridgecore._histogram_samples(name text, labels text, buckets bigint[], seconds_sum float8)
RETURNS text LANGUAGE sql IMMUTABLE
AS $$
    SELECT string_agg(format(E'%s_bucket{%s,le="%s"} %s\n', name, labels,
                             coalesce(b.bound::text, '+Inf'), b.cumulative), '' ORDER BY b.ord)
           || format(E'%s_sum{%s} %s\n%s_count{%s} %s\n', name, labels, seconds_sum,
                     name, labels, (SELECT sum(x) FROM unnest(buckets) x))
      FROM (SELECT u.ord, (bridgecore._bucket_bounds())[u.ord] AS bound,
                   sum(u.n) OVER (ORDER BY u.ord) AS cumulative
              FROM unnest(buckets) WITH ORDINALITY AS u(n, ord)) b
$$;

CREATE FUNCTION bridgecore.metrics() RETURNS text LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
WITH inst AS (
    SELECT i.id, format('instance="%s"', i.name) AS l, i.name,
           CASE WHEN i.enabled THEN i.state ELSE 'disabled' END AS state,
           i.cursor, extract(epoch FROM now() - i.newest_event_at) AS lag,
           s.polls, s.failed_polls, s.events_ingested, s.duplicates, s.dead_letters,
           s.bytes_received, s.sync_pulls, s.events_delivered, s.notifications, s.errors,
           s.poll_buckets, s.poll_seconds_sum, s.ingest_buckets, s.ingest_seconds_sum,
           coalesce(s.events_per_second, 0) AS events_per_second,
           (SELECT count(*) FROM bridgecore.dead_letter d
             WHERE d.instance_id = i.id AND d.status IN ('pending', 'retrying')) AS dead_pending,
           (SELECT count(*) FROM bridgecore.gap g WHERE g.instance_id = i.id) AS gaps,
           (SELECT count(*) FROM bridgecore.sync_state ss
             WHERE ss.instance_id = i.id AND ss.is_active) AS devices_active
      FROM bridgecore.instance i
      LEFT JOIN bridgecore._stats_instances() s ON s.instance_id = i.id
), counter(name, help, col) AS (
    VALUES ('webhook_received_total', 'Events stored from Odoo.', 'events_ingested'),
           ('sync_pull_requests_total', 'Sync pulls served.', 'sync_pulls'),
           ('bridgecore_polls_total', 'Polls of Odoo (search_read rounds), failed ones included.', 'polls'),
           ('bridgecore_failed_polls_total', 'Polls that failed.', 'failed_polls'),
           ('bridgecore_duplicates_total', 'Odoo rows received again and skipped.', 'duplicates'),
           ('bridgecore_dead_letters_total', 'Records sent to dead_letter.', 'dead_letters'),
           ('bridgecore_bytes_received_total', 'Bytes received from Odoo (after decompression).', 'bytes_received'),
           ('bridgecore_sync_events_delivered_total', 'Events delivered by sync pulls.', 'events_delivered'),
           ('bridgecore_notifications_total', 'NOTIFYs sent on bridgecore_events.', 'notifications')
), gauge(name, help, col) AS (
    VALUES ('webhook_queue_size', 'Records waiting for attention: pending dead letters plus open gaps.', 'queue'),
           ('bridgecore_lag_seconds', 'Now minus the newest Odoo timestamp stored.', 'lag'),
           ('bridgecore_cursor', 'Highest Odoo id stored.', 'cursor'),
           ('bridgecore_dead_letters_pending', 'Dead letters pending or being retried.', 'dead_pending'),
           ('bridgecore_gaps_open', 'Odoo ids skipped and still asked for.', 'gaps'),
           ('bridgecore_devices_active', 'Active devices (sync states).', 'devices_active'),
           ('bridgecore_events_per_second', 'Events stored per second over the last minute.', 'events_per_second')
)
SELECT string_agg(family, '' ORDER BY ord)
  FROM (
    SELECT 1 AS ord, c.name AS n, bridgecore._metric_family(c.name, 'counter', c.help,
               (SELECT string_agg(format(E'%s{%s} %s\n', c.name, inst.l,
                          coalesce((to_jsonb(inst) ->> c.col)::numeric, 0)), '' ORDER BY inst.name)
                  FROM inst)) AS family
      FROM counter c
    UNION ALL
    SELECT 2, 'webhook_errors_total', bridgecore._metric_family('webhook_errors_total', 'counter',
               'Failed polls by kind of failure.',
               (SELECT string_agg(format(E'webhook_errors_total{%s,kind="%s"} %s\n', inst.l, k.kind,
                                         coalesce(inst.errors[k.ord], 0)), '' ORDER BY inst.name, k.ord)
                  FROM inst, unnest(bridgecore._error_kinds()) WITH ORDINALITY AS k(kind, ord)))
    UNION ALL
    SELECT 3, g.name, bridgecore._metric_family(g.name, 'gauge', g.help,
               (SELECT string_agg(format(E'%s{%s} %s\n', g.name, inst.l, v.value), '' ORDER BY inst.name)
                  FROM inst,
                       LATERAL (SELECT CASE g.col WHEN 'queue' THEN (inst.dead_pending + inst.gaps)::numeric
                                       ELSE (to_jsonb(inst) ->> g.col)::numeric END AS value) v
                 WHERE v.value IS NOT NULL))
      FROM gauge g
    UNION ALL
    SELECT 4, 'bridgecore_instance_state', bridgecore._metric_family('bridgecore_instance_state', 'gauge',
               'Instance state: 1 for the current one.',
               (SELECT string_agg(format(E'bridgecore_instance_state{%s,state="%s"} %s\n', inst.l, st,
                                         (inst.state = st)::int), '' ORDER BY inst.name, st)
                  FROM inst, unnest('{ok,backoff,auth_failed,disabled}'::text[]) st))
    UNION ALL
    SELECT 5, 'webhook_processing_seconds', bridgecore._metric_family('webhook_processing_seconds', 'histogram',
               'Time to decode and store a batch, counted once per model in the batch.',
               (SELECT string_agg(bridgecore._histogram_samples('webhook_processing_seconds',
                          format('instance="%s",model="%s"', i.name, m.model), m.buckets, m.seconds_sum),
                          '' ORDER BY i.name, m.model)
                  FROM bridgecore._stats_models() m JOIN bridgecore.instance i ON i.id = m.instance_id))
    UNION ALL
    SELECT 6, 'bridgecore_poll_seconds', bridgecore._metric_family('bridgecore_poll_seconds', 'histogram',
               'Duration of a poll of Odoo, storing included.',
               (SELECT string_agg(bridgecore._histogram_samples('bridgecore_poll_seconds', inst.l,
                          inst.poll_buckets, inst.poll_seconds_sum), '' ORDER BY inst.name)
                  FROM inst WHERE inst.poll_buckets IS NOT NULL))
    UNION ALL
    SELECT 7, 'bridgecore_ingest_seconds', bridgecore._metric_family('bridgecore_ingest_seconds', 'histogram',
               'Duration of the transaction that stores a batch.',
               (SELECT string_agg(bridgecore._histogram_samples('bridgecore_ingest_seconds', inst.l,
                          inst.ingest_buckets, inst.ingest_seconds_sum), '' ORDER BY inst.name)
                  FROM inst WHERE inst.ingest_buckets IS NOT NULL))
  ) f
$$;
COMMENT ON FUNCTION bridgecore.metrics() IS 'Metrics in the Prometheus text exposition format.';

-------------------------------------------------------------------------------
-- status(): one readable row per instance (try \x in psql)
-------------------------------------------------------------------------------
CREATE FUNCTION bridgecore.status()
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
COMMENT ON FUNCTION bridgecore.status() IS 'One row per instance: state, lag, rate, last error, cursor, backlog.';
