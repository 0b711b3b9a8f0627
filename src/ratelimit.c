/*
 * ratelimit.c: per user and device request limits, kept in shared memory.
 *
 * Each (kind, instance, user, device) key owns a fixed window: the first
 * request opens it, later ones count against the limit until it ends.  The
 * counters live in a shared hash table, so checking a limit costs no table
 * write.  When the table is full, expired windows are swept out; if none has
 * expired, the oldest window is evicted (that device gets a fresh window,
 * which errs on the side of serving it).
 */
#include "bridgecore.h"

#include "common/hashfn.h"
#include "utils/builtins.h"

int			bridgecore_rate_limit_sync_pull = 200;
int			bridgecore_rate_limit_sync_state = 100;
int			bridgecore_rate_limit_sync_reset = 10;
int			bridgecore_rate_limit_entries = 65536;

typedef enum RateLimitKind
{
	RATE_LIMIT_SYNC_PULL,
	RATE_LIMIT_SYNC_STATE,
	RATE_LIMIT_SYNC_RESET
} RateLimitKind;

typedef struct RateLimitKey
{
	Oid			database_id;
	int32		kind;
	int32		instance_id;
	int64		user_id;
	uint64		device_hash;
} RateLimitKey;

typedef struct RateLimitEntry
{
	RateLimitKey key;			/* must be first */
	TimestampTz window_start;
	int32		count;
} RateLimitEntry;

typedef struct RateLimitShared
{
	LWLock	   *lock;
} RateLimitShared;

static RateLimitShared *rate_limit_shared = NULL;
static HTAB *rate_limit_hash = NULL;

PG_FUNCTION_INFO_V1(bridgecore_rate_limit);

void
RateLimitDefineGucs(void)
{
	DefineCustomIntVariable("bridgecore.rate_limit_sync_pull",
							"Sync pulls allowed per user and device per minute (0 = no limit).",
							NULL, &bridgecore_rate_limit_sync_pull, 200, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.rate_limit_sync_state",
							"Sync state reads allowed per user and device per minute (0 = no limit).",
							NULL, &bridgecore_rate_limit_sync_state, 100, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.rate_limit_sync_reset",
							"Sync resets allowed per user and device per hour (0 = no limit).",
							NULL, &bridgecore_rate_limit_sync_reset, 10, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.rate_limit_entries",
							"Number of (user, device, kind) windows the rate limiter tracks in shared memory.",
							NULL, &bridgecore_rate_limit_entries, 65536, 1024, 16777216,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

Size
RateLimitShmemSize(void)
{
	return add_size(MAXALIGN(sizeof(RateLimitShared)),
					hash_estimate_size(bridgecore_rate_limit_entries,
									   sizeof(RateLimitEntry)));
}

void
RateLimitShmemInit(void)
{
	HASHCTL		info;
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rate_limit_shared = ShmemInitStruct("bridgecore rate limits",
										sizeof(RateLimitShared), &found);
	if (!found)
		rate_limit_shared->lock = &(GetNamedLWLockTranche("bridgecore"))->lock;

	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(RateLimitKey);
	info.entrysize = sizeof(RateLimitEntry);
	rate_limit_hash = ShmemInitHash("bridgecore rate limit windows",
									bridgecore_rate_limit_entries,
									bridgecore_rate_limit_entries,
									&info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	LWLockRelease(AddinShmemInitLock);
}

/*
 * Make room for one entry: drop every expired window, and if none had
 * expired, the one that started first.  Caller holds the lock exclusively.
 */
static void
rate_limit_make_room(TimestampTz now)
{
	HASH_SEQ_STATUS status;
	RateLimitEntry *entry;
	RateLimitEntry *oldest = NULL;
	RateLimitKey oldest_key;
	int			removed = 0;

	hash_seq_init(&status, rate_limit_hash);
	while ((entry = hash_seq_search(&status)) != NULL)
	{
		long		period_s = entry->key.kind == RATE_LIMIT_SYNC_RESET ? 3600 : 60;

		if (TimestampDifferenceExceeds(entry->window_start, now, (int) (period_s * 1000)))
		{
			hash_search(rate_limit_hash, &entry->key, HASH_REMOVE, NULL);
			removed++;
		}
		else if (oldest == NULL || entry->window_start < oldest->window_start)
			oldest = entry;
	}
	if (removed == 0 && oldest != NULL)
	{
		oldest_key = oldest->key;
		hash_search(rate_limit_hash, &oldest_key, HASH_REMOVE, NULL);
	}
}

/*
 * bridgecore._rate_limit(kind text, instance_id int, user_id bigint,
 *                        device_id text) returns void
 *
 * Counts one request and raises PT429 when the caller is over its limit.
 */
Datum
bridgecore_rate_limit(PG_FUNCTION_ARGS)
{
	char	   *kind_name;
	text	   *device;
	RateLimitKey key;
	RateLimitEntry *entry;
	RateLimitKind kind;
	int			limit;
	int			period_s;
	const char *per;
	TimestampTz now = GetCurrentTimestamp();
	bool		found;
	bool		over = false;
	long		retry_after_s = 0;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("rate limit key must not be null")));

	kind_name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	if (strcmp(kind_name, "sync_pull") == 0)
	{
		kind = RATE_LIMIT_SYNC_PULL;
		limit = bridgecore_rate_limit_sync_pull;
	}
	else if (strcmp(kind_name, "sync_state") == 0)
	{
		kind = RATE_LIMIT_SYNC_STATE;
		limit = bridgecore_rate_limit_sync_state;
	}
	else if (strcmp(kind_name, "sync_reset") == 0)
	{
		kind = RATE_LIMIT_SYNC_RESET;
		limit = bridgecore_rate_limit_sync_reset;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown rate limit kind \"%s\"", kind_name)));

	if (limit == 0 || rate_limit_hash == NULL)
		PG_RETURN_VOID();

	period_s = kind == RATE_LIMIT_SYNC_RESET ? 3600 : 60;
	per = kind == RATE_LIMIT_SYNC_RESET ? "hour" : "minute";

	device = PG_GETARG_TEXT_PP(3);
	memset(&key, 0, sizeof(key));
	key.database_id = MyDatabaseId;
	key.kind = kind;
	key.instance_id = PG_GETARG_INT32(1);
	key.user_id = PG_GETARG_INT64(2);
	key.device_hash = hash_bytes_extended((const unsigned char *) VARDATA_ANY(device),
										  VARSIZE_ANY_EXHDR(device), 0);

	LWLockAcquire(rate_limit_shared->lock, LW_EXCLUSIVE);
	entry = hash_search(rate_limit_hash, &key, HASH_ENTER_NULL, &found);
	if (entry == NULL)
	{
		rate_limit_make_room(now);
		entry = hash_search(rate_limit_hash, &key, HASH_ENTER_NULL, &found);
	}
	if (entry != NULL)
	{
		if (!found ||
			TimestampDifferenceExceeds(entry->window_start, now, period_s * 1000))
		{
			entry->window_start = now;
			entry->count = 0;
		}
		if (entry->count >= limit)
		{
			over = true;
			retry_after_s = period_s -
				(long) ((now - entry->window_start) / USECS_PER_SEC);
			if (retry_after_s < 1)
				retry_after_s = 1;
		}
		else
			entry->count++;
	}
	LWLockRelease(rate_limit_shared->lock);

	if (over)
		ereport(ERROR,
				(errcode(ERRCODE_BRIDGECORE_RATE_LIMITED),
				 errmsg("rate limit exceeded for %s: %d requests per %s",
						kind_name, limit, per),
				 errdetail("The limit applies per user and device."),
				 errhint("Retry in %ld seconds.", retry_after_s)));

	PG_RETURN_VOID();
}
