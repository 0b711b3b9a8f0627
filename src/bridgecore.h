/*
 * bridgecore.h: shared declarations of the BridgeCore module.
 *
 * Every PostgreSQL include lives here, so the C files compile the same way
 * with -Wall -Wextra -Werror, and version differences are handled in one
 * place.
 */
#ifndef BRIDGECORE_H
#define BRIDGECORE_H

#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

/*
 * fmgrprotos.h declares the SQL function json_object(), which clashes with
 * json-c's json_object type: include it here, renamed, before json-c.
 */
#define json_object pg_json_object_sqlfn
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#undef json_object

#if PG_VERSION_NUM < 130000
#error "BridgeCore needs PostgreSQL 13 or later"
#endif

/* PostgreSQL 15 added shmem_request_hook; before it, requests go in _PG_init. */
#if PG_VERSION_NUM >= 150000
#define BRIDGECORE_HAS_SHMEM_REQUEST_HOOK 1
#endif

/* PostgreSQL 15 renamed EmitWarningsOnPlaceholders. */
#if PG_VERSION_NUM < 150000
#define MarkGUCPrefixReserved(prefix) EmitWarningsOnPlaceholders(prefix)
#endif

/*
 * PostgreSQL 14 added message_level_is_interesting().  Before it, its test
 * for a level below LOG (the DEBUG levels, the only ones asked about here) is
 * written out as errstart() makes it: the server log takes the message at
 * log_min_messages or lower, a client past authentication at
 * client_min_messages or lower.
 */
#if PG_VERSION_NUM < 140000
#include "postmaster/postmaster.h"
#include "tcop/tcopprot.h"

static inline bool
message_level_is_interesting(int elevel)
{
	Assert(elevel < LOG);
	return elevel >= log_min_messages ||
		(whereToSendOutput == DestRemote && !ClientAuthInProgress &&
		 elevel >= client_min_messages);
}
#endif

/* SQLSTATE PT429: PostgREST answers it with HTTP 429 Too Many Requests. */
#define ERRCODE_BRIDGECORE_RATE_LIMITED MAKE_SQLSTATE('P', 'T', '4', '2', '9')
/* SQLSTATE PT401: PostgREST answers it with HTTP 401 Unauthorized. */
#define ERRCODE_BRIDGECORE_UNAUTHORIZED MAKE_SQLSTATE('P', 'T', '4', '0', '1')

#define BRIDGECORE_VERSION "0.4.0"

/* A uniform random number in [0, 1): pg_prng from PostgreSQL 15 on. */
#if PG_VERSION_NUM >= 150000
#include "common/pg_prng.h"
#define bc_random_fraction() pg_prng_double(&pg_global_prng_state)
#else
#define bc_random_fraction() ((double) random() / ((double) MAX_RANDOM_VALUE + 1))
#endif

/* PostgreSQL 17 replaced MyProc->pgprocno by MyProcNumber. */
#if PG_VERSION_NUM >= 170000
#define BRIDGECORE_MY_PROC_NUMBER MyProcNumber
#else
#define BRIDGECORE_MY_PROC_NUMBER (MyProc->pgprocno)
#endif

/* ratelimit.c */
extern int	bridgecore_rate_limit_sync_pull;
extern int	bridgecore_rate_limit_sync_state;
extern int	bridgecore_rate_limit_sync_reset;
extern int	bridgecore_rate_limit_entries;
extern int	bridgecore_rate_limit_per_user_factor;
extern int	bridgecore_rate_limit_new_devices;
extern int	bridgecore_rate_limit_login;
extern void RateLimitDefineGucs(void);
extern Size RateLimitShmemSize(void);
extern void RateLimitRequestLocks(void);
extern void RateLimitShmemInit(void);

/* poller.c, launcher.c: the background workers */
extern char *bridgecore_database;
extern int	bridgecore_gap_window_s;
extern int	bridgecore_connect_timeout_ms;
extern int	bridgecore_request_timeout_ms;
extern int	bridgecore_max_response_kb;
extern int	bridgecore_max_backoff_ms;
extern void WorkerDefineGucs(void);
extern int	bridgecore_maintenance_interval_s;
extern int	bridgecore_device_idle_timeout_s;
extern void LauncherDefineGucs(void);
extern void LauncherRegister(void);
extern Size LauncherShmemSize(void);
extern void LauncherShmemInit(void);
extern void LauncherInstallHooks(void);
extern uint64 launcher_extension_drops(void);
extern uint32 launcher_generation(void);
extern int	bridgecore_pollers;
extern PGDLLEXPORT void bridgecore_launcher_main(Datum arg);
extern PGDLLEXPORT void bridgecore_poller_main(Datum arg);

/* doorbell.c: rings that wake a poller at once */
extern Size DoorbellShmemSize(void);
extern void DoorbellShmemInit(void);
typedef struct DoorbellSlot DoorbellSlot;
extern DoorbellSlot *doorbell_attach(int32 instance_id);
extern void doorbell_detach(DoorbellSlot *slot);
extern bool doorbell_rung(DoorbellSlot *slot);
extern bool doorbell_take(DoorbellSlot *slot);

/* xact.c: the workers' short transactions */
extern void bc_begin_work(const char *activity);
extern void bc_end_work(void);
extern ErrorData *bc_abort_work(MemoryContext context);
extern void bc_pin_worker_session(void);
/* a plan prepared once per process and kept (SPIPlanPtr) */
extern struct _SPI_plan *bc_prepare_kept(const char *sql, int nargs, Oid *argtypes);
extern struct _SPI_plan *bc_prepare_kept_opts(const char *sql, int nargs, Oid *argtypes,
											  int cursor_options);

/* text_util.c: Odoo text made valid UTF-8, cut at characters, secret masked */
extern int	bc_utf8_char_length(const unsigned char *s, size_t len);
extern void bc_make_valid_utf8(char *s);
extern size_t bc_utf8_clip_length(const char *s, size_t maxbytes);
extern char *bc_scrubbed_copy(const char *s, const char *secret);
extern void bc_copy_message(char *dst, size_t size, const char *src, const char *secret);

/* jwt.c, login.c: app logins and their tokens */
extern char *bridgecore_jwt_secret;
extern int	bridgecore_jwt_lifetime_s;
extern int	bridgecore_jwt_refresh_limit_s;
extern void JwtDefineGucs(void);
extern int	bc_unauthorized_errcode(int sql_errcode);
extern void LoginDefineGucs(void);
extern Size LoginShmemSize(void);
extern void LoginShmemInit(void);

/* odoo_time.c */
extern bool parse_odoo_timestamp(const char *s, size_t len, TimestampTz *result);

#endif							/* BRIDGECORE_H */
