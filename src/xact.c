/*
 * xact.c: the short transactions of the background workers.
 *
 * Every unit of work (read the instances, store a batch, record a failure,
 * a retention step) runs in a transaction of its own with SPI and a fresh
 * snapshot, reported in pg_stat_activity, and followed by
 * pgstat_report_stat so autovacuum sees what the workers wrote.
 */
#include "bridgecore.h"

#include "access/xact.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

void
bc_begin_work(const char *activity)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, activity);
}

void
bc_end_work(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

/*
 * In a PG_CATCH of a worker: copies the error (message, SQLSTATE, detail)
 * into context while it is still intact, rolls back the transaction it
 * interrupted, and returns the copy, which the caller frees with
 * FreeErrorData.  CurrentMemoryContext is context afterwards.
 */
ErrorData *
bc_abort_work(MemoryContext context)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(context);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	MemoryContextSwitchTo(context);
	pgstat_report_activity(STATE_IDLE, NULL);
	return edata;
}

/*
 * Every worker session: a search_path of pg_catalog only, whatever the
 * database's or the role's settings say.  The workers run as the bootstrap
 * superuser, so an unqualified name resolved through a schema that others
 * can create in (public, or one an ALTER DATABASE ... SET search_path
 * names) would run their code as superuser.  Session level, so reloads and
 * ALTER DATABASE/ROLE settings (lower sources) never replace it, while
 * functions' own SET search_path clauses still apply inside them.
 */
void
bc_pin_worker_session(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_SESSION);
}

/*
 * A plan prepared once per process and kept across transactions (the SQL
 * is the extension's own, so failing to prepare it is a bug).
 */
SPIPlanPtr
bc_prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	return bc_prepare_kept_opts(sql, nargs, argtypes, 0);
}

/*
 * bc_prepare_kept() with cursor options: CURSOR_OPT_GENERIC_PLAN for a
 * statement whose plan does not depend on its parameters' values, so that
 * each execution skips planning (the plan cache would otherwise make a
 * custom plan for the first five executions and whenever it judges one
 * cheaper).
 */
SPIPlanPtr
bc_prepare_kept_opts(const char *sql, int nargs, Oid *argtypes, int cursor_options)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, argtypes, cursor_options);

	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}
