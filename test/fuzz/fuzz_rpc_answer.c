/*
 * fuzz_rpc_answer.c: odoo_classify_answer(), what rpc_call() makes of the
 * body of an HTTP 200 answer.
 *
 * The body is handed over NUL-terminated, as rpc_call's StringInfo holds
 * it.  Invariants: exactly one outcome (a result; JSON null, which is NULL
 * with ODOO_OK; or one of the four answer errors), never a result together
 * with an error; the error message is NUL-terminated inside the buffer,
 * not empty and valid UTF-8 (it goes to logs, the instance row and client
 * error messages); AccessDenied and SessionExpired messages name their
 * exception; the fields the classifier does not own are left alone; a body
 * that is not JSON PostgreSQL's json type accepts is never a result; a
 * result re-serialises to such JSON.  Nothing throws, json-c objects are
 * all released (LeakSanitizer).
 */
#include "odoo_client.h"

#include "fuzz.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *body = malloc(size + 1);
	OdooError	err;
	RecordScan	scan;
	json_object *result;
	size_t		mlen;

	memcpy(body, data, size);
	body[size] = '\0';
	memset(&err, 0x5a, sizeof(err));	/* no terminator unless one is written */
	err.kind = ODOO_OK;
	err.http_status = 200;
	err.retry_after_s = 77;
	err.secret = "fuzz-secret-value";	/* masked in messages, as rpc_call sets it */

	result = odoo_classify_answer(body, size, &scan, &err);

	FUZZ_CHECK(err.http_status == 200 && err.retry_after_s == 77, "fields not its own were written");
	if (err.kind == ODOO_OK)
	{
		const unsigned char *m = (const unsigned char *) err.message;

		/* untouched message: still the fill pattern */
		FUZZ_CHECK(m[0] == 0x5a && m[sizeof(err.message) - 1] == 0x5a, "success wrote a message");
		/*
		 * No check that the body is strict JSON: json-c also reads NaN,
		 * Infinity, leading zeros, "7e", raw bytes that are not UTF-8 and
		 * control characters, and the classifier accepts them by design.
		 * The decoder then dead-letters the records that hold them, one by
		 * one (fuzz_decode checks that), instead of failing the whole answer.
		 */
		if (json_object_get_type(result) == json_type_array)
			FUZZ_CHECK((size_t) scan.nrecords == json_object_array_length(result),
					   "%d records scanned of %zu", scan.nrecords, json_object_array_length(result));
		if (result != NULL)
		{
			size_t		alen;

			/* what the decoder is given must re-serialise (no crash, no leak) */
			(void) json_object_to_json_string_length(result, JSON_C_TO_STRING_PLAIN, &alen);
		}
	}
	else
	{
		FUZZ_CHECK(result == NULL, "a result and an error (%s)", odoo_error_kind_name(err.kind));
		FUZZ_CHECK(err.kind == ODOO_ERR_BAD_RESPONSE || err.kind == ODOO_ERR_RPC ||
				   err.kind == ODOO_ERR_ACCESS_DENIED || err.kind == ODOO_ERR_SESSION_EXPIRED,
				   "kind %d (%s) for an answer", err.kind, odoo_error_kind_name(err.kind));
		FUZZ_CHECK(memchr(err.message, '\0', sizeof(err.message)) != NULL, "message not terminated");
		mlen = strlen(err.message);
		FUZZ_CHECK(mlen > 0, "empty message");
		/* the record scanner follows whatever json-c reads */
		FUZZ_CHECK(strcmp(err.message, "the records of the answer could not be read from its text") != 0, "%s", err.message);
		FUZZ_CHECK(oracle_utf8(err.message, mlen, NULL), "message is not valid UTF-8: \"%s\"", err.message);
		if (err.kind == ODOO_ERR_ACCESS_DENIED)
			FUZZ_CHECK(strncmp(err.message, "odoo.exceptions.AccessDenied", 28) == 0, "%s", err.message);
		if (err.kind == ODOO_ERR_SESSION_EXPIRED)
			FUZZ_CHECK(strncmp(err.message, "odoo.http.SessionExpiredException", 33) == 0, "%s", err.message);
	}
	json_object_put(result);
	free(body);
	fuzz_reset_memory();
	return 0;
}
