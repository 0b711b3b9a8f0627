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
 * In a PG_CATCH of a worker: rolls back the transaction the error
 * interrupted and returns the error's message, allocated in context.
 */
char *
bc_abort_work(MemoryContext context)
{
	ErrorData  *edata;
	char	   *message;

	MemoryContextSwitchTo(context);
	edata = CopyErrorData();
	FlushErrorState();
	AbortCurrentTransaction();
	message = pstrdup(edata->message);
	FreeErrorData(edata);
	pgstat_report_activity(STATE_IDLE, NULL);
	return message;
}
