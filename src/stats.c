/*
 * stats.c: BridgeCore's counters and histograms in shared memory.
 *
 * One slot per Odoo instance (claimed on first use) and one hash entry per
 * (instance, model).  Writers use atomics only; a lock is taken only to
 * claim a slot or add a model.  The SQL views bridgecore.stats and
 * bridgecore.stats_models, and bridgecore.metrics(), read them.
 */
#include "stats.h"

#include "catalog/pg_type.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

int			bridgecore_max_instances = 64;
int			bridgecore_max_stat_models = 1024;

/* Upper bounds of the histogram buckets, in seconds; a last one is +Inf. */
static const double bucket_bounds[STATS_BUCKETS] = {
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};

/* Events per second over the last minute: one slot per second. */
#define RATE_SLOTS 60

typedef struct Histogram
{
	pg_atomic_uint64 buckets[STATS_BUCKETS + 1];
	pg_atomic_uint64 sum_us;
} Histogram;

typedef struct InstanceStats
{
	pg_atomic_uint32 instance_id;	/* 0: free */
	pg_atomic_uint32 database_id;	/* instance ids are per database */
	pg_atomic_uint64 since;		/* TimestampTz the slot was (re)started */
	pg_atomic_uint64 last_used; /* TimestampTz of the last count: the least recent is reused */
	pg_atomic_uint64 last_success;	/* TimestampTz of the last successful poll; kept by stats_reset */
	pg_atomic_uint64 polls;
	pg_atomic_uint64 failed_polls;
	pg_atomic_uint64 events_ingested;
	pg_atomic_uint64 duplicates;
	pg_atomic_uint64 dead_letters;
	pg_atomic_uint64 bytes_received;
	pg_atomic_uint64 sync_pulls;
	pg_atomic_uint64 events_delivered;
	pg_atomic_uint64 notifications;
	pg_atomic_uint64 errors[STATS_ERROR_KINDS];
	Histogram	poll_seconds;
	Histogram	ingest_seconds;
	pg_atomic_uint64 rate_events[RATE_SLOTS];
	pg_atomic_uint64 rate_second[RATE_SLOTS];
} InstanceStats;

typedef struct ModelKey
{
	Oid			database_id;
	int32		instance_id;
	char		model[129];		/* model names are at most 128 bytes (decode.c) */
} ModelKey;

typedef struct ModelStats
{
	ModelKey	key;			/* must be first */
	pg_atomic_uint64 events;
	Histogram	processing;
} ModelStats;

typedef struct StatsShared
{
	LWLock	   *lock;
	InstanceStats instances[FLEXIBLE_ARRAY_MEMBER];
} StatsShared;

static StatsShared *stats = NULL;
static HTAB *model_stats = NULL;

PG_FUNCTION_INFO_V1(bridgecore_stats_instances);
PG_FUNCTION_INFO_V1(bridgecore_stats_models);
PG_FUNCTION_INFO_V1(bridgecore_stats_reset);
PG_FUNCTION_INFO_V1(bridgecore_stats_forget);
PG_FUNCTION_INFO_V1(bridgecore_count_sync_pull);
PG_FUNCTION_INFO_V1(bridgecore_count_ingest);
PG_FUNCTION_INFO_V1(bridgecore_last_success);

void
BcStatsDefineGucs(void)
{
	DefineCustomIntVariable("bridgecore.max_instances",
							"Odoo instances whose statistics shared memory has room for.",
							NULL, &bridgecore_max_instances, 64, 1, 10000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.max_stat_models",
							"(instance, model) pairs whose statistics shared memory has room for.",
							NULL, &bridgecore_max_stat_models, 1024, 16, 1000000,
							PGC_POSTMASTER, 0, NULL, NULL, NULL);
}

Size
BcStatsShmemSize(void)
{
	Size		size = offsetof(StatsShared, instances);

	size = add_size(size, mul_size(bridgecore_max_instances, sizeof(InstanceStats)));
	return add_size(MAXALIGN(size),
					hash_estimate_size(bridgecore_max_stat_models, sizeof(ModelStats)));
}

/*
 * Zeroes a slot and gives it to instance_id (0: free).  The first time, in
 * shared-memory initialisation, the atomics are initialised; afterwards the
 * slot may be read concurrently, so they are written.
 */
#define SET_U64(a, first) ((first) ? pg_atomic_init_u64((a), 0) : pg_atomic_write_u64((a), 0))

static void
histogram_reset(Histogram *h, bool first)
{
	for (int b = 0; b <= STATS_BUCKETS; b++)
		SET_U64(&h->buckets[b], first);
	SET_U64(&h->sum_us, first);
}

/* Zeroes the counters of a slot, which keeps its instance and heartbeat. */
static void
counters_reset(InstanceStats *s, bool first)
{
	SET_U64(&s->polls, first);
	SET_U64(&s->failed_polls, first);
	SET_U64(&s->events_ingested, first);
	SET_U64(&s->duplicates, first);
	SET_U64(&s->dead_letters, first);
	SET_U64(&s->bytes_received, first);
	SET_U64(&s->sync_pulls, first);
	SET_U64(&s->events_delivered, first);
	SET_U64(&s->notifications, first);
	for (int k = 0; k < STATS_ERROR_KINDS; k++)
		SET_U64(&s->errors[k], first);
	histogram_reset(&s->poll_seconds, first);
	histogram_reset(&s->ingest_seconds, first);
	for (int i = 0; i < RATE_SLOTS; i++)
	{
		SET_U64(&s->rate_events[i], first);
		SET_U64(&s->rate_second[i], first);
	}
	if (!first)
	{
		TimestampTz now = GetCurrentTimestamp();

		pg_atomic_write_u64(&s->since, (uint64) now);
		pg_atomic_write_u64(&s->last_used, (uint64) now);
	}
}

/* Gives a slot, zeroed, to instance_id (0: free). */
static void
instance_stats_reset(InstanceStats *s, uint32 instance_id, bool first)
{
	if (first)
	{
		pg_atomic_init_u64(&s->since, 0);
		pg_atomic_init_u64(&s->last_used, 0);
		pg_atomic_init_u64(&s->last_success, 0);
		counters_reset(s, true);
		pg_atomic_init_u32(&s->database_id, InvalidOid);
		pg_atomic_init_u32(&s->instance_id, instance_id);
		return;
	}
	pg_atomic_write_u32(&s->instance_id, 0);	/* first: readers match on it */
	pg_atomic_write_u64(&s->last_success, 0);
	counters_reset(s, false);
	pg_atomic_write_u32(&s->database_id, (uint32) MyDatabaseId);
	pg_atomic_write_u32(&s->instance_id, instance_id);	/* last: readers match on it */
}

void
BcStatsShmemInit(void)
{
	bool		found;
	HASHCTL		info;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	stats = ShmemInitStruct("bridgecore stats",
							offsetof(StatsShared, instances) +
							sizeof(InstanceStats) * bridgecore_max_instances, &found);
	if (!found)
	{
		stats->lock = &(GetNamedLWLockTranche("bridgecore"))[1].lock;
		for (int i = 0; i < bridgecore_max_instances; i++)
			instance_stats_reset(&stats->instances[i], 0, true);
	}
	memset(&info, 0, sizeof(info));
	info.keysize = sizeof(ModelKey);
	info.entrysize = sizeof(ModelStats);
	model_stats = ShmemInitHash("bridgecore model stats", bridgecore_max_stat_models,
								bridgecore_max_stat_models, &info,
								HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	LWLockRelease(AddinShmemInitLock);
}

static bool
slot_is(InstanceStats *s, int32 instance_id)
{
	return pg_atomic_read_u32(&s->instance_id) == (uint32) instance_id &&
		pg_atomic_read_u32(&s->database_id) == (uint32) MyDatabaseId;
}

/*
 * The instance's slot, claimed on first use.  When every slot is taken, the
 * one counted least recently is reused (an instance removed long ago, or
 * one of a dropped database), so a new instance is always counted.
 */
static InstanceStats *
instance_slot(int32 instance_id)
{
	InstanceStats *slot = NULL;

	if (stats == NULL || instance_id <= 0)
		return NULL;
	for (int i = 0; i < bridgecore_max_instances && slot == NULL; i++)
		if (slot_is(&stats->instances[i], instance_id))
			slot = &stats->instances[i];

	if (slot == NULL)
	{
		InstanceStats *oldest = NULL;

		LWLockAcquire(stats->lock, LW_EXCLUSIVE);
		for (int i = 0; i < bridgecore_max_instances; i++)
		{
			InstanceStats *s = &stats->instances[i];

			if (slot_is(s, instance_id))
			{
				slot = s;
				break;
			}
			if (pg_atomic_read_u32(&s->instance_id) == 0)
			{
				if (slot == NULL)
					slot = s;
			}
			else if (oldest == NULL ||
					 pg_atomic_read_u64(&s->last_used) < pg_atomic_read_u64(&oldest->last_used))
				oldest = s;
		}
		if (slot == NULL)
			slot = oldest;
		if (slot != NULL && !slot_is(slot, instance_id))
			instance_stats_reset(slot, (uint32) instance_id, false);
		LWLockRelease(stats->lock);
	}
	if (slot != NULL)
		pg_atomic_write_u64(&slot->last_used, (uint64) GetCurrentTimestamp());
	return slot;
}

static void
observe(Histogram *h, double seconds)
{
	int			b = 0;

	while (b < STATS_BUCKETS && seconds > bucket_bounds[b])
		b++;
	pg_atomic_fetch_add_u64(&h->buckets[b], 1);
	pg_atomic_fetch_add_u64(&h->sum_us, (uint64) (seconds * 1000000.0));
}

void
stats_count_poll(int32 instance_id, int error_kind, uint64 bytes, double seconds)
{
	InstanceStats *s = instance_slot(instance_id);

	if (s == NULL)
		return;
	pg_atomic_fetch_add_u64(&s->polls, 1);
	pg_atomic_fetch_add_u64(&s->bytes_received, bytes);
	observe(&s->poll_seconds, seconds);
	if (error_kind > 0 && error_kind <= STATS_ERROR_KINDS)
	{
		pg_atomic_fetch_add_u64(&s->failed_polls, 1);
		pg_atomic_fetch_add_u64(&s->errors[error_kind - 1], 1);
	}
}

void
stats_count_ingest(int32 instance_id, int64 inserted, int64 duplicates,
				   int64 dead_letters, int64 notifications, double seconds)
{
	InstanceStats *s = instance_slot(instance_id);
	uint64		second = (uint64) (GetCurrentTimestamp() / USECS_PER_SEC);
	int			slot = (int) (second % RATE_SLOTS);

	if (s == NULL)
		return;
	pg_atomic_fetch_add_u64(&s->events_ingested, inserted);
	pg_atomic_fetch_add_u64(&s->duplicates, duplicates);
	pg_atomic_fetch_add_u64(&s->dead_letters, dead_letters);
	pg_atomic_fetch_add_u64(&s->notifications, notifications);
	if (seconds >= 0)
		observe(&s->ingest_seconds, seconds);
	/* A slot last used a minute or more ago starts over (racing writers may lose a few). */
	if (pg_atomic_exchange_u64(&s->rate_second[slot], second) != second)
		pg_atomic_write_u64(&s->rate_events[slot], 0);
	pg_atomic_fetch_add_u64(&s->rate_events[slot], inserted);
}

/*
 * A successful poll, found something or not: the heartbeat that status()
 * and bridgecore.instances show as last_success_at.  Kept here, not in the
 * instance row, so an idle instance writes nothing.
 */
void
stats_note_success(int32 instance_id)
{
	InstanceStats *s = instance_slot(instance_id);

	if (s != NULL)
		pg_atomic_write_u64(&s->last_success, (uint64) GetCurrentTimestamp());
}

void
stats_count_model(int32 instance_id, const char *model, int64 events, double seconds)
{
	ModelKey	key;
	ModelStats *m;
	bool		found;

	if (model_stats == NULL)
		return;
	memset(&key, 0, sizeof(key));
	key.database_id = MyDatabaseId;
	key.instance_id = instance_id;
	strlcpy(key.model, model, sizeof(key.model));

	/*
	 * The entry is updated while the lock is held (shared is enough for the
	 * atomics): _stats_forget removes entries under the exclusive lock, so a
	 * pointer kept past the release could point into a reused entry.
	 */
	LWLockAcquire(stats->lock, LW_SHARED);
	m = hash_search(model_stats, &key, HASH_FIND, NULL);
	if (m == NULL)
	{
		LWLockRelease(stats->lock);
		LWLockAcquire(stats->lock, LW_EXCLUSIVE);
		m = hash_search(model_stats, &key, HASH_ENTER_NULL, &found);
		if (m != NULL && !found)
		{
			pg_atomic_init_u64(&m->events, 0);
			histogram_reset(&m->processing, true);
		}
	}
	if (m != NULL)				/* NULL: full, bridgecore.max_stat_models */
	{
		pg_atomic_fetch_add_u64(&m->events, events);
		observe(&m->processing, seconds);
	}
	LWLockRelease(stats->lock);
}

/* ---- SQL interface ------------------------------------------------------ */

/* Sets up a materialized set-returning function; returns its tuplestore. */
static Tuplestorestate *
begin_srf(FunctionCallInfo fcinfo, TupleDesc *desc)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext old;
	Tuplestorestate *store;

	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	*desc = CreateTupleDescCopy(*desc);
	store = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = *desc;
	MemoryContextSwitchTo(old);
	return store;
}

static Datum
int8_array(pg_atomic_uint64 *values, int n)
{
	Datum	   *d = palloc(sizeof(Datum) * n);

	for (int i = 0; i < n; i++)
		d[i] = Int64GetDatum((int64) pg_atomic_read_u64(&values[i]));
	return PointerGetDatum(construct_array(d, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

#define READ(x) Int64GetDatum((int64) pg_atomic_read_u64(&(x)))

/*
 * bridgecore._stats_instances(): one row per instance with statistics.
 * Histogram buckets are per bucket (not cumulative), +Inf last.
 */
Datum
bridgecore_stats_instances(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Tuplestorestate *store = begin_srf(fcinfo, &desc);
	uint64		now_second = (uint64) (GetCurrentTimestamp() / USECS_PER_SEC);

	for (int i = 0; stats && i < bridgecore_max_instances; i++)
	{
		InstanceStats *s = &stats->instances[i];
		Datum		values[18];
		bool		nulls[18] = {0};
		uint64		last_minute = 0;
		uint32		id = pg_atomic_read_u32(&s->instance_id);

		if (id == 0 || pg_atomic_read_u32(&s->database_id) != (uint32) MyDatabaseId)
			continue;
		for (int r = 0; r < RATE_SLOTS; r++)
		{
			uint64		sec = pg_atomic_read_u64(&s->rate_second[r]);

			if (sec + RATE_SLOTS > now_second && sec <= now_second)
				last_minute += pg_atomic_read_u64(&s->rate_events[r]);
		}
		values[0] = Int32GetDatum((int32) id);
		values[1] = READ(s->polls);
		values[2] = READ(s->failed_polls);
		values[3] = READ(s->events_ingested);
		values[4] = READ(s->duplicates);
		values[5] = READ(s->dead_letters);
		values[6] = READ(s->bytes_received);
		values[7] = READ(s->sync_pulls);
		values[8] = READ(s->events_delivered);
		values[9] = READ(s->notifications);
		values[10] = int8_array(s->errors, STATS_ERROR_KINDS);
		values[11] = int8_array(s->poll_seconds.buckets, STATS_BUCKETS + 1);
		values[12] = Float8GetDatum(pg_atomic_read_u64(&s->poll_seconds.sum_us) / 1e6);
		values[13] = int8_array(s->ingest_seconds.buckets, STATS_BUCKETS + 1);
		values[14] = Float8GetDatum(pg_atomic_read_u64(&s->ingest_seconds.sum_us) / 1e6);
		values[15] = Int64GetDatum((int64) last_minute);
		values[16] = Float8GetDatum(last_minute / (double) RATE_SLOTS);
		values[17] = TimestampTzGetDatum((TimestampTz) pg_atomic_read_u64(&s->since));
		tuplestore_putvalues(store, desc, values, nulls);
	}
	return (Datum) 0;
}

/* bridgecore._stats_models(): one row per (instance, model). */
Datum
bridgecore_stats_models(PG_FUNCTION_ARGS)
{
	TupleDesc	desc;
	Tuplestorestate *store = begin_srf(fcinfo, &desc);
	HASH_SEQ_STATUS seq;
	ModelStats *m;

	if (model_stats == NULL)
		return (Datum) 0;
	LWLockAcquire(stats->lock, LW_SHARED);
	hash_seq_init(&seq, model_stats);
	while ((m = hash_seq_search(&seq)) != NULL)
	{
		Datum		values[5];
		bool		nulls[5] = {0};

		if (m->key.database_id != MyDatabaseId)
			continue;
		values[0] = Int32GetDatum(m->key.instance_id);
		values[1] = CStringGetTextDatum(m->key.model);
		values[2] = READ(m->events);
		values[3] = int8_array(m->processing.buckets, STATS_BUCKETS + 1);
		values[4] = Float8GetDatum(pg_atomic_read_u64(&m->processing.sum_us) / 1e6);
		tuplestore_putvalues(store, desc, values, nulls);
	}
	LWLockRelease(stats->lock);
	return (Datum) 0;
}

/* bridgecore._stats_reset(): forget this database's counters. */
Datum
bridgecore_stats_reset(PG_FUNCTION_ARGS)
{
	HASH_SEQ_STATUS seq;
	ModelStats *m;

	if (stats == NULL)
		PG_RETURN_VOID();
	LWLockAcquire(stats->lock, LW_EXCLUSIVE);
	for (int i = 0; i < bridgecore_max_instances; i++)
		if (pg_atomic_read_u32(&stats->instances[i].database_id) == (uint32) MyDatabaseId &&
			pg_atomic_read_u32(&stats->instances[i].instance_id) != 0)
			counters_reset(&stats->instances[i], false);
	hash_seq_init(&seq, model_stats);
	while ((m = hash_seq_search(&seq)) != NULL)
		if (m->key.database_id == MyDatabaseId)
			hash_search(model_stats, &m->key, HASH_REMOVE, NULL);
	LWLockRelease(stats->lock);
	PG_RETURN_VOID();
}

/* bridgecore._stats_forget(instance_id int): a removed instance's counters go. */
Datum
bridgecore_stats_forget(PG_FUNCTION_ARGS)
{
	int32		instance_id = PG_GETARG_INT32(0);
	HASH_SEQ_STATUS seq;
	ModelStats *m;

	if (stats == NULL)
		PG_RETURN_VOID();
	LWLockAcquire(stats->lock, LW_EXCLUSIVE);
	for (int i = 0; i < bridgecore_max_instances; i++)
		if (slot_is(&stats->instances[i], instance_id))
			instance_stats_reset(&stats->instances[i], 0, false);
	hash_seq_init(&seq, model_stats);
	while ((m = hash_seq_search(&seq)) != NULL)
		if (m->key.database_id == MyDatabaseId && m->key.instance_id == instance_id)
			hash_search(model_stats, &m->key, HASH_REMOVE, NULL);
	LWLockRelease(stats->lock);
	PG_RETURN_VOID();
}

/* bridgecore._count_sync_pull(instance_id int, delivered int) */
Datum
bridgecore_count_sync_pull(PG_FUNCTION_ARGS)
{
	InstanceStats *s = instance_slot(PG_GETARG_INT32(0));

	if (s != NULL)
	{
		pg_atomic_fetch_add_u64(&s->sync_pulls, 1);
		pg_atomic_fetch_add_u64(&s->events_delivered, (uint64) Max(PG_GETARG_INT32(1), 0));
	}
	PG_RETURN_VOID();
}

/* bridgecore._count_ingest(instance_id int, inserted, duplicates, dead_letters, notifications bigint) */
Datum
bridgecore_count_ingest(PG_FUNCTION_ARGS)
{
	stats_count_ingest(PG_GETARG_INT32(0), PG_GETARG_INT64(1), PG_GETARG_INT64(2),
					   PG_GETARG_INT64(3), PG_GETARG_INT64(4), -1);
	PG_RETURN_VOID();
}

/*
 * bridgecore._last_success(instance_id int) returns timestamptz: the end of
 * the instance's last successful poll since the server started, or NULL.
 * Only looks: a slot is claimed by counting, not by reading.
 */
Datum
bridgecore_last_success(PG_FUNCTION_ARGS)
{
	int32		instance_id = PG_GETARG_INT32(0);

	for (int i = 0; stats && i < bridgecore_max_instances; i++)
	{
		InstanceStats *s = &stats->instances[i];
		TimestampTz at;

		if (!slot_is(s, instance_id))
			continue;
		at = (TimestampTz) pg_atomic_read_u64(&s->last_success);
		/* the slot may have changed hands while it was read */
		if (at != 0 && slot_is(s, instance_id))
			PG_RETURN_TIMESTAMPTZ(at);
		break;
	}
	PG_RETURN_NULL();
}
