/*
 * ingest.c: stores a batch of update.webhook records: exactly once per
 * (instance, Odoo id), local ids in Odoo id order and assigned under the
 * ordering lock, malformed records to dead_letter, one NOTIFY per model.
 *
 * The one implementation of the ingestion rules: the poller calls
 * ingest_batch() with the records it parsed, and bridgecore.ingest() (SQL)
 * reaches the same function through bridgecore._ingest(), so both paths
 * store and dead-letter identically by construction.
 *
 * The valid records go into the log as COPY puts rows in (ingest_direct.c),
 * or, for a log that path does not know, with one prepared INSERT over
 * arrays.  Runs inside the caller's transaction and SPI connection.
 */
#include "ingest.h"
#include "decode.h"
#include "partition.h"
#include "stats.h"

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#define NCOLS 11

static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr moving_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
static Oid	insert_plan_summary = InvalidOid;	/* the summary insert_plan writes */
static SPIPlanPtr dead_letter_plan = NULL;

static void
prepare_plans(void)
{
	Oid			insert_types[NCOLS + 2] = {INT4OID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
	TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID};
	Oid			dead_types[4] = {INT4OID, INT8OID, TEXTOID, TEXTOID};
	Oid			summary_rel;

	/*
	 * The insert keeps bridgecore.partition_summary up to date where it
	 * exists (0.4.0 on): looked up at each batch, so that a plan kept from
	 * before ALTER EXTENSION ... UPDATE made it (or from before a DROP
	 * EXTENSION) is made again.
	 */
	summary_rel = get_relname_relid("partition_summary", get_namespace_oid("bridgecore", true));
	if (insert_plan != NULL && summary_rel != insert_plan_summary)
	{
		SPI_freeplan(insert_plan);
		insert_plan = NULL;
	}
	if (insert_plan == NULL)
	{
		/*
		 * A generic plan: its shape does not depend on the values (one
		 * batch, index look-ups by instance and Odoo id), and a custom plan
		 * per batch would plan this statement, and the _event_doc call of
		 * the generated column, every time.
		 */
		insert_plan = bc_prepare_kept_opts(psprintf("%s%s%s",
			/*
			 * Exactly once per (instance, Odoo id), across partitions: no
			 * unique index can say so on a log partitioned by local id, so
			 * the records already stored are left out here, which is
			 * race-free because every insert holds the ordering lock.  Only
			 * a record at or below the instance's highest stored Odoo id (a
			 * gap fill, a retry, a re-delivery) can be stored already, so
			 * only those are looked up; a batch's own repeats keep their
			 * first copy.
			 */
			"WITH batch AS ("
			" SELECT DISTINCT ON (u.odoo_id) u.*"
			"  FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) WITH ORDINALITY"
			"    AS u(odoo_id, model, record_id, event, priority, category, payload, changed, uid, uname, ts, n)"
			"  ORDER BY u.odoo_id, u.n),"
			" inserted AS ("
			" INSERT INTO bridgecore.event (instance_id, odoo_id, model, record_id, event, priority,"
			"   category, payload, changed_fields, odoo_user_id, odoo_user_name, occurred_at)"
			" SELECT $1, u.odoo_id, u.model, u.record_id, u.event::bridgecore.event_kind,"
			"   u.priority::bridgecore.priority, u.category, u.payload::jsonb, u.changed::text[],"
			"   u.uid, u.uname, u.ts"
			"  FROM batch u"
			"  WHERE (u.odoo_id > (SELECT max(e.odoo_id) FROM bridgecore.event e WHERE e.instance_id = $1))"
			"         IS NOT FALSE"
			"     OR NOT EXISTS (SELECT 1 FROM bridgecore.event e"
			"                     WHERE e.instance_id = $1 AND e.odoo_id = u.odoo_id)"
			"  ORDER BY u.odoo_id"
			" RETURNING id, odoo_id, model, priority, tableoid, occurred_at),",
			/*
			 * What each partition holds, for retention: in this statement,
			 * so it commits or rolls back with the events, and under the
			 * ordering lock, so no two batches update it at once.
			 */
			OidIsValid(summary_rel)
			? " summary AS ("
			" INSERT INTO bridgecore.partition_summary AS s (part, instance_id, model, deleted, events, max_id, newest_at)"
			" SELECT i.tableoid, $1, i.model, false, count(*), max(i.id), max(i.occurred_at)"
			"  FROM inserted i GROUP BY i.tableoid, i.model"
			" ON CONFLICT (part, instance_id, model, deleted) DO UPDATE"
			"   SET events = s.events + EXCLUDED.events, max_id = GREATEST(s.max_id, EXCLUDED.max_id),"
			"       newest_at = GREATEST(s.newest_at, EXCLUDED.newest_at)),"
			: "",
			/* a record stored now settles its earlier dead letter */
			" resolved AS ("
			" UPDATE bridgecore.dead_letter d SET status = 'resolved'"
			"  WHERE d.instance_id = $1 AND d.status IN ('pending', 'retrying', 'ignored')"
			"    AND d.odoo_id IN (SELECT odoo_id FROM inserted))"
			" SELECT g.n, g.model, pg_catalog.pg_notify('bridgecore_events', pg_catalog.json_build_object("
			"   'instance', $13, 'model', g.model, 'count', g.n, 'max_id', g.max_id, 'high', g.high)::text)"
			"  FROM (SELECT model, count(*) AS n, max(id) AS max_id,"
			"               count(*) FILTER (WHERE priority = 'high') AS high"
			"          FROM inserted GROUP BY model) g"),
			NCOLS + 2, insert_types, CURSOR_OPT_GENERIC_PLAN);
		insert_plan_summary = summary_rel;
	}
	if (dead_letter_plan == NULL)
		dead_letter_plan = bc_prepare_kept(
			/*
			 * A record without a usable id is kept once: when Odoo returns the
			 * same one again, its dead letter counts another attempt.
			 */
			"WITH again AS ("
			" UPDATE bridgecore.dead_letter x SET attempts = x.attempts + 1, last_failed_at = now()"
			"  WHERE $2 IS NULL AND x.instance_id = $1 AND x.odoo_id IS NULL"
			"    AND pg_catalog.md5(x.record::text) = pg_catalog.md5($3) AND x.record::text = $3"
			"    AND x.status <> 'resolved'"
			" RETURNING 1),"
			" added AS ("
			" INSERT INTO bridgecore.dead_letter AS d (instance_id, odoo_id, record, reason)"
			" SELECT $1, $2, $3::json, $4"
			/* a stored version of the id wins: the bad one is a duplicate */
			"  WHERE NOT EXISTS (SELECT 1 FROM bridgecore.event e WHERE e.instance_id = $1 AND e.odoo_id = $2)"
			"    AND NOT EXISTS (SELECT 1 FROM again)"
			" ON CONFLICT (instance_id, odoo_id) WHERE odoo_id IS NOT NULL DO UPDATE"
			"   SET record = EXCLUDED.record, reason = EXCLUDED.reason,"
			"       last_failed_at = now(), attempts = d.attempts + 1,"
			"       status = CASE d.status WHEN 'ignored' THEN d.status ELSE 'pending' END"
			" RETURNING 1)"
			" SELECT (SELECT count(*) FROM again) + (SELECT count(*) FROM added)",
			4, dead_types);
}

static Datum
make_array(Datum *values, bool *nulls, int n, Oid elemtype)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;
	int			dims[1] = {n};
	int			lbs[1] = {1};

	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_md_array(values, nulls, 1, dims, lbs, elemtype,
											  typlen, typbyval, typalign));
}

static Datum
text_or_null(const char *s, bool *isnull)
{
	*isnull = (s == NULL);
	return s ? CStringGetTextDatum(s) : (Datum) 0;
}

/* A later bad record with the same Odoo id replaces this one (as in SQL). */
static bool
superseded(DecodedEvent *ev, int i, int n)
{
	for (int j = i + 1; j < n; j++)
		if (ev[j].problem && ev[j].has_odoo_id && ev[i].has_odoo_id &&
			ev[j].odoo_id == ev[i].odoo_id)
			return true;
	return false;
}

/*
 * The valid records through the prepared INSERT statement: for a log the
 * direct path does not know (ingest_direct.c), such as one before 0.4.0.
 */
static void
insert_with_statement(int32 instance_id, const char *instance_name, DecodedEvent **valid,
					  int nvalid, IngestSummary *summary, TimestampTz started)
{
	static const Oid elem_types[NCOLS] = {INT8OID, TEXTOID, INT8OID, TEXTOID, TEXTOID,
	TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum	   *cols[NCOLS];
	bool	   *nulls[NCOLS];
	Datum		args[NCOLS + 2];

	for (int c = 0; c < NCOLS; c++)
	{
		cols[c] = palloc(sizeof(Datum) * nvalid);
		nulls[c] = palloc0(sizeof(bool) * nvalid);
	}
	for (int i = 0; i < nvalid; i++)
	{
		DecodedEvent *e = valid[i];

		cols[0][i] = Int64GetDatum(e->odoo_id);
		cols[1][i] = CStringGetTextDatum(e->model);
		cols[2][i] = Int64GetDatum(e->record_id);
		cols[3][i] = CStringGetTextDatum(e->event);
		cols[4][i] = text_or_null(e->priority, &nulls[4][i]);
		cols[5][i] = text_or_null(e->category, &nulls[5][i]);
		cols[6][i] = text_or_null(decoded_payload_text(e), &nulls[6][i]);
		cols[7][i] = text_or_null(e->changed_fields, &nulls[7][i]);
		cols[8][i] = Int64GetDatum(e->odoo_user_id);
		nulls[8][i] = !e->has_user;
		cols[9][i] = text_or_null(e->has_user ? e->odoo_user_name : NULL, &nulls[9][i]);
		cols[10][i] = TimestampTzGetDatum(e->occurred_at);
	}
	args[0] = Int32GetDatum(instance_id);
	for (int c = 0; c < NCOLS; c++)
		args[c + 1] = make_array(cols[c], nulls[c], nvalid, elem_types[c]);
	args[NCOLS + 1] = CStringGetTextDatum(instance_name);

	/*
	 * The existence check must see every event committed before the
	 * ordering lock was granted, which a REPEATABLE READ or SERIALIZABLE
	 * transaction's snapshot may predate.
	 */
	if ((IsolationUsesXactSnapshot()
		 ? SPI_execute_snapshot(insert_plan, args, NULL, GetLatestSnapshot(), InvalidSnapshot,
								false, true, 0)
		 : SPI_execute_plan(insert_plan, args, NULL, false, 0)) != SPI_OK_SELECT)
		elog(ERROR, "could not store events");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int64		count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[r],
														SPI_tuptable->tupdesc, 1, &isnull));
		char	   *model = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2);

		summary->inserted += count;
		summary->notifications++;
		stats_count_model(instance_id, model, count,
						  (double) (GetCurrentTimestamp() - started) / USECS_PER_SEC);
	}
}

/*
 * Stores records, a json-c array, and scan, what json_scan_records() found
 * in the text it was parsed from (one entry per element).
 */
void
ingest_batch(int32 instance_id, const char *instance_name, json_object *records,
			 const RecordScan *scan, IngestSummary *summary)
{
	int			n = (int) json_object_array_length(records);
	DecodedEvent *ev = palloc0(sizeof(DecodedEvent) * Max(n, 1));
	DecodedEvent **valid = palloc(sizeof(DecodedEvent *) * Max(n, 1));
	int			nvalid = 0;
	TimestampTz started = GetCurrentTimestamp();

	if (scan->nrecords != n)
		elog(ERROR, "the batch has %d records, its text %d", n, scan->nrecords);
	memset(summary, 0, sizeof(*summary));
	summary->seen = palloc(sizeof(int64) * Max(n, 1));
	if (lock_plan == NULL)
		lock_plan = bc_prepare_kept("SELECT pg_catalog.pg_advisory_xact_lock("
								 "'bridgecore.event'::regclass::oid::integer, 0)", 0, NULL);
	if (SPI_execute_plan(lock_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not take the ingest ordering lock");

	/*
	 * Only now, under the ordering lock, whether the insert keeps the
	 * partition summary: ALTER EXTENSION ... UPDATE makes the summary and
	 * fills it under this lock, and a batch that had looked before waiting
	 * would be stored without its summary rows, which retention reads.
	 * Waiting for an advisory lock processes no invalidations: they are
	 * taken in here, so that the lookup sees the committed catalog.
	 */
	AcceptInvalidationMessages();
	prepare_plans();

	/*
	 * An instance that bridgecore.move_instance() is copying to another
	 * shard stores nothing here any more (sql/src/65_shards.sql): whatever
	 * Odoo or an administrator sends meanwhile is stored by the new shard.
	 */
	{
		Oid			argtype = INT4OID;
		Datum		arg = Int32GetDatum(instance_id);
		bool		isnull;
		bool		moving = false;

		/* Versions before 0.4.0 have no such table (until ALTER EXTENSION UPDATE). */
		if (OidIsValid(get_relname_relid("moving_out", get_namespace_oid("bridgecore", true))))
		{
			if (moving_plan == NULL)
				moving_plan = bc_prepare_kept("SELECT EXISTS (SELECT FROM bridgecore.moving_out m WHERE m.instance_id = $1)",
											  1, &argtype);
			/* Seen as of now, like the insert's existence check, below. */
			if ((IsolationUsesXactSnapshot()
				 ? SPI_execute_snapshot(moving_plan, &arg, NULL, GetLatestSnapshot(), InvalidSnapshot,
										true, false, 1)
				 : SPI_execute_plan(moving_plan, &arg, NULL, false, 1)) != SPI_OK_SELECT || SPI_processed != 1)
				elog(ERROR, "could not read bridgecore.moving_out");
			moving = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		}
		if (moving)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("instance \"%s\" is moving to another shard", instance_name),
					 errdetail("bridgecore.move_instance() is copying it; this shard stores none of its events any more."),
					 errhint("Its events are stored on the new shard once the move completes.")));
	}

	for (int i = 0; i < n; i++)
	{
		DecodedEvent *e = &ev[i];

		decode_record(json_object_array_get_idx(records, i), scan->records[i].flags, e);
		if (e->has_odoo_id)
			summary->seen[summary->nseen++] = e->odoo_id;
		if (e->problem)
			continue;
		valid[nvalid++] = e;
		if (!summary->has_newest || e->occurred_at > summary->newest)
			summary->newest = e->occurred_at;
		summary->has_newest = true;
	}

	if (nvalid > 0)
	{
		partition_ensure_room(nvalid);
		if (!ingest_direct(instance_id, instance_name, valid, nvalid,
						   OidIsValid(insert_plan_summary), started, summary))
			insert_with_statement(instance_id, instance_name, valid, nvalid, summary, started);
	}
	summary->duplicates = nvalid - summary->inserted;

	for (int i = 0; i < n; i++)
	{
		Datum		dargs[4];
		char		dnulls[4] = {' ', ' ', ' ', ' '};

		if (!ev[i].problem || superseded(ev, i, n))
			continue;
		dargs[0] = Int32GetDatum(instance_id);
		dargs[1] = Int64GetDatum(ev[i].odoo_id);
		if (!ev[i].has_odoo_id)
			dnulls[1] = 'n';
		dargs[2] = CStringGetTextDatum(dead_letter_record_text(json_object_array_get_idx(records, i),
															   &scan->records[i]));
		dargs[3] = CStringGetTextDatum(ev[i].problem);
		if (SPI_execute_plan(dead_letter_plan, dargs, dnulls, false, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			elog(ERROR, "could not store a dead letter");
		{
			bool		isnull;

			/* 0: a stored version of this id exists, so this one is a duplicate */
			if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) > 0)
				summary->dead_lettered++;
			else
				summary->duplicates++;
		}
	}
}

/* ---- bridgecore._ingest(), the SQL path ---------------------------------- */

PG_FUNCTION_INFO_V1(bridgecore_ingest_json);

static const char *
json_c_type_name(json_object *v)
{
	switch (json_object_get_type(v))
	{
		case json_type_null:
			return "null";
		case json_type_boolean:
			return "boolean";
		case json_type_double:
		case json_type_int:
			return "number";
		case json_type_object:
			return "object";
		case json_type_array:
			return "array";
		case json_type_string:
			return "string";
	}
	return "unknown";
}

/*
 * bridgecore._ingest(inst_id integer, events json) returns jsonb: the
 * records are parsed as the poller parses Odoo's answer, then stored by
 * ingest_batch(), in the caller's transaction.
 */
Datum
bridgecore_ingest_json(PG_FUNCTION_ARGS)
{
	text	   *events;
	int32		instance_id;
	json_tokener *tok;
	json_object *volatile records = NULL;
	RecordScan	scan;
	IngestSummary summary;
	char	   *instance_name = NULL;
	StringInfoData out;
	bool		has_max = false;
	int64		max_id = 0;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("events must not be null"),
				 errhint("Pass a JSON array of update.webhook records as search_read returns them.")));
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance must not be null")));
	instance_id = PG_GETARG_INT32(0);
	events = PG_GETARG_TEXT_PP(1);

	tok = json_tokener_new_ex(BC_JSON_MAX_DEPTH);
	if (tok == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	records = json_tokener_parse_ex(tok, VARDATA_ANY(events), VARSIZE_ANY_EXHDR(events));
	if (json_tokener_get_error(tok) != json_tokener_success)
	{
		enum json_tokener_error jerr = json_tokener_get_error(tok);

		json_tokener_free(tok);
		json_object_put(records);
		ereport(ERROR,
				(errcode(jerr == json_tokener_error_depth ? ERRCODE_STATEMENT_TOO_COMPLEX
						 : ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events could not be read: %s", json_tokener_error_desc(jerr)),
				 errhint("Pass a JSON array of update.webhook records nested at most %d levels deep.",
						 BC_JSON_MAX_DEPTH)));
	}
	json_tokener_free(tok);
	if (!json_object_is_type(records, json_type_array))
	{
		const char *kind = json_c_type_name(records);

		json_object_put(records);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("events must be a JSON array, got %s", kind),
				 errhint("Pass a JSON array of update.webhook records as search_read returns them.")));
	}

	PG_TRY();
	{
		Datum		arg = Int32GetDatum(instance_id);
		Oid			argtype = INT4OID;
		MemoryContext caller = CurrentMemoryContext;

		SPI_connect();
		if (SPI_execute_with_args("SELECT i.name FROM bridgecore.instance i WHERE i.id = $1",
								  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT ||
			SPI_processed != 1)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("instance %d does not exist", instance_id)));
		instance_name = MemoryContextStrdup(caller,
											SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
		/* the json type has checked the syntax, so the text can be followed */
		if (!json_scan_records(VARDATA_ANY(events), VARSIZE_ANY_EXHDR(events), false, &scan))
			elog(ERROR, "could not scan the events text");
		ingest_batch(instance_id, instance_name, records, &scan, &summary);
		for (int i = 0; i < summary.nseen; i++)
		{
			if (!has_max || summary.seen[i] > max_id)
				max_id = summary.seen[i];
			has_max = true;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		json_object_put(records);
	}
	PG_END_TRY();

	stats_count_ingest(instance_id, summary.inserted, summary.duplicates,
					   summary.dead_lettered, summary.notifications, -1);

	initStringInfo(&out);
	appendStringInfoString(&out, "{\"instance\": ");
	escape_json(&out, instance_name);
	appendStringInfo(&out, ", \"inserted\": " INT64_FORMAT ", \"duplicates\": " INT64_FORMAT
					 ", \"dead_lettered\": " INT64_FORMAT ", \"notifications\": " INT64_FORMAT,
					 summary.inserted, summary.duplicates, summary.dead_lettered,
					 summary.notifications);
	if (has_max)
		appendStringInfo(&out, ", \"max_odoo_id\": " INT64_FORMAT "}", max_id);
	else
		appendStringInfoString(&out, ", \"max_odoo_id\": null}");
	PG_RETURN_DATUM(DirectFunctionCall1(jsonb_in, CStringGetDatum(out.data)));
}
