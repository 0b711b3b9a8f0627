-- Odoo's text is Unicode: the extension installs only in a UTF8 database.
SELECT current_database() AS regress_db \gset
CREATE DATABASE bridgecore_latin1 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0;
\c bridgecore_latin1
\set VERBOSITY default
CREATE EXTENSION bridgecore;
SELECT count(*) AS bridgecore_objects FROM pg_namespace WHERE nspname = 'bridgecore';
\c :regress_db
DROP DATABASE bridgecore_latin1;
