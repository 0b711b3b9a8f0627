/*
 * sync_pull.c: bridgecore.sync_pull(), a device's incremental pull.
 *
 * The page is read by direct index scans of bridgecore.event's partitions,
 * without the planner: a pull's cost is then what its page holds, whatever
 * the size of the log and whatever the device's models.  Planned SQL could
 * not promise that: a generic plan does not know that a wanted model is rare
 * or absent, a custom plan is planned at every call over every partition,
 * and a pull of rare or absent models probed each of them.
 *
 * The page is the first "limit" events of the wanted models above the
 * device's position, in id order; has_more says whether a wanted event
 * follows it.  It is found in two ways, both in id order:
 *
 *   1. The (instance_id, id) index of each partition that can hold ids above
 *      the position, the models filtered here: at most 4 * (limit + 1)
 *      events are read so.  That serves every device whose models are a
 *      quarter of the log or more, the usual case, at one index read.
 *   2. If that budget runs out, from the last id it read on, the
 *      (instance_id, model, id) index of each partition, one scan per
 *      wanted model, merged by id: a rare model costs the events it
 *      returns, an absent one a descent per partition.
 *
 * Partitions are visited in bound order, skipping those whose ids are all at
 * or below the position by their bounds alone.  The newest id of the
 * instance (a device with nothing more to read moves past the events it does
 * not want) is the last id read when the first way read to the end of the
 * log; otherwise the highest partition above the position holding rows of
 * the instance gives it, read backwards.
 *
 * Everything else (the state row, the lookups) is SPI with plans kept for
 * the backend's life.  Each partition's two indexes are found by their key
 * columns and kept per backend; an invalidation of the partition's relcache
 * entry (an index made or dropped, the partition dropped or detached)
 * forgets them.
 */
#include "bridgecore.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/relscan.h"
#include "access/stratnum.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_am.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_index.h"
#include "catalog/pg_opclass.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "executor/spi.h"
#include "executor/tuptable.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "partitioning/partbounds.h"
#include "partitioning/partdesc.h"
#include "storage/lmgr.h"
#include "utils/array.h"
#include "utils/fmgroids.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/partcache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "claims.h"
#include "sync_token.h"

/* C functions of other files, called directly rather than through SQL. */
extern Datum bridgecore_rate_limit(PG_FUNCTION_ARGS);
extern Datum bridgecore_count_sync_pull(PG_FUNCTION_ARGS);

#define MAX_LIMIT 500
#define MAX_DEVICE_ID_CHARS 255

/* A partition's two indexes and the columns a pull reads, per backend. */
typedef struct PartInfo
{
	Oid			relid;			/* hash key */
	Oid			by_id;			/* (instance_id, id) */
	Oid			by_model;		/* (instance_id, model, id), or InvalidOid */
	AttrNumber	att_id;
	AttrNumber	att_model;
	AttrNumber	att_doc;
} PartInfo;

static HTAB *part_cache = NULL;

/* Moved by every invalidation forget_partition sees: an entry whose build
 * saw it move (the index_open calls of the build process invalidations)
 * may describe the partition as it was, and is built again. */
static uint64 part_cache_generation = 0;

static SPIPlanPtr app_type_plan = NULL;
static SPIPlanPtr app_types_plan = NULL;
static SPIPlanPtr model_names_plan = NULL;
static SPIPlanPtr state_select_plan = NULL;
static SPIPlanPtr state_insert_plan = NULL;
static SPIPlanPtr state_update_plan = NULL;
static SPIPlanPtr purged_plan = NULL;
static SPIPlanPtr state_read_plan = NULL;
static SPIPlanPtr horizon_plan = NULL;
static SPIPlanPtr moved_plan = NULL;

/* The wanted models, as bytes, for the filter of the first way. */
typedef struct Wanted
{
	int			n;
	Datum	   *datums;			/* text */
	const char **s;
	int		   *len;
} Wanted;

/* One event of a page found the second way, before the merge. */
typedef struct Found
{
	int64		id;
	char	   *doc;			/* NULL: a null doc */
	int			doclen;
} Found;

/* What a page read gives. */
typedef struct PullPage
{
	StringInfoData events;		/* the JSON array, as json_agg writes it */
	int			n;
	int64		last_id;
	bool		more;
	bool		newest_known;	/* newest is exact (otherwise look it up) */
	int64		newest;			/* when known: highest id > pos, or pos */
} PullPage;

/* A partition in bound order, with the ids it can hold: [lo, hi]. */
typedef struct PartRange
{
	Oid			relid;
	int64		lo;
	int64		hi;
} PartRange;

static void
forget_partition(Datum arg, Oid relid)
{
	part_cache_generation++;
	if (part_cache == NULL)
		return;
	if (!OidIsValid(relid))
	{
		HASH_SEQ_STATUS seq;
		PartInfo   *p;

		hash_seq_init(&seq, part_cache);
		while ((p = hash_seq_search(&seq)) != NULL)
			hash_search(part_cache, &p->relid, HASH_REMOVE, NULL);
		return;
	}
	hash_search(part_cache, &relid, HASH_REMOVE, NULL);
}

/* Whether column k (0-based) of the index is a plain column, attnum, with
 * the default btree operator class of its type, in ascending order (a DESC
 * index read forwards would hand out the newest ids first, and the cursor
 * would skip what lies between). */
static bool
index_column_is(Relation idx, int k, AttrNumber attnum, Oid typid)
{
	Oid			opclass;

	if (idx->rd_index->indkey.values[k] != attnum ||
		(idx->rd_indoption[k] & (INDOPTION_DESC | INDOPTION_NULLS_FIRST)) != 0)
		return false;
	opclass = GetDefaultOpClass(typid, BTREE_AM_OID);
	return OidIsValid(opclass) && idx->rd_opfamily[k] == get_opclass_family(opclass);
}

static PartInfo *
partition_entry(Relation rel)
{
	Oid			relid = RelationGetRelid(rel);
	PartInfo   *p;
	bool		found;
	List	   *indexes;
	ListCell   *lc;
	AttrNumber	att_inst;

	if (part_cache == NULL)
	{
		HASHCTL		ctl;

		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(Oid);
		ctl.entrysize = sizeof(PartInfo);
		part_cache = hash_create("bridgecore sync_pull partitions", 64, &ctl,
								 HASH_ELEM | HASH_BLOBS);
		CacheRegisterRelcacheCallback(forget_partition, (Datum) 0);
	}
	p = hash_search(part_cache, &relid, HASH_FIND, NULL);
	if (p != NULL)
		return p;

	/* Columns by name: a partition's attribute numbers may differ. */
	att_inst = get_attnum(relid, "instance_id");
	for (;;)
	{
		uint64		generation = part_cache_generation;
		AttrNumber	att_id = get_attnum(relid, "id");
		AttrNumber	att_model = get_attnum(relid, "model");
		AttrNumber	att_doc = get_attnum(relid, "doc");
		Oid			by_id = InvalidOid;
		Oid			by_model = InvalidOid;

		if (att_inst == InvalidAttrNumber || att_id == InvalidAttrNumber ||
			att_model == InvalidAttrNumber || att_doc == InvalidAttrNumber)
			elog(ERROR, "partition \"%s\" of bridgecore.event lacks a column", RelationGetRelationName(rel));

		indexes = RelationGetIndexList(rel);
		foreach(lc, indexes)
		{
			Relation	idx = index_open(lfirst_oid(lc), AccessShareLock);
			Form_pg_index ix = idx->rd_index;
			bool		plain = idx->rd_rel->relam == BTREE_AM_OID && ix->indisvalid && ix->indislive &&
				ix->indisready && RelationGetIndexExpressions(idx) == NIL &&
				RelationGetIndexPredicate(idx) == NIL;

			if (plain && !OidIsValid(by_id) && ix->indnkeyatts == 2 &&
				index_column_is(idx, 0, att_inst, INT4OID) && index_column_is(idx, 1, att_id, INT8OID))
				by_id = RelationGetRelid(idx);
			else if (plain && !OidIsValid(by_model) && ix->indnkeyatts == 3 &&
					 index_column_is(idx, 0, att_inst, INT4OID) &&
					 index_column_is(idx, 1, att_model, TEXTOID) &&
					 index_column_is(idx, 2, att_id, INT8OID) &&
					 get_collation_isdeterministic(idx->rd_indcollation[1]))
				by_model = RelationGetRelid(idx);
			index_close(idx, AccessShareLock);
		}
		list_free(indexes);
		if (generation != part_cache_generation)
			continue;			/* an invalidation came in while reading */
		if (!OidIsValid(by_id))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("partition \"%s\" of bridgecore.event has no index on (instance_id, id)",
							RelationGetRelationName(rel)),
					 errhint("Create it: CREATE INDEX ON bridgecore.%s (instance_id, id).",
							 quote_identifier(RelationGetRelationName(rel)))));

		p = hash_search(part_cache, &relid, HASH_ENTER, &found);
		p->by_id = by_id;
		p->by_model = by_model;
		p->att_id = att_id;
		p->att_model = att_model;
		p->att_doc = att_doc;
		return p;
	}
}

/*
 * A copy of the partition's entry: an invalidation processed while the
 * caller works (any lock taken processes them) may remove the entry.
 */
static PartInfo *
partition_info(Relation rel, PartInfo *copy)
{
	*copy = *partition_entry(rel);
	return copy;
}

/*
 * The partitions of bridgecore.event (locked by the caller) in bound order,
 * with the ids each can hold.
 */
static PartRange *
partitions_in_order(Relation parent, int *nparts)
{
	PartitionDesc pd;
	PartitionBoundInfo bi;
	PartRange  *out;
	int			n = 0;
	int			i;

#if PG_VERSION_NUM >= 140000
	pd = RelationGetPartitionDesc(parent, true);
#else
	pd = RelationGetPartitionDesc(parent);
#endif
	out = palloc(sizeof(PartRange) * (pd->nparts + 1));
	bi = pd->boundinfo;
	if (pd->nparts == 0 || bi == NULL)
	{
		*nparts = 0;
		return out;
	}
	if (bi->strategy != PARTITION_STRATEGY_RANGE || partition_bound_has_default(bi))
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("bridgecore.event must be partitioned by range of id, without a default partition"),
				 errhint("Detach the default partition; bridgecore._ensure_partitions() makes the ranges.")));

	/*
	 * Range bounds: datums[i] is a bound, and the partition whose range
	 * starts at datums[i] is indexes[i + 1] (-1 for a gap); it ends below
	 * datums[i + 1].
	 */
	for (i = 0; i < bi->ndatums; i++)
	{
		int			p = bi->indexes[i + 1];

		if (p < 0)
			continue;
		out[n].relid = pd->oids[p];
		out[n].lo = bi->kind[i][0] == PARTITION_RANGE_DATUM_VALUE ?
			DatumGetInt64(bi->datums[i][0]) : PG_INT64_MIN;
		out[n].hi = (i + 1 < bi->ndatums && bi->kind[i + 1][0] == PARTITION_RANGE_DATUM_VALUE) ?
			DatumGetInt64(bi->datums[i + 1][0]) - 1 : PG_INT64_MAX;
		n++;
	}
	*nparts = n;
	return out;
}

static bool
is_wanted(const Wanted *w, const char *s, int len)
{
	int			i;

	for (i = 0; i < w->n; i++)
		if (w->len[i] == len && memcmp(w->s[i], s, len) == 0)
			return true;
	return false;
}

/* Appends one doc to the JSON array, with json_agg's separator. */
static void
append_doc(PullPage *page, const char *doc, int len)
{
	if (page->n > 0)
		appendBinaryStringInfo(&page->events, ", ", 2);
	if (doc == NULL)
		appendBinaryStringInfo(&page->events, "null", 4);
	else
		appendBinaryStringInfo(&page->events, doc, len);
	page->n++;
}

static void
slot_doc(TupleTableSlot *slot, AttrNumber att, char **doc, int *len, bool copy)
{
	bool		isnull;
	Datum		d = slot_getattr(slot, att, &isnull);
	text	   *t;

	if (isnull)
	{
		*doc = NULL;
		*len = 0;
		return;
	}
	t = DatumGetTextPP(d);
	*len = VARSIZE_ANY_EXHDR(t);
	*doc = copy ? pnstrdup(VARDATA_ANY(t), *len) : VARDATA_ANY(t);
}

/*
 * The second way, in one partition: up to need events of the wanted models
 * with ids above after, merged by id from one scan of each model's index,
 * all open at once: each step takes the lowest id at the head of a scan and
 * moves that scan on, so that at most need + (models) index entries are
 * read and only the need events returned have their doc copied.  Returns
 * how many it found (at most need), in *out, in id order.
 */
typedef struct ModelScan
{
	IndexScanDesc scan;
	TupleTableSlot *slot;
	int64		id;				/* of the event at the head, when live */
	bool		live;
} ModelScan;

static bool
model_scan_next(ModelScan *ms, AttrNumber att_id)
{
	bool		isnull;

	ms->live = index_getnext_slot(ms->scan, ForwardScanDirection, ms->slot);
	if (ms->live)
		ms->id = DatumGetInt64(slot_getattr(ms->slot, att_id, &isnull));
	return ms->live;
}

static int
read_by_model(Relation rel, PartInfo *pi, Snapshot snapshot, int32 inst, const Wanted *w,
			  int64 after, int need, Found **out)
{
	Relation	idx = index_open(pi->by_model, AccessShareLock);
	ModelScan  *heads = palloc(sizeof(ModelScan) * w->n);
	Found	   *found = palloc(sizeof(Found) * (Size) Max(need, 1));
	int			nfound = 0;
	int			m;

	for (m = 0; m < w->n; m++)
	{
		ScanKeyData keys[3];

		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(inst));
		ScanKeyEntryInitialize(&keys[1], 0, 2, BTEqualStrategyNumber, InvalidOid,
							   idx->rd_indcollation[1], F_TEXTEQ, w->datums[m]);
		ScanKeyInit(&keys[2], 3, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(after));
		heads[m].scan = index_beginscan(rel, idx, snapshot, 3, 0);
		index_rescan(heads[m].scan, keys, 3, NULL, 0);
		heads[m].slot = table_slot_create(rel, NULL);
		model_scan_next(&heads[m], pi->att_id);
	}
	while (nfound < need)
	{
		int			low = -1;

		CHECK_FOR_INTERRUPTS();
		for (m = 0; m < w->n; m++)
			if (heads[m].live && (low < 0 || heads[m].id < heads[low].id))
				low = m;
		if (low < 0)
			break;
		/* a model named twice yields its events twice: once is enough */
		if (nfound == 0 || found[nfound - 1].id != heads[low].id)
		{
			found[nfound].id = heads[low].id;
			slot_doc(heads[low].slot, pi->att_doc, &found[nfound].doc, &found[nfound].doclen, true);
			nfound++;
		}
		model_scan_next(&heads[low], pi->att_id);
	}
	for (m = 0; m < w->n; m++)
	{
		index_endscan(heads[m].scan);
		ExecDropSingleTupleTableSlot(heads[m].slot);
	}
	pfree(heads);
	index_close(idx, NoLock);
	*out = found;
	return nfound;
}

/* The highest id of the instance in the partition, or -1. */
static int64
newest_in(Relation rel, PartInfo *pi, Snapshot snapshot, int32 inst)
{
	Relation	idx = index_open(pi->by_id, AccessShareLock);
	TupleTableSlot *slot = table_slot_create(rel, NULL);
	ScanKeyData key;
	IndexScanDesc scan;
	int64		newest = -1;

	ScanKeyInit(&key, 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(inst));
	scan = index_beginscan(rel, idx, snapshot, 1, 0);
	index_rescan(scan, &key, 1, NULL, 0);
	if (index_getnext_slot(scan, BackwardScanDirection, slot))
	{
		bool		isnull;

		newest = DatumGetInt64(slot_getattr(slot, pi->att_id, &isnull));
	}
	index_endscan(scan);
	ExecDropSingleTupleTableSlot(slot);
	index_close(idx, NoLock);
	return newest;
}

/*
 * The instance's newest id in the highest partition above pos that holds
 * any of its events (partitions read from the highest down), or -1.
 */
static int64
newest_from(PartRange *parts, int nparts, int64 pos, Snapshot snapshot, int32 inst)
{
	int			k;

	for (k = nparts - 1; k >= 0 && parts[k].hi > pos; k--)
	{
		Relation	rel = table_open(parts[k].relid, AccessShareLock);
		PartInfo	pinfo;
		int64		newest = newest_in(rel, partition_info(rel, &pinfo), snapshot, inst);

		table_close(rel, NoLock);
		CHECK_FOR_INTERRUPTS();
		if (newest >= 0)
			return newest;
	}
	return -1;
}

/*
 * The page: the first lim events of the wanted models above pos, whether a
 * wanted one follows, and the newest id when it comes for free.
 */
static void
read_page(Relation parent, Snapshot snapshot, int32 inst, int64 pos, int lim, const Wanted *w,
		  PullPage *page)
{
	PartRange  *parts;
	int			nparts;
	int			budget = 4 * (lim + 1);
	int			read = 0;
	int64		cur = pos;		/* every event of the instance <= cur is examined */
	bool		done = false;
	bool		exhausted = false;	/* the budget of the first way ran out */
	int			k;

	initStringInfo(&page->events);
	appendStringInfoChar(&page->events, '[');
	page->n = 0;
	page->last_id = 0;
	page->more = false;
	page->newest_known = false;
	page->newest = pos;

	parts = partitions_in_order(parent, &nparts);

	/*
	 * The first way: the (instance_id, id) index, models filtered here.
	 * Without wanted models nothing can be on the page, but the cursor still
	 * moves to the newest id (below).
	 */
	for (k = 0; k < nparts && w->n > 0 && !done && !exhausted; k++)
	{
		Relation	rel;
		PartInfo	pinfo;
		PartInfo   *pi;
		Relation	idx;
		TupleTableSlot *slot;
		ScanKeyData keys[2];
		IndexScanDesc scan;

		if (parts[k].hi <= cur)
			continue;
		rel = table_open(parts[k].relid, AccessShareLock);
		pi = partition_info(rel, &pinfo);
		idx = index_open(pi->by_id, AccessShareLock);
		slot = table_slot_create(rel, NULL);
		ScanKeyInit(&keys[0], 1, BTEqualStrategyNumber, F_INT4EQ, Int32GetDatum(inst));
		ScanKeyInit(&keys[1], 2, BTGreaterStrategyNumber, F_INT8GT, Int64GetDatum(cur));
		scan = index_beginscan(rel, idx, snapshot, 2, 0);
		index_rescan(scan, keys, 2, NULL, 0);
		while (index_getnext_slot(scan, ForwardScanDirection, slot))
		{
			bool		isnull;
			int64		id;
			text	   *model;

			CHECK_FOR_INTERRUPTS();
			id = DatumGetInt64(slot_getattr(slot, pi->att_id, &isnull));
			model = DatumGetTextPP(slot_getattr(slot, pi->att_model, &isnull));
			cur = id;
			read++;
			if (is_wanted(w, VARDATA_ANY(model), VARSIZE_ANY_EXHDR(model)))
			{
				char	   *doc;
				int			len;

				if (page->n == lim)
				{
					page->more = true;
					done = true;
					break;
				}
				slot_doc(slot, pi->att_doc, &doc, &len, false);
				append_doc(page, doc, len);
				page->last_id = id;
			}
			if (read >= budget)
			{
				exhausted = true;
				break;
			}
		}
		index_endscan(scan);
		ExecDropSingleTupleTableSlot(slot);
		index_close(idx, NoLock);
		table_close(rel, NoLock);
	}
	if (!done && !exhausted && w->n > 0)
	{
		/* Read to the end of the log: cur is the newest id above pos. */
		page->newest_known = true;
		page->newest = cur;
	}

	/* The second way, from cur on: each wanted model's own index. */
	for (k = 0; k < nparts && exhausted && !done; k++)
	{
		Relation	rel;
		PartInfo	pinfo;
		PartInfo   *pi;
		int			need = lim + 1 - page->n;
		Found	   *found;
		int			nfound;
		int			j;

		if (parts[k].hi <= cur)
			continue;
		rel = table_open(parts[k].relid, AccessShareLock);
		pi = partition_info(rel, &pinfo);
		if (!OidIsValid(pi->by_model))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("partition \"%s\" of bridgecore.event has no index on (instance_id, model, id)",
							RelationGetRelationName(rel)),
					 errhint("Create it: CREATE INDEX ON bridgecore.%s (instance_id, model, id).",
							 quote_identifier(RelationGetRelationName(rel)))));
		nfound = read_by_model(rel, pi, snapshot, inst, w, cur, need, &found);
		for (j = 0; j < nfound; j++)
		{
			if (page->n == lim)
			{
				page->more = true;
				done = true;
				break;
			}
			append_doc(page, found[j].doc, found[j].doclen);
			page->last_id = found[j].id;
		}
		table_close(rel, NoLock);
	}

	/* The newest id, when the device gets no more. */
	if (!page->more && !page->newest_known)
	{
		int64		newest = newest_from(parts, nparts, pos, snapshot, inst);

		if (newest >= 0)
			page->newest = Max(newest, pos);
		page->newest_known = true;
	}
	appendStringInfoChar(&page->events, ']');
}

/* ---------------------------------------------------------------------
 * The checks and the state row
 * --------------------------------------------------------------------- */

/* As bridgecore._check_device(): the user and device a request names. */
static void
check_device(bool user_null, int64 user_id, text *device)
{
	text	   *claimed;

	if (user_null)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("user_id must not be null"),
				 errhint("Pass the Odoo user id of the app's user.")));
	if (user_id <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("user_id must be positive, got " INT64_FORMAT, user_id),
				 errhint("Pass the Odoo user id of the app's user.")));
	if (device == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("device_id must not be null"),
				 errhint("Pass a stable identifier of the device, 1 to 255 characters.")));
	{
		int			chars = pg_mbstrlen_with_len(VARDATA_ANY(device), VARSIZE_ANY_EXHDR(device));

		if (chars == 0 || chars > MAX_DEVICE_ID_CHARS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("device_id must be 1 to 255 characters, got %d", chars),
					 errhint("Pass a stable identifier of the device, 1 to 255 characters.")));
	}
	/* The same regular expression as the SQL check, for the same classes. */
	if (DatumGetBool(DirectFunctionCall2Coll(textregexeq, DEFAULT_COLLATION_OID, PointerGetDatum(device),
											 CStringGetTextDatum("[[:cntrl:]]"))))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("device_id must not contain control characters"),
				 errhint("Pass a stable identifier of the device, 1 to 255 printable characters.")));
	claimed = bc_claim_user_id();
	if (claimed != NULL)
	{
		char		buf[32];

		snprintf(buf, sizeof(buf), INT64_FORMAT, user_id);
		if (VARSIZE_ANY_EXHDR(claimed) != strlen(buf) ||
			memcmp(VARDATA_ANY(claimed), buf, strlen(buf)) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("user_id " INT64_FORMAT " does not match the authenticated user", user_id),
					 errhint("A device can only act on its own user's sync state.")));
	}
}

/*
 * bridgecore._check_device(user_id, device_id): the same checks for
 * sync_state, sync_reset and sync_reset_all, so that the rule (and the
 * binding of the JWT's user) is written once.
 */
PG_FUNCTION_INFO_V1(bridgecore_check_device);

Datum
bridgecore_check_device(PG_FUNCTION_ARGS)
{
	check_device(PG_ARGISNULL(0), PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0),
				 PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1));
	PG_RETURN_VOID();
}

/* As bridgecore._check_limit(): a page size or count from 1 to max_value. */
static void
check_limit(bool isnull, int32 value, const char *name, int32 max_value)
{
	if (isnull)
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name),
				 errhint("Pass a value from 1 to %d, or omit it for the default.", max_value)));
	if (value < 1 || value > max_value)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 1 and %d, got %d", name, max_value, value),
				 errhint("Pass a value from 1 to %d.", max_value)));
}

/*
 * bridgecore._check_limit(value, name, max_value): the same check for the
 * other functions taking a limit (events, check_updates), written once.
 */
PG_FUNCTION_INFO_V1(bridgecore_check_limit);

Datum
bridgecore_check_limit(PG_FUNCTION_ARGS)
{
	char	   *name;

	if (PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("the name and the maximum of a limit must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(1));
	check_limit(PG_ARGISNULL(0), PG_ARGISNULL(0) ? 0 : PG_GETARG_INT32(0), name, PG_GETARG_INT32(2));
	PG_RETURN_VOID();
}

/* "Known app types: a, b." or NULL when there are none. */
static char *
known_app_types(void)
{
	bool		isnull;
	Datum		d;

	if (app_types_plan == NULL)
		app_types_plan = bc_prepare_kept("SELECT 'Known app types: ' || string_agg(a.name, ', ' ORDER BY a.name) || '.'"
										 "  FROM bridgecore.app_type a", 0, NULL);
	if (SPI_execute_plan(app_types_plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read bridgecore.app_type");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? NULL : TextDatumGetCString(d);
}

static void
hint_if(const char *hint)
{
	if (hint != NULL)
		errhint("%s", hint);
}

/* The wanted models: the app type's, intersected with models_filter. */
static void
wanted_models(text *app_type, ArrayType *filter, Wanted *w)
{
	Oid			argtype = TEXTOID;
	Datum		arg = PointerGetDatum(app_type);
	bool		isnull;
	Datum		models;
	Datum	   *elems;
	bool	   *nulls;
	int			nelems;
	Datum	   *felems = NULL;
	bool	   *fnulls = NULL;
	int			nf = 0;
	int			i;
	int			j;
	MemoryContext outer = CurrentMemoryContext;

	if (app_type_plan == NULL)
		app_type_plan = bc_prepare_kept("SELECT a.models FROM bridgecore.app_type a WHERE a.name = $1",
										1, &argtype);
	if (SPI_execute_plan(app_type_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read bridgecore.app_type");
	if (SPI_processed == 0)
	{
		const char *s = VARDATA_ANY(app_type);
		int			len = VARSIZE_ANY_EXHDR(app_type);
		char	   *hint = known_app_types();

		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown app_type \"%s\"", pnstrdup(s, pg_mbcharcliplen(s, len, 64))),
				 hint_if(hint)));
	}
	models = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	MemoryContextSwitchTo(outer);
	deconstruct_array(DatumGetArrayTypePCopy(models), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &nulls, &nelems);

	if (filter != NULL && ArrayGetNItems(ARR_NDIM(filter), ARR_DIMS(filter)) > 0)
	{
		Oid			types[1] = {TEXTARRAYOID};
		Datum		farg = PointerGetDatum(filter);

		if (model_names_plan == NULL)
			model_names_plan = bc_prepare_kept("SELECT bridgecore._check_model_names($1, 'models_filter')",
											   1, types);
		if (SPI_execute_plan(model_names_plan, &farg, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not check models_filter");
		deconstruct_array(filter, TEXTOID, -1, false, TYPALIGN_INT, &felems, &fnulls, &nf);
	}

	w->n = 0;
	w->datums = palloc(sizeof(Datum) * (nelems + 1));
	w->s = palloc(sizeof(char *) * (nelems + 1));
	w->len = palloc(sizeof(int) * (nelems + 1));
	for (i = 0; i < nelems; i++)
	{
		text	   *t;
		const char *s;
		int			len;
		bool		keep;

		if (nulls[i])
			continue;
		t = DatumGetTextPP(elems[i]);
		s = VARDATA_ANY(t);
		len = VARSIZE_ANY_EXHDR(t);
		if (is_wanted(w, s, len))
			continue;			/* distinct */
		keep = felems == NULL;
		for (j = 0; j < nf && !keep; j++)
		{
			text	   *f;

			if (fnulls[j])
				continue;
			f = DatumGetTextPP(felems[j]);
			keep = (int) VARSIZE_ANY_EXHDR(f) == len && memcmp(VARDATA_ANY(f), s, len) == 0;
		}
		if (!keep)
			continue;
		w->datums[w->n] = PointerGetDatum(t);
		w->s[w->n] = s;
		w->len[w->n] = len;
		w->n++;
	}
}

/*
 * The instance of the pull: the token's (claims), else the one named, else
 * the one a "bc1:" sync token names, if it still exists, else the only one
 * (bc_instance_id() is the rule of every function; the sync token's part is
 * sync_pull's own).
 */
static int32
instance_id(text *instance, text *sync_token)
{
	if (instance == NULL && sync_token != NULL && bc_claim_instance() == NULL)
	{
		int32		named;
		int64		position;
		int64		resets;

		if (sync_token_parse(VARDATA_ANY(sync_token), VARSIZE_ANY_EXHDR(sync_token), &named, &position, &resets) &&
			named >= 0 && bc_instance_exists(named))
			return named;
	}
	return bc_instance_id(instance);
}

/*
 * The columns of the state row SPI just read: last_event_id,
 * last_sync_time, resets (the select lists of lock_state and read_state).
 */
static void
state_columns(int64 *cursor, bool *prev_null, TimestampTz *prev_sync, int64 *resets)
{
	HeapTuple	row = SPI_tuptable->vals[0];
	TupleDesc	desc = SPI_tuptable->tupdesc;
	bool		isnull;

	*cursor = DatumGetInt64(SPI_getbinval(row, desc, 1, &isnull));
	*prev_sync = DatumGetTimestampTz(SPI_getbinval(row, desc, 2, prev_null));
	*resets = DatumGetInt64(SPI_getbinval(row, desc, 3, &isnull));
}

/* The device's state row, locked; made when missing. */
static void
lock_state(int32 inst, int64 user_id, text *device, text *app_type, int64 *cursor,
		   bool *prev_null, TimestampTz *prev_sync, int64 *resets)
{
	Datum		args[4];
	int			attempt;

	if (state_select_plan == NULL)
	{
		Oid			types[4] = {INT4OID, INT8OID, TEXTOID, TEXTOID};

		state_select_plan = bc_prepare_kept("SELECT s.last_event_id, s.last_sync_time, s.resets"
											"  FROM bridgecore.sync_state s"
											" WHERE s.instance_id = $1 AND s.user_id = $2 AND s.device_id = $3"
											"   FOR UPDATE", 3, types);
		state_insert_plan = bc_prepare_kept("INSERT INTO bridgecore.sync_state (instance_id, user_id, device_id, app_type)"
											" VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING", 4, types);
	}
	args[0] = Int32GetDatum(inst);
	args[1] = Int64GetDatum(user_id);
	args[2] = PointerGetDatum(device);
	args[3] = PointerGetDatum(app_type);
	for (attempt = 0; attempt < 2; attempt++)
	{
		if (SPI_execute_plan(state_select_plan, args, NULL, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read bridgecore.sync_state");
		if (SPI_processed == 1)
		{
			state_columns(cursor, prev_null, prev_sync, resets);
			return;
		}
		if (attempt == 0 && SPI_execute_plan(state_insert_plan, args, NULL, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not create the sync state");
	}
	elog(ERROR, "sync state of user " INT64_FORMAT " vanished", user_id);
}

/*
 * On a hot standby: the device's state row as replayed, read without a lock
 * (a standby takes no row locks); a missing row reads as a new device's.
 */
static void
read_state(int32 inst, int64 user_id, text *device, int64 *cursor, bool *prev_null,
		   TimestampTz *prev_sync, int64 *resets)
{
	Datum		args[3];

	if (state_read_plan == NULL)
	{
		Oid			types[3] = {INT4OID, INT8OID, TEXTOID};

		state_read_plan = bc_prepare_kept("SELECT s.last_event_id, s.last_sync_time, s.resets"
										  "  FROM bridgecore.sync_state s"
										  " WHERE s.instance_id = $1 AND s.user_id = $2 AND s.device_id = $3",
										  3, types);
	}
	args[0] = Int32GetDatum(inst);
	args[1] = Int64GetDatum(user_id);
	args[2] = PointerGetDatum(device);
	if (SPI_execute_plan(state_read_plan, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read bridgecore.sync_state");
	if (SPI_processed == 0)
	{
		*cursor = 0;
		*prev_null = true;
		*resets = 0;
		return;
	}
	state_columns(cursor, prev_null, prev_sync, resets);
}

/*
 * A token's position in this shard's ids: an instance moved here from
 * another shard keeps its devices' tokens (bridgecore._moved_position,
 * sql/src/65_shards.sql, says how; one index probe of an empty table on a
 * server that never took an instance in).
 */
static int64
moved_position(int32 inst, int64 pos)
{
	Oid			types[2] = {INT4OID, INT8OID};
	Datum		args[2];
	bool		isnull;
	Datum		d;

	if (pos <= 0)
		return pos;
	/* Versions before 0.4.0 moved nothing (until ALTER EXTENSION UPDATE). */
	if (!OidIsValid(get_relname_relid("moved_position", get_namespace_oid("bridgecore", true))))
		return pos;
	if (moved_plan == NULL)
		moved_plan = bc_prepare_kept("SELECT bridgecore._moved_position($1, $2)", 2, types);
	args[0] = Int32GetDatum(inst);
	args[1] = Int64GetDatum(pos);
	if (SPI_execute_plan(moved_plan, args, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not map the sync_token's position");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? pos : DatumGetInt64(d);
}

/*
 * Whether the log holds the position pos of the instance: an event of it
 * at or above pos, or a retention horizon at or above it (retention removed
 * it).  Every position an answer names is one of these, so a token beyond
 * both names an event this server has not seen.
 */
static bool
log_reaches(Relation parent, Snapshot snapshot, int32 inst, int64 pos)
{
	PartRange  *parts;
	int			nparts;
	Datum		args[1];
	bool		isnull;
	Datum		d;

	if (pos <= 0)
		return true;
	parts = partitions_in_order(parent, &nparts);
	if (newest_from(parts, nparts, pos, snapshot, inst) >= pos)
		return true;
	if (horizon_plan == NULL)
	{
		Oid			types[1] = {INT4OID};

		horizon_plan = bc_prepare_kept("SELECT max(p.through) FROM bridgecore.purged p WHERE p.instance_id = $1",
									   1, types);
	}
	args[0] = Int32GetDatum(inst);
	if (SPI_execute_snapshot(horizon_plan, args, NULL, snapshot, InvalidSnapshot, true, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read bridgecore.purged");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return !isnull && DatumGetInt64(d) >= pos;
}

static int64
purged_through(int32 inst, const Wanted *w, Snapshot snapshot, bool *isnull)
{
	Datum		args[2];
	int			ret;

	if (purged_plan == NULL)
	{
		Oid			types[2] = {INT4OID, TEXTARRAYOID};

		purged_plan = bc_prepare_kept("SELECT max(p.through) FROM bridgecore.purged p"
									  " WHERE p.instance_id = $1 AND (p.model = ANY ($2) OR p.model = '*')",
									  2, types);
	}
	args[0] = Int32GetDatum(inst);
	args[1] = PointerGetDatum(construct_array(w->datums, w->n, TEXTOID, -1, false, TYPALIGN_INT));
	ret = SPI_execute_snapshot(purged_plan, args, NULL, snapshot, InvalidSnapshot, true, false, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read bridgecore.purged");
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, isnull));
}

static void
update_state(int32 inst, int64 user_id, text *device, text *app_type, int64 pos, int n,
			 Datum device_info, bool info_null, Datum app_version, bool version_null)
{
	Datum		args[8];
	char		nulls[8] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' '};

	if (state_update_plan == NULL)
	{
		Oid			types[8] = {INT4OID, INT8OID, TEXTOID, INT8OID, INT4OID, TEXTOID, JSONBOID, TEXTOID};

		/* The stored state never moves back (see sync_pull's SQL docs). */
		state_update_plan = bc_prepare_kept("UPDATE bridgecore.sync_state s"
											"   SET last_event_id = greatest(s.last_event_id, $4),"
											"       last_sync_time = now(),"
											"       sync_count = s.sync_count + 1,"
											"       last_event_count = $5,"
											"       total_events_synced = s.total_events_synced + $5,"
											"       app_type = $6,"
											"       is_active = true,"
											"       device_info = coalesce($7, s.device_info),"
											"       app_version = coalesce($8, s.app_version)"
											" WHERE s.instance_id = $1 AND s.user_id = $2 AND s.device_id = $3",
											8, types);
	}
	args[0] = Int32GetDatum(inst);
	args[1] = Int64GetDatum(user_id);
	args[2] = PointerGetDatum(device);
	args[3] = Int64GetDatum(pos);
	args[4] = Int32GetDatum(n);
	args[5] = PointerGetDatum(app_type);
	args[6] = device_info;
	nulls[6] = info_null ? 'n' : ' ';
	args[7] = app_version;
	nulls[7] = version_null ? 'n' : ' ';
	if (SPI_execute_plan(state_update_plan, args, nulls, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not update bridgecore.sync_state");
}

static void
add_key(StringInfo out, bool first, const char *key)
{
	if (!first)
		appendBinaryStringInfo(out, ", ", 2);
	escape_json(out, key);
	appendBinaryStringInfo(out, " : ", 3);
}

/*
 * bridgecore.sync_pull(user_id bigint, device_id text, app_type text,
 *     "limit" integer, models_filter text[], instance text, sync_token text,
 *     device_info jsonb, app_version text) returns json
 *
 * Runs as the extension owner (SECURITY DEFINER, search_path pinned by its
 * SQL declaration).  The answer is the text json_build_object wrote before.
 */
PG_FUNCTION_INFO_V1(bridgecore_sync_pull);

Datum
bridgecore_sync_pull(PG_FUNCTION_ARGS)
{
	int64		user_id = PG_ARGISNULL(0) ? 0 : PG_GETARG_INT64(0);
	text	   *device = PG_ARGISNULL(1) ? NULL : PG_GETARG_TEXT_PP(1);
	text	   *app_type = PG_ARGISNULL(2) ? NULL : PG_GETARG_TEXT_PP(2);
	text	   *instance = PG_ARGISNULL(5) ? NULL : PG_GETARG_TEXT_PP(5);
	text	   *sync_token = PG_ARGISNULL(6) ? NULL : PG_GETARG_TEXT_PP(6);
	ArrayType  *filter = PG_ARGISNULL(4) ? NULL : PG_GETARG_ARRAYTYPE_P(4);
	int			lim;
	MemoryContext callcxt;
	MemoryContext oldcxt;
	Wanted		wanted;
	int32		inst;
	int64		cursor;
	bool		prev_null;
	TimestampTz prev_sync = 0;
	int64		pos;
	Oid			parent_oid;
	Relation	parent;
	Snapshot	snapshot;
	PullPage		page;
	bool		purged_null;
	int64		purged;
	bool		resync = false;
	bool		standby;
	bool		check_reach = false;
	int64		resets = 0;
	StringInfoData out;
	char		token[80];
	text	   *result;

	check_device(PG_ARGISNULL(0), user_id, device);
	lim = PG_ARGISNULL(3) ? 0 : PG_GETARG_INT32(3);
	check_limit(PG_ARGISNULL(3), lim, "limit", MAX_LIMIT);

	/* Everything of this call in one short-lived context. */
	callcxt = AllocSetContextCreate(CurrentMemoryContext, "bridgecore sync_pull", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(callcxt);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	/* SPI_connect switched to its own context, which SPI_finish frees. */
	MemoryContextSwitchTo(callcxt);

	if (app_type == NULL)
	{
		char	   *hint = known_app_types();

		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("app_type must not be null"),
				 hint_if(hint)));
	}
	wanted_models(app_type, filter, &wanted);

	/*
	 * A hot standby cannot store the device's state: it answers from the
	 * token alone (the device's stored state catches up when the device
	 * next pulls on the primary with the token it got here).
	 */
	standby = RecoveryInProgress();
	if (standby && sync_token == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
				 errmsg("bridgecore.sync_pull on a standby needs a sync_token"),
				 errdetail("A standby cannot store the device's sync state; it answers from the token alone."),
				 errhint("Pass the next_sync_token of the device's last answer (\"0\" on its first pull), or pull from the primary.")));

	/*
	 * An omitted instance is the one a 'bc1:' sync_token names, unless the
	 * JWT names one: apps that omit it keep working when an instance is
	 * added.
	 */
	inst = instance_id(instance, sync_token);
	DirectFunctionCall4(bridgecore_rate_limit, CStringGetTextDatum("sync_pull"), Int32GetDatum(inst),
						Int64GetDatum(user_id), PointerGetDatum(device));

	if (standby)
		read_state(inst, user_id, device, &cursor, &prev_null, &prev_sync, &resets);
	else
		lock_state(inst, user_id, device, app_type, &cursor, &prev_null, &prev_sync, &resets);

	/*
	 * A token names the last answer the app processed: continue from there.
	 * "0" is the starting token: a device's first pull may pass it, so that
	 * a lost first answer can be asked for again.
	 *
	 * A token beyond the stored state comes from another device, from before
	 * a sync_reset, or from a standby (whose answers store nothing).  A
	 * standby's token carries the device's resets as the standby saw them:
	 * when they are the stored ones, no reset came after the token's chain
	 * began, and the token is good if this server's log holds its position
	 * (checked with the page's snapshot, below).
	 */
	pos = cursor;
	if (sync_token != NULL)
	{
		int64		token_resets;

		pos = sync_token_position(sync_token, inst, &token_resets);
		pos = moved_position(inst, pos);
		if (token_resets >= 0 && token_resets < resets)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("sync_token is from before this device's last sync_reset"),
					 errdetail("The token counts " INT64_FORMAT " resets of this device; its state counts " INT64_FORMAT ".",
							   token_resets, resets),
					 errhint(standby ? "Pull from the primary without sync_token, and keep the token from that answer."
							 : "Retry without sync_token, and keep the token from that answer.")));
		if (standby && (token_resets > resets || (token_resets < 0 && pos > cursor)))
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("this standby has not yet replayed the device's sync state that the sync_token names"),
					 token_resets > resets
					 ? errdetail("The token counts " INT64_FORMAT " resets of this device; this standby has replayed " INT64_FORMAT ".",
								 token_resets, resets)
					 : errdetail("The token names event " INT64_FORMAT "; this standby has the device's state at " INT64_FORMAT ".",
								 pos, cursor),
					 errhint("Retry in a moment, or pull from the primary.")));
		if (pos > cursor && (token_resets < 0 || token_resets > resets))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("sync_token is ahead of this device's sync state"),
					 errdetail("The token names event " INT64_FORMAT "; the device's state is at " INT64_FORMAT ".",
							   pos, cursor),
					 errhint("Pass a token this device received, or omit it to continue from the stored state.")));
		check_reach = pos > cursor;
	}

	/*
	 * Retention drops whole partitions, which no snapshot keeps: a read that
	 * waited for the drop's lock would run on a snapshot from before it,
	 * without the dropped rows and without their horizon.  The log is locked
	 * first (ACCESS SHARE on the parent only, as LOCK TABLE ONLY did), so the
	 * snapshot of the page comes after any drop it waited for, and a drop
	 * waits for this pull.
	 *
	 * One snapshot for the page, the newest id and the retention horizon, so
	 * that they agree.  Retention removes a prefix of the log, so every
	 * retained event above pos is on the page (or the next ones); the answer
	 * says resync_required exactly when retention removed an event of a
	 * model this device wants above its position (purged records the
	 * highest removed id per model; '*' stands for removals before 0.3.0,
	 * whose models were not recorded).
	 */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TRANSACTION_STATE),
				 errmsg("bridgecore.sync_pull needs a READ COMMITTED transaction"),
				 errdetail("A REPEATABLE READ or SERIALIZABLE snapshot predates the log's lock: a partition dropped meanwhile would be missing from the page without its retention horizon."),
				 errhint("Call bridgecore.sync_pull() outside REPEATABLE READ and SERIALIZABLE transactions.")));
	parent_oid = get_relname_relid("event", get_namespace_oid("bridgecore", false));
	if (!OidIsValid(parent_oid))
		elog(ERROR, "bridgecore.event does not exist");
	LockRelationOid(parent_oid, AccessShareLock);
	parent = table_open(parent_oid, NoLock);
	if (parent->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		elog(ERROR, "bridgecore.event is not partitioned");
	snapshot = RegisterSnapshot(GetTransactionSnapshot());

	/*
	 * A partition attached (SHARE UPDATE EXCLUSIVE, which this pull's lock
	 * does not wait for) and filled between the lock and the snapshot is in
	 * the snapshot: the partition list must hold it too.
	 */
	AcceptInvalidationMessages();
	read_page(parent, snapshot, inst, pos, lim, &wanted, &page);
	if (check_reach && page.n == 0 && page.newest <= pos && !log_reaches(parent, snapshot, inst, pos))
	{
		if (standby)
			ereport(ERROR,
					(errcode(ERRCODE_T_R_SERIALIZATION_FAILURE),
					 errmsg("this standby has not yet replayed event " INT64_FORMAT ", which the sync_token names", pos),
					 errhint("Retry in a moment, or pull from the primary.")));
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sync_token is ahead of the event log"),
				 errdetail("The token names event " INT64_FORMAT ", which this instance's log has not reached.", pos),
				 errhint("Pass a token this device received, or omit it to continue from the stored state.")));
	}
	purged = purged_through(inst, &wanted, snapshot, &purged_null);
	UnregisterSnapshot(snapshot);
	table_close(parent, NoLock);

	if (!purged_null && pos < purged)
	{
		resync = true;
		if (!page.more)
			pos = Max(pos, purged);
	}
	/*
	 * With nothing more to send, the cursor moves past the events this
	 * device does not want, so they are not scanned again.
	 */
	if (page.more)
		pos = page.last_id;
	else
		pos = Max(pos, page.newest);

	/*
	 * The stored state never moves back: a token replayed from an earlier
	 * answer (a lost answer, a second sync path) is served from its own
	 * position, and every later token issued to this device stays valid.
	 */
	if (!standby)
		update_state(inst, user_id, device, app_type, pos, page.n,
					 PG_ARGISNULL(7) ? (Datum) 0 : PG_GETARG_DATUM(7), PG_ARGISNULL(7),
					 PG_ARGISNULL(8) ? (Datum) 0 : PG_GETARG_DATUM(8), PG_ARGISNULL(8));
	DirectFunctionCall2(bridgecore_count_sync_pull, Int32GetDatum(inst), Int32GetDatum(page.n));

	/* The answer, as json_build_object wrote it. */
	initStringInfo(&out);
	appendStringInfoChar(&out, '{');
	add_key(&out, true, "status");
	escape_json(&out, "success");
	add_key(&out, false, "has_updates");
	appendStringInfoString(&out, page.n > 0 ? "true" : "false");
	add_key(&out, false, "new_events_count");
	appendStringInfo(&out, "%d", page.n);
	add_key(&out, false, "events");
	appendBinaryStringInfo(&out, page.events.data, page.events.len);
	add_key(&out, false, "next_sync_token");
	if (standby)
		snprintf(token, sizeof(token), "bc1:%d:" INT64_FORMAT ":" INT64_FORMAT, inst, pos, resets);
	else
		snprintf(token, sizeof(token), "bc1:%d:" INT64_FORMAT, inst, pos);
	escape_json(&out, token);
	add_key(&out, false, "last_sync_time");
	if (prev_null)
		appendStringInfoString(&out, "null");
	else
	{
		/* As bridgecore._iso(): to_char of the UTC time. */
		Datum		utc = DirectFunctionCall2(timestamptz_zone, CStringGetTextDatum("UTC"),
											  TimestampTzGetDatum(prev_sync));
		Datum		iso = DirectFunctionCall2(timestamp_to_char, utc,
											  CStringGetTextDatum("YYYY-MM-DD\"T\"HH24:MI:SS\"Z\""));

		escape_json(&out, TextDatumGetCString(iso));
	}
	add_key(&out, false, "has_more");
	appendStringInfoString(&out, page.more ? "true" : "false");
	add_key(&out, false, "resync_required");
	appendStringInfoString(&out, resync ? "true" : "false");
	appendStringInfoChar(&out, '}');

	/*
	 * The answer goes to the caller's context before SPI_finish, which frees
	 * SPI's context (every SPI call returns in it, so much of the above was
	 * allocated there), then the call's own context goes.
	 */
	MemoryContextSwitchTo(oldcxt);
	result = cstring_to_text_with_len(out.data, out.len);
	SPI_finish();
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(callcxt);
	PG_RETURN_TEXT_P(result);
}
