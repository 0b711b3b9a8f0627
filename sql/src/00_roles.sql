-- BridgeCore: Odoo change streaming and per-device smart sync.
\echo Use "CREATE EXTENSION bridgecore" to load this file. \quit

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

-------------------------------------------------------------------------------
-- Roles. Roles are cluster-wide, so they outlive DROP EXTENSION and are only
-- created when missing.
-------------------------------------------------------------------------------
DO $roles$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_app') THEN
        CREATE ROLE bridgecore_app NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_admin') THEN
        CREATE ROLE bridgecore_admin NOLOGIN;
    END IF;
    -- A read-only role for monitoring (Prometheus exporters, dashboards).
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'bridgecore_monitor') THEN
        CREATE ROLE bridgecore_monitor NOLOGIN;
    END IF;
END
$roles$;
GRANT bridgecore_app TO bridgecore_admin;
GRANT bridgecore_monitor TO bridgecore_admin;
