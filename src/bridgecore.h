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

/* SQLSTATE PT429: PostgREST answers it with HTTP 429 Too Many Requests. */
#define ERRCODE_BRIDGECORE_RATE_LIMITED MAKE_SQLSTATE('P', 'T', '4', '2', '9')

#define BRIDGECORE_VERSION "0.1.0"

/* ratelimit.c */
extern int	bridgecore_rate_limit_sync_pull;
extern int	bridgecore_rate_limit_sync_state;
extern int	bridgecore_rate_limit_sync_reset;
extern int	bridgecore_rate_limit_entries;
extern void RateLimitDefineGucs(void);
extern Size RateLimitShmemSize(void);
extern void RateLimitShmemInit(void);

/* odoo_time.c */
extern bool parse_odoo_timestamp(const char *s, size_t len, TimestampTz *result);

#endif							/* BRIDGECORE_H */
