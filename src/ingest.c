/*
 * ingest.c: stores a batch of decoded update.webhook records, for the
 * worker, with the behaviour of bridgecore._ingest(): exactly once per
 * (instance, Odoo id), local ids in Odoo id order and assigned under the
 * ordering lock, malformed records to dead_letter, one NOTIFY per model.
 *
 * The valid records go in with one prepared INSERT over arrays, so a batch
 * costs one statement however large it is.  Runs inside the caller's
 * transaction and SPI connection.
 */
#include "ingest.h"
#include "decode.h"
#include "stats.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"

#define NCOLS 11

static SPIPlanPtr lock_plan = NULL;
static SPIPlanPtr insert_plan = NULL;
static SPIPlanPtr dead_letter_plan = NULL;

static SPIPlanPtr
prepare_kept(const char *sql, int nargs, Oid *argtypes)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);

	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql, SPI_result_code_string(SPI_result));
	SPI_keepplan(plan);
	return plan;
}

static void
prepare_plans(void)
{
	Oid			insert_types[NCOLS + 2] = {INT4OID, INT8ARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
		TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID, INT8ARRAYOID,
	TEXTARRAYOID, TIMESTAMPTZARRAYOID, TEXTOID};
	Oid			dead_types[4] = {INT4OID, INT8OID, TEXTOID, TEXTOID};

	if (lock_plan == NULL)
		lock_plan = prepare_kept("SELECT pg_catalog.pg_advisory_xact_lock("
								 "'bridgecore.event'::regclass::oid::integer, 0)", 0, NULL);
	if (insert_plan == NULL)
		insert_plan = prepare_kept(
			"WITH inserted AS ("
			" INSERT INTO bridgecore.event (instance_id, odoo_id, model, record_id, event, priority,"
			"   category, payload, changed_fields, odoo_user_id, odoo_user_name, occurred_at)"
			" SELECT $1, u.odoo_id, u.model, u.record_id, u.event::bridgecore.event_kind,"
			"   u.priority::bridgecore.priority, u.category, u.payload::jsonb, u.changed::text[],"
			"   u.uid, u.uname, u.ts"
			"  FROM unnest($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
			"    AS u(odoo_id, model, record_id, event, priority, category, payload, changed, uid, uname, ts)"
			"  ORDER BY u.odoo_id"
			" ON CONFLICT (instance_id, odoo_id) DO NOTHING"
			" RETURNING id, odoo_id, model, priority),"
			/* a record stored now settles its earlier dead letter */
			" resolved AS ("
			" UPDATE bridgecore.dead_letter d SET status = 'resolved'"
			"  WHERE d.instance_id = $1 AND d.status IN ('pending', 'retrying', 'ignored')"
			"    AND d.odoo_id IN (SELECT odoo_id FROM inserted))"
			" SELECT g.n, g.model, pg_catalog.pg_notify('bridgecore_events', pg_catalog.json_build_object("
			"   'instance', $13, 'model', g.model, 'count', g.n, 'max_id', g.max_id, 'high', g.high)::text)"
			"  FROM (SELECT model, count(*) AS n, max(id) AS max_id,"
			"               count(*) FILTER (WHERE priority = 'high') AS high"
			"          FROM inserted GROUP BY model) g",
			NCOLS + 2, insert_types);
	if (dead_letter_plan == NULL)
		dead_letter_plan = prepare_kept(
			"INSERT INTO bridgecore.dead_letter AS d (instance_id, odoo_id, record, reason)"
			" VALUES ($1, $2, $3::json, $4)"
			" ON CONFLICT (instance_id, odoo_id) WHERE odoo_id IS NOT NULL DO UPDATE"
			"   SET record = EXCLUDED.record, reason = EXCLUDED.reason,"
			"       last_failed_at = now(), attempts = d.attempts + 1,"
			"       status = CASE d.status WHEN 'ignored' THEN d.status ELSE 'pending' END",
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

void
ingest_batch(int32 instance_id, const char *instance_name, json_object *records,
			 IngestSummary *summary)
{
	int			n = (int) json_object_array_length(records);
	DecodedEvent *ev = palloc0(sizeof(DecodedEvent) * Max(n, 1));
	Datum	   *cols[NCOLS];
	bool	   *nulls[NCOLS];
	Datum		args[NCOLS + 2];
	int			nvalid = 0;
	TimestampTz started = GetCurrentTimestamp();

	memset(summary, 0, sizeof(*summary));
	summary->seen = palloc(sizeof(int64) * Max(n, 1));
	for (int c = 0; c < NCOLS; c++)
	{
		cols[c] = palloc(sizeof(Datum) * Max(n, 1));
		nulls[c] = palloc0(sizeof(bool) * Max(n, 1));
	}

	prepare_plans();
	if (SPI_execute_plan(lock_plan, NULL, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not take the ingest ordering lock");

	for (int i = 0; i < n; i++)
	{
		DecodedEvent *e = &ev[i];

		decode_record(json_object_array_get_idx(records, i), e);
		if (e->has_odoo_id)
			summary->seen[summary->nseen++] = e->odoo_id;
		if (e->problem)
			continue;
		cols[0][nvalid] = Int64GetDatum(e->odoo_id);
		cols[1][nvalid] = CStringGetTextDatum(e->model);
		cols[2][nvalid] = Int64GetDatum(e->record_id);
		cols[3][nvalid] = CStringGetTextDatum(e->event);
		cols[4][nvalid] = text_or_null(e->priority, &nulls[4][nvalid]);
		cols[5][nvalid] = text_or_null(e->category, &nulls[5][nvalid]);
		cols[6][nvalid] = text_or_null(e->payload, &nulls[6][nvalid]);
		cols[7][nvalid] = text_or_null(e->changed_fields, &nulls[7][nvalid]);
		cols[8][nvalid] = Int64GetDatum(e->odoo_user_id);
		nulls[8][nvalid] = !e->has_user;
		cols[9][nvalid] = text_or_null(e->has_user ? e->odoo_user_name : NULL, &nulls[9][nvalid]);
		cols[10][nvalid] = TimestampTzGetDatum(e->occurred_at);
		if (!summary->has_newest || e->occurred_at > summary->newest)
			summary->newest = e->occurred_at;
		summary->has_newest = true;
		nvalid++;
	}

	if (nvalid > 0)
	{
		static const Oid elem_types[NCOLS] = {INT8OID, TEXTOID, INT8OID, TEXTOID, TEXTOID,
		TEXTOID, TEXTOID, TEXTOID, INT8OID, TEXTOID, TIMESTAMPTZOID};

		args[0] = Int32GetDatum(instance_id);
		for (int c = 0; c < NCOLS; c++)
			args[c + 1] = make_array(cols[c], nulls[c], nvalid, elem_types[c]);
		args[NCOLS + 1] = CStringGetTextDatum(instance_name);
		if (SPI_execute_plan(insert_plan, args, NULL, false, 0) != SPI_OK_SELECT)
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
		dargs[2] = CStringGetTextDatum(json_object_to_json_string_ext(json_object_array_get_idx(records, i),
																	  JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
		dargs[3] = CStringGetTextDatum(ev[i].problem);
		if (SPI_execute_plan(dead_letter_plan, dargs, dnulls, false, 0) != SPI_OK_INSERT)
			elog(ERROR, "could not store a dead letter");
		summary->dead_lettered++;
	}
}
