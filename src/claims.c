/*
 * claims.c: who a request is.  PostgREST and the gateway put a verified
 * token's claims in the setting request.jwt.claims (JSON text); a request
 * made with a token is bound to its user_id and confined to its instance.
 *
 * The claims are read here only, parsed once per distinct text: one request
 * reads them several times (sync_pull checks the user, then resolves the
 * instance), and each read used to parse the JSON again.  What is kept is
 * the last text parsed and the two claims read from it, compared in full on
 * every read, so a changed setting is never answered from an older one.
 *
 * bridgecore._instance_id() is the rule that names the instance of a call,
 * written here once for the SQL functions and for sync_pull.
 */
#include "bridgecore.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "mb/pg_wchar.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"

#include "claims.h"

/* The last claims text parsed, and its claims (TopMemoryContext). */
static char *parsed_text = NULL;
static text *parsed_user_id = NULL;
static text *parsed_instance = NULL;

static SPIPlanPtr by_name_plan = NULL;
static SPIPlanPtr by_id_plan = NULL;
static SPIPlanPtr only_plan = NULL;

static const char *
request_claims(void)
{
	const char *claims = GetConfigOption("request.jwt.claims", true, false);

	return (claims == NULL || claims[0] == '\0') ? NULL : claims;
}

/* jb ->> key, or NULL: the SQL operator's own function, for its semantics. */
static text *
field_text(Datum jb, const char *key)
{
	LOCAL_FCINFO(fcinfo, 2);
	Datum		result;

	InitFunctionCallInfoData(*fcinfo, NULL, 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = jb;
	fcinfo->args[0].isnull = false;
	fcinfo->args[1].value = CStringGetTextDatum(key);
	fcinfo->args[1].isnull = false;
	result = jsonb_object_field_text(fcinfo);
	return fcinfo->isnull ? NULL : DatumGetTextPP(result);
}

static text *
copy_text_in(MemoryContext context, const text *t)
{
	text	   *copy;

	if (t == NULL)
		return NULL;
	copy = (text *) MemoryContextAlloc(context, VARSIZE_ANY_EXHDR(t) + VARHDRSZ);
	SET_VARSIZE(copy, VARSIZE_ANY_EXHDR(t) + VARHDRSZ);
	memcpy(VARDATA(copy), VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t));
	return copy;
}

/*
 * The claims of a text (its jsonb), into the cache: from parse_claims(), and
 * from bridgecore.authorize() for the claims it just set, which the
 * request's reads then need not parse again.
 */
void
bc_claims_remember(const char *claims_text, Jsonb *claims)
{
	text	   *user_id = field_text(JsonbPGetDatum(claims), "user_id");
	text	   *instance = field_text(JsonbPGetDatum(claims), "instance");
	char	   *old_text = parsed_text;

	/* Emptied first: a failed allocation below leaves no half-filled entry. */
	parsed_text = NULL;
	if (old_text != NULL)
		pfree(old_text);
	if (parsed_user_id != NULL)
		pfree(parsed_user_id);
	if (parsed_instance != NULL)
		pfree(parsed_instance);
	parsed_user_id = parsed_instance = NULL;
	parsed_user_id = copy_text_in(TopMemoryContext, user_id);
	parsed_instance = copy_text_in(TopMemoryContext, instance);
	parsed_text = MemoryContextStrdup(TopMemoryContext, claims_text);
}

/*
 * Makes the cache hold the claims of this text.  An invalid JSON text
 * raises the same error as claims::jsonb did, and leaves the cache as it
 * was.
 */
static void
parse_claims(const char *claims)
{
	if (parsed_text != NULL && strcmp(parsed_text, claims) == 0)
		return;
	bc_claims_remember(claims, DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(claims))));
}

/* A copy of one claim of the request (*field, once the cache holds its claims), or NULL. */
static text *
request_claim(text *const *field)
{
	const char *claims = request_claims();

	if (claims == NULL)
		return NULL;
	parse_claims(claims);
	return copy_text_in(CurrentMemoryContext, *field);
}

text *
bc_claim_user_id(void)
{
	return request_claim(&parsed_user_id);
}

text *
bc_claim_instance(void)
{
	return request_claim(&parsed_instance);
}

/* The instances' names, "a, b", or "none" (for hints). */
static char *
instance_names(void)
{
	bool		isnull;
	Datum		d;

	if (SPI_execute("SELECT pg_catalog.string_agg(i.name, ', ' ORDER BY i.name) FROM bridgecore.instance i",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not list the instances");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	return isnull ? pstrdup("none") : TextDatumGetCString(d);
}

bool
bc_instance_exists(int32 id)
{
	Oid			type = INT4OID;
	Datum		arg = Int32GetDatum(id);

	if (by_id_plan == NULL)
		by_id_plan = bc_prepare_kept("SELECT 1 FROM bridgecore.instance i WHERE i.id OPERATOR(pg_catalog.=) $1",
									 1, &type);
	if (SPI_execute_plan(by_id_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not look up instance %d", id);
	return SPI_processed == 1;
}

/*
 * The instance a call acts on (SPI connected): the token's, when its
 * claims name one (a call naming another is refused); else the one named;
 * else the only one there is.
 */
int32
bc_instance_id(text *instance)
{
	text	   *claimed = bc_claim_instance();
	bool		isnull;
	Datum		d;

	if (claimed != NULL)
	{
		if (instance != NULL &&
			(VARSIZE_ANY_EXHDR(instance) != VARSIZE_ANY_EXHDR(claimed) ||
			 memcmp(VARDATA_ANY(instance), VARDATA_ANY(claimed), VARSIZE_ANY_EXHDR(claimed)) != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("instance \"%s\" does not match the authenticated instance", pnstrdup(VARDATA_ANY(instance), pg_mbcharcliplen(VARDATA_ANY(instance),
																					VARSIZE_ANY_EXHDR(instance), 64))),
					 errhint("Omit instance, or pass the one your token is for.")));
		instance = claimed;
	}
	if (instance != NULL)
	{
		Oid			type = TEXTOID;
		Datum		arg = PointerGetDatum(instance);

		if (by_name_plan == NULL)
			by_name_plan = bc_prepare_kept("SELECT i.id FROM bridgecore.instance i"
										   " WHERE i.name OPERATOR(pg_catalog.=) $1", 1, &type);
		if (SPI_execute_plan(by_name_plan, &arg, NULL, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not look up an instance");
		if (SPI_processed == 1)
			return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		/*
		 * A caller confined by its token learns no other instance's name.
		 * The hint's query runs before ereport(), so that its own failure
		 * cannot replace this error midway.
		 */
		{
			char	   *hint = claimed != NULL ? pstrdup("Check the instance named by your token.")
				: psprintf("Known instances: %s.", instance_names());

			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("unknown instance \"%s\"", text_to_cstring(instance)),
					 errhint("%s", hint)));
		}
	}

	if (only_plan == NULL)
		only_plan = bc_prepare_kept("SELECT pg_catalog.min(i.id), pg_catalog.count(*) FROM bridgecore.instance i",
									0, NULL);
	if (SPI_execute_plan(only_plan, NULL, NULL, true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not count the instances");
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	if (DatumGetInt64(d) == 1)
		return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (DatumGetInt64(d) == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("no Odoo instance is configured"),
				 errhint("An administrator adds one with bridgecore.add_instance().")));
	{
		char	   *names = instance_names();

		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("instance must be given when several instances exist"),
				 errhint("Pass instance => one of: %s.", names)));
	}
	pg_unreachable();
}

/*
 * bridgecore._instance_id(instance text) returns integer: bc_instance_id()
 * for the SQL functions.
 */
PG_FUNCTION_INFO_V1(bridgecore_instance_id);

Datum
bridgecore_instance_id(PG_FUNCTION_ARGS)
{
	text	   *instance = PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0);
	int32		id;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	id = bc_instance_id(instance);
	SPI_finish();
	PG_RETURN_INT32(id);
}
