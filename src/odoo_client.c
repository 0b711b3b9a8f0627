/*
 * odoo_client.c: Odoo's JSON-RPC API (POST <url>/jsonrpc) over libcurl.
 *
 * One easy handle per client keeps the connection alive between calls.
 * Two ways to run a call:
 *  - at once (odoo_login, odoo_execute_kw: the SQL functions' calls): the
 *    client's own multi handle drives the transfer in steps of at most
 *    100 ms, so interrupts (SIGTERM, query cancel, procsignal barriers) are
 *    served while a request is in flight;
 *  - started and read later (odoo_start_*, odoo_finish_*: the pollers): the
 *    transfer runs in a multi handle the caller drives (curl_loop.c) beside
 *    the calls of other clients, and the caller reads the answer once that
 *    handle reports the transfer done.
 * Responses are parsed with json-c; every json-c object and curl list is
 * released on every path, including errors thrown by CHECK_FOR_INTERRUPTS.
 */
#include "odoo_client.h"
#include "ingest.h"

#include "lib/stringinfo.h"
#include "utils/memutils.h"

#include <ctype.h>

/* Longest slice of a bad body quoted in an error message. */
#define BODY_EXCERPT 80

typedef struct TransferState
{
	StringInfo	body;
	size_t		max_size;
	bool		too_large;
	bool		out_of_memory;	/* the body could not grow */
	int			retry_after_s;
} TransferState;

/*
 * One JSON-RPC call on the client's handle, from its request to its answer:
 * rpc_call() runs one at once; odoo_start_*() start one (client->pending)
 * that odoo_finish_*() read once the caller's multi handle reports it done.
 * Kept in TopMemoryContext: the caller's memory may be reset between the
 * two.
 */
typedef struct Transfer
{
	json_object *request;		/* owns the body curl sends */
	struct curl_slist *headers;
	TransferState ts;
	bool		added;			/* the handle is in client->multi */
	bool		done;			/* the multi handle reported it finished */
	CURLcode	result;			/* ... with this code */
} Transfer;

const char *
odoo_error_kind_name(OdooErrorKind kind)
{
	switch (kind)
	{
		case ODOO_OK:
			return "ok";
		case ODOO_ERR_TRANSPORT:
			return "transport";
		case ODOO_ERR_TOO_LARGE:
			return "too_large";
		case ODOO_ERR_HTTP:
			return "http";
		case ODOO_ERR_BAD_RESPONSE:
			return "bad_response";
		case ODOO_ERR_RPC:
			return "rpc";
		case ODOO_ERR_ACCESS_DENIED:
			return "access_denied";
		case ODOO_ERR_SESSION_EXPIRED:
			return "session_expired";
		case ODOO_ERR_AUTH_FAILED:
			return "auth_failed";
		case ODOO_ERR_STORE:
			return "store";
	}
	return "unknown";
}

static void
set_error(OdooError *err, OdooErrorKind kind, const char *fmt,...)
pg_attribute_printf(3, 4);

static void
set_error(OdooError *err, OdooErrorKind kind, const char *fmt,...)
{
	va_list		ap;
	StringInfoData full;

	err->kind = kind;
	/* The whole text first: the secret is masked before anything is cut. */
	initStringInfo(&full);
	for (;;)
	{
		int			needed;

		va_start(ap, fmt);
		needed = appendStringInfoVA(&full, fmt, ap);
		va_end(ap);
		if (needed == 0)
			break;
		enlargeStringInfo(&full, needed);
	}
	bc_copy_message(err->message, sizeof(err->message), full.data, err->secret);
	pfree(full.data);
}

/*
 * A printable excerpt of a body, for error messages: at most BODY_EXCERPT
 * characters, with the secret masked before the cut (the window read is
 * long enough to hold a secret that starts inside the excerpt).
 */
static char *
body_excerpt(const OdooError *err, const char *data, size_t len)
{
	size_t		slen = err->secret ? strlen(err->secret) : 0;
	size_t		n = Min(len, (size_t) BODY_EXCERPT * 4 + slen);
	char	   *window = palloc(n + 1);
	char	   *scrubbed;
	char	   *out;

	for (size_t i = 0; i < n; i++)
		window[i] = (data[i] == '\0' || data[i] == '\r' || data[i] == '\n' || data[i] == '\t') ? ' ' : data[i];
	window[n] = '\0';
	scrubbed = bc_scrubbed_copy(window, err->secret);
	bc_make_valid_utf8(scrubbed);
	out = pnstrdup(scrubbed, bc_utf8_clip_length(scrubbed, BODY_EXCERPT));
	pfree(window);
	pfree(scrubbed);
	return out;
}

static size_t
write_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	TransferState *ts = (TransferState *) userdata;
	StringInfo	body = ts->body;
	size_t		n = size * nmemb;
	size_t		needed = (size_t) body->len + n + 1;

	/*
	 * Nothing here may throw: an ERROR raised inside a curl callback would
	 * jump out of curl with its multi handle marked as in a callback, and
	 * every later call on it would fail.  Returning 0 makes curl abort the
	 * transfer with CURLE_WRITE_ERROR instead.
	 */
	if ((size_t) body->len + n > ts->max_size || needed >= MaxAllocSize)
	{
		ts->too_large = true;
		return 0;
	}
	if (needed > (size_t) body->maxlen)
	{
		size_t		newlen = Max((size_t) body->maxlen * 2, needed);
		char	   *grown;

		newlen = Min(newlen, (size_t) MaxAllocSize - 1);
		grown = MemoryContextAllocExtended(TopMemoryContext, newlen, MCXT_ALLOC_NO_OOM);
		if (grown == NULL)
		{
			ts->out_of_memory = true;
			return 0;
		}
		memcpy(grown, body->data, body->len + 1);
		pfree(body->data);
		body->data = grown;
		body->maxlen = (int) newlen;
	}
	memcpy(body->data + body->len, ptr, n);
	body->len += (int) n;
	body->data[body->len] = '\0';
	return n;
}

static size_t
read_header(char *buffer, size_t size, size_t nitems, void *userdata)
{
	TransferState *ts = (TransferState *) userdata;
	size_t		n = size * nitems;
	static const char name[] = "retry-after:";

	if (n > sizeof(name) - 1 && pg_strncasecmp(buffer, name, sizeof(name) - 1) == 0)
	{
		const char *p = buffer + sizeof(name) - 1;
		long		v;

		while (p < buffer + n && (*p == ' ' || *p == '\t'))
			p++;
		/* Only the delay-seconds form; an HTTP date falls back to backoff. */
		if (p < buffer + n && isdigit((unsigned char) *p))
		{
			v = strtol(p, NULL, 10);
			ts->retry_after_s = (int) Min(v, 86400L);
		}
	}
	return n;
}

static OdooClient *
client_create(const char *url, const char *database, const char *login,
			  const char *secret, bool verify_tls, CURLM *shared_multi, void *owner)
{
	OdooClient *client;
	MemoryContext old = MemoryContextSwitchTo(TopMemoryContext);

	client = palloc0(sizeof(OdooClient));
	client->endpoint = psprintf("%s/jsonrpc", url);
	client->database = pstrdup(database);
	client->login = pstrdup(login);
	client->secret = pstrdup(secret);
	client->verify_tls = verify_tls;
	client->owner = owner;
	MemoryContextSwitchTo(old);

	client->easy = curl_easy_init();
	client->owns_multi = (shared_multi == NULL);
	client->multi = shared_multi ? shared_multi : curl_multi_init();
	if (client->easy == NULL || client->multi == NULL)
	{
		odoo_client_destroy(client);
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not initialise libcurl")));
	}
	return client;
}

/* A client whose calls run at once (odoo_login, odoo_execute_kw). */
OdooClient *
odoo_client_create(const char *url, const char *database, const char *login,
				   const char *secret, bool verify_tls)
{
	return client_create(url, database, login, secret, verify_tls, NULL, NULL);
}

/*
 * A client whose calls are started (odoo_start_*) in the caller's multi
 * handle and read (odoo_finish_*) when it reports them done; owner is
 * whatever the caller wants back from odoo_client_of().
 */
OdooClient *
odoo_client_create_in(CURLM *multi, void *owner, const char *url, const char *database,
					  const char *login, const char *secret, bool verify_tls)
{
	Assert(multi != NULL);
	return client_create(url, database, login, secret, verify_tls, multi, owner);
}

/* The client an easy handle that a multi handle reported done belongs to. */
OdooClient *
odoo_client_of(CURL *easy)
{
	char	   *client = NULL;

	if (curl_easy_getinfo(easy, CURLINFO_PRIVATE, &client) != CURLE_OK)
		return NULL;
	return (OdooClient *) client;
}

void
odoo_client_destroy(OdooClient *client)
{
	if (client == NULL)
		return;
	odoo_cancel_call(client);
	if (client->multi && client->owns_multi)
		curl_multi_cleanup(client->multi);
	if (client->easy)
		curl_easy_cleanup(client->easy);
	/* Do not leave the secret in freed memory. */
	if (client->secret)
		explicit_bzero(client->secret, strlen(client->secret));
	pfree(client->endpoint);
	pfree(client->database);
	pfree(client->login);
	pfree(client->secret);
	pfree(client);
}

static void
configure_request(OdooClient *client, TransferState *ts, struct curl_slist *headers,
				  const char *body, size_t body_len)
{
	CURL	   *h = client->easy;

	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, client->endpoint);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
	curl_easy_setopt(h, CURLOPT_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
	curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS, (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
	curl_easy_setopt(h, CURLOPT_POST, 1L);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) body_len);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_USERAGENT, "bridgecore/" BRIDGECORE_VERSION);
	curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");	/* gzip, deflate, ... */
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long) bridgecore_connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long) bridgecore_request_timeout_ms);
	curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t) ts->max_size);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, client->verify_tls ? 1L : 0L);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, client->verify_tls ? 2L : 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, write_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, ts);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, read_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, ts);
	curl_easy_setopt(h, CURLOPT_PRIVATE, (char *) client);	/* for odoo_client_of */
	if (message_level_is_interesting(DEBUG2))
		curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);
}

/*
 * Builds the call and hands it to curl, which sends what it can at once
 * without waiting.  Takes ownership of args.
 */
static void
transfer_start(OdooClient *client, Transfer *t, const char *service, const char *method,
			   json_object *args)
{
	json_object *params = json_object_new_object();
	const char *body;
	size_t		body_len;
	int			running;

	memset(t, 0, sizeof(*t));
	t->request = json_object_new_object();
	json_object_object_add(params, "service", json_object_new_string(service));
	json_object_object_add(params, "method", json_object_new_string(method));
	json_object_object_add(params, "args", args);	/* takes ownership */
	json_object_object_add(t->request, "jsonrpc", json_object_new_string("2.0"));
	json_object_object_add(t->request, "method", json_object_new_string("call"));
	json_object_object_add(t->request, "params", params);
	json_object_object_add(t->request, "id", json_object_new_int64(++client->request_id));
	body = json_object_to_json_string_length(t->request, JSON_C_TO_STRING_PLAIN, &body_len);

	t->ts.body = MemoryContextAllocZero(TopMemoryContext, sizeof(StringInfoData));
	t->ts.body->data = MemoryContextAlloc(TopMemoryContext, 1024);
	t->ts.body->maxlen = 1024;
	t->ts.body->data[0] = '\0';
	t->ts.max_size = (size_t) bridgecore_max_response_kb * 1024;
	t->ts.too_large = false;
	t->ts.out_of_memory = false;
	t->ts.retry_after_s = -1;
	t->headers = curl_slist_append(t->headers, "Content-Type: application/json");
	t->headers = curl_slist_append(t->headers, "Accept: application/json");
	configure_request(client, &t->ts, t->headers, body, body_len);
	if (curl_multi_add_handle(client->multi, client->easy) == CURLM_OK)
	{
		t->added = true;
		/*
		 * A shared multi handle is driven by its owner's loop (curl asks it,
		 * through its timer callback, to act at once).
		 */
		if (client->owns_multi)
			(void) curl_multi_perform(client->multi, &running);
	}
	else
	{
		t->done = true;
		t->result = CURLE_FAILED_INIT;
	}
}

/*
 * Runs a started transfer to completion, serving interrupts every 100 ms.
 * Returns curl's result code.
 */
static CURLcode
transfer_run(OdooClient *client, Transfer *t)
{
	CURLcode	result = CURLE_OK;
	int			running = 1;

	Assert(client->owns_multi);
	if (!t->added)
		return CURLE_FAILED_INIT;
	while (running)
	{
		CURLMsg    *msg;
		int			queued;

		if (curl_multi_perform(client->multi, &running) != CURLM_OK)
		{
			result = CURLE_RECV_ERROR;
			break;
		}
		while ((msg = curl_multi_info_read(client->multi, &queued)) != NULL)
		{
			if (msg->msg == CURLMSG_DONE)
				result = msg->data.result;
		}
		if (!running)
			break;
		curl_multi_poll(client->multi, NULL, 0, 100, NULL);
		CHECK_FOR_INTERRUPTS();
	}
	return result;
}

/* Releases what transfer_start() took; an unfinished transfer is abandoned. */
static void
transfer_end(OdooClient *client, Transfer *t)
{
	if (t->added)
		curl_multi_remove_handle(client->multi, client->easy);
	t->added = false;
	curl_slist_free_all(t->headers);
	t->headers = NULL;
	json_object_put(t->request);	/* also frees args */
	t->request = NULL;
	if (t->ts.body)
	{
		pfree(t->ts.body->data);
		pfree(t->ts.body);
		t->ts.body = NULL;
	}
}

static json_object *classify_parsed(json_object *response, enum json_tokener_error jerr,
									size_t parse_end, const char *body, size_t len,
									OdooError *err);

/*
 * Classifies the body of an HTTP 200 answer to a JSON-RPC call.  Returns
 * the "result" member (a new reference the caller releases with
 * json_object_put), or NULL: with err->kind set on a failure, or with
 * err->kind left at ODOO_OK when the result is JSON null (a method that
 * returned None; json-c has no null object).  Only err->kind,
 * err->record_sized and err->message are written.  With scan, a result
 * that is a list of records also gets what json_scan_records() finds in
 * the body, one entry per record (in the caller's memory context).
 */
json_object *
odoo_classify_answer(const char *body, size_t len, RecordScan *scan, OdooError *err)
{
	json_tokener *tok = json_tokener_new_ex(BC_JSON_MAX_DEPTH);
	json_object *volatile response = json_tokener_parse_ex(tok, body, len);
	json_object *volatile result = NULL;
	enum json_tokener_error jerr = json_tokener_get_error(tok);
	size_t		parse_end = json_tokener_get_parse_end(tok);

	json_tokener_free(tok);
	if (scan != NULL)
		memset(scan, 0, sizeof(*scan));
	/* building a message pallocs: the answer is freed even if that throws */
	PG_TRY();
	{
		result = classify_parsed(response, jerr, parse_end, body, len, err);
		if (scan != NULL && json_object_is_type(result, json_type_array) &&
			(!json_scan_records(body, len, true, scan) ||
			 scan->nrecords != (int) json_object_array_length(result)))
		{
			/* never expected; one record at a time, the poller passes it */
			json_object_put(result);
			result = NULL;
			err->record_sized = true;
			set_error(err, ODOO_ERR_BAD_RESPONSE, "the records of the answer could not be read from its text");
		}
	}
	PG_CATCH();
	{
		json_object_put(response);
		json_object_put(result);
		PG_RE_THROW();
	}
	PG_END_TRY();
	json_object_put(response);
	return result;
}

/* odoo_classify_answer() once json-c has parsed the body. */
static json_object *
classify_parsed(json_object *response, enum json_tokener_error jerr, size_t parse_end,
				const char *body, size_t len, OdooError *err)
{
	json_object *result = NULL;
	json_object *member;

	if (response == NULL || jerr != json_tokener_success || parse_end != len)
	{
		err->record_sized = (jerr == json_tokener_error_depth);
		set_error(err, ODOO_ERR_BAD_RESPONSE, "invalid JSON (%s): %s",
				  jerr == json_tokener_continue ? "truncated" : json_tokener_error_desc(jerr),
				  body_excerpt(err, body, len));
	}
	else if (!json_object_is_type(response, json_type_object))
		set_error(err, ODOO_ERR_BAD_RESPONSE, "JSON-RPC answer is not an object");
	else if (json_object_object_get_ex(response, "error", &member) && member != NULL)
	{
		json_object *data = NULL;
		json_object *name = NULL;
		json_object *msg = NULL;
		const char *name_s = "";

		/* Odoo: branch on error.data.name, not on error.code. */
		if (json_object_object_get_ex(member, "data", &data) && data != NULL)
		{
			if (json_object_object_get_ex(data, "name", &name) && json_object_is_type(name, json_type_string))
				name_s = json_object_get_string(name);
			json_object_object_get_ex(data, "message", &msg);
		}
		if (msg == NULL || !json_object_is_type(msg, json_type_string))
			json_object_object_get_ex(member, "message", &msg);
		set_error(err,
				  strcmp(name_s, "odoo.exceptions.AccessDenied") == 0 ? ODOO_ERR_ACCESS_DENIED :
				  strcmp(name_s, "odoo.http.SessionExpiredException") == 0 ? ODOO_ERR_SESSION_EXPIRED :
				  ODOO_ERR_RPC,
				  "%s%s%s", name_s, *name_s ? ": " : "",
				  msg && json_object_is_type(msg, json_type_string) && *json_object_get_string(msg)
				  ? json_object_get_string(msg) : "error without message");
	}
	else if (json_object_object_get_ex(response, "result", &member))
		result = member ? json_object_get(member) : json_object_new_null();
	else if (json_object_object_get_ex(response, "jsonrpc", &member))
		result = json_object_new_null();	/* a method that returned None */
	else
		set_error(err, ODOO_ERR_BAD_RESPONSE, "not a JSON-RPC answer");
	return result;
}

/*
 * Reads the answer of a finished transfer (curl's result code rc) into a
 * result or err (see rpc_call).
 */
static json_object *
transfer_answer(OdooClient *client, Transfer *t, CURLcode rc, RecordScan *scan, OdooError *err)
{
	json_object *result = NULL;
	long		status = 0;

	memset(err, 0, sizeof(*err));
	err->retry_after_s = -1;
	err->secret = client->secret;
	if (scan != NULL)
		memset(scan, 0, sizeof(*scan));

	curl_easy_getinfo(client->easy, CURLINFO_RESPONSE_CODE, &status);
	client->bytes_received += t->ts.body->len;
	err->http_status = status;
	err->retry_after_s = t->ts.retry_after_s;

	if (t->ts.too_large || rc == CURLE_FILESIZE_EXCEEDED)
	{
		err->record_sized = true;
		set_error(err, ODOO_ERR_TOO_LARGE,
				  "response larger than bridgecore.max_response_size (%d kB)",
				  bridgecore_max_response_kb);
	}
	else if (t->ts.out_of_memory)
		set_error(err, ODOO_ERR_TRANSPORT, "out of memory while receiving a response of %d bytes",
				  t->ts.body->len);
	else if (rc != CURLE_OK)
		set_error(err, ODOO_ERR_TRANSPORT, "%s", curl_easy_strerror(rc));
	else if (status != 200)
	{
		set_error(err, ODOO_ERR_HTTP, "HTTP %ld: %s", status,
				  body_excerpt(err, t->ts.body->data, t->ts.body->len));
	}
	else
		result = odoo_classify_answer(t->ts.body->data, t->ts.body->len, scan, err);
	return result;
}

/* Runs a started call to its end on the client's own multi handle, and reads its answer. */
static json_object *
transfer_finish(OdooClient *client, Transfer *t, RecordScan *scan, OdooError *err)
{
	CURLcode	rc = t->done ? t->result : transfer_run(client, t);

	return transfer_answer(client, t, rc, scan, err);
}

/*
 * Posts one JSON-RPC call and returns the "result" member of the answer
 * (a new reference the caller releases with json_object_put), or NULL with
 * err set.  A call whose method returns None yields a JSON null object.
 */
static json_object *
rpc_call(OdooClient *client, const char *service, const char *method,
		 json_object *args, RecordScan *scan, OdooError *err)
{
	Transfer	t;
	json_object *volatile result = NULL;

	odoo_cancel_call(client);	/* one transfer at a time on the handle */
	transfer_start(client, &t, service, method, args);
	PG_TRY();
	{
		result = transfer_finish(client, &t, scan, err);
	}
	PG_FINALLY();
	{
		transfer_end(client, &t);
	}
	PG_END_TRY();
	return result;
}

/*
 * Masks every occurrence of the secret in msg (a buffer of size bytes) with
 * "***", then cuts the result at a character boundary to fit.  Masking
 * comes first, so no fragment of the secret survives the cut.
 */
void
odoo_scrub_secret(char *msg, size_t size, const char *secret)
{
	bc_copy_message(msg, size, msg, secret);
}

static json_object *
login_args(OdooClient *client)
{
	json_object *args = json_object_new_array();

	json_object_array_add(args, json_object_new_string(client->database));
	json_object_array_add(args, json_object_new_string(client->login));
	json_object_array_add(args, json_object_new_string(client->secret));
	json_object_array_add(args, json_object_new_object());
	return args;
}

/* What common.authenticate answered (result, or NULL with err): sets client->uid. */
static bool
login_answer(OdooClient *client, json_object *result, OdooError *err)
{
	if (result == NULL && err->kind == ODOO_OK)
		set_error(err, ODOO_ERR_BAD_RESPONSE, "login answered neither a user id nor false");
	if (result == NULL)
		return false;

	if (json_object_is_type(result, json_type_int) && json_object_get_int64(result) > 0)
		client->uid = json_object_get_int64(result);
	else if (json_object_is_type(result, json_type_boolean) && !json_object_get_boolean(result))
		set_error(err, ODOO_ERR_AUTH_FAILED,
				  "login refused for user \"%s\" on database \"%s\" (wrong login or secret, or too many failed attempts)",
				  client->login, client->database);
	else
		set_error(err, ODOO_ERR_BAD_RESPONSE, "login answered neither a user id nor false");
	json_object_put(result);
	return client->uid > 0;
}

bool
odoo_login(OdooClient *client, OdooError *err)
{
	return login_answer(client, rpc_call(client, "common", "authenticate", login_args(client),
										 NULL, err), err);
}

static json_object *
execute_kw_args(OdooClient *client, const char *model, const char *method,
				json_object *args, json_object *kwargs)
{
	json_object *call = json_object_new_array();

	json_object_array_add(call, json_object_new_string(client->database));
	json_object_array_add(call, json_object_new_int64(client->uid));
	json_object_array_add(call, json_object_new_string(client->secret));
	json_object_array_add(call, json_object_new_string(model));
	json_object_array_add(call, json_object_new_string(method));
	json_object_array_add(call, args);
	json_object_array_add(call, kwargs);
	return call;
}

/*
 * object.execute_kw(db, uid, secret, model, method, args, kwargs).  Takes
 * ownership of args and kwargs.  Returns the result (the caller releases
 * it) or NULL with err set.  scan, if not NULL, is filled for a result that
 * is a list of records (see odoo_classify_answer).
 */
json_object *
odoo_execute_kw(OdooClient *client, const char *model, const char *method,
				json_object *args, json_object *kwargs, RecordScan *scan, OdooError *err)
{
	return rpc_call(client, "object", "execute_kw",
					execute_kw_args(client, model, method, args, kwargs), scan, err);
}

/* ---- calls started now and read later ---------------------------------- */

static void
start_call(OdooClient *client, const char *service, const char *method, json_object *args)
{
	Transfer   *t;

	odoo_cancel_call(client);	/* one transfer at a time on the handle */
	t = MemoryContextAllocZero(TopMemoryContext, sizeof(Transfer));
	PG_TRY();
	{
		transfer_start(client, t, service, method, args);
	}
	PG_CATCH();
	{
		transfer_end(client, t);
		pfree(t);
		PG_RE_THROW();
	}
	PG_END_TRY();
	client->pending = t;
}

/* Starts common.authenticate; odoo_finish_login() reads its answer. */
void
odoo_start_login(OdooClient *client)
{
	start_call(client, "common", "authenticate", login_args(client));
}

/*
 * Starts object.execute_kw (takes ownership of args and kwargs);
 * odoo_finish_call() reads its answer.  A call started earlier and not read
 * is abandoned.
 */
void
odoo_start_execute_kw(OdooClient *client, const char *model, const char *method,
					  json_object *args, json_object *kwargs)
{
	start_call(client, "object", "execute_kw",
			   execute_kw_args(client, model, method, args, kwargs));
}

/* Whether a started call has not been read yet. */
bool
odoo_call_pending(OdooClient *client)
{
	return client->pending != NULL;
}

/*
 * The caller's multi handle reported the client's transfer done with curl's
 * result code rc (CURLMsg.data.result): remembered for odoo_finish_*().
 */
void
odoo_call_done(OdooClient *client, CURLcode rc)
{
	Transfer   *t = (Transfer *) client->pending;

	if (t == NULL)
		return;
	t->done = true;
	t->result = rc;
}

/* Whether the started call is finished and can be read. */
bool
odoo_call_finished(OdooClient *client)
{
	return client->pending != NULL && ((Transfer *) client->pending)->done;
}

/* The answer of the finished call, as odoo_execute_kw() returns it. */
json_object *
odoo_finish_call(OdooClient *client, RecordScan *scan, OdooError *err)
{
	Transfer   *t = (Transfer *) client->pending;
	json_object *volatile result = NULL;

	Assert(t != NULL && t->done);
	client->pending = NULL;
	PG_TRY();
	{
		result = transfer_answer(client, t, t->result, scan, err);
	}
	PG_FINALLY();
	{
		transfer_end(client, t);
		pfree(t);
	}
	PG_END_TRY();
	return result;
}

/* The answer of the finished odoo_start_login(), as odoo_login() returns it. */
bool
odoo_finish_login(OdooClient *client, OdooError *err)
{
	return login_answer(client, odoo_finish_call(client, NULL, err), err);
}

/* Abandons the started call, if any (its connection is closed). */
void
odoo_cancel_call(OdooClient *client)
{
	Transfer   *t = (Transfer *) client->pending;

	if (t == NULL)
		return;
	client->pending = NULL;
	transfer_end(client, t);
	pfree(t);
}
