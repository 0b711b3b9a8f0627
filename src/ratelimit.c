/*
 * ratelimit.c: per device and per user request limits, kept in shared memory.
 *
 * Windows.  Each limited function (kind) has two kinds of fixed window:
 *
 *   - a device window per (kind, instance, user, device): the first request
 *     opens it, later ones count against bridgecore.rate_limit_<kind> until
 *     it ends (one minute, one hour for sync_reset);
 *   - a user window per (kind, instance, user), over all of the user's
 *     devices: it counts the same requests against the per-user limit
 *     (bridgecore.rate_limit_per_user_factor times the per-device limit),
 *     and counts the device windows the user opens per hour against
 *     bridgecore.rate_limit_new_devices.
 *
 * A device is "new" when no slot of the table holds a window of it, live or
 * ended: a device that keeps coming back reuses its slot and is not new
 * again.  Only when its slot was taken over for another window (the table is
 * under pressure) does it count as new once more.  Rotating device ids
 * therefore gains nothing: every request counts in the user window whatever
 * the device id, and each rotation costs one of the user's new devices.
 *
 * A request is counted only when every window lets it through; a refused one
 * changes nothing.
 *
 * Table.  A fixed array of bridgecore.rate_limit_entries slots in shared
 * memory, split into RL_PARTITIONS partitions of equal size, each guarded by
 * its own LWLock (like the lock manager's partitions).  A key's 64-bit hash
 * (seeded with a random value chosen at server start, so clients cannot aim
 * keys at a chosen slot) picks its partition and its home slot there; the key
 * lives in one of the RL_PROBE slots from its home on (open addressing,
 * wrapping within the partition).  Slots are never emptied: a window that
 * ended stays until its slot is needed.
 *
 * Bound.  A call takes at most two partition locks, exclusively and in
 * ascending order (one when both keys fall in the same partition), and
 * examines at most 4 * RL_PROBE = 32 slots: a lookup and, when missing, a
 * placement for each of the two keys.  Nothing on the request path scans the
 * table, so the cost per call does not depend on the table's size or on how
 * full it is.
 *
 * Full table.  A window that is not found is placed in the first empty slot
 * of its probe range, else over a window that has ended, else:
 *
 *   - a device window takes over the live device window that started first
 *     (that device gets a fresh device window; its user window still limits
 *     it).  It never takes over a live user window: if all RL_PROBE slots
 *     hold live user windows, the device is not tracked for this request,
 *     which then counts in the user window only, and as a new device;
 *   - a user window takes over the live device window that started first, or
 *     if all RL_PROBE slots hold live user windows, the one that started
 *     first.  Only then can a user's counts start over, and only the arrival
 *     of other users' windows, not of devices, can cause it.
 *
 * A user window counts as live while its request window runs or while it
 * counts new devices (an hour from the first one).
 */
#include "bridgecore.h"

#include "common/hashfn.h"
#include "utils/builtins.h"

int			bridgecore_rate_limit_sync_pull = 200;
int			bridgecore_rate_limit_sync_state = 100;
int			bridgecore_rate_limit_sync_reset = 10;
int			bridgecore_rate_limit_entries = 65536;
int			bridgecore_rate_limit_per_user_factor = 10;
int			bridgecore_rate_limit_new_devices = 20;
int			bridgecore_rate_limit_login = 10;
int			bridgecore_rate_limit_push_key = 10;

/* Partitions of the table, each with its own lock; a power of two. */
#define RL_PARTITIONS 16
/* Slots a key may occupy, from its home slot on; at most the partition size. */
#define RL_PROBE 8
/* The window in which new devices are counted. */
#define RL_NEW_DEVICES_PERIOD_S 3600

StaticAssertDecl((RL_PARTITIONS & (RL_PARTITIONS - 1)) == 0,
				 "RL_PARTITIONS must be a power of two");
StaticAssertDecl(RL_PROBE * RL_PARTITIONS <= 1024,
				 "the smallest table (1024 entries) must hold a probe range per partition");

typedef enum RateLimitKind
{
	RATE_LIMIT_SYNC_PULL = 1,
	RATE_LIMIT_SYNC_STATE,
	RATE_LIMIT_SYNC_RESET,
	RATE_LIMIT_LOGIN,			/* per (instance, username): no user window */
	RATE_LIMIT_PUSH_KEY			/* refused push keys per client; user window: all clients */
} RateLimitKind;

typedef enum RateLimitScope
{
	RL_SCOPE_EMPTY = 0,			/* a slot never used */
	RL_SCOPE_DEVICE,
	RL_SCOPE_USER
} RateLimitScope;

/* Compared with memcmp: always built from zeroed memory, with no padding. */
typedef struct RateLimitKey
{
	Oid			database_id;
	int16		kind;			/* RateLimitKind */
	int16		scope;			/* RateLimitScope */
	int32		instance_id;
	int32		unused;			/* zero */
	int64		user_id;
	uint64		device_hash;	/* 0 in user windows */
} RateLimitKey;

typedef struct RateLimitSlot
{
	RateLimitKey key;
	TimestampTz window_start;	/* requests counted from here on */
	int32		count;
	int32		new_devices;	/* user windows: devices counted from... */
	TimestampTz devices_start;	/* ... here on, for an hour */
} RateLimitSlot;

typedef struct RateLimitShared
{
	LWLockPadded *locks;		/* RL_PARTITIONS, tranche "bridgecore_rate_limit" */
	uint64		seed;
	int			partition_size; /* slots per partition */
	RateLimitSlot slots[FLEXIBLE_ARRAY_MEMBER];
} RateLimitShared;

static RateLimitShared *rate_limit_shared = NULL;

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
	DefineCustomIntVariable("bridgecore.rate_limit_login",
							"Logins allowed per instance and username per minute (0 = no limit).",
							NULL, &bridgecore_rate_limit_login, 10, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.rate_limit_push_key",
							"Refused doorbell push keys allowed per client per minute; all clients together get rate_limit_per_user_factor times as many (0 = no limit).",
							NULL, &bridgecore_rate_limit_push_key, 10, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.rate_limit_per_user_factor",
							"Per-user limit of each rate-limited function, over all of the user's devices, as a multiple of its per-device limit (0 = no per-user limit).",
							NULL, &bridgecore_rate_limit_per_user_factor, 10, 0, 10000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.rate_limit_new_devices",
							"New device ids each user may use per hour with each rate-limited function (0 = no limit).",
							NULL, &bridgecore_rate_limit_new_devices, 20, 0, 1000000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.rate_limit_entries",
							"Number of rate-limit windows (per device and per user) kept in shared memory.",
							NULL, &bridgecore_rate_limit_entries, 65536, 1024, 16777216,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

static int
rate_limit_partition_size(void)
{
	return (bridgecore_rate_limit_entries + RL_PARTITIONS - 1) / RL_PARTITIONS;
}

Size
RateLimitShmemSize(void)
{
	return add_size(offsetof(RateLimitShared, slots),
					mul_size(mul_size(RL_PARTITIONS, rate_limit_partition_size()),
							 sizeof(RateLimitSlot)));
}

void
RateLimitRequestLocks(void)
{
	RequestNamedLWLockTranche("bridgecore_rate_limit", RL_PARTITIONS);
}

void
RateLimitShmemInit(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	rate_limit_shared = ShmemInitStruct("bridgecore rate limits",
										RateLimitShmemSize(), &found);
	if (!found)
	{
		Size		nslots = (Size) RL_PARTITIONS * rate_limit_partition_size();

		rate_limit_shared->locks = GetNamedLWLockTranche("bridgecore_rate_limit");
		rate_limit_shared->partition_size = rate_limit_partition_size();
		if (!pg_strong_random(&rate_limit_shared->seed, sizeof(rate_limit_shared->seed)))
			rate_limit_shared->seed = (uint64) GetCurrentTimestamp() ^ ((uint64) MyProcPid << 32);
		/* RL_SCOPE_EMPTY is 0: every slot starts empty. */
		memset(rate_limit_shared->slots, 0, nslots * sizeof(RateLimitSlot));
	}
	LWLockRelease(AddinShmemInitLock);
}

static int
kind_period_s(int kind)
{
	return kind == RATE_LIMIT_SYNC_RESET ? 3600 : 60;
}

/* Whether a window that started at start, period_s long, is still running. */
static inline bool
window_open(TimestampTz start, TimestampTz now, int period_s)
{
	return !TimestampDifferenceExceeds(start, now, period_s * 1000);
}

/* Seconds until a window that started at start ends, at least 1. */
static long
retry_after(TimestampTz start, TimestampTz now, int period_s)
{
	long		s = period_s - (long) ((now - start) / USECS_PER_SEC);

	return s < 1 ? 1 : s;
}

/* A slot whose windows all ended may be taken over for any key. */
static bool
slot_live(const RateLimitSlot *slot, TimestampTz now)
{
	if (window_open(slot->window_start, now, kind_period_s(slot->key.kind)))
		return true;
	return slot->key.scope == RL_SCOPE_USER && slot->new_devices > 0 &&
		window_open(slot->devices_start, now, RL_NEW_DEVICES_PERIOD_S);
}

static inline RateLimitSlot *
probe_slot(int partition, uint64 hash, int i)
{
	int			size = rate_limit_shared->partition_size;
	int			home = (int) ((hash >> 32) % (uint64) size);

	return &rate_limit_shared->slots[(Size) partition * size + (home + i) % size];
}

/*
 * The slot holding key, or NULL.  At most RL_PROBE slots.  A key is placed
 * in the first empty slot of its range if there is one, and slots never
 * become empty again, so no key lies beyond an empty slot.
 */
static RateLimitSlot *
slot_find(int partition, uint64 hash, const RateLimitKey *key)
{
	for (int i = 0; i < RL_PROBE; i++)
	{
		RateLimitSlot *slot = probe_slot(partition, hash, i);

		if (slot->key.scope == RL_SCOPE_EMPTY)
			return NULL;
		if (memcmp(&slot->key, key, sizeof(RateLimitKey)) == 0)
			return slot;
	}
	return NULL;
}

/*
 * The slot to place a missing key in (see the header comment for the order),
 * never keep; NULL if a device key finds only live user windows.  At most
 * RL_PROBE slots.
 */
static RateLimitSlot *
slot_for_new_key(int partition, uint64 hash, int scope,
				 const RateLimitSlot *keep, TimestampTz now)
{
	RateLimitSlot *best = NULL;
	int			best_rank = 0;

	for (int i = 0; i < RL_PROBE; i++)
	{
		RateLimitSlot *slot = probe_slot(partition, hash, i);
		int			rank;

		if (slot == keep)
			continue;
		if (slot->key.scope == RL_SCOPE_EMPTY)
			return slot;
		if (!slot_live(slot, now))
			rank = 3;
		else if (slot->key.scope == RL_SCOPE_DEVICE)
			rank = 2;
		else if (scope == RL_SCOPE_USER)
			rank = 1;
		else
			continue;
		if (rank > best_rank ||
			(rank == best_rank && slot->window_start < best->window_start))
		{
			best = slot;
			best_rank = rank;
		}
	}
	return best;
}

typedef enum RateLimitVerdict
{
	RL_ALLOW,
	RL_OVER_DEVICE,
	RL_OVER_USER,
	RL_OVER_NEW_DEVICES
} RateLimitVerdict;

/*
 * bridgecore._rate_limit(kind text, instance_id int, user_id bigint,
 *                        device_id text) returns void
 *
 * Counts one request and raises PT429 when the caller is over a limit.
 */
Datum
bridgecore_rate_limit(PG_FUNCTION_ARGS)
{
	const char *kind_name;
	text	   *device;
	RateLimitKind kind;
	int			limit;
	int			user_limit;
	int			device_cap;
	bool		track_user;
	int			period_s;
	const char *per;
	RateLimitKey dkey;
	RateLimitKey ukey;
	uint64		dhash;
	uint64		uhash = 0;
	int			dpart;
	int			upart;
	LWLock	   *first_lock;
	LWLock	   *second_lock = NULL;
	RateLimitSlot *d;
	RateLimitSlot *u = NULL;
	bool		device_open;
	bool		user_open;
	bool		devices_open;
	TimestampTz now = GetCurrentTimestamp();
	RateLimitVerdict verdict = RL_ALLOW;
	bool		count_it = true;
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
	else if (strcmp(kind_name, "login") == 0)
	{
		/* device_id is the username; the user is not known yet */
		kind = RATE_LIMIT_LOGIN;
		limit = bridgecore_rate_limit_login;
	}
	else if (strcmp(kind_name, "push_key") == 0 || strcmp(kind_name, "push_key_check") == 0)
	{
		/*
		 * Refused doorbell keys: "push_key" counts one, "push_key_check"
		 * only asks whether the budget is spent.  A key is checked only
		 * while it is not, so a client cannot go on guessing after its
		 * failures (or everyone's together, the "user" window) ran out:
		 * while they are, every key of that client is refused, good or
		 * not, which costs a ring, never an event.  device_id is the
		 * client (an address), instance and user are 0.
		 */
		kind = RATE_LIMIT_PUSH_KEY;
		limit = bridgecore_rate_limit_push_key;
		count_it = kind_name[8] == '\0';
		kind_name = "push_key";
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown rate limit kind \"%s\"", kind_name)));

	/* A function's limit of 0 turns all of its limits off. */
	if (limit == 0 || rate_limit_shared == NULL)
		PG_RETURN_VOID();

	user_limit = (int) Min((int64) limit * bridgecore_rate_limit_per_user_factor,
						   (int64) PG_INT32_MAX);
	/* Client addresses are not devices: no cap on new ones. */
	device_cap = kind == RATE_LIMIT_PUSH_KEY ? 0 : bridgecore_rate_limit_new_devices;
	track_user = kind != RATE_LIMIT_LOGIN && (user_limit > 0 || device_cap > 0);
	period_s = kind_period_s(kind);
	per = kind == RATE_LIMIT_SYNC_RESET ? "hour" : "minute";

	device = PG_GETARG_TEXT_PP(3);
	memset(&dkey, 0, sizeof(dkey));
	dkey.database_id = MyDatabaseId;
	dkey.kind = kind;
	dkey.scope = RL_SCOPE_DEVICE;
	dkey.instance_id = PG_GETARG_INT32(1);
	dkey.user_id = PG_GETARG_INT64(2);
	dkey.device_hash = hash_bytes_extended((const unsigned char *) VARDATA_ANY(device),
										   VARSIZE_ANY_EXHDR(device), 0);
	dhash = hash_bytes_extended((const unsigned char *) &dkey, sizeof(dkey),
								rate_limit_shared->seed);
	dpart = (int) (dhash & (RL_PARTITIONS - 1));
	upart = dpart;
	if (track_user)
	{
		ukey = dkey;
		ukey.scope = RL_SCOPE_USER;
		ukey.device_hash = 0;
		uhash = hash_bytes_extended((const unsigned char *) &ukey, sizeof(ukey),
									rate_limit_shared->seed);
		upart = (int) (uhash & (RL_PARTITIONS - 1));
	}

	/* Partition locks in ascending order, as the lock manager takes them. */
	first_lock = &rate_limit_shared->locks[Min(dpart, upart)].lock;
	if (dpart != upart)
		second_lock = &rate_limit_shared->locks[Max(dpart, upart)].lock;
	LWLockAcquire(first_lock, LW_EXCLUSIVE);
	if (second_lock)
		LWLockAcquire(second_lock, LW_EXCLUSIVE);

	d = slot_find(dpart, dhash, &dkey);
	if (track_user)
		u = slot_find(upart, uhash, &ukey);
	device_open = d != NULL && window_open(d->window_start, now, period_s);
	user_open = u != NULL && window_open(u->window_start, now, period_s);
	devices_open = u != NULL &&
		window_open(u->devices_start, now, RL_NEW_DEVICES_PERIOD_S);

	if (device_open && d->count >= limit)
	{
		verdict = RL_OVER_DEVICE;
		retry_after_s = retry_after(d->window_start, now, period_s);
	}
	else if (user_limit > 0 && user_open && u->count >= user_limit)
	{
		verdict = RL_OVER_USER;
		retry_after_s = retry_after(u->window_start, now, period_s);
	}
	else if (d == NULL && device_cap > 0 && devices_open &&
			 u->new_devices >= device_cap)
	{
		verdict = RL_OVER_NEW_DEVICES;
		retry_after_s = retry_after(u->devices_start, now, RL_NEW_DEVICES_PERIOD_S);
	}
	else if (count_it)
	{
		bool		new_device = d == NULL;

		if (track_user)
		{
			if (u == NULL)
			{
				/* Always found: a user key may take any slot but d's. */
				u = slot_for_new_key(upart, uhash, RL_SCOPE_USER, d, now);
				Assert(u != NULL);
				u->key = ukey;
				user_open = false;
				devices_open = false;
			}
			if (!user_open)
			{
				u->window_start = now;
				u->count = 0;
			}
			u->count++;
			if (new_device)
			{
				if (!devices_open)
				{
					u->devices_start = now;
					u->new_devices = 0;
				}
				u->new_devices++;
			}
		}
		if (new_device)
		{
			d = slot_for_new_key(dpart, dhash, RL_SCOPE_DEVICE, u, now);
			if (d != NULL)
				d->key = dkey;
			device_open = false;
		}
		if (d != NULL)
		{
			if (!device_open)
			{
				d->window_start = now;
				d->count = 0;
			}
			d->count++;
		}
	}

	if (second_lock)
		LWLockRelease(second_lock);
	LWLockRelease(first_lock);

	switch (verdict)
	{
		case RL_ALLOW:
			break;
		case RL_OVER_DEVICE:
			ereport(ERROR,
					(errcode(ERRCODE_BRIDGECORE_RATE_LIMITED),
					 errmsg("rate limit exceeded for %s: %d %s per %s",
							kind_name, limit,
							kind == RATE_LIMIT_PUSH_KEY ? "refused keys" : "requests", per),
					 kind == RATE_LIMIT_LOGIN
					 ? errdetail("The limit applies per username.")
					 : kind == RATE_LIMIT_PUSH_KEY
					 ? errdetail("The limit applies per client to refused push keys.")
					 : errdetail("The limit applies per user and device."),
					 errhint("Retry in %ld seconds.", retry_after_s)));
			break;
		case RL_OVER_USER:
			ereport(ERROR,
					(errcode(ERRCODE_BRIDGECORE_RATE_LIMITED),
					 kind == RATE_LIMIT_PUSH_KEY
					 ? errmsg("rate limit exceeded for %s: %d refused keys per %s from all clients",
							  kind_name, user_limit, per)
					 : errmsg("rate limit exceeded for %s: %d requests per %s per user",
							  kind_name, user_limit, per),
					 kind == RATE_LIMIT_PUSH_KEY
					 ? errdetail("The limit applies to refused push keys of all clients together.")
					 : errdetail("The limit applies per user, over all of the user's devices."),
					 errhint("Retry in %ld seconds.", retry_after_s)));
			break;
		case RL_OVER_NEW_DEVICES:
			ereport(ERROR,
					(errcode(ERRCODE_BRIDGECORE_RATE_LIMITED),
					 errmsg("rate limit exceeded for %s: %d new devices per hour",
							kind_name, device_cap),
					 errdetail("The limit applies per user; a device id the user has used recently is not new."),
					 errhint("Retry in %ld seconds.", retry_after_s)));
			break;
	}

	PG_RETURN_VOID();
}
