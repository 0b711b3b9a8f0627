/*
 * doorbell.c: waking an instance's poller at once (bridgecore.wake, the
 * gateway's POST /api/v1/webhooks/receive).
 *
 * Each instance a poller runs holds a slot in shared memory: its database
 * and instance, the poller's proc number (plus one; never a PGPROC pointer, which need
 * not be valid in another process's address space on every platform) and a
 * "rung" flag.  A ring sets the flag and sets the poller's latch through
 * ProcGlobal.  The poller clears the flag when it starts a fetch, so any
 * number of rings during one fetch cause at most one more fetch.
 *
 * A ring is only a hint: the poll (search_read above the cursor) stays the
 * one durable path, so a lost ring costs at most one poll interval, never
 * an event.  A ring does not cut short a failure backoff (a failing Odoo,
 * or one that refused the login, is not asked again sooner because
 * something rang).
 *
 * Slots: bridgecore.max_instances of them (instances beyond that are still
 * polled, they just cannot be rung).  Claimed and released under the lock;
 * rung and rings are atomics.
 */
#include "bridgecore.h"
#include "stats.h"

#include "funcapi.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/tuplestore.h"

struct DoorbellSlot
{
	pg_atomic_uint32 database_id;	/* InvalidOid: free */
	pg_atomic_uint32 instance_id;
	pg_atomic_uint32 procno;	/* the poller's proc number plus one */
	pg_atomic_uint32 rung;		/* 1: a ring came since the poller last started a fetch */
	pg_atomic_uint64 rings;		/* rings since the poller started */
	pg_atomic_uint64 coalesced; /* ... that found a ring already pending */
	pg_atomic_uint64 fetches;	/* fetches a ring started */
};

typedef struct DoorbellShared
{
	LWLock	   *lock;
	int			nslots;
	DoorbellSlot slots[FLEXIBLE_ARRAY_MEMBER];
} DoorbellShared;

static DoorbellShared *doorbell = NULL;
static bool detach_registered = false;

PG_FUNCTION_INFO_V1(bridgecore_ring_instance);
PG_FUNCTION_INFO_V1(bridgecore_doorbell_stats);

Size
DoorbellShmemSize(void)
{
	return add_size(offsetof(DoorbellShared, slots),
					mul_size(bridgecore_max_instances, sizeof(DoorbellSlot)));
}

void
DoorbellShmemInit(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	doorbell = ShmemInitStruct("bridgecore doorbell", DoorbellShmemSize(), &found);
	if (!found)
	{
		/* Lock 0 of the tranche "bridgecore" (see bridgecore_shmem_request). */
		doorbell->lock = &(GetNamedLWLockTranche("bridgecore"))[0].lock;
		doorbell->nslots = bridgecore_max_instances;
		for (int i = 0; i < doorbell->nslots; i++)
		{
			DoorbellSlot *s = &doorbell->slots[i];

			pg_atomic_init_u32(&s->database_id, InvalidOid);
			pg_atomic_init_u32(&s->instance_id, 0);
			pg_atomic_init_u32(&s->procno, 0);
			pg_atomic_init_u32(&s->rung, 0);
			pg_atomic_init_u64(&s->rings, 0);
			pg_atomic_init_u64(&s->coalesced, 0);
			pg_atomic_init_u64(&s->fetches, 0);
		}
	}
	LWLockRelease(AddinShmemInitLock);
}

static void
release_slot(DoorbellSlot *slot)
{
	pg_atomic_write_u32(&slot->procno, 0);
	pg_atomic_write_u32(&slot->instance_id, 0);
	pg_atomic_write_u32(&slot->database_id, InvalidOid);
}

/* At exit: releases every slot this process still holds. */
static void
detach_all(int code, Datum arg)
{
	uint32		mine = BRIDGECORE_MY_PROC_NUMBER + 1;

	LWLockAcquire(doorbell->lock, LW_EXCLUSIVE);
	for (int i = 0; i < doorbell->nslots; i++)
		if (pg_atomic_read_u32(&doorbell->slots[i].procno) == mine)
			release_slot(&doorbell->slots[i]);
	LWLockRelease(doorbell->lock);
}

/*
 * Called by a poller once it holds the instance's advisory lock (so no
 * other poller runs the instance): takes a slot, released by
 * doorbell_detach or at exit.  Returns NULL without a free slot (more
 * instances than bridgecore.max_instances): the instance is still polled,
 * it just cannot be rung.
 */
DoorbellSlot *
doorbell_attach(int32 instance_id)
{
	DoorbellSlot *free_slot = NULL;

	if (doorbell == NULL)
		return NULL;
	if (!detach_registered)
	{
		before_shmem_exit(detach_all, 0);
		detach_registered = true;
	}
	LWLockAcquire(doorbell->lock, LW_EXCLUSIVE);
	for (int i = 0; i < doorbell->nslots; i++)
	{
		DoorbellSlot *s = &doorbell->slots[i];

		/* A slot of a predecessor that died without detaching is reused. */
		if (pg_atomic_read_u32(&s->database_id) == (uint32) MyDatabaseId &&
			pg_atomic_read_u32(&s->instance_id) == (uint32) instance_id)
		{
			free_slot = s;
			break;
		}
		if (free_slot == NULL && pg_atomic_read_u32(&s->database_id) == InvalidOid)
			free_slot = s;
	}
	if (free_slot != NULL)
	{
		pg_atomic_write_u32(&free_slot->rung, 0);	/* the first poll comes anyway */
		pg_atomic_write_u64(&free_slot->rings, 0);
		pg_atomic_write_u64(&free_slot->coalesced, 0);
		pg_atomic_write_u64(&free_slot->fetches, 0);
		pg_atomic_write_u32(&free_slot->instance_id, (uint32) instance_id);
		pg_atomic_write_u32(&free_slot->database_id, (uint32) MyDatabaseId);
		pg_atomic_write_u32(&free_slot->procno, BRIDGECORE_MY_PROC_NUMBER + 1);
	}
	LWLockRelease(doorbell->lock);
	return free_slot;
}

/* The poller stops running the instance (before it releases its lock). */
void
doorbell_detach(DoorbellSlot *slot)
{
	if (slot == NULL)
		return;
	LWLockAcquire(doorbell->lock, LW_EXCLUSIVE);
	if (pg_atomic_read_u32(&slot->procno) == (uint32) BRIDGECORE_MY_PROC_NUMBER + 1)
		release_slot(slot);
	LWLockRelease(doorbell->lock);
}

/* Whether a ring is pending (the poller looks before it waits). */
bool
doorbell_rung(DoorbellSlot *slot)
{
	return slot != NULL && pg_atomic_read_u32(&slot->rung) != 0;
}

/*
 * The poller starts a fetch: clears the flag, so that rings from now on
 * ask for one more fetch after this one.  Returns whether a ring was
 * pending.
 */
bool
doorbell_take(DoorbellSlot *slot)
{
	if (slot == NULL || pg_atomic_read_u32(&slot->rung) == 0)
		return false;
	if (pg_atomic_exchange_u32(&slot->rung, 0) == 0)
		return false;
	pg_atomic_fetch_add_u64(&slot->fetches, 1);
	return true;
}

/*
 * bridgecore._ring(instance_id integer) returns text: rings the poller of
 * the instance of this database.  'woken': its latch was set; 'coalesced':
 * a ring was already pending (the poller fetches once for both); 'no_poller':
 * no poller runs for the instance (disabled, or not started yet: a poller
 * polls when it starts anyway).
 */
Datum
bridgecore_ring_instance(PG_FUNCTION_ARGS)
{
	int32		instance_id = PG_GETARG_INT32(0);
	const char *outcome = "no_poller";

	if (doorbell == NULL)
		PG_RETURN_TEXT_P(cstring_to_text(outcome));

	/*
	 * Shared: the slot cannot be released meanwhile, so the proc number read
	 * is the poller's own (its latch outlives the slot: the slot is released
	 * before the process leaves ProcGlobal).
	 */
	LWLockAcquire(doorbell->lock, LW_SHARED);
	for (int i = 0; i < doorbell->nslots; i++)
	{
		DoorbellSlot *s = &doorbell->slots[i];
		uint32		procno;

		if (pg_atomic_read_u32(&s->database_id) != (uint32) MyDatabaseId ||
			pg_atomic_read_u32(&s->instance_id) != (uint32) instance_id)
			continue;
		procno = pg_atomic_read_u32(&s->procno);
		if (procno == 0)
			break;
		pg_atomic_fetch_add_u64(&s->rings, 1);
		if (pg_atomic_exchange_u32(&s->rung, 1) != 0)
		{
			/* Already rung: the latch is set or the poller is fetching. */
			pg_atomic_fetch_add_u64(&s->coalesced, 1);
			outcome = "coalesced";
		}
		else
		{
			SetLatch(&GetPGProcByNumber(procno - 1)->procLatch);
			outcome = "woken";
		}
		break;
	}
	LWLockRelease(doorbell->lock);
	PG_RETURN_TEXT_P(cstring_to_text(outcome));
}

/*
 * bridgecore._doorbell_stats(): per running poller of this database, its
 * instance id, the rings since it started, those coalesced, and the
 * fetches rings started.
 */
Datum
bridgecore_doorbell_stats(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TupleDesc	desc;
	Tuplestorestate *store;
	MemoryContext old;

	/* A materialized set, as in stats.c (InitMaterializedSRF is 15+ only). */
	if (rsinfo == NULL || !IsA(rsinfo, ReturnSetInfo) ||
		!(rsinfo->allowedModes & SFRM_Materialize))
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("set-valued function called in context that cannot accept a set")));
	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	old = MemoryContextSwitchTo(rsinfo->econtext->ecxt_per_query_memory);
	desc = CreateTupleDescCopy(desc);
	store = tuplestore_begin_heap(true, false, work_mem);
	rsinfo->returnMode = SFRM_Materialize;
	rsinfo->setResult = store;
	rsinfo->setDesc = desc;
	MemoryContextSwitchTo(old);
	if (doorbell == NULL)
		return (Datum) 0;
	LWLockAcquire(doorbell->lock, LW_SHARED);
	for (int i = 0; i < doorbell->nslots; i++)
	{
		DoorbellSlot *s = &doorbell->slots[i];
		Datum		values[4];
		bool		nulls[4] = {0};

		if (pg_atomic_read_u32(&s->database_id) != (uint32) MyDatabaseId ||
			pg_atomic_read_u32(&s->procno) == 0)
			continue;
		values[0] = Int32GetDatum((int32) pg_atomic_read_u32(&s->instance_id));
		values[1] = Int64GetDatum((int64) pg_atomic_read_u64(&s->rings));
		values[2] = Int64GetDatum((int64) pg_atomic_read_u64(&s->coalesced));
		values[3] = Int64GetDatum((int64) pg_atomic_read_u64(&s->fetches));
		tuplestore_putvalues(store, desc, values, nulls);
	}
	LWLockRelease(doorbell->lock);
	return (Datum) 0;
}
