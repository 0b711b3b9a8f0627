-------------------------------------------------------------------------------
-- Privileges: nothing to PUBLIC; apps sync and query; monitoring reads the
-- statistics; admins do everything.
-------------------------------------------------------------------------------
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA bridgecore FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA bridgecore FROM PUBLIC;
GRANT USAGE ON SCHEMA bridgecore TO bridgecore_app, bridgecore_admin, bridgecore_monitor;

GRANT EXECUTE ON FUNCTION
    bridgecore.sync_pull(bigint, text, text, integer, text[], text, text, jsonb, text),
    bridgecore.sync_state(bigint, text, text),
    bridgecore.sync_reset(bigint, text, text),
    bridgecore.sync_reset_all(bigint, text),
    bridgecore.events(text, bigint, text, timestamptz, integer, integer, text, text, text),
    bridgecore.check_updates(timestamptz, integer, text),
    bridgecore.sync_scope(text, text)
    TO bridgecore_app;

GRANT EXECUTE ON FUNCTION bridgecore.metrics() TO bridgecore_monitor;

-- A router's connections (65_shards.sql).
GRANT EXECUTE ON FUNCTION bridgecore._routed_call(text, jsonb, text, jsonb), bridgecore._shard_step(text, jsonb)
                          TO bridgecore_router;
GRANT SELECT ON bridgecore.stats, bridgecore.stats_errors, bridgecore.stats_models TO bridgecore_monitor;
-- The views read the counters through these (functions run as the caller).
GRANT EXECUTE ON FUNCTION bridgecore._stats_instances(), bridgecore._stats_models(),
                          bridgecore._error_kinds(), bridgecore._last_success(integer)
                          TO bridgecore_monitor;

GRANT EXECUTE ON FUNCTION
    bridgecore.ingest(text, json),
    bridgecore.cleanup(timestamptz, text),
    bridgecore.add_instance(text, text, text, text, text, text, interval, integer, boolean, boolean),
    bridgecore.alter_instance(text, text, text, text, text, text, interval, integer, boolean, boolean, text, text),
    bridgecore.remove_instance(text),
    bridgecore.set_app_type(text, text[]),
    bridgecore.stats_reset(),
    bridgecore.discover_models(text),
    bridgecore.initialize_audit(text, boolean, boolean),
    bridgecore.retry_dead_letter(bigint),
    bridgecore.retry_dead_letters(text),
    bridgecore.ignore_dead_letter(bigint, text),
    bridgecore.deactivate_idle_devices(interval, text),
    bridgecore.status(),
    bridgecore.partitions()
    TO bridgecore_admin;

GRANT SELECT ON bridgecore.instances, bridgecore.event, bridgecore.sync_state,
                bridgecore.app_type, bridgecore.dead_letter, bridgecore.gap,
                bridgecore.odoo_model, bridgecore.purged, bridgecore.partition_summary, bridgecore.moved_position, bridgecore.moving_out,
                bridgecore.dead_letters,
                bridgecore.devices, bridgecore.user_stats TO bridgecore_admin;
