/*
 * poller.c: the "bridgecore poller" background workers.  The launcher starts
 * bridgecore.pollers of them at most; poller k of n runs every enabled
 * instance whose id is k modulo n.
 *
 * Each instance goes through the same poll as ever: log in, learn the
 * source model's fields, search_read the rows above the cursor (plus the
 * gaps still open), store them and move the cursor in one short
 * transaction; a full batch is followed at once by the next, otherwise the
 * instance waits its poll interval; failures are recorded in the instance
 * status and retried with exponential backoff and jitter.  What is new is
 * that a poll is a sequence of steps, each started by an HTTP call and
 * continued when its answer comes: all the calls of a poller's instances run
 * at once in one curl multi handle (curl_loop.c), so a slow or hung Odoo
 * holds up only its own instance.  HTTP never runs inside a transaction.
 *
 * One poller per instance at a time: a poller runs an instance only while
 * it holds the instance's session-level advisory lock (taken without
 * waiting; a predecessor still exiting keeps it a moment).  An ERROR while
 * an instance is polled is caught, counted as that instance's failure and
 * backed off; the other instances go on.
 */
#include "bridgecore.h"
#include "curl_loop.h"
#include "ingest.h"
#include "odoo_client.h"
#include "stats.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

char	   *bridgecore_database = NULL;
int			bridgecore_gap_window_s = 120;
int			bridgecore_connect_timeout_ms = 5000;
int			bridgecore_request_timeout_ms = 30000;
int			bridgecore_max_response_kb = 64 * 1024;
int			bridgecore_max_backoff_ms = 30000;

#define FIELDS_RELEARN_MS (10 * 60 * 1000)

/* Odoo locks an address out for 60 s after 5 failed logins. */
#define AUTH_FAILED_MIN_DELAY_MS 60000

/*
 * A poller waiting out a backoff learns of a dropped extension from the
 * launcher's drop counter, without a transaction; it also looks itself this
 * often, in case the drop was not seen (a prepared transaction's commit).
 */
#define EXTENSION_RECHECK_MS 60000

/*
 * A poller reads its instances again when the launcher says they changed,
 * and this often anyway; an instance whose lock a predecessor still holds
 * is tried again after LOCK_RETRY_MS.
 */
#define INSTANCES_REREAD_MS 10000
#define LOCK_RETRY_MS 200

/* pg_advisory_lock(BRIDGECORE_LOCK_KEY, instance id): the poller of an instance */
#define BRIDGECORE_LOCK_KEY 1112425298
#define LOCK_KEY_TEXT CppAsString2(BRIDGECORE_LOCK_KEY)

/* Fields BridgeCore reads from the source model, if the model has them. */
static const char *const wanted_fields[] = {
	"id", "model", "record_id", "event", "timestamp",
	"priority", "category", "payload", "user_id"
};
static const char *const required_fields[] = {"model", "record_id", "event", "timestamp"};

/* Where an instance's poll stands: which call's answer it waits for. */
typedef enum PollPhase
{
	PHASE_IDLE,					/* no poll; waits for next_attempt or a ring */
	PHASE_LOGIN,				/* common.authenticate */
	PHASE_FIELDS,				/* fields_get */
	PHASE_SEARCH,				/* search_read of the records */
	PHASE_ISOLATE				/* search_read of the first record's id only */
} PollPhase;

typedef struct Instance
{
	int32		id;
	int32		config_version;
	OdooClient *client;
	DoorbellSlot *bell;			/* NULL: cannot be rung */
	MemoryContext context;		/* one poll's memory, reset when it ends */
	bool		gone;			/* removed or disabled: to be released */
	PollPhase	phase;
	int			attempt;		/* 1 once this poll logged in again */
	TimestampTz poll_started;
	uint64		bytes_before;
	OdooError	cause;			/* PHASE_ISOLATE: why the record is unreadable */
	char	   *name;
	char	   *source_model;
	int			poll_interval_ms;
	int			batch_size;
	int64		cursor;
	ArrayType  *gaps;			/* bigint[] of ids still to ask for */
	TimestampTz next_attempt;
	json_object *fields;		/* array of field names to request, or NULL */
	TimestampTz fields_learned_at;
	OdooErrorKind last_error_kind;	/* of the last failed poll */
	int			failures;		/* consecutive ones, as in the instance row */
	int			fetch_limit;	/* records asked for; below batch_size while isolating */
	int			poison_strikes; /* failures of one-record fetches in a row */
	/* what the search_read started ahead (client->ahead) asked for */
	int64		ahead_cursor;
	int			ahead_limit;
	json_object *ahead_fields;
} Instance;

/* The instances this poller runs (Instance *, in TopMemoryContext). */
static List *instances = NIL;
static CurlLoop *loop = NULL;
static int32 poller_index = 0;
static int32 poller_count = 1;
static TimestampTz reread_at = 0;	/* when to read the instances again */

typedef enum PollOutcome
{
	POLL_FULL_BATCH,
	POLL_CAUGHT_UP,
	POLL_FAILED,
	POLL_GONE					/* instance removed or extension dropped */
} PollOutcome;

void
WorkerDefineGucs(void)
{
	DefineCustomStringVariable("bridgecore.database",
							   "Database in which the BridgeCore workers run.",
							   NULL, &bridgecore_database, "postgres",
							   PGC_POSTMASTER, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.gap_window",
							"How long ids skipped by Odoo are asked for again before they count as rolled back.",
							NULL, &bridgecore_gap_window_s, 120, 0, 86400,
							PGC_SIGHUP, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.connect_timeout",
							"Timeout for connecting to Odoo.",
							NULL, &bridgecore_connect_timeout_ms, 5000, 100, 600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.request_timeout",
							"Timeout for a whole request to Odoo.",
							NULL, &bridgecore_request_timeout_ms, 30000, 100, 3600000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.max_response_size",
							"Largest Odoo response accepted; larger ones are refused, not buffered.",
							NULL, &bridgecore_max_response_kb, 64 * 1024, 64, 1024 * 1024,
							PGC_SIGHUP, GUC_UNIT_KB, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.max_backoff",
							"Longest wait between retries of a failing Odoo instance.",
							NULL, &bridgecore_max_backoff_ms, 30000, 10, 86400000,
							PGC_SIGHUP, GUC_UNIT_MS, NULL, NULL, NULL);
}

/*
 * The extension this poller started under.  Once it is dropped, or dropped
 * and created again (its instance with our id is then another instance),
 * the poller stops; the launcher starts whatever the new one needs.
 */
static Oid	started_extension = InvalidOid;
static TimestampTz extension_checked_at = 0;

static bool
extension_present(void)
{
	extension_checked_at = GetCurrentTimestamp();
	return OidIsValid(started_extension) &&
		get_extension_oid("bridgecore", true) == started_extension;
}

/* Checks, in a transaction of its own, that the extension is still there. */
static bool
extension_still_present(void)
{
	bool		present;

	bc_begin_work("bridgecore poller: checking the extension");
	present = extension_present();
	bc_end_work();
	return present;
}

static char *
copy_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	char	   *s;
	MemoryContext old;

	if (isnull)
		return NULL;
	old = MemoryContextSwitchTo(TopMemoryContext);
	s = TextDatumGetCString(d);
	MemoryContextSwitchTo(old);
	return s;
}

typedef enum LoadOutcome
{
	LOAD_OK,
	LOAD_NOT_FOUND,				/* removed or disabled meanwhile */
	LOAD_LOCKED					/* another poller (a predecessor exiting) runs it */
} LoadOutcome;

/* In the caller's transaction: releases the instance's advisory lock. */
static void
unlock_instance(int32 instance_id)
{
	Datum		arg = Int32GetDatum(instance_id);
	Oid			argtype = INT4OID;

	SPI_execute_with_args("SELECT pg_catalog.pg_advisory_unlock(" LOCK_KEY_TEXT ", $1)",
						  1, &argtype, &arg, NULL, false, 0);
}

/*
 * In the caller's transaction: takes the instance's advisory lock without
 * waiting, then loads its settings and position, and makes its Odoo client
 * (which keeps the access settings).  The lock is held from then on
 * (session level) until release_instance().
 */
static LoadOutcome
load_instance(int32 instance_id, Instance *inst)
{
	Datum		arg = Int32GetDatum(instance_id);
	Oid			argtype = INT4OID;
	bool		isnull;
	LoadOutcome outcome = LOAD_NOT_FOUND;

	if (SPI_execute_with_args("SELECT pg_catalog.pg_try_advisory_lock(" LOCK_KEY_TEXT ", $1)",
							  1, &argtype, &arg, NULL, false, 0) != SPI_OK_SELECT ||
		SPI_processed != 1 ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)))
		return LOAD_LOCKED;
	if (SPI_execute_with_args("SELECT name, url, database, login, secret, source_model,"
							  " (extract(epoch FROM poll_interval) * 1000)::integer,"
							  " batch_size, verify_tls, cursor,"
							  " ARRAY(SELECT g.odoo_id FROM bridgecore.gap g"
							  "        WHERE g.instance_id = i.id ORDER BY g.odoo_id),"
							  " coalesce(next_attempt_at, '-infinity'), consecutive_failures,"
							  " config_version"
							  " FROM bridgecore.instance i WHERE id = $1 AND enabled",
							  /* not read-only: a snapshot taken after the lock, so
							   * that a predecessor's last batch is seen */
							  1, &argtype, &arg, NULL, false, 1) == SPI_OK_SELECT &&
		SPI_processed == 1)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		MemoryContext old;

		char	   *secret = TextDatumGetCString(SPI_getbinval(tup, desc, 5, &isnull));

		inst->id = instance_id;
		inst->name = copy_text(tup, desc, 1);
		inst->client = odoo_client_create_in(curl_loop_multi(loop), inst,
											 SPI_getvalue(tup, desc, 2), SPI_getvalue(tup, desc, 3),
											 SPI_getvalue(tup, desc, 4), secret,
											 DatumGetBool(SPI_getbinval(tup, desc, 9, &isnull)));
		explicit_bzero(secret, strlen(secret));	/* the client has its own copy */
		inst->source_model = copy_text(tup, desc, 6);
		inst->poll_interval_ms = DatumGetInt32(SPI_getbinval(tup, desc, 7, &isnull));
		inst->batch_size = DatumGetInt32(SPI_getbinval(tup, desc, 8, &isnull));
		inst->fetch_limit = inst->batch_size;
		inst->cursor = DatumGetInt64(SPI_getbinval(tup, desc, 10, &isnull));
		old = MemoryContextSwitchTo(TopMemoryContext);
		inst->gaps = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 11, &isnull));
		MemoryContextSwitchTo(old);
		inst->next_attempt = DatumGetTimestampTz(SPI_getbinval(tup, desc, 12, &isnull));
		inst->failures = DatumGetInt32(SPI_getbinval(tup, desc, 13, &isnull));
		inst->config_version = DatumGetInt32(SPI_getbinval(tup, desc, 14, &isnull));
		outcome = LOAD_OK;
	}
	else
		unlock_instance(instance_id);
	return outcome;
}

/* ---- failures ---------------------------------------------------------- */


/*
 * Records a failure and schedules the next attempt: exponential backoff
 * from 1 s up to bridgecore.max_backoff, with jitter, never sooner than a
 * Retry-After, and at least a minute after a refused login.
 */
static PollOutcome
record_failure(Instance *inst, OdooError *err, const char *phase)
{
	char		message[700];
	const char *state = err->kind == ODOO_ERR_AUTH_FAILED ? "auth_failed" : "backoff";
	int64		cap_ms = bridgecore_max_backoff_ms;
	int64		delay_ms = Min(1000, cap_ms);
	MemoryContext caller = CurrentMemoryContext;
	volatile bool present = true;

	inst->last_error_kind = err->kind;
	inst->failures++;
	/* Masked and made valid before the cut, and cut at a character. */
	bc_copy_message(message, sizeof(message),
					psprintf("%s: %s: %s", phase, odoo_error_kind_name(err->kind), err->message),
					inst->client->secret);

	for (int i = 1; i < inst->failures && delay_ms < cap_ms; i++)
		delay_ms *= 2;
	delay_ms = Min(delay_ms, cap_ms);
	/* Jitter: somewhere in the upper half of the window. */
	delay_ms = delay_ms / 2 + (int64) (bc_random_fraction() * (delay_ms / 2 + 1));
	if (err->kind == ODOO_ERR_AUTH_FAILED)
		delay_ms = Max(delay_ms, AUTH_FAILED_MIN_DELAY_MS);
	if (err->retry_after_s > 0)
		delay_ms = Max(delay_ms, (int64) err->retry_after_s * 1000);
	inst->next_attempt = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), delay_ms);

	/*
	 * Recording the failure must never be what stops the poller: if the
	 * database refuses it (a lock timeout, a full disk), the backoff above
	 * still holds, the server log still says why, and the next poll tries
	 * again.
	 */
	PG_TRY();
	{
		Oid			argtypes[4] = {INT4OID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
		Datum		args[4];

		bc_begin_work("bridgecore poller: recording failure");
		present = extension_present();
		if (present)
		{
			args[0] = Int32GetDatum(inst->id);
			args[1] = CStringGetTextDatum(state);
			args[2] = CStringGetTextDatum(message);
			args[3] = TimestampTzGetDatum(inst->next_attempt);
			SPI_execute_with_args("SELECT bridgecore._record_failure($1, $2, $3, $4)",
								  4, argtypes, args, NULL, false, 1);
		}
		bc_end_work();
	}
	PG_CATCH();
	{
		ErrorData  *edata = bc_abort_work(caller);

		ereport(LOG,
				(errmsg("bridgecore poller for instance \"%s\" could not record a failure: %s",
						inst->name, edata->message)));
		FreeErrorData(edata);
	}
	PG_END_TRY();
	if (!present)
		return POLL_GONE;
	ereport(LOG,
			(errmsg("bridgecore poller for instance \"%s\": %s; next attempt in %.1f s",
					inst->name, message,
					(double) (inst->next_attempt - GetCurrentTimestamp()) / USECS_PER_SEC)));
	return POLL_FAILED;
}

/* ---- one poll ---------------------------------------------------------- */

/*
 * A call that returned no value (NULL) without an error was answered null
 * (a method returning None): where the poller needs a value, a bad response.
 */
static void
null_is_bad_response(OdooError *err, const char *method)
{
	if (err->kind != ODOO_OK)
		return;
	err->kind = ODOO_ERR_BAD_RESPONSE;
	snprintf(err->message, sizeof(err->message), "%s answered null", method);
}

/*
 * Asks fields_get which of the wanted fields the source model has (an older
 * addon has only model, record_id, event and timestamp).
 */
static void
start_fields_get(Instance *inst)
{
	json_object *kwargs = json_object_new_object();
	json_object *attributes = json_object_new_array();

	json_object_array_add(attributes, json_object_new_string("type"));
	json_object_object_add(kwargs, "attributes", attributes);
	odoo_start_execute_kw(inst->client, inst->source_model, "fields_get",
						  json_object_new_array(), kwargs);
}

/* fields_get's answer (result, or NULL with err): the fields to ask for. */
static bool
fields_answer(Instance *inst, json_object *result, OdooError *err)
{
	json_object *fields;

	if (result == NULL)
	{
		null_is_bad_response(err, "fields_get");
		return false;
	}
	if (!json_object_is_type(result, json_type_object))
	{
		snprintf(err->message, sizeof(err->message), "fields_get did not answer an object");
		err->kind = ODOO_ERR_BAD_RESPONSE;
		json_object_put(result);
		return false;
	}
	for (size_t i = 0; i < lengthof(required_fields); i++)
	{
		if (!json_object_object_get_ex(result, required_fields[i], NULL))
		{
			snprintf(err->message, sizeof(err->message),
					 "model %s has no field \"%s\"; is bridgecore pointed at update.webhook?",
					 inst->source_model, required_fields[i]);
			err->kind = ODOO_ERR_RPC;
			json_object_put(result);
			return false;
		}
	}
	fields = json_object_new_array();
	for (size_t i = 0; i < lengthof(wanted_fields); i++)
		if (strcmp(wanted_fields[i], "id") == 0 ||
			json_object_object_get_ex(result, wanted_fields[i], NULL))
			json_object_array_add(fields, json_object_new_string(wanted_fields[i]));
	json_object_put(result);
	json_object_put(inst->fields);
	inst->fields = fields;
	inst->fields_learned_at = GetCurrentTimestamp();
	return true;
}

/* Domain: id > cursor, or one of the open gaps. */
static json_object *
build_domain(Instance *inst)
{
	json_object *domain = json_object_new_array();
	json_object *above = json_object_new_array();
	Datum	   *gap_ids;
	int			ngaps;

	json_object_array_add(above, json_object_new_string("id"));
	json_object_array_add(above, json_object_new_string(">"));
	json_object_array_add(above, json_object_new_int64(inst->cursor));

	deconstruct_array(inst->gaps, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &gap_ids, NULL, &ngaps);
	if (ngaps > 0)
	{
		json_object *in = json_object_new_array();
		json_object *ids = json_object_new_array();

		for (int i = 0; i < ngaps; i++)
			json_object_array_add(ids, json_object_new_int64(DatumGetInt64(gap_ids[i])));
		json_object_array_add(in, json_object_new_string("id"));
		json_object_array_add(in, json_object_new_string("in"));
		json_object_array_add(in, ids);
		json_object_array_add(domain, json_object_new_string("|"));
		json_object_array_add(domain, above);
		json_object_array_add(domain, in);
	}
	else
		json_object_array_add(domain, above);
	pfree(gap_ids);
	return domain;
}

/*
 * In the store transaction: locks our instance row, then checks that the
 * extension is the one we started under.  In this order, a DROP and CREATE
 * EXTENSION committing meanwhile cannot let a batch land in a new instance
 * with our id.
 */
static bool
lock_own_instance(Instance *inst)
{
	Datum		id = Int32GetDatum(inst->id);
	Oid			idtype = INT4OID;

	/* prepared once: the poller runs it at every batch */
	static SPIPlanPtr plan = NULL;

	if (plan == NULL && extension_present())
		plan = bc_prepare_kept("SELECT 1 FROM bridgecore.instance WHERE id = $1 FOR KEY SHARE",
							   1, &idtype);
	return extension_present() &&
		SPI_execute_plan(plan, &id, NULL, false, 0) == SPI_OK_SELECT &&
		SPI_processed == 1 && extension_present();
}

/* Where a store transaction moved the cursor, taken by the instance once it commits. */
typedef struct CursorMove
{
	bool		moved;
	int64		cursor;
	ArrayType  *gaps;			/* bigint[], in the memory given to advance_cursor */
} CursorMove;

/*
 * In the store transaction: moves the cursor past the seen Odoo ids
 * (bridgecore._advance_cursor records the holes as gaps and resets the
 * failure state) and returns the new cursor and open gaps in *move (gaps
 * copied into keep).  The instance takes them only after the commit
 * (take_cursor_move): a commit that fails (a full NOTIFY queue, a
 * serialization failure) must leave it asking for the same rows again.
 * newest is NULL when no valid record came.  Returns false if the instance
 * is gone.
 */
static bool
advance_cursor(Instance *inst, const int64 *seen, int nseen, int64 inserted,
			   const TimestampTz *newest, MemoryContext keep, CursorMove *move)
{
	static SPIPlanPtr plan = NULL;	/* prepared once: run at every batch */
	Oid			argtypes[5] = {INT4OID, INT8ARRAYOID, INTERVALOID, INT8OID, TIMESTAMPTZOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', ' ', ' ', ' '};
	Datum	   *ids = palloc(sizeof(Datum) * Max(nseen, 1));
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	MemoryContext old;

	for (int i = 0; i < nseen; i++)
		ids[i] = Int64GetDatum(seen[i]);
	args[0] = Int32GetDatum(inst->id);
	args[1] = PointerGetDatum(construct_array(ids, nseen, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = DirectFunctionCall3(interval_in,
								  CStringGetDatum(psprintf("%d seconds", bridgecore_gap_window_s)),
								  ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
	args[3] = Int64GetDatum(inserted);
	args[4] = newest ? TimestampTzGetDatum(*newest) : (Datum) 0;
	if (newest == NULL)
		nulls[4] = 'n';
	if (plan == NULL)
		plan = bc_prepare_kept("SELECT cursor, gaps FROM bridgecore._advance_cursor($1, $2, $3, $4, $5)",
							   5, argtypes);
	if (SPI_execute_plan(plan, args, nulls, false, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		return false;
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	move->cursor = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	old = MemoryContextSwitchTo(keep);
	move->gaps = DatumGetArrayTypePCopy(SPI_getbinval(tup, desc, 2, &isnull));
	MemoryContextSwitchTo(old);
	move->moved = true;
	return true;
}

/* After the store transaction committed: the instance takes the cursor it stored. */
static void
take_cursor_move(Instance *inst, const CursorMove *move)
{
	ArrayType  *gaps;

	if (!move->moved)
		return;
	gaps = (ArrayType *) MemoryContextAlloc(TopMemoryContext, VARSIZE(move->gaps));
	memcpy(gaps, move->gaps, VARSIZE(move->gaps));
	pfree(inst->gaps);
	inst->gaps = gaps;
	inst->cursor = move->cursor;
	inst->failures = 0;			/* _advance_cursor reset the row's count too */
}

/*
 * Stores the batch and moves the cursor past it, in one transaction: a crash
 * at any point neither loses nor duplicates an event.
 */
static PollOutcome
store_batch_in_transaction(Instance *inst, json_object *records, const RecordScan *scan)
{
	size_t		n = json_object_array_length(records);
	PollOutcome outcome = POLL_GONE;
	IngestSummary summary;
	TimestampTz started = GetCurrentTimestamp();
	int64		old_cursor = inst->cursor;
	MemoryContext keep = CurrentMemoryContext;
	CursorMove	move;

	memset(&move, 0, sizeof(move));
	bc_begin_work("bridgecore poller: storing events");
	if (lock_own_instance(inst))
	{
		ingest_batch(inst->id, inst->name, records, scan, &summary);
		(void) advance_cursor(inst, summary.seen, summary.nseen, summary.inserted,
							  summary.has_newest ? &summary.newest : NULL, keep, &move);
	}
	bc_end_work();
	take_cursor_move(inst, &move);
	/*
	 * A full batch is followed at once by the next only when it moved the
	 * cursor: a batch of records the cursor cannot pass (no usable id, or ids
	 * Odoo keeps returning) would otherwise be asked for again and again
	 * without a pause.
	 */
	if (move.moved)
		outcome = ((int) n >= inst->fetch_limit && inst->cursor > old_cursor)
			? POLL_FULL_BATCH : POLL_CAUGHT_UP;
	if (outcome != POLL_GONE)
		stats_count_ingest(inst->id, summary.inserted, summary.duplicates,
						   summary.dead_lettered, summary.notifications,
						   (double) (GetCurrentTimestamp() - started) / USECS_PER_SEC);
	return outcome;
}

/*
 * store_batch_in_transaction(), with a database error (a batch PostgreSQL
 * refuses, a lock timeout, ...) recorded in the instance status and retried
 * with backoff, like an Odoo failure, instead of ending the poller.
 */
static PollOutcome
store_batch(Instance *inst, json_object *records, const RecordScan *scan)
{
	MemoryContext caller = CurrentMemoryContext;
	volatile PollOutcome outcome = POLL_FAILED;
	OdooError	err;

	memset(&err, 0, sizeof(err));
	PG_TRY();
	{
		outcome = store_batch_in_transaction(inst, records, scan);
	}
	PG_CATCH();
	{
		ErrorData  *edata = bc_abort_work(caller);

		err.kind = ODOO_ERR_STORE;
		err.retry_after_s = -1;
		bc_copy_message(err.message, sizeof(err.message),
						psprintf("%s (SQLSTATE %s)%s%s", edata->message,
								 unpack_sql_state(edata->sqlerrcode),
								 edata->detail ? ": " : "", edata->detail ? edata->detail : ""),
						inst->client->secret);
		FreeErrorData(edata);
	}
	PG_END_TRY();
	if (err.kind == ODOO_ERR_STORE)
		return record_failure(inst, &err, "store");
	return outcome;
}

/*
 * Whether ids were asked for meanwhile (retry_dead_letter opens a gap so
 * that the poller fetches the row again): a read-only look, which writes
 * no WAL.
 */
static bool
gaps_requested(Instance *inst)
{
	Datum		arg = Int32GetDatum(inst->id);
	Oid			argtype = INT4OID;
	volatile bool requested = false;
	MemoryContext caller = CurrentMemoryContext;

	PG_TRY();
	{
		bc_begin_work("bridgecore poller: checking for requested ids");
		if (extension_present() &&
			SPI_execute_with_args("SELECT 1 FROM bridgecore.gap WHERE instance_id = $1 LIMIT 1",
								  1, &argtype, &arg, NULL, true, 1) == SPI_OK_SELECT)
			requested = SPI_processed > 0;
		bc_end_work();
	}
	PG_CATCH();
	{
		/* Say yes: the store path then finds out (a dropped extension, say). */
		FreeErrorData(bc_abort_work(caller));
		requested = true;
	}
	PG_END_TRY();
	return requested;
}

/*
 * Dead-letters the record with the given Odoo id, which Odoo cannot send in
 * a usable answer, and moves the cursor past it, in one transaction.
 */
static PollOutcome
store_unreadable_in_transaction(Instance *inst, int64 odoo_id, const char *reason)
{
	PollOutcome outcome = POLL_GONE;
	MemoryContext keep = CurrentMemoryContext;
	CursorMove	move;

	memset(&move, 0, sizeof(move));
	bc_begin_work("bridgecore poller: dead-lettering an unreadable record");
	if (lock_own_instance(inst))
	{
		Oid			dtypes[4] = {INT4OID, INT8OID, TEXTOID, TEXTOID};
		Datum		dargs[4];

		dargs[0] = Int32GetDatum(inst->id);
		dargs[1] = Int64GetDatum(odoo_id);
		dargs[2] = CStringGetTextDatum(psprintf("{\"id\": " INT64_FORMAT "}", odoo_id));
		dargs[3] = CStringGetTextDatum(reason);
		SPI_execute_with_args("INSERT INTO bridgecore.dead_letter AS d (instance_id, odoo_id, record, reason)"
							  " SELECT $1, $2, $3::json, $4"
							  "  WHERE NOT EXISTS (SELECT 1 FROM bridgecore.event e"
							  "                     WHERE e.instance_id = $1 AND e.odoo_id = $2)"
							  " ON CONFLICT (instance_id, odoo_id) WHERE odoo_id IS NOT NULL DO UPDATE"
							  "   SET reason = EXCLUDED.reason, last_failed_at = now(), attempts = d.attempts + 1,"
							  "       status = CASE d.status WHEN 'ignored' THEN d.status ELSE 'pending' END",
							  4, dtypes, dargs, NULL, false, 0);
		(void) advance_cursor(inst, &odoo_id, 1, 0, NULL, keep, &move);
	}
	bc_end_work();
	take_cursor_move(inst, &move);
	if (move.moved)
		outcome = POLL_FULL_BATCH;	/* go on at once with the records after it */
	if (outcome != POLL_GONE)
		stats_count_ingest(inst->id, 0, 0, 1, 0, -1);
	return outcome;
}

/*
 * Asks Odoo for just the id of the first record the poll wants, so that
 * this record (the one-record answer failed twice) can be dead-lettered.
 */
static void
start_isolate(Instance *inst)
{
	json_object *args = json_object_new_array();
	json_object *kwargs = json_object_new_object();
	json_object *fields = json_object_new_array();

	json_object_array_add(args, build_domain(inst));
	json_object_array_add(fields, json_object_new_string("id"));
	json_object_object_add(kwargs, "fields", fields);
	json_object_object_add(kwargs, "limit", json_object_new_int(1));
	json_object_object_add(kwargs, "order", json_object_new_string("id asc"));
	odoo_start_execute_kw(inst->client, inst->source_model, "search_read", args, kwargs);
}

/*
 * The id-only answer: dead-letters the record it names.  Returns false when
 * even that was not answered: then it is Odoo, not a record.
 */
static bool
isolate_answer(Instance *inst, json_object *answer, PollOutcome *outcome)
{
	json_object *idv = NULL;
	int64		odoo_id = 0;
	bool		found = false;
	MemoryContext caller = CurrentMemoryContext;

	if (answer == NULL)
		return false;
	if (json_object_is_type(answer, json_type_array) && json_object_array_length(answer) == 1 &&
		json_object_object_get_ex(json_object_array_get_idx(answer, 0), "id", &idv) &&
		json_object_is_type(idv, json_type_int))
	{
		errno = 0;
		odoo_id = json_object_get_int64(idv);
		found = errno == 0 && odoo_id >= 1 && odoo_id < PG_INT64_MAX;
	}
	json_object_put(answer);
	if (!found)
		return false;

	PG_TRY();
	{
		char		reason[600];

		bc_copy_message(reason, sizeof(reason),
						psprintf("unreadable record: %s: %s", odoo_error_kind_name(inst->cause.kind),
								 inst->cause.message),
						inst->client->secret);
		*outcome = store_unreadable_in_transaction(inst, odoo_id, reason);
		ereport(LOG,
				(errmsg("bridgecore poller for instance \"%s\": Odoo record " INT64_FORMAT " cannot be read (%s); it is a dead letter now",
						inst->name, odoo_id, reason)));
	}
	PG_CATCH();
	{
		ErrorData  *edata = bc_abort_work(caller);

		ereport(LOG,
				(errmsg("bridgecore poller for instance \"%s\" could not dead-letter Odoo record " INT64_FORMAT ": %s",
						inst->name, odoo_id, edata->message)));
		FreeErrorData(edata);
		return false;
	}
	PG_END_TRY();
	inst->poison_strikes = 0;
	return true;
}

/* The arguments of the search_read that asks for the records after the cursor. */
static void
search_read_call(Instance *inst, json_object **args, json_object **kwargs)
{
	*args = json_object_new_array();
	json_object_array_add(*args, build_domain(inst));
	*kwargs = json_object_new_object();
	json_object_object_add(*kwargs, "fields", json_object_get(inst->fields));
	json_object_object_add(*kwargs, "limit", json_object_new_int(inst->fetch_limit));
	json_object_object_add(*kwargs, "order", json_object_new_string("id asc"));
}

/* Whether the search_read started ahead asked for what the next one would. */
static bool
ahead_matches(Instance *inst)
{
	return inst->cursor == inst->ahead_cursor && inst->fetch_limit == inst->ahead_limit &&
		inst->fields == inst->ahead_fields && ARR_NDIM(inst->gaps) == 0;
}

/*
 * Before a full batch is stored: asks Odoo for the next one already, so
 * that Odoo answers while this one is stored.  The next batch's domain is
 * known only once this one is stored (the cursor moves in the store
 * transaction, gaps may open), so this asks for what it will be when the
 * batch moves the cursor to its highest id and opens no gap, and the answer
 * is used only if it did (ahead_matches), else dropped and asked for again.
 * Nothing is stored from it before then, so the cursor still moves only
 * with the rows, in their transaction.
 */
static void
fetch_ahead(Instance *inst, json_object *records)
{
	size_t		n = json_object_array_length(records);
	int64		highest = 0;
	int64		cursor = inst->cursor;
	json_object *args;
	json_object *kwargs;

	if ((int) n < inst->fetch_limit || ARR_NDIM(inst->gaps) != 0)
		return;
	for (size_t i = 0; i < n; i++)
	{
		json_object *id = NULL;

		if (json_object_object_get_ex(json_object_array_get_idx(records, i), "id", &id) &&
			json_object_is_type(id, json_type_int))
			highest = Max(highest, json_object_get_int64(id));
	}
	if (highest <= cursor)
		return;
	inst->cursor = highest;
	search_read_call(inst, &args, &kwargs);
	inst->cursor = cursor;
	odoo_start_execute_kw(inst->client, inst->source_model, "search_read", args, kwargs);
	curl_loop_kick(loop);		/* the request goes out before the store */
	inst->ahead_cursor = highest;
	inst->ahead_limit = inst->fetch_limit;
	inst->ahead_fields = inst->fields;
}

/* ---- one poll, step by step -------------------------------------------- */

/* The poll ended with outcome: counted, and the next one scheduled. */
static void
finish_poll(Instance *inst, PollOutcome outcome)
{
	TimestampTz now = GetCurrentTimestamp();

	if (outcome == POLL_CAUGHT_UP || outcome == POLL_FULL_BATCH)
		stats_note_success(inst->id);
	if (outcome != POLL_GONE)
		stats_count_poll(inst->id, outcome == POLL_FAILED ? (int) inst->last_error_kind : 0,
						 inst->client->bytes_received - inst->bytes_before,
						 (double) (now - inst->poll_started) / USECS_PER_SEC);
	switch (outcome)
	{
		case POLL_GONE:
			inst->gone = true;
			reread_at = 0;		/* released at the next turn of the loop */
			break;
		case POLL_CAUGHT_UP:
			inst->next_attempt = TimestampTzPlusMilliseconds(now, inst->poll_interval_ms);
			break;
		case POLL_FULL_BATCH:
			inst->next_attempt = now;	/* the next batch at once */
			break;
		case POLL_FAILED:
			break;				/* record_failure set the backoff */
	}
	/* The answer fetched ahead is the next batch only if this one left the cursor where it expected. */
	if (odoo_call_pending(inst->client) && !(outcome == POLL_FULL_BATCH && ahead_matches(inst)))
		odoo_cancel_call(inst->client);
	inst->phase = PHASE_IDLE;
}

/*
 * Starts the next call the poll needs: a login, fields_get, or the
 * search_read (unless the one started ahead is it).
 */
static void
next_step(Instance *inst)
{
	json_object *args;
	json_object *kwargs;

	if (inst->client->uid == 0)
	{
		odoo_start_login(inst->client);
		inst->phase = PHASE_LOGIN;
	}
	else if (inst->fields == NULL)
	{
		start_fields_get(inst);
		inst->phase = PHASE_FIELDS;
	}
	else
	{
		inst->phase = PHASE_SEARCH;
		if (inst->attempt == 0 && odoo_call_pending(inst->client) && ahead_matches(inst))
			return;				/* the search_read started ahead */
		search_read_call(inst, &args, &kwargs);
		odoo_start_execute_kw(inst->client, inst->source_model, "search_read", args, kwargs);
	}
}

/* A call answered that the session is gone: log in again, once per poll. */
static bool
log_in_again(Instance *inst, OdooError *err)
{
	if ((err->kind != ODOO_ERR_ACCESS_DENIED && err->kind != ODOO_ERR_SESSION_EXPIRED) ||
		inst->attempt > 0)
		return false;
	inst->attempt = 1;
	inst->client->uid = 0;
	next_step(inst);
	return true;
}

/* A poll is due: starts it. */
static void
begin_poll(Instance *inst)
{
	TimestampTz now = GetCurrentTimestamp();

	/*
	 * Rings from here on ask for one more poll after this one.  A ring taken
	 * drops a search_read started ahead: asked for before the ring, its
	 * answer may miss what the ring was for.
	 */
	if (doorbell_take(inst->bell))
		odoo_cancel_call(inst->client);
	/* Ask fields_get again now and then: an upgraded addon may have more. */
	if (inst->fields != NULL &&
		TimestampDifferenceExceeds(inst->fields_learned_at, now, FIELDS_RELEARN_MS))
	{
		json_object_put(inst->fields);
		inst->fields = NULL;
	}
	inst->attempt = 0;
	inst->poll_started = now;
	inst->bytes_before = inst->client->bytes_received;
	next_step(inst);
}

/* The search_read's answer (records, or NULL with err). */
static void
search_answer(Instance *inst, json_object *records, RecordScan *scan, OdooError *err)
{
	PollOutcome outcome;

	if (records == NULL)
	{
		null_is_bad_response(err, "search_read");
		if (log_in_again(inst, err))
			return;
		/* The model may have lost a field we ask for: ask fields_get again. */
		if (err->kind == ODOO_ERR_RPC)
		{
			json_object_put(inst->fields);
			inst->fields = NULL;
		}
		if (err->record_sized)
		{
			/*
			 * One record can make the whole answer unusable (too large, or
			 * nested too deep to read): ask for fewer records at a time, down
			 * to one; a single record that fails twice is dead-lettered by
			 * its id, so the stream moves on.
			 */
			if (inst->fetch_limit > 1)
				inst->fetch_limit = Max(1, inst->fetch_limit / 2);
			else if (++inst->poison_strikes >= 2)
			{
				inst->cause = *err;
				start_isolate(inst);
				inst->phase = PHASE_ISOLATE;
				return;
			}
		}
		finish_poll(inst, record_failure(inst, err, "search_read"));
		return;
	}
	/* A good answer: back towards the configured batch size. */
	inst->fetch_limit = Min(inst->batch_size, inst->fetch_limit * 2);
	inst->poison_strikes = 0;

	if (!json_object_is_type(records, json_type_array))
	{
		json_object_put(records);
		err->kind = ODOO_ERR_BAD_RESPONSE;
		err->retry_after_s = -1;
		snprintf(err->message, sizeof(err->message), "search_read did not answer a list");
		finish_poll(inst, record_failure(inst, err, "search_read"));
		return;
	}
	/*
	 * Nothing new, nothing to settle: no write at all, so an idle instance
	 * costs no WAL and never takes the ordering lock (its heartbeat is in
	 * shared memory, stats_note_success).  Open gaps (which expire) and a
	 * failure count to clear still go through the store path.
	 */
	if (json_object_array_length(records) == 0 && inst->failures == 0 &&
		ARR_NDIM(inst->gaps) == 0 && !gaps_requested(inst))
	{
		json_object_put(records);
		finish_poll(inst, POLL_CAUGHT_UP);
		return;
	}
	fetch_ahead(inst, records);
	PG_TRY();
	{
		outcome = store_batch(inst, records, scan);
	}
	PG_FINALLY();
	{
		json_object_put(records);
	}
	PG_END_TRY();
	finish_poll(inst, outcome);
}

/* The call the poll waited for is answered: goes on with the poll. */
static void
continue_poll(Instance *inst)
{
	OdooError	err;
	RecordScan	scan;			/* what the answer's text says of each record */
	PollOutcome outcome;

	switch (inst->phase)
	{
		case PHASE_IDLE:
			break;
		case PHASE_LOGIN:
			if (odoo_finish_login(inst->client, &err))
				next_step(inst);
			else
				finish_poll(inst, record_failure(inst, &err, "login"));
			break;
		case PHASE_FIELDS:
			if (fields_answer(inst, odoo_finish_call(inst->client, NULL, &err), &err))
				next_step(inst);
			else if (!log_in_again(inst, &err))
				finish_poll(inst, record_failure(inst, &err, "fields_get"));
			break;
		case PHASE_SEARCH:
			search_answer(inst, odoo_finish_call(inst->client, &scan, &err), &scan, &err);
			break;
		case PHASE_ISOLATE:
			if (isolate_answer(inst, odoo_finish_call(inst->client, NULL, &err), &outcome))
				finish_poll(inst, outcome);
			else
				finish_poll(inst, record_failure(inst, &inst->cause, "search_read"));
			break;
	}
}

/*
 * Runs one step of an instance's poll in its own memory.  An ERROR (one the
 * steps do not handle themselves: out of memory, a bug) ends this
 * instance's poll as a failure, with backoff; the poller and its other
 * instances go on.
 */
static void
run_step(Instance *inst, void (*step) (Instance *))
{
	MemoryContext old = MemoryContextSwitchTo(inst->context);

	PG_TRY();
	{
		step(inst);
	}
	PG_CATCH();
	{
		ErrorData  *edata = bc_abort_work(old);
		OdooError	err;

		memset(&err, 0, sizeof(err));
		err.kind = ODOO_ERR_STORE;
		err.retry_after_s = -1;
		bc_copy_message(err.message, sizeof(err.message),
						psprintf("%s (SQLSTATE %s)", edata->message, unpack_sql_state(edata->sqlerrcode)),
						inst->client->secret);
		FreeErrorData(edata);
		odoo_cancel_call(inst->client);
		inst->phase = PHASE_IDLE;
		MemoryContextSwitchTo(inst->context);
		(void) record_failure(inst, &err, "poll");
		/*
		 * Whatever the error left half done in memory, the instance is loaded
		 * again from its committed row (with the backoff just recorded).
		 */
		inst->gone = true;
		reread_at = 0;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(old);
	if (inst->phase == PHASE_IDLE)
		MemoryContextReset(inst->context);
}

/* ---- the instances of this poller -------------------------------------- */

/* Stops running an instance, in the caller's transaction (its lock goes). */
static void
release_instance(Instance *inst)
{
	odoo_client_destroy(inst->client);	/* abandons its call, wipes the secret */
	doorbell_detach(inst->bell);
	unlock_instance(inst->id);
	json_object_put(inst->fields);
	if (inst->gaps)
		pfree(inst->gaps);
	pfree(inst->name);
	pfree(inst->source_model);
	MemoryContextDelete(inst->context);
	pfree(inst);
}

/* Starts running an instance; NULL if it is gone or another poller runs it. */
static Instance *
add_instance(int32 instance_id, bool *locked)
{
	Instance   *inst = MemoryContextAllocZero(TopMemoryContext, sizeof(Instance));
	LoadOutcome loaded = load_instance(instance_id, inst);

	*locked = (loaded == LOAD_LOCKED);
	if (loaded != LOAD_OK)
	{
		pfree(inst);
		return NULL;
	}
	inst->context = AllocSetContextCreate(TopMemoryContext, "bridgecore poll",
										  ALLOCSET_DEFAULT_SIZES);
	inst->bell = doorbell_attach(instance_id);	/* under the advisory lock */
	ereport(LOG, (errmsg("bridgecore poller for instance \"%s\" started at cursor " INT64_FORMAT,
						 inst->name, inst->cursor)));
	return inst;
}

/*
 * Reads which enabled instances are this poller's (id modulo the number of
 * pollers) and makes the running ones match: releases those removed,
 * disabled, changed (their config_version moved) or gone, and starts the
 * new ones.  Returns how many instances are this poller's, running or not.
 */
static int
reread_instances(void)
{
	Oid			argtypes[2] = {INT4OID, INT4OID};
	Datum		args[2];
	int32	   *ids = NULL;
	int32	   *versions = NULL;
	int			nwanted = 0;
	bool		present;
	bool		retry = false;
	List	   *kept = NIL;		/* in TopMemoryContext: becomes instances */
	ListCell   *lc;
	MemoryContext old;

	bc_begin_work("bridgecore poller: reading its instances");
	if (!OidIsValid(started_extension))
		started_extension = get_extension_oid("bridgecore", true);
	present = extension_present();
	if (present)
	{
		args[0] = Int32GetDatum(poller_count);
		args[1] = Int32GetDatum(poller_index);
		if (SPI_execute_with_args("SELECT id, config_version FROM bridgecore.instance"
								  " WHERE enabled AND id % $1 = $2 ORDER BY id",
								  2, argtypes, args, NULL, true, 0) == SPI_OK_SELECT)
		{
			nwanted = (int) SPI_processed;
			ids = palloc(sizeof(int32) * Max(nwanted, 1));
			versions = palloc(sizeof(int32) * Max(nwanted, 1));
			for (int i = 0; i < nwanted; i++)
			{
				bool		isnull;

				ids[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
				versions[i] = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
			}
		}
		foreach(lc, instances)
		{
			Instance   *inst = lfirst(lc);
			bool		wanted = false;

			for (int i = 0; i < nwanted && !inst->gone; i++)
				if (ids[i] == inst->id && versions[i] == inst->config_version)
					wanted = true;
			if (wanted)
			{
				old = MemoryContextSwitchTo(TopMemoryContext);
				kept = lappend(kept, inst);
				MemoryContextSwitchTo(old);
			}
			else
			{
				ereport(LOG, (errmsg("bridgecore poller for instance \"%s\" stopped", inst->name)));
				release_instance(inst);
			}
		}
		list_free(instances);
		instances = NIL;
		for (int i = 0; i < nwanted; i++)
		{
			bool		running = false;

			foreach(lc, kept)
				if (((Instance *) lfirst(lc))->id == ids[i])
					running = true;
			if (!running)
			{
				bool		locked;
				Instance   *inst = add_instance(ids[i], &locked);

				old = MemoryContextSwitchTo(TopMemoryContext);
				if (inst != NULL)
					kept = lappend(kept, inst);
				MemoryContextSwitchTo(old);
				retry |= locked;
			}
		}
		instances = kept;
	}
	bc_end_work();
	if (!present)
		proc_exit(0);			/* the launcher starts what a new extension needs */
	reread_at = TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
											retry ? LOCK_RETRY_MS : INSTANCES_REREAD_MS);
	return nwanted;
}

/* ---- the poller process ------------------------------------------------ */

/* Whether an idle instance's next poll is due now; else lowers *timeout_ms to when. */
static bool
poll_due(Instance *inst, TimestampTz now, long *timeout_ms)
{
	long		until;

	/*
	 * A ring (bridgecore.wake) ends the wait between polls at once, but not
	 * a failure's backoff: a failing Odoo is not asked sooner.
	 */
	if (inst->next_attempt <= now || (inst->failures == 0 && doorbell_rung(inst->bell)))
		return true;
	until = (long) Min((inst->next_attempt - now + 999) / 1000, (int64) INSTANCES_REREAD_MS);
	*timeout_ms = (*timeout_ms < 0) ? until : Min(*timeout_ms, until);
	return false;
}

/* Hands each transfer curl finished to its client. */
static bool
collect_finished(void)
{
	CURL	   *easy;
	CURLcode	rc;
	bool		any = false;

	while ((easy = curl_loop_next_done(loop, &rc)) != NULL)
	{
		OdooClient *client = odoo_client_of(easy);

		if (client != NULL)
			odoo_call_done(client, rc);
		any = true;
	}
	return any;
}

void
bridgecore_poller_main(Datum arg)
{
	MemoryContext loop_context;
	uint64		drops_seen = launcher_extension_drops();
	uint32		generation_seen;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(bridgecore_database, NULL, 0);
	bc_pin_worker_session();

	poller_index = DatumGetInt32(arg);
	memcpy(&poller_count, MyBgworkerEntry->bgw_extra, sizeof(int32));
	if (poller_count < 1 || poller_index < 0 || poller_index >= poller_count)
		elog(ERROR, "bridgecore poller %d of %d: bad arguments", poller_index, poller_count);

	loop = curl_loop_create();
	loop_context = AllocSetContextCreate(TopMemoryContext, "bridgecore poller loop",
										 ALLOCSET_DEFAULT_SIZES);
	generation_seen = launcher_generation();
	MemoryContextSwitchTo(loop_context);
	if (reread_instances() == 0)
		proc_exit(0);			/* nothing of ours is enabled now */

	for (;;)
	{
		TimestampTz now;
		long		timeout_ms = -1;
		ListCell   *lc;
		uint32		generation;

		MemoryContextSwitchTo(loop_context);
		MemoryContextReset(loop_context);
		CHECK_FOR_INTERRUPTS();
		if (!PostmasterIsAlive())
			proc_exit(1);		/* also while draining a backlog, which never waits */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* The launcher says instances changed, or it is time to look anyway. */
		now = GetCurrentTimestamp();
		generation = launcher_generation();
		if (generation != generation_seen || now >= reread_at)
		{
			generation_seen = generation;
			if (reread_instances() == 0)
				proc_exit(0);
		}
		else
		{
			/*
			 * A dropped extension is noticed within a second without a
			 * transaction, unless an extension was dropped.
			 */
			uint64		drops = launcher_extension_drops();

			if ((drops != drops_seen ||
				 TimestampDifferenceExceeds(extension_checked_at, now, EXTENSION_RECHECK_MS)) &&
				!extension_still_present())
				proc_exit(0);
			drops_seen = drops;
		}

		/* Answers that came: each instance goes on with its poll. */
		collect_finished();
		foreach(lc, instances)
		{
			Instance   *inst = lfirst(lc);

			if (!inst->gone && inst->phase != PHASE_IDLE && odoo_call_finished(inst->client))
				run_step(inst, continue_poll);
		}

		/* Polls that are due start. */
		now = GetCurrentTimestamp();
		foreach(lc, instances)
		{
			Instance   *inst = lfirst(lc);
			long		unused = -1;

			if (!inst->gone && inst->phase == PHASE_IDLE && poll_due(inst, now, &unused))
				run_step(inst, begin_poll);
		}
		curl_loop_kick(loop);

		/*
		 * How long to wait: a step may have finished a poll that is due again
		 * at once (a full batch), or a call may have been answered already.
		 */
		now = GetCurrentTimestamp();
		foreach(lc, instances)
		{
			Instance   *inst = lfirst(lc);

			if (inst->gone)
				timeout_ms = 0;
			else if (inst->phase == PHASE_IDLE)
			{
				if (poll_due(inst, now, &timeout_ms))
					timeout_ms = 0;
			}
			else if (odoo_call_finished(inst->client))
				timeout_ms = 0;
		}
		if (collect_finished())
			timeout_ms = 0;
		if (reread_at > now)
		{
			long		until = (long) ((reread_at - now + 999) / 1000);

			timeout_ms = (timeout_ms < 0) ? until : Min(timeout_ms, until);
		}
		else
			timeout_ms = 0;
		/* a ring sets the latch: never sleep longer than a second without looking */
		timeout_ms = (timeout_ms < 0) ? 1000 : Min(timeout_ms, 1000L);
		curl_loop_wait(loop, timeout_ms);
	}
}
