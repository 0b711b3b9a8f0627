/*
 * launcher.c: the "bridgecore launcher" background worker.
 *
 * Started by the postmaster (shared_preload_libraries), connected to
 * bridgecore.database.  It keeps the "bridgecore poller" workers running:
 * at most bridgecore.pollers of them, poller k of n running the enabled
 * instances whose id is k modulo n (poller.c).  It starts those that have
 * instances to run, restarts those that died, stops those left without
 * instances, and tells the running ones (a generation counter and their
 * latches) to read their instances again whenever it is woken: admin
 * functions wake it when their transaction commits (bridgecore._wake_poller),
 * and the pollers it started wake it when they exit.  A changed
 * bridgecore.pollers restarts every poller.  Until CREATE EXTENSION runs it
 * does nothing, quietly.
 */
#include "bridgecore.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/objectaccess.h"
#include "catalog/pg_extension.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

/* A poller is not restarted sooner than this after it last started. */
#define RESTART_DELAY_MS 1000

int			bridgecore_pollers = 4;
int			bridgecore_maintenance_interval_s = 60;
int			bridgecore_device_idle_timeout_s = 30 * 86400;

typedef struct LauncherShared
{
	/* Proc number of the running launcher, plus one; 0 when none runs. */
	pg_atomic_uint32 launcher_procno;
	/* Committed transactions that dropped an extension (any: it is rare). */
	pg_atomic_uint64 extension_drops;
	/* Moved each time the pollers should read their instances again. */
	pg_atomic_uint32 generation;
} LauncherShared;

typedef struct PollerSlot
{
	int32		index;			/* poller index of count */
	int32		count;
	TimestampTz started_at;
	BackgroundWorkerHandle *handle;
} PollerSlot;

static LauncherShared *launcher_shared = NULL;
static bool wake_registered = false;
static bool wake_pending = false;
static bool drop_pending = false;
static object_access_hook_type prev_object_access_hook = NULL;

PG_FUNCTION_INFO_V1(bridgecore_wake_poller);

Size
LauncherShmemSize(void)
{
	return MAXALIGN(sizeof(LauncherShared));
}

void
LauncherShmemInit(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	launcher_shared = ShmemInitStruct("bridgecore launcher", sizeof(LauncherShared), &found);
	if (!found)
	{
		pg_atomic_init_u32(&launcher_shared->launcher_procno, 0);
		pg_atomic_init_u64(&launcher_shared->extension_drops, 0);
		pg_atomic_init_u32(&launcher_shared->generation, 0);
	}
	LWLockRelease(AddinShmemInitLock);
}

void
LauncherDefineGucs(void)
{
	DefineCustomIntVariable("bridgecore.pollers",
							"Most poller processes; each runs many instances, its HTTP calls all at once.",
							"Poller k of n runs the enabled instances whose id is k modulo n. A change restarts every poller.",
							&bridgecore_pollers, 4, 1, 1024,
							PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.maintenance_interval",
							"How often the launcher applies bridgecore.retention and deactivates idle devices (0 = never).",
							NULL, &bridgecore_maintenance_interval_s, 60, 0, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.device_idle_timeout",
							"Devices that have not synced for this long are marked inactive (0 = never).",
							NULL, &bridgecore_device_idle_timeout_s, 30 * 86400, 0, INT_MAX,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
}

void
LauncherRegister(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "bridgecore");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bridgecore_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "bridgecore launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "bridgecore launcher");
	RegisterBackgroundWorker(&worker);
}

static void
wake_launcher(void)
{
	uint32		procno;

	if (launcher_shared == NULL)
		return;
	procno = pg_atomic_read_u32(&launcher_shared->launcher_procno);
	if (procno > 0)
		SetLatch(&GetPGProcByNumber(procno - 1)->procLatch);
}

/*
 * Registered once per process: a callback cannot safely unregister itself
 * while the list of callbacks is being walked.  wake_pending says whether
 * the transaction that ends asked for a wake-up.
 */
static void
wake_at_commit(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (drop_pending && launcher_shared != NULL)
				pg_atomic_fetch_add_u64(&launcher_shared->extension_drops, 1);
			if (wake_pending || drop_pending)
				wake_launcher();
			wake_pending = drop_pending = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			/* a prepared drop commits elsewhere: pollers find it by looking */
			wake_pending = drop_pending = false;
			break;
		default:
			break;
	}
}

/*
 * bridgecore._wake_poller() returns void: wake the launcher when the current
 * transaction commits; a rollback wakes nobody.
 */
static void
register_wake_at_commit(void)
{
	if (!wake_registered)
	{
		RegisterXactCallback(wake_at_commit, NULL);
		wake_registered = true;
	}
}

Datum
bridgecore_wake_poller(PG_FUNCTION_ARGS)
{
	register_wake_at_commit();
	wake_pending = true;
	PG_RETURN_VOID();
}

/*
 * Every DROP EXTENSION (direct or by cascade) passes here in the dropping
 * backend; at its commit the drop counter moves, so waiting pollers need
 * not open a transaction to find out whether theirs is gone.
 */
static void
note_extension_drop(ObjectAccessType access, Oid classId, Oid objectId,
					int subId, void *arg)
{
	if (prev_object_access_hook)
		prev_object_access_hook(access, classId, objectId, subId, arg);
	if (access == OAT_DROP && classId == ExtensionRelationId)
	{
		register_wake_at_commit();
		drop_pending = true;
	}
}

void
LauncherInstallHooks(void)
{
	prev_object_access_hook = object_access_hook;
	object_access_hook = note_extension_drop;
}

uint64
launcher_extension_drops(void)
{
	return launcher_shared ? pg_atomic_read_u64(&launcher_shared->extension_drops) : 0;
}

uint32
launcher_generation(void)
{
	return launcher_shared ? pg_atomic_read_u32(&launcher_shared->generation) : 0;
}

static void
clear_launcher_procno(int code, Datum arg)
{
	pg_atomic_write_u32(&launcher_shared->launcher_procno, 0);
}

/*
 * Reads which pollers have enabled instances to run (the distinct values of
 * id modulo count), or none when the extension is not installed (or is
 * being created or dropped), into *wanted_out (bool[count], the caller's
 * memory).  Runs in its own short transaction.  Returns false when the read
 * failed (say, DROP EXTENSION committed between the catalog check and the
 * query): the caller then keeps the pollers as they are and tries again
 * shortly.
 */
static bool
read_wanted_pollers(int32 count, bool *wanted)
{
	MemoryContext caller = CurrentMemoryContext;
	volatile bool ok = true;

	memset(wanted, 0, sizeof(bool) * count);
	PG_TRY();
	{
		bc_begin_work("bridgecore launcher: reading instances");
		if (OidIsValid(get_extension_oid("bridgecore", true)) &&
			OidIsValid(get_relname_relid("instance", get_namespace_oid("bridgecore", true))))
		{
			Oid			argtype = INT4OID;
			Datum		arg = Int32GetDatum(count);

			if (SPI_execute_with_args("SELECT DISTINCT id % $1 FROM bridgecore.instance WHERE enabled",
									  1, &argtype, &arg, NULL, true, 0) == SPI_OK_SELECT)
			{
				for (uint64 i = 0; i < SPI_processed; i++)
				{
					bool		isnull;
					int32		k = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
																SPI_tuptable->tupdesc, 1, &isnull));

					if (k >= 0 && k < count)
						wanted[k] = true;
				}
			}
		}
		bc_end_work();
	}
	PG_CATCH();
	{
		ErrorData  *edata = bc_abort_work(caller);

		ereport(LOG,
				(errmsg("bridgecore launcher could not read the instances: %s", edata->message),
				 errhint("It tries again in a second; pollers keep running meanwhile.")));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

static bool
start_poller(PollerSlot *slot, int32 index, int32 count)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext old;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;	/* the launcher restarts it */
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "bridgecore");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "bridgecore_poller_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "bridgecore poller %d of %d", index + 1, count);
	snprintf(worker.bgw_type, BGW_MAXLEN, "bridgecore poller");
	worker.bgw_main_arg = Int32GetDatum(index);
	memcpy(worker.bgw_extra, &count, sizeof(int32));
	worker.bgw_notify_pid = MyProcPid;

	old = MemoryContextSwitchTo(TopMemoryContext);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		MemoryContextSwitchTo(old);
		ereport(WARNING,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("bridgecore could not start poller %d of %d", index + 1, count),
				 errhint("Raise max_worker_processes: BridgeCore needs up to bridgecore.pollers background workers plus its launcher; or lower bridgecore.pollers.")));
		return false;
	}
	MemoryContextSwitchTo(old);
	slot->index = index;
	slot->count = count;
	slot->started_at = GetCurrentTimestamp();
	slot->handle = handle;
	return true;
}

/* Tells the running pollers to read their instances again. */
static void
tell_pollers(PollerSlot *slots, int nslots)
{
	pg_atomic_fetch_add_u32(&launcher_shared->generation, 1);
	for (int i = 0; i < nslots; i++)
	{
		pid_t		pid;
		PGPROC	   *proc;

		if (GetBackgroundWorkerPid(slots[i].handle, &pid) != BGWH_STARTED)
			continue;
		proc = BackendPidGetProc(pid);
		if (proc != NULL)
			SetLatch(&proc->procLatch);
	}
}

/*
 * Makes the running pollers match the instances.  Returns how long to
 * sleep before a pending restart is due, or -1 to sleep until woken.
 */
static long
reconcile(PollerSlot **slots, int *nslots)
{
	int32		count = bridgecore_pollers;
	bool	   *wanted = palloc(sizeof(bool) * count);
	TimestampTz now = GetCurrentTimestamp();
	long		timeout = -1;
	int			kept = 0;

	if (!read_wanted_pollers(count, wanted))
		return 1000;

	/* Drop stopped pollers; stop those not wanted or of another count. */
	for (int i = 0; i < *nslots; i++)
	{
		PollerSlot *slot = &(*slots)[i];
		pid_t		pid;
		bool		still_wanted = slot->count == count && wanted[slot->index];

		if (GetBackgroundWorkerPid(slot->handle, &pid) == BGWH_STOPPED)
		{
			/* Keep a recently started slot a moment, to pace restarts. */
			if (still_wanted &&
				!TimestampDifferenceExceeds(slot->started_at, now, RESTART_DELAY_MS))
			{
				long		wait_ms = RESTART_DELAY_MS -
					(long) ((now - slot->started_at) / 1000);

				timeout = (timeout < 0) ? wait_ms : Min(timeout, wait_ms);
				(*slots)[kept++] = *slot;
				continue;
			}
			pfree(slot->handle);
			continue;
		}
		if (!still_wanted)
			TerminateBackgroundWorker(slot->handle);	/* reaped once stopped */
		(*slots)[kept++] = *slot;
	}
	*nslots = kept;

	/*
	 * After a change of bridgecore.pollers, the new ones start once the old
	 * ones are gone (their exits wake the launcher): side by side they would
	 * need twice the worker slots, and could only wait for each other's
	 * instance locks anyway.
	 */
	for (int i = 0; i < *nslots; i++)
		if ((*slots)[i].count != count)
		{
			tell_pollers(*slots, *nslots);
			return (timeout < 0) ? 1000 : Min(timeout, 1000);
		}

	/* Start the wanted pollers that do not run. */
	for (int32 k = 0; k < count; k++)
	{
		bool		running = false;

		if (!wanted[k])
			continue;
		for (int i = 0; i < *nslots; i++)
			if ((*slots)[i].count == count && (*slots)[i].index == k)
				running = true;
		if (running)
			continue;
		*slots = repalloc(*slots, sizeof(PollerSlot) * (*nslots + 1));
		if (start_poller(&(*slots)[*nslots], k, count))
			(*nslots)++;
		else
			timeout = (timeout < 0) ? 5000 : Min(timeout, 5000);
	}
	tell_pollers(*slots, *nslots);
	return timeout;
}

/*
 * Pollers left by a previous launcher (one that was terminated) would run
 * beside the new ones with stale settings: stop them.
 */
static void
stop_orphan_pollers(void)
{
	bc_begin_work("bridgecore launcher: stopping orphan pollers");
	SPI_execute("SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity"
				" WHERE backend_type = 'bridgecore poller' AND datname = pg_catalog.current_database()",
				false, 0);
	bc_end_work();
}

/*
 * One maintenance step in its own short transaction, if the installed
 * extension has it (an older version does not).  Returns the event ids it
 * removed (those of a dropped partition; before 0.4.0, the events it
 * deleted), or -1 when there is nothing to run.
 */
static int64
maintenance_step(void)
{
	int64		deleted = -1;

	bc_begin_work("bridgecore launcher: retention and device housekeeping");
	if (OidIsValid(get_extension_oid("bridgecore", true)) &&
		SPI_execute("SELECT pg_catalog.to_regproc('bridgecore._maintenance_step') IS NOT NULL",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) &&
			SPI_execute("SELECT bridgecore._maintenance_step()", false, 1) == SPI_OK_SELECT &&
			SPI_processed == 1)
			deleted = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	bc_end_work();
	return deleted;
}

/*
 * Retention one partition (before 0.4.0, one bounded batch) per step, each
 * committed on its own, so sync pulls and ingestion are held up for a drop
 * at most; an error is logged and tried again next time.
 */
static void
run_maintenance(void)
{
	MemoryContext caller = CurrentMemoryContext;

	PG_TRY();
	{
		int64		deleted;
		int64		total = 0;

		do
		{
			CHECK_FOR_INTERRUPTS();
			deleted = maintenance_step();
			total += Max(deleted, 0);
		} while (deleted > 0);
		if (total > 0)
			ereport(LOG, (errmsg("bridgecore retention removed " INT64_FORMAT " event ids", total)));
	}
	PG_CATCH();
	{
		ErrorData  *edata = bc_abort_work(caller);

		ereport(LOG,
				(errcode(edata->sqlerrcode),
				 errmsg("bridgecore maintenance failed: %s", edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0,
				 errhint("It is tried again at the next maintenance interval.")));
		FreeErrorData(edata);
	}
	PG_END_TRY();
}

void
bridgecore_launcher_main(Datum arg)
{
	PollerSlot *slots;
	int			nslots = 0;
	TimestampTz last_maintenance = 0;
	MemoryContext loop_context;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(bridgecore_database, NULL, 0);
	bc_pin_worker_session();

	/*
	 * Odoo's text is Unicode and is stored as it comes: another database
	 * encoding would store bytes that do not mean what they say.  The
	 * install script refuses such a database; this covers one that had an
	 * older version.  Exit code 0: not restarted until the server is.
	 */
	if (GetDatabaseEncoding() != PG_UTF8)
	{
		ereport(WARNING,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("bridgecore workers need a UTF8 database, and database \"%s\" is %s: no instance is polled",
						bridgecore_database, GetDatabaseEncodingName()),
				 errhint("Set bridgecore.database to a database created with ENCODING 'UTF8' and restart the server.")));
		proc_exit(0);
	}

	pg_atomic_write_u32(&launcher_shared->launcher_procno, BRIDGECORE_MY_PROC_NUMBER + 1);
	before_shmem_exit(clear_launcher_procno, 0);

	slots = MemoryContextAllocZero(TopMemoryContext, sizeof(PollerSlot));
	/* Everything one wake allocates goes here, and is freed at its end. */
	loop_context = AllocSetContextCreate(TopMemoryContext, "bridgecore launcher loop",
										 ALLOCSET_DEFAULT_SIZES);
	stop_orphan_pollers();

	for (;;)
	{
		long		timeout;
		TimestampTz now;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		timeout = reconcile(&slots, &nslots);

		/* Due an interval after the last run: a reloaded interval applies at once. */
		now = GetCurrentTimestamp();
		if (bridgecore_maintenance_interval_s > 0)
		{
			long		interval_ms = bridgecore_maintenance_interval_s * 1000L;
			long		until_due;

			if (now >= TimestampTzPlusMilliseconds(last_maintenance, interval_ms))
			{
				run_maintenance();
				last_maintenance = now = GetCurrentTimestamp();
			}
			until_due = (long) ((TimestampTzPlusMilliseconds(last_maintenance, interval_ms) - now) / 1000) + 1;
			timeout = (timeout < 0) ? until_due : Min(timeout, until_due);
		}
		pgstat_report_stat(true);

		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (timeout >= 0 ? WL_TIMEOUT : 0),
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
