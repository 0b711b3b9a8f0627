-- Upgrading from 0.1.0 through 0.2.0 and 0.3.0 to 0.4.0 keeps the data and
-- brings in each version's objects, each defined as a fresh install of the
-- current version defines it.

-- Temporary helpers, outside the extension. They name its objects only by
-- text, so DROP EXTENSION leaves them.

-- What DROP EXTENSION leaves of an install: the schema, with its privileges,
-- and the memberships among the roles granted those (roles are cluster-wide).
-- Both go, so that the next install must make them.
CREATE FUNCTION pg_temp.drop_leftovers() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    m record;
BEGIN
    FOR m IN
        WITH ext_role AS (
            SELECT a.grantee FROM pg_namespace n, aclexplode(n.nspacl) a
             WHERE n.nspname = 'bridgecore' AND a.grantee <> n.nspowner)
        SELECT r.rolname AS role, g.rolname AS member
          FROM pg_auth_members am
          JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles g ON g.oid = am.member
         WHERE am.roleid IN (SELECT grantee FROM ext_role) AND am.member IN (SELECT grantee FROM ext_role)
    LOOP
        EXECUTE format('REVOKE %I FROM %I', m.role, m.member);
    END LOOP;
    DROP SCHEMA IF EXISTS bridgecore;
END
$$;

CREATE FUNCTION pg_temp.acl(a aclitem[]) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT CASE WHEN a IS NULL THEN 'default'
                  ELSE coalesce((SELECT string_agg(x::text, ' ' ORDER BY x::text) FROM unnest(a) x), 'none') END $$;

-- Rows the install script inserts: those of a configuration table that its
-- dump condition leaves out, and every row of any other table, without the
-- columns holding the time of the install.
CREATE FUNCTION pg_temp.script_rows(OUT identity text, OUT definition text) RETURNS SETOF record
LANGUAGE plpgsql AS $$
DECLARE
    t record;
BEGIN
    FOR t IN
        SELECT c.oid::regclass AS tbl,
               coalesce(nullif(regexp_replace(u.cond, '^\s*WHERE\s+', '', 'i'), ''), 'false') AS dumped,
               ARRAY(SELECT a.attname FROM pg_attribute a
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                        AND a.atttypid IN ('timestamptz'::regtype, 'timestamp'::regtype)) AS times
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN (SELECT x.tbl, x.cond FROM pg_extension e, unnest(e.extconfig, e.extcondition) x(tbl, cond)
                      WHERE e.extname = 'bridgecore') u ON u.tbl = c.oid
         WHERE n.nspname = 'bridgecore' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
           AND (u.tbl IS NULL OR u.cond <> '')
    LOOP
        RETURN QUERY EXECUTE format(
            'SELECT %L, (to_jsonb(r) - %L::text[])::text FROM %s r WHERE NOT coalesce((%s), false)',
            t.tbl::text, t.times, t.tbl, t.dumped);
    END LOOP;
END
$$;

-- Every definition of an install, as the catalogs hold it: one row (kind,
-- identity, definition) for each function, privilege, column, constraint and
-- so on.
CREATE TEMP VIEW install_digest (kind, identity, definition) AS
WITH ext AS (SELECT e.oid, e.extversion, e.extrelocatable, e.extnamespace, e.extconfig, e.extcondition
               FROM pg_extension e WHERE e.extname = 'bridgecore'),
ns AS (SELECT n.oid, n.nspacl, n.nspowner FROM pg_namespace n WHERE n.nspname = 'bridgecore'),
member AS (SELECT d.classid, d.objid, d.objsubid FROM pg_depend d, ext
            WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'),
-- The partitions of bridgecore.event are made at run time, not by the
-- install: they are not definitions of it (checked on their own below).
rel AS (SELECT c.* FROM pg_class c, ns
         WHERE c.relnamespace = ns.oid AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'c')
           AND NOT c.relispartition),
fn AS (SELECT p.* FROM pg_proc p
        WHERE p.pronamespace = (SELECT oid FROM ns)
           OR ('pg_proc'::regclass, p.oid) IN (SELECT classid, objid FROM member)),
-- Roles the install grants to (they are cluster-wide: see below).
ext_role AS (SELECT DISTINCT r.* FROM pg_roles r, ns, aclexplode(ns.nspacl) a
              WHERE a.grantee = r.oid AND r.oid <> ns.nspowner)
-- Functions and procedures: pg_get_functiondef has the arguments and their
-- defaults, the result, language, volatility, strictness, parallel safety,
-- SECURITY DEFINER, the SET options and the body.
SELECT 'function', p.oid::regprocedure::text, pg_get_functiondef(p.oid) FROM fn p WHERE p.prokind IN ('f', 'p')
UNION ALL
SELECT 'function acl', p.oid::regprocedure::text, pg_temp.acl(p.proacl) FROM fn p
UNION ALL
-- Tables, views, sequences, composite types: kind and options, privileges.
SELECT 'relation', c.oid::regclass::text,
       format('relkind %s, persistence %s, options %s, row security %s/%s, replica identity %s, of type %s',
              c.relkind, c.relpersistence, c.reloptions, c.relrowsecurity, c.relforcerowsecurity,
              c.relreplident, c.reloftype::regtype)
  FROM rel c
UNION ALL
SELECT 'relation acl', c.oid::regclass::text, pg_temp.acl(c.relacl) FROM rel c
UNION ALL
SELECT 'view', c.oid::regclass::text, pg_get_viewdef(c.oid) FROM rel c WHERE c.relkind IN ('v', 'm')
UNION ALL
-- Columns, in order: type, NOT NULL, default, identity, generation,
-- collation, storage, options, privileges. Of the options, pg_attver is left
-- out: the server gives it a new value whenever it creates a relation.
SELECT 'column', c.oid::regclass::text || '.' || quote_ident(a.attname),
       format('#%s %s%s default %s identity %s generated %s collation %s storage %s compression %s options %s acl %s',
              row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
              format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
              pg_get_expr(ad.adbin, ad.adrelid), a.attidentity, a.attgenerated, co.collname,
              a.attstorage, a.attcompression,
              ARRAY(SELECT o FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\_attver=%'),
              pg_temp.acl(a.attacl))
  FROM rel c
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
  LEFT JOIN pg_collation co ON co.oid = a.attcollation
UNION ALL
SELECT 'constraint', coalesce(c.conrelid::regclass::text, c.contypid::regtype::text) || ' ' || quote_ident(c.conname),
       pg_get_constraintdef(c.oid)
  FROM pg_constraint c
 WHERE c.conrelid IN (SELECT oid FROM rel)
    OR c.contypid IN (SELECT t.oid FROM pg_type t WHERE t.typnamespace = (SELECT oid FROM ns))
UNION ALL
SELECT 'index', i.indexrelid::regclass::text,
       pg_get_indexdef(i.indexrelid) || CASE WHEN i.indisclustered THEN ' (clustered)' ELSE '' END
  FROM pg_index i WHERE i.indrelid IN (SELECT oid FROM rel)
UNION ALL
SELECT 'trigger', t.tgrelid::regclass::text || ' ' || quote_ident(t.tgname),
       format('%s (enabled %s)', pg_get_triggerdef(t.oid), t.tgenabled)
  FROM pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rel) AND NOT t.tgisinternal
UNION ALL
SELECT 'rule', r.ev_class::regclass::text || ' ' || quote_ident(r.rulename), pg_get_ruledef(r.oid)
  FROM pg_rewrite r WHERE r.ev_class IN (SELECT oid FROM rel) AND r.rulename <> '_RETURN'
UNION ALL
SELECT 'policy', p.polrelid::regclass::text || ' ' || quote_ident(p.polname),
       format('%s %s to %s using %s check %s', p.polcmd, CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END,
              p.polroles::regrole[], pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
  FROM pg_policy p WHERE p.polrelid IN (SELECT oid FROM rel)
UNION ALL
SELECT 'sequence', s.seqrelid::regclass::text,
       format('%s start %s increment %s min %s max %s cache %s cycle %s owned by %s',
              s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
              (SELECT format('%s.%I (%s)', d.refobjid::regclass, a.attname, d.deptype)
                 FROM pg_depend d JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                WHERE d.classid = 'pg_class'::regclass AND d.objid = s.seqrelid
                  AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
  FROM pg_sequence s WHERE s.seqrelid IN (SELECT oid FROM rel)
UNION ALL
-- Types (not the row types of tables, nor array types): enum labels in
-- their order, domains; a composite type's attributes are its columns above.
SELECT 'type', t.oid::regtype::text,
       format('type %s, labels %s, base %s, not null %s, default %s, acl %s', t.typtype,
              (SELECT array_agg(e.enumlabel ORDER BY e.enumsortorder) FROM pg_enum e WHERE e.enumtypid = t.oid),
              CASE WHEN t.typbasetype <> 0 THEN format_type(t.typbasetype, t.typtypmod) END,
              t.typnotnull, t.typdefault, pg_temp.acl(t.typacl))
  FROM pg_type t
 WHERE t.typnamespace = (SELECT oid FROM ns)
   AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
   AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
UNION ALL
SELECT 'cast', format('%s -> %s', c.castsource::regtype, c.casttarget::regtype),
       format('function %s, context %s, method %s', c.castfunc::regprocedure, c.castcontext, c.castmethod)
  FROM pg_cast c WHERE ('pg_cast'::regclass, c.oid) IN (SELECT classid, objid FROM member)
UNION ALL
SELECT 'operator', o.oid::regoperator::text,
       format('function %s, result %s, commutator %s, negator %s, restrict %s, join %s, hashes %s, merges %s',
              o.oprcode, o.oprresult::regtype, o.oprcom::regoperator, o.oprnegate::regoperator,
              o.oprrest, o.oprjoin, o.oprcanhash, o.oprcanmerge)
  FROM pg_operator o
 WHERE o.oprnamespace = (SELECT oid FROM ns) OR ('pg_operator'::regclass, o.oid) IN (SELECT classid, objid FROM member)
UNION ALL
SELECT 'event trigger', quote_ident(t.evtname),
       format('on %s, function %s, enabled %s, tags %s', t.evtevent, t.evtfoid::regprocedure, t.evtenabled, t.evttags)
  FROM pg_event_trigger t WHERE ('pg_event_trigger'::regclass, t.oid) IN (SELECT classid, objid FROM member)
UNION ALL
SELECT 'schema', 'bridgecore', 'acl ' || pg_temp.acl(ns.nspacl) FROM ns
UNION ALL
-- COMMENT ON of every object of the schema (and of the schema itself).
SELECT 'comment', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
  FROM pg_description d
 WHERE d.objoid >= 16384
   AND ((pg_identify_object(d.classoid, d.objoid, d.objsubid)).schema = 'bridgecore'
        OR (d.classoid = 'pg_namespace'::regclass AND d.objoid = (SELECT oid FROM ns))
        OR (d.classoid, d.objoid, d.objsubid) IN (SELECT classid, objid, objsubid FROM member))
UNION ALL
SELECT 'extension', 'bridgecore',
       format('version %s, relocatable %s, schema %s', ext.extversion, ext.extrelocatable, ext.extnamespace::regnamespace)
  FROM ext
UNION ALL
-- What pg_dump keeps of the configuration tables.
SELECT 'config table', u.tbl::regclass::text, u.cond
  FROM ext, unnest(ext.extconfig, ext.extcondition) u(tbl, cond)
UNION ALL
-- Every member of the extension, so that an object of a kind without a
-- definition row above still counts (the check below lists such kinds).
SELECT 'member', pg_describe_object(m.classid, m.objid, m.objsubid),
       (pg_identify_object(m.classid, m.objid, m.objsubid)).type
  FROM member m
UNION ALL
SELECT 'row', r.identity, r.definition FROM pg_temp.script_rows() r
UNION ALL
-- The roles (drop_leftovers() revokes their memberships between installs).
SELECT 'role', quote_ident(r.rolname),
       format('super %s, inherit %s, createrole %s, createdb %s, login %s, replication %s, bypassrls %s, connlimit %s',
              r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolcanlogin, r.rolreplication,
              r.rolbypassrls, r.rolconnlimit)
  FROM ext_role r
UNION ALL
SELECT 'role membership', quote_ident(g.rolname) || ' in ' || quote_ident(r.rolname),
       'admin option ' || m.admin_option
  FROM pg_auth_members m JOIN ext_role r ON r.oid = m.roleid JOIN ext_role g ON g.oid = m.member;

DROP EXTENSION bridgecore CASCADE;
SELECT pg_temp.drop_leftovers();
CREATE EXTENSION bridgecore VERSION '0.1.0';
SET bridgecore.rate_limit_sync_pull = 0;
SELECT name FROM bridgecore.add_instance('old', 'https://erp.example.com', 'prod', 'bot', 's3cret-secret-key');
SELECT bridgecore.ingest('old', '[{"id": 1, "model": "sale.order", "record_id": 1, "event": "create", "timestamp": "2025-11-16 10:00:00"},
                                 {"id": 2, "model": "sale.order", "record_id": 1, "event": "bogus", "timestamp": "2025-11-16 10:00:01"}]') ->> 'inserted' AS inserted;
SELECT r->>'new_events_count' AS pulled FROM bridgecore.sync_pull(1, 'd1', 'sales_app') r;
SELECT to_regproc('bridgecore.metrics') IS NULL AS no_metrics_in_010;

ALTER EXTENSION bridgecore UPDATE TO '0.2.0';
SELECT extversion FROM pg_extension WHERE extname = 'bridgecore';

-- The data is still there and works with the new functions.
SELECT name, cursor, events_ingested FROM bridgecore.instances;
SELECT s->>'last_event_id' AS cursor FROM bridgecore.sync_state(1, 'd1') s;
SELECT instance, odoo_id, reason, status FROM bridgecore.dead_letters;
SELECT instance, user_id, devices, active_devices, syncs FROM bridgecore.user_stats;
SELECT bridgecore.ingest('old', '[{"id": 3, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:00:02"}]') ->> 'inserted' AS inserted;
SELECT r->>'new_events_count' AS pulled FROM bridgecore.sync_pull(1, 'd1', 'sales_app') r;
SELECT instance, sync_pulls >= 1 AS counted_pull, events_ingested >= 1 AS counted_ingest FROM bridgecore.stats;
-- 0.2.0's retention records one horizon per instance.
SELECT bridgecore.cleanup('2025-11-16 10:00:01+00', 'old') ->> 'deleted' AS deleted;

ALTER EXTENSION bridgecore UPDATE TO '0.3.0';
SELECT extversion FROM pg_extension WHERE extname = 'bridgecore';
-- The 0.2.0 horizon holds for every model; ingestion and pulls go on.
SELECT i.name, p.model, p.through = i.purged_through AS same_horizon
  FROM bridgecore.purged p JOIN bridgecore.instance i ON i.id = p.instance_id;
SELECT bridgecore.ingest('old', '[{"id": 4, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:00:03"}]') ->> 'inserted' AS inserted;
SELECT r->>'new_events_count' AS pulled, r->>'resync_required' AS resync FROM bridgecore.sync_pull(1, 'd1', 'sales_app') r;
SELECT odoo_id, reason, status FROM bridgecore.dead_letters;

ALTER EXTENSION bridgecore UPDATE TO '0.4.0';
SELECT extversion FROM pg_extension WHERE extname = 'bridgecore';
-- The old table is the log's first partition, with every event, as it was
-- (its own indexes, not a member of the extension); the ids go on.
SELECT p.part, p.lo, p.hi, (SELECT count(*) FROM bridgecore.event) AS events,
       (SELECT string_agg(pg_get_indexdef(i.indexrelid), E'\n' ORDER BY 1) FROM pg_index i WHERE i.indrelid = p.part) AS indexes,
       (SELECT count(*) FROM pg_depend d WHERE d.objid = p.part AND d.deptype = 'e') AS membership,
       (SELECT relacl FROM pg_class c WHERE c.oid = p.part) AS acl,
       obj_description(p.part, 'pg_class') AS comment
  FROM bridgecore._partitions() p;
SELECT last_value, is_called FROM bridgecore.event_id_seq;
SELECT bridgecore.ingest('old', '[{"id": 5, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:00:04"}]') ->> 'inserted' AS inserted;
SELECT r->>'new_events_count' AS pulled, r->>'resync_required' AS resync FROM bridgecore.sync_pull(1, 'd1', 'sales_app') r;
SELECT id, odoo_id FROM bridgecore.event ORDER BY id;
-- A partition was made for the new ids, and the old one is retained by
-- partition like any other.
SELECT p.part, p.lo, p.hi - p.lo = current_setting('bridgecore.partition_size')::bigint AS width FROM bridgecore._partitions() p;
SELECT bridgecore.cleanup('2025-11-16 10:00:04+00') - 'message' AS cleanup;
SELECT p.model, p.through, i.purged_through FROM bridgecore.purged p JOIN bridgecore.instance i ON i.id = p.instance_id;
SELECT bridgecore.ingest('old', '[{"id": 6, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:00:05"}]') ->> 'inserted' AS inserted;
SELECT r->>'new_events_count' AS pulled, r->>'resync_required' AS resync FROM bridgecore.sync_pull(1, 'd1', 'sales_app') r;

-- A fresh install (bridgecore--0.4.0.sql, built from sql/src) and the updated
-- one must define every object alike.
-- Kinds of extension members without definition rows in install_digest (none).
SELECT DISTINCT (pg_identify_object(d.classid, d.objid, d.objsubid)).type AS uncovered_kind
  FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
 WHERE d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e' AND e.extname = 'bridgecore'
   AND (pg_identify_object(d.classid, d.objid, d.objsubid)).type NOT IN
       ('function', 'procedure', 'table', 'view', 'materialized view', 'sequence', 'foreign table',
        'composite type', 'type', 'cast', 'operator', 'event trigger', 'schema');

CREATE TEMP TABLE updated_install AS SELECT * FROM install_digest;

DROP EXTENSION bridgecore CASCADE;
SELECT pg_temp.drop_leftovers();
CREATE EXTENSION bridgecore;
SELECT extversion FROM pg_extension WHERE extname = 'bridgecore';
CREATE TEMP TABLE fresh_install AS SELECT * FROM install_digest;

-- What only one of the installs has (nothing).
SELECT 'updated only' AS install, * FROM (TABLE updated_install EXCEPT TABLE fresh_install) u
UNION ALL
SELECT 'fresh only', * FROM (TABLE fresh_install EXCEPT TABLE updated_install) f
ORDER BY kind, identity, install;

-- The same digest, over how many objects and definitions.
SELECT (SELECT md5(string_agg(format(E'%s\t%s\t%s', kind, identity, definition), E'\n'
                              ORDER BY kind, identity, definition)) FROM updated_install)
     = (SELECT md5(string_agg(format(E'%s\t%s\t%s', kind, identity, definition), E'\n'
                              ORDER BY kind, identity, definition)) FROM fresh_install) AS same_digest,
       (SELECT count(*) FROM fresh_install WHERE kind = 'member') AS objects,
       (SELECT count(*) FROM fresh_install) AS definitions;
