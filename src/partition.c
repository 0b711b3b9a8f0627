/*
 * partition.c: bridgecore.event is partitioned by local id range, and an
 * insert whose id has no partition would fail.  The launcher's maintenance
 * creates partitions ahead (bridgecore._ensure_partitions()); the store path
 * makes sure of it too, under the ingest ordering lock, so that ingestion
 * never depends on the launcher: before a batch takes its ids, the partitions
 * must reach past the last id handed out plus the batch.
 *
 * That is one sequence read per batch: the bound the partitions reach is
 * kept per backend, and forgotten whenever bridgecore.event's relation cache
 * entry is invalidated (a partition attached, detached or dropped, here or
 * in another backend, a rolled-back attach, DROP EXTENSION), so it never
 * claims room that is not there.
 */
#include "partition.h"

#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"

static Oid	room_parent = InvalidOid;	/* the bridgecore.event room_end is of */
static int64 room_end = 0;		/* every id below it has a partition */
static bool callback_registered = false;
static SPIPlanPtr last_id_plan = NULL;
static SPIPlanPtr ensure_plan = NULL;

static void
forget_room(Datum arg, Oid relid)
{
	if (!OidIsValid(relid) || relid == room_parent)
		room_parent = InvalidOid;
}

static int64
first_int8(bool *isnull)
{
	if (SPI_processed != 1)
		elog(ERROR, "expected one row from the partition check");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull));
}

/*
 * Called with the ordering lock held, inside the caller's SPI connection,
 * before nrows events take ids.
 */
void
partition_ensure_room(int64 nrows)
{
	Oid			parent;
	Oid			argtype = INT8OID;
	Datum		arg;
	bool		isnull;
	int64		last;

	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(forget_room, (Datum) 0);
		callback_registered = true;
	}
	if (last_id_plan == NULL)
		last_id_plan = bc_prepare_kept("SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END"
								 "  FROM bridgecore.event_id_seq s", 0, NULL);
	/* Reading the sequence takes its lock, which processes invalidations. */
	if (SPI_execute_plan(last_id_plan, NULL, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read bridgecore.event_id_seq");
	last = first_int8(&isnull);
	parent = get_relname_relid("event", get_namespace_oid("bridgecore", false));
	if (OidIsValid(room_parent) && parent == room_parent && last + nrows < room_end)
		return;
	/* Before 0.4.0 the log is one table. */
	if (get_rel_relkind(parent) != RELKIND_PARTITIONED_TABLE)
		return;

	if (ensure_plan == NULL)
		ensure_plan = bc_prepare_kept("SELECT bridgecore._ensure_partitions($1)", 1, &argtype);
	arg = Int64GetDatum(last + nrows);
	if (SPI_execute_plan(ensure_plan, &arg, NULL, false, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not create partitions of bridgecore.event");
	room_end = first_int8(&isnull);
	/* After the call: the attach it may have made invalidated the old bound. */
	room_parent = isnull ? InvalidOid : parent;
}
