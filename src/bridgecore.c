/*
 * bridgecore.c: module entry point.
 *
 * _PG_init only defines GUCs and installs the shared-memory hooks; each
 * concern lives in its own file.
 */
#include "bridgecore.h"

#include "stats.h"

#include <curl/curl.h>

PG_MODULE_MAGIC;

void		_PG_init(void);

int			bridgecore_retention_s = 30 * 86400;
static int	bridgecore_retention_max_s = 0;
int			bridgecore_cleanup_batch_size = 10000;
int			bridgecore_partition_size = 1000000;

#ifdef BRIDGECORE_HAS_SHMEM_REQUEST_HOOK
static shmem_request_hook_type prev_shmem_request_hook = NULL;
#endif
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* Settings read by the SQL functions (cleanup, retention, partitions). */
static void
define_sql_gucs(void)
{
	DefineCustomIntVariable("bridgecore.retention",
							"Age after which events are removed by cleanup (0 = keep forever).",
							NULL, &bridgecore_retention_s, 30 * 86400, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.retention_max",
							"Age up to which a partition past bridgecore.retention waits for the active devices that have not pulled past it (0 = waits for none).",
							"Below bridgecore.retention it counts as bridgecore.retention.",
							&bridgecore_retention_max_s, 0, 0, INT_MAX,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.cleanup_batch_size",
							"Events deleted per batch by cleanup.",
							NULL, &bridgecore_cleanup_batch_size, 10000, 100, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.partition_size",
							"Local event ids per partition of bridgecore.event; retention drops whole partitions.",
							"Applies to partitions created from now on.",
							&bridgecore_partition_size, 1000000, 10, INT_MAX,
							PGC_SUSET, 0, NULL, NULL, NULL);
}

static void
bridgecore_shmem_request(void)
{
#ifdef BRIDGECORE_HAS_SHMEM_REQUEST_HOOK
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
#endif
	RequestAddinShmemSpace(add_size(add_size(add_size(add_size(RateLimitShmemSize(), LauncherShmemSize()),
													  BcStatsShmemSize()),
											 LoginShmemSize()),
									DoorbellShmemSize()));
	/*
	 * Tranche "bridgecore": lock 0: the doorbell's slots (it was the rate
	 * limiter's single lock before); lock 1: statistics.
	 * The rate limiter's partition locks are a tranche of their own,
	 * "bridgecore_rate_limit", so waits on them show under that name.
	 */
	RequestNamedLWLockTranche("bridgecore", 2);
	RateLimitRequestLocks();
}

static void
bridgecore_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	RateLimitShmemInit();
	LauncherShmemInit();
	BcStatsShmemInit();
	LoginShmemInit();
	DoorbellShmemInit();
}

void
_PG_init(void)
{
	/*
	 * pg_upgrade loads every library a cluster uses into a server running in
	 * binary-upgrade mode, not preloaded, to check that it can: be loadable
	 * there, with nothing to do (no workers, no shared memory).
	 */
	if (IsBinaryUpgrade && !process_shared_preload_libraries_in_progress)
		return;

	/*
	 * The rate limiter and the background workers need shared memory, which
	 * only a preloaded library can have.
	 */
	if (!process_shared_preload_libraries_in_progress)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("bridgecore must be loaded via shared_preload_libraries"),
				 errhint("Add bridgecore to shared_preload_libraries in postgresql.conf and restart the server.")));

	define_sql_gucs();
	RateLimitDefineGucs();
	WorkerDefineGucs();
	BcStatsDefineGucs();
	LauncherDefineGucs();
	JwtDefineGucs();
	LoginDefineGucs();
	MarkGUCPrefixReserved("bridgecore");

	/* pg_upgrade runs the server with no workers of ours. */
	if (!IsBinaryUpgrade)
	{
		LauncherRegister();
		LauncherInstallHooks();
	}

	/* Once per process, before any thread could exist. */
	if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not initialise libcurl")));

#ifdef BRIDGECORE_HAS_SHMEM_REQUEST_HOOK
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = bridgecore_shmem_request;
#else
	bridgecore_shmem_request();
#endif
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = bridgecore_shmem_startup;
}
