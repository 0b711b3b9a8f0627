/*
 * odoo_call.c: bridgecore._odoo_call(), one JSON-RPC call to an instance's
 * Odoo from an ordinary backend, for discover_models() and
 * initialize_audit().
 *
 * The request honours statement_timeout and pg_cancel_backend() (the client
 * serves interrupts every 100 ms), uses the worker's timeouts and limits,
 * and frees its curl and json-c objects whatever happens.  An unreachable
 * Odoo or refused credentials raise an error; an Odoo error envelope (say,
 * AccessError) is returned as {"error": {"name", "message"}} for the caller
 * to handle.
 */
#include "bridgecore.h"
#include "odoo_client.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/memutils.h"

PG_FUNCTION_INFO_V1(bridgecore_odoo_call);

/* Reads the instance's access settings into the caller's memory. */
void
bc_read_instance(int32 instance_id, InstanceAccess *out)
{
	MemoryContext caller = CurrentMemoryContext;
	Datum		arg = Int32GetDatum(instance_id);
	Oid			argtype = INT4OID;
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;

	SPI_connect();
	if (SPI_execute_with_args("SELECT name, url, database, login, secret, verify_tls"
							  " FROM bridgecore.instance WHERE id = $1",
							  1, &argtype, &arg, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("instance %d does not exist", instance_id)));
	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	/* SPI_getvalue allocates in SPI's memory, which SPI_finish frees. */
	out->name = MemoryContextStrdup(caller, SPI_getvalue(tup, desc, 1));
	out->url = MemoryContextStrdup(caller, SPI_getvalue(tup, desc, 2));
	out->database = MemoryContextStrdup(caller, SPI_getvalue(tup, desc, 3));
	out->login = MemoryContextStrdup(caller, SPI_getvalue(tup, desc, 4));
	out->secret = MemoryContextStrdup(caller, SPI_getvalue(tup, desc, 5));
	out->verify_tls = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
	SPI_finish();
}

static json_object *
parse_json_arg(text *t, const char *what)
{
	char	   *s = text_to_cstring(t);
	json_object *o = json_tokener_parse(s);

	if (o == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s is not valid JSON", what)));
	return o;
}

/*
 * Raises the error a failed call deserves: refused credentials, an Odoo
 * error, or an Odoo that could not be reached or did not answer JSON-RPC.
 * Messages never carry the secret.
 */
static void
raise_unusable(const InstanceAccess *inst, OdooError *err)
{
	odoo_scrub_secret(err->message, sizeof(err->message), inst->secret);
	if (err->kind == ODOO_ERR_AUTH_FAILED || err->kind == ODOO_ERR_ACCESS_DENIED)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("Odoo instance \"%s\" refused the credentials", inst->name),
				 errdetail("%s", err->message),
				 errhint("Check login and secret with bridgecore.alter_instance(); an API key is preferred.")));
	if (err->kind == ODOO_ERR_RPC || err->kind == ODOO_ERR_SESSION_EXPIRED)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("Odoo instance \"%s\" answered with an error", inst->name),
				 errdetail("%s", err->message),
				 errhint("Check the Odoo user's access rights and Odoo's log.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("could not reach Odoo instance \"%s\"", inst->name),
			 errdetail("%s: %s", odoo_error_kind_name(err->kind), err->message),
			 errhint("Check the instance's url and that Odoo answers; bridgecore.instances shows what the worker sees.")));
}

/*
 * bridgecore._odoo_call(instance_id int, model text, method text,
 *                       args json, kwargs json) returns json
 */
Datum
bridgecore_odoo_call(PG_FUNCTION_ARGS)
{
	InstanceAccess inst;
	char	   *model = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *method = text_to_cstring(PG_GETARG_TEXT_PP(2));
	json_object *volatile args = parse_json_arg(PG_GETARG_TEXT_PP(3), "args");
	json_object *volatile kwargs = NULL;
	json_object *volatile result = NULL;
	OdooClient *volatile client = NULL;
	OdooError	err;
	StringInfoData out;

	PG_TRY();
	{
		kwargs = parse_json_arg(PG_GETARG_TEXT_PP(4), "kwargs");
		bc_read_instance(PG_GETARG_INT32(0), &inst);
		client = odoo_client_create(inst.url, inst.database, inst.login, inst.secret,
									inst.verify_tls);
		if (!odoo_login(client, &err))
			raise_unusable(&inst, &err);
		{
			/* odoo_execute_kw owns them from here on, even if it throws */
			json_object *call_args = args;
			json_object *call_kwargs = kwargs;

			args = kwargs = NULL;
			result = odoo_execute_kw(client, model, method, call_args, call_kwargs, NULL, &err);
		}

		initStringInfo(&out);
		if (result != NULL || err.kind == ODOO_OK)	/* NULL: the method returned None */
		{
			appendStringInfoString(&out, "{\"result\": ");
			appendStringInfoString(&out, json_object_to_json_string_ext(result, JSON_C_TO_STRING_PLAIN));
			appendStringInfoChar(&out, '}');
		}
		else if (err.kind == ODOO_ERR_RPC || err.kind == ODOO_ERR_SESSION_EXPIRED)
		{
			const char *colon;
			char	   *name;

			odoo_scrub_secret(err.message, sizeof(err.message), inst.secret);
			colon = strstr(err.message, ": ");
			name = colon ? pnstrdup(err.message, colon - err.message) : pstrdup("");
			appendStringInfoString(&out, "{\"error\": {\"name\": ");
			escape_json(&out, name);
			appendStringInfoString(&out, ", \"message\": ");
			escape_json(&out, colon ? colon + 2 : err.message);
			appendStringInfoString(&out, "}}");
		}
		else
			raise_unusable(&inst, &err);
	}
	PG_FINALLY();
	{
		json_object_put(args);
		json_object_put(kwargs);
		json_object_put(result);
		odoo_client_destroy(client);
	}
	PG_END_TRY();
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
