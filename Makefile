EXTENSION  = bridgecore
EXTVERSION = $(shell sed -n "s/^default_version = '\(.*\)'/\1/p" $(EXTENSION).control)

MODULE_big = bridgecore
OBJS = src/bridgecore.o src/ratelimit.o src/odoo_time.o src/launcher.o src/poller.o src/odoo_client.o src/decode.o src/json_scan.o src/ingest.o src/stats.o src/odoo_call.o src/xact.o src/text_util.o src/sync_token.o

DATA = $(wildcard sql/$(EXTENSION)--*.sql)
DOCS = README.md

# -Wextra minus the warnings PostgreSQL's own headers and PG_TRY macros trigger.
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-clobbered
SHLIB_LINK  = -lcurl -ljson-c

# pg_regress and pg_isolation_regress read test/sql, test/specs and
# test/expected (a link to the top-level expected/).
REGRESS      = setup input_validation api ingest cleanup security upgrade
REGRESS_OPTS = --inputdir=test --outputdir=test/results
ISOLATION      = ordering cleanup_concurrency
ISOLATION_OPTS = --inputdir=test --outputdir=test/output_iso

EXTRA_CLEAN = test/results test/output_iso

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
