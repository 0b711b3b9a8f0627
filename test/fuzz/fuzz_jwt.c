/*
 * fuzz_jwt.c: bridgecore_jwt_verify(), the token verifier of
 * bridgecore._jwt_verify() (src/jwt.c), up to where it hands the header to
 * PostgreSQL's JSON parser.
 *
 * Each input is verified twice with a fixed secret: as it is, and re-signed
 * (the input, or "<HS256 header>.<base64url of the input>", as the signing
 * input, with the right signature appended).  A reference written here (its
 * own splitting, base64url and HMAC-SHA256 through OpenSSL) says what must
 * happen:
 *
 *   - over 8192 bytes: "The token is too long."; not three dot-separated
 *     parts: "The token is not a JWT..."; a signature that is not exactly
 *     the base64url HMAC-SHA256 of the first two parts: "The signature does
 *     not match..." (nothing else of the token is read);
 *   - a signed token whose header or claims are not unpadded base64url, or
 *     decode to bytes with a NUL: "The token's header or claims are not
 *     base64url.";
 *   - otherwise the verifier parses the header, or, when the header is
 *     exactly the one this server writes (HS256_HEADER), which it does not
 *     read, the claims: the stand-in for jsonb_in must receive exactly the
 *     reference's decoding of that part (and then stops the call; the JSON
 *     checks after it are PostgreSQL's jsonb).
 *
 * Every refusal is ERROR 28000 "invalid token" with the hint "Log in again
 * with bridgecore.login()." (PT401 when request.method is set, as through
 * PostgREST, which alternate inputs pretend).
 */
#include "bridgecore.h"

#include "fuzz.h"

#include <setjmp.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "utils/jsonb.h"

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SECRET "a-fuzzing-secret-of-at-least-32-characters"
#define MAX_TOKEN 8192
#define HS256_HEADER "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"

/* ---- stand-ins for the backend functions jwt.c calls ------------------- */

char	   *GUC_check_errmsg_string;
char	   *GUC_check_errdetail_string;
char	   *GUC_check_errhint_string;

static bool via_postgrest = false;
static char *jsonb_in_got = NULL;	/* what the verifier parsed as JSON */
static size_t jsonb_in_len;

#define NOT_CALLED(what) do { fprintf(stderr, "%s called\n", what); abort(); } while (0)

void
DefineCustomIntVariable(const char *name, const char *short_desc, const char *long_desc,
						int *valueAddr, int bootValue, int minValue, int maxValue,
						GucContext context, int flags, GucIntCheckHook check_hook,
						GucIntAssignHook assign_hook, GucShowHook show_hook)
{
	NOT_CALLED("DefineCustomIntVariable");
}

void
DefineCustomStringVariable(const char *name, const char *short_desc, const char *long_desc,
						   char **valueAddr, const char *bootValue, GucContext context, int flags,
						   GucStringCheckHook check_hook, GucStringAssignHook assign_hook,
						   GucShowHook show_hook)
{
	NOT_CALLED("DefineCustomStringVariable");
}

const char *
GetConfigOption(const char *name, bool missing_ok, bool restrict_privileged)
{
	FUZZ_CHECK(strcmp(name, "request.method") == 0, "GetConfigOption(%s)", name);
	return via_postgrest ? "POST" : NULL;
}

TimestampTz
GetCurrentTimestamp(void)
{
	NOT_CALLED("GetCurrentTimestamp");
}

Timestamp
SetEpochTimestamp(void)
{
	NOT_CALLED("SetEpochTimestamp");
}

char *
JsonbToCString(StringInfo out, JsonbContainer *in, int estimated_len)
{
	NOT_CALLED("JsonbToCString");
}

JsonbValue *
getKeyJsonValueFromContainer(JsonbContainer *container, const char *keyVal, int keyLen, JsonbValue *res)
{
	NOT_CALLED("getKeyJsonValueFromContainer");
}

Datum
numeric_float8(PG_FUNCTION_ARGS)
{
	NOT_CALLED("numeric_float8");
}

text *
cstring_to_text_with_len(const char *s, int len)
{
	NOT_CALLED("cstring_to_text_with_len");
}

struct varlena *
pg_detoast_datum(struct varlena *datum)
{
	NOT_CALLED("pg_detoast_datum");
}

char *
format_elog_string(const char *fmt,...)
{
	NOT_CALLED("format_elog_string");
}

void
pre_format_elog_string(int errnumber, const char *domain)
{
	NOT_CALLED("pre_format_elog_string");
}

void
bc_claims_remember(const char *claims_text, Jsonb *claims)
{
	NOT_CALLED("bc_claims_remember");
}

Datum
set_config_by_name(PG_FUNCTION_ARGS)
{
	NOT_CALLED("set_config_by_name");
}

text *
cstring_to_text(const char *s)
{
	NOT_CALLED("cstring_to_text");
}

Datum
DirectFunctionCall3Coll(PGFunction func, Oid collation, Datum arg1, Datum arg2, Datum arg3)
{
	NOT_CALLED("DirectFunctionCall3");
}

/* The header (or the claims) reach the JSON parser: note it and end the call. */
Datum
jsonb_in(PG_FUNCTION_ARGS)
{
	const char *s = DatumGetCString(PG_GETARG_DATUM(0));

	jsonb_in_len = strlen(s);
	jsonb_in_got = malloc(jsonb_in_len + 1);
	memcpy(jsonb_in_got, s, jsonb_in_len + 1);
	ereport(ERROR, (errcode(ERRCODE_INTERNAL_ERROR), errmsg("jsonb_in reached")));
	PG_RETURN_NULL();
}

Datum
DirectFunctionCall1Coll(PGFunction func, Oid collation, Datum arg1)
{
	LOCAL_FCINFO(fcinfo, 1);

	FUZZ_CHECK(func == jsonb_in, "DirectFunctionCall1 of another function");
	InitFunctionCallInfoData(*fcinfo, NULL, 1, collation, NULL, NULL);
	fcinfo->args[0].value = arg1;
	fcinfo->args[0].isnull = false;
	return func(fcinfo);
}

/* ---- the reference ------------------------------------------------------ */

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t
ref_encode(const uint8 *src, size_t len, char *out)
{
	size_t		n = 0;
	uint32		acc = 0;
	int			bits = 0;

	for (size_t i = 0; i < len; i++)
	{
		acc = (acc << 8) | src[i];
		bits += 8;
		while (bits >= 6)
		{
			bits -= 6;
			out[n++] = alphabet[(acc >> bits) & 63];
		}
	}
	if (bits > 0)
		out[n++] = alphabet[(acc << (6 - bits)) & 63];
	return n;
}

/* Unpadded base64url (RFC 4648 section 5); out has room for len bytes. */
static bool
ref_decode(const char *s, size_t len, uint8 *out, size_t *outlen)
{
	size_t		n = 0;
	uint32		acc = 0;
	int			bits = 0;

	if (len % 4 == 1)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		const char *p = memchr(alphabet, s[i], 64);

		if (s[i] == '\0' || p == NULL)
			return false;
		acc = (acc << 6) | (uint32) (p - alphabet);
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			out[n++] = (uint8) (acc >> bits);
		}
	}
	*outlen = n;
	return true;
}

static size_t
ref_signature(const char *input, size_t len, char *out)
{
	uint8		mac[EVP_MAX_MD_SIZE];
	unsigned int maclen = 0;

	FUZZ_CHECK(HMAC(EVP_sha256(), SECRET, strlen(SECRET), (const uint8 *) input, len, mac, &maclen) != NULL,
			   "OpenSSL HMAC failed");
	return ref_encode(mac, maclen, out);
}

/* ---- calling the verifier ----------------------------------------------- */

typedef enum Outcome
{
	REFUSED,
	PARSED						/* reached jsonb_in */
} Outcome;

extern Datum bridgecore_jwt_verify(PG_FUNCTION_ARGS);

static Outcome
verify(const char *s, size_t len)
{
	sigjmp_buf	jb;
	text	   *t = palloc(VARHDRSZ + len);

	LOCAL_FCINFO(fcinfo, 1);

	SET_VARSIZE(t, VARHDRSZ + len);
	memcpy(VARDATA(t), s, len);
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(t);
	fcinfo->args[0].isnull = false;
	free(jsonb_in_got);
	jsonb_in_got = NULL;
	if (sigsetjmp(jb, 0) == 0)
	{
		PG_exception_stack = &jb;
		(void) bridgecore_jwt_verify(fcinfo);
		FUZZ_CHECK(false, "the verifier returned without parsing the claims");
	}
	PG_exception_stack = NULL;
	if (jsonb_in_got != NULL)
	{
		FUZZ_CHECK(strcmp(fuzz_error.message, "jsonb_in reached") == 0, "error after jsonb_in: %s", fuzz_error.message);
		return PARSED;
	}
	FUZZ_CHECK(fuzz_error.elevel == ERROR, "elevel %d", fuzz_error.elevel);
	FUZZ_CHECK(fuzz_error.sqlerrcode == (via_postgrest ? ERRCODE_BRIDGECORE_UNAUTHORIZED
										 : ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			   "SQLSTATE %s", unpack_sql_state(fuzz_error.sqlerrcode));
	FUZZ_CHECK(strcmp(fuzz_error.message, "invalid token") == 0, "message \"%s\"", fuzz_error.message);
	FUZZ_CHECK(strcmp(fuzz_error.hint, "Log in again with bridgecore.login().") == 0, "hint \"%s\"", fuzz_error.hint);
	return REFUSED;
}

static void
expect_refused(const char *s, size_t len, const char *detail_prefix)
{
	FUZZ_CHECK(verify(s, len) == REFUSED, "accepted up to the JSON: \"%.*s\"", (int) Min(len, 200), s);
	FUZZ_CHECK(strncmp(fuzz_error.detail, detail_prefix, strlen(detail_prefix)) == 0,
			   "detail \"%s\", expected \"%s...\" for \"%.*s\"", fuzz_error.detail, detail_prefix,
			   (int) Min(len, 200), s);
}

/* What the verifier must do with the token s. */
static void
check(const char *s, size_t len)
{
	const char *dot1 = memchr(s, '.', len);
	const char *dot2 = dot1 ? memchr(dot1 + 1, '.', len - (dot1 + 1 - s)) : NULL;
	char		sig[128];
	size_t		sig_len;
	size_t		got_len;
	uint8	   *header;
	uint8	   *claims;
	size_t		header_len;
	size_t		claims_len;

	if (len > MAX_TOKEN)
	{
		expect_refused(s, len, "The token is too long.");
		return;
	}
	if (dot2 == NULL || memchr(dot2 + 1, '.', len - (dot2 + 1 - s)) != NULL)
		{
		expect_refused(s, len, "The token is not a JWT");
		return;
	}
	sig_len = ref_signature(s, dot2 - s, sig);
	got_len = len - (dot2 + 1 - s);
	if (got_len != sig_len || memcmp(dot2 + 1, sig, sig_len) != 0)
		{
		expect_refused(s, len, "The signature does not match");
		return;
	}

	header = palloc(len + 1);
	claims = palloc(len + 1);
	if (!ref_decode(s, dot1 - s, header, &header_len) ||
		!ref_decode(dot1 + 1, dot2 - dot1 - 1, claims, &claims_len) ||
		memchr(header, '\0', header_len) != NULL || memchr(claims, '\0', claims_len) != NULL)
		{
		expect_refused(s, len, "The token's header or claims are not base64url.");
		return;
	}
	FUZZ_CHECK(verify(s, len) == PARSED, "refused a signed, decodable token: %s", fuzz_error.detail);
	if ((size_t) (dot1 - s) == strlen(HS256_HEADER) && memcmp(s, HS256_HEADER, dot1 - s) == 0)
		FUZZ_CHECK(jsonb_in_len == claims_len && memcmp(jsonb_in_got, claims, claims_len) == 0,
				   "the claims parsed are \"%s\", the reference decodes \"%.*s\"", jsonb_in_got,
				   (int) claims_len, (const char *) claims);
	else
		FUZZ_CHECK(jsonb_in_len == header_len && memcmp(jsonb_in_got, header, header_len) == 0,
				   "the header parsed is \"%s\", the reference decodes \"%.*s\"", jsonb_in_got,
				   (int) header_len, (const char *) header);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *) data;
	const char *dot = memchr(s, '.', size);
	StringInfoData signed_token;

	bridgecore_jwt_secret = SECRET;
	via_postgrest = size % 2 == 1;
	check(s, size);

	/*
	 * Re-signed: the input as the signing input when it has one dot (its
	 * parts then go through the decoder as they are), else the input as the
	 * claims, base64url-encoded behind an HS256 header.
	 */
	initStringInfo(&signed_token);
	if (dot != NULL && memchr(dot + 1, '.', size - (dot + 1 - s)) == NULL)
		appendBinaryStringInfo(&signed_token, s, size);
	else
	{
		char	   *enc = palloc(size * 4 / 3 + 4);

		appendStringInfoString(&signed_token, HS256_HEADER ".");
		appendBinaryStringInfo(&signed_token, enc, ref_encode(data, size, enc));
	}
	{
		char		sig[128];
		size_t		n = ref_signature(signed_token.data, signed_token.len, sig);

		appendStringInfoChar(&signed_token, '.');
		appendBinaryStringInfo(&signed_token, sig, n);
	}
	check(signed_token.data, signed_token.len);
	fuzz_reset_memory();
	return 0;
}
