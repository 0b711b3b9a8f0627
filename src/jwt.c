/*
 * jwt.c: the HS256 JSON Web Tokens of bridgecore.login() and
 * bridgecore.refresh_token(), signed and verified with the superuser-only
 * setting bridgecore.jwt_secret: the secret PostgREST (jwt-secret) and the
 * gateway use, so that all three issue and accept the same tokens.
 *
 * HMAC-SHA256 is PostgreSQL's own (common/hmac.h, OpenSSL's when the server
 * is built with it) from PostgreSQL 14 on; PostgreSQL 13 has only the
 * SHA-256 primitive, over which the HMAC construction (RFC 2104) is built
 * here.  base64url (RFC 4648, section 5, without padding) is written out:
 * PostgreSQL's base64 is the standard alphabet with padding.
 */
#include "bridgecore.h"

#include "utils/jsonb.h"
#include "utils/numeric.h"

#if PG_VERSION_NUM >= 140000
#include "common/hmac.h"
#endif
#include "common/sha2.h"

#include "claims.h"

PG_FUNCTION_INFO_V1(bridgecore_jwt_sign);
PG_FUNCTION_INFO_V1(bridgecore_jwt_verify);

#define JWT_MIN_SECRET 32
#define JWT_HEADER "{\"alg\":\"HS256\",\"typ\":\"JWT\"}"
/* Longer tokens are refused unread (PostgREST's and the gateway's are short). */
#define JWT_MAX_LENGTH 8192

char	   *bridgecore_jwt_secret = NULL;
int			bridgecore_jwt_lifetime_s = 1800;
int			bridgecore_jwt_refresh_limit_s = 7 * 86400;

static bool
check_jwt_secret(char **newval, void **extra, GucSource source)
{
	if (*newval != NULL && **newval != '\0' && strlen(*newval) < JWT_MIN_SECRET)
	{
		GUC_check_errmsg("bridgecore.jwt_secret must be at least %d characters long", JWT_MIN_SECRET);
		GUC_check_errhint("Use the secret PostgREST's jwt-secret and the gateway's BRIDGECORE_JWT_SECRET hold.");
		return false;
	}
	return true;
}

/* The secret is never shown, not even to superusers or pg_read_all_settings. */
static const char *
show_jwt_secret(void)
{
	return bridgecore_jwt_secret != NULL && *bridgecore_jwt_secret != '\0' ? "********" : "";
}

void
JwtDefineGucs(void)
{
	DefineCustomStringVariable("bridgecore.jwt_secret",
							   "HS256 secret of the tokens bridgecore.login() issues and accepts (at least 32 characters; empty = no login).",
							   NULL, &bridgecore_jwt_secret, "",
							   PGC_SUSET, GUC_SUPERUSER_ONLY | GUC_NOT_IN_SAMPLE,
							   check_jwt_secret, NULL, show_jwt_secret);
	DefineCustomIntVariable("bridgecore.jwt_lifetime",
							"Lifetime of the tokens bridgecore.login() and bridgecore.refresh_token() issue.",
							NULL, &bridgecore_jwt_lifetime_s, 1800, 60, 7 * 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.jwt_refresh_limit",
							"How long after the login a token can still be refreshed without the password (0 = no refresh).",
							NULL, &bridgecore_jwt_refresh_limit_s, 7 * 86400, 0, 365 * 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

/* HMAC-SHA256 of data under key. */
static void
hmac_sha256(const uint8 *key, size_t keylen, const uint8 *data, size_t len,
			uint8 out[PG_SHA256_DIGEST_LENGTH])
{
#if PG_VERSION_NUM >= 140000
	pg_hmac_ctx *ctx = pg_hmac_create(PG_SHA256);

	if (ctx == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("out of memory")));
	if (pg_hmac_init(ctx, key, keylen) < 0 ||
		pg_hmac_update(ctx, data, len) < 0 ||
		pg_hmac_final(ctx, out, PG_SHA256_DIGEST_LENGTH) < 0)
	{
#if PG_VERSION_NUM >= 150000
		const char *reason = pg_hmac_error(ctx);
#else
		const char *reason = "HMAC failed";
#endif

		pg_hmac_free(ctx);
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not compute HMAC-SHA256: %s", reason)));
	}
	pg_hmac_free(ctx);
#else
	/* RFC 2104 over PostgreSQL 13's SHA-256. */
	uint8		k0[PG_SHA256_BLOCK_LENGTH];
	uint8		pad[PG_SHA256_BLOCK_LENGTH];
	uint8		inner[PG_SHA256_DIGEST_LENGTH];
	pg_sha256_ctx ctx;

	memset(k0, 0, sizeof(k0));
	if (keylen > PG_SHA256_BLOCK_LENGTH)
	{
		pg_sha256_init(&ctx);
		pg_sha256_update(&ctx, key, keylen);
		pg_sha256_final(&ctx, k0);
	}
	else
		memcpy(k0, key, keylen);

	for (int i = 0; i < PG_SHA256_BLOCK_LENGTH; i++)
		pad[i] = k0[i] ^ 0x36;
	pg_sha256_init(&ctx);
	pg_sha256_update(&ctx, pad, sizeof(pad));
	pg_sha256_update(&ctx, data, len);
	pg_sha256_final(&ctx, inner);

	for (int i = 0; i < PG_SHA256_BLOCK_LENGTH; i++)
		pad[i] = k0[i] ^ 0x5c;
	pg_sha256_init(&ctx);
	pg_sha256_update(&ctx, pad, sizeof(pad));
	pg_sha256_update(&ctx, inner, sizeof(inner));
	pg_sha256_final(&ctx, out);
	explicit_bzero(k0, sizeof(k0));
	explicit_bzero(pad, sizeof(pad));
#endif
}

static const char b64url_alphabet[] =
"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static void
b64url_append(StringInfo out, const uint8 *src, size_t len)
{
	size_t		i = 0;

	for (; i + 2 < len; i += 3)
	{
		uint32		v = (src[i] << 16) | (src[i + 1] << 8) | src[i + 2];

		appendStringInfoChar(out, b64url_alphabet[(v >> 18) & 63]);
		appendStringInfoChar(out, b64url_alphabet[(v >> 12) & 63]);
		appendStringInfoChar(out, b64url_alphabet[(v >> 6) & 63]);
		appendStringInfoChar(out, b64url_alphabet[v & 63]);
	}
	if (i < len)
	{
		uint32		v = src[i] << 16;

		if (i + 1 < len)
			v |= src[i + 1] << 8;
		appendStringInfoChar(out, b64url_alphabet[(v >> 18) & 63]);
		appendStringInfoChar(out, b64url_alphabet[(v >> 12) & 63]);
		if (i + 1 < len)
			appendStringInfoChar(out, b64url_alphabet[(v >> 6) & 63]);
	}
}

static int
b64url_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/*
 * Decodes unpadded base64url into out (palloc'd, NUL-terminated, *outlen
 * bytes).  False for a character outside the alphabet or an impossible
 * length.
 */
static bool
b64url_decode(const char *s, size_t len, char **out, size_t *outlen)
{
	char	   *buf;
	size_t		n = 0;
	uint32		acc = 0;
	int			bits = 0;

	if (len % 4 == 1)
		return false;
	buf = palloc(len * 3 / 4 + 1);
	for (size_t i = 0; i < len; i++)
	{
		int			v = b64url_value(s[i]);

		if (v < 0)
		{
			pfree(buf);
			return false;
		}
		acc = (acc << 6) | (uint32) v;
		bits += 6;
		if (bits >= 8)
		{
			bits -= 8;
			buf[n++] = (char) ((acc >> bits) & 0xff);
		}
	}
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	return true;
}

static const char *
jwt_secret_or_error(void)
{
	if (bridgecore_jwt_secret == NULL || *bridgecore_jwt_secret == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("bridgecore.jwt_secret is not set"),
				 errhint("A superuser sets it (at least %d characters) to the secret the gateway and PostgREST use.",
						 JWT_MIN_SECRET)));
	return bridgecore_jwt_secret;
}

/* The base64url of JWT_HEADER, the header of the tokens this server signs. */
static const char *
own_header(void)
{
	static char encoded[64];

	if (encoded[0] == '\0')
	{
		StringInfoData b;

		initStringInfo(&b);
		b64url_append(&b, (const uint8 *) JWT_HEADER, strlen(JWT_HEADER));
		Assert(b.len < (int) sizeof(encoded));
		memcpy(encoded, b.data, b.len + 1);
		pfree(b.data);
	}
	return encoded;
}

/* The base64url signature of signing_input, appended to out. */
static void
append_signature(StringInfo out, const char *signing_input, size_t len)
{
	const char *secret = jwt_secret_or_error();
	uint8		mac[PG_SHA256_DIGEST_LENGTH];

	hmac_sha256((const uint8 *) secret, strlen(secret), (const uint8 *) signing_input, len, mac);
	b64url_append(out, mac, sizeof(mac));
}

/*
 * bridgecore._jwt_sign(claims jsonb) returns text: the HS256 token of the
 * claims, signed with bridgecore.jwt_secret.
 */
Datum
bridgecore_jwt_sign(PG_FUNCTION_ARGS)
{
	Jsonb	   *claims = PG_GETARG_JSONB_P(0);
	char	   *payload = JsonbToCString(NULL, &claims->root, VARSIZE(claims));
	StringInfoData token;
	int			signing_len;

	if (!JB_ROOT_IS_OBJECT(claims) || JB_ROOT_IS_SCALAR(claims))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("token claims must be a JSON object")));
	initStringInfo(&token);
	appendStringInfoString(&token, own_header());
	appendStringInfoChar(&token, '.');
	b64url_append(&token, (const uint8 *) payload, strlen(payload));
	signing_len = token.len;
	appendStringInfoChar(&token, '.');
	append_signature(&token, token.data, signing_len);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(token.data, token.len));
}

/*
 * The SQLSTATE of a refused login or token: sql_errcode for SQL callers,
 * PT401 inside a PostgREST request (which sets request.method), so that
 * PostgREST answers HTTP 401 as it does for a token it refuses itself.
 */
int
bc_unauthorized_errcode(int sql_errcode)
{
	const char *method = GetConfigOption("request.method", true, false);

	return method != NULL && *method != '\0' ? ERRCODE_BRIDGECORE_UNAUTHORIZED : sql_errcode;
}

/* An invalid or missing token. */
static void raise_unauthorized(const char *detail) pg_attribute_noreturn();

static void
raise_unauthorized(const char *detail)
{
	ereport(ERROR,
			(errcode(bc_unauthorized_errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION)),
			 errmsg("invalid token"),
			 errdetail("%s", detail),
			 errhint("Log in again with bridgecore.login().")));
}

/* A numeric claim as seconds since the epoch; false when absent or not a number. */
static bool
numeric_claim(Jsonb *claims, const char *key, double *out)
{
	JsonbValue *v = getKeyJsonValueFromContainer(&claims->root, key, strlen(key), NULL);

	if (v == NULL || v->type != jbvNumeric)
		return false;
	*out = DatumGetFloat8(DirectFunctionCall1(numeric_float8, NumericGetDatum(v->val.numeric)));
	return true;
}

/*
 * bridgecore._jwt_verify(token text) returns jsonb: the claims of an HS256
 * token signed with bridgecore.jwt_secret that has not expired (exp, and
 * nbf when present, checked against the current time).  Anything else
 * raises "invalid token" (28000, or PT401 through PostgREST) with the
 * reason in the detail.
 */
static Jsonb *
jwt_verify(text *t)
{
	const char *s;
	size_t		len;
	const char *dot1;
	const char *dot2;
	StringInfoData expected;
	char	   *header = NULL;
	char	   *payload = NULL;
	size_t		header_len;
	size_t		payload_len;
	size_t		sig_len;
	int			diff = 0;
	Jsonb	   *hdr;
	Jsonb	   *claims;
	JsonbValue *alg;
	double		exp;
	double		nbf;
	double		now;

	if (t == NULL)
		raise_unauthorized("No token was given.");
	s = VARDATA_ANY(t);
	len = VARSIZE_ANY_EXHDR(t);
	if (len > JWT_MAX_LENGTH)
		raise_unauthorized("The token is too long.");
	dot1 = memchr(s, '.', len);
	dot2 = dot1 ? memchr(dot1 + 1, '.', len - (dot1 + 1 - s)) : NULL;
	if (dot1 == NULL || dot2 == NULL || memchr(dot2 + 1, '.', len - (dot2 + 1 - s)) != NULL)
		raise_unauthorized("The token is not a JWT: it must have three parts separated by dots.");

	/* The signature first: nothing of an unsigned token is read. */
	initStringInfo(&expected);
	append_signature(&expected, s, dot2 - s);
	sig_len = len - (dot2 + 1 - s);
	if (sig_len != (size_t) expected.len)
		diff = 1;
	else
		for (size_t i = 0; i < sig_len; i++)
			diff |= expected.data[i] ^ dot2[1 + i];
	if (diff != 0)
		raise_unauthorized("The signature does not match: the token was not issued with this server's bridgecore.jwt_secret, or it was changed.");

	if (!b64url_decode(dot1 + 1, dot2 - dot1 - 1, &payload, &payload_len) ||
		strlen(payload) != payload_len)
		raise_unauthorized("The token's header or claims are not base64url.");
	/* The header this server writes is HS256: only another one is read. */
	if ((size_t) (dot1 - s) != strlen(own_header()) || memcmp(s, own_header(), dot1 - s) != 0)
	{
		if (!b64url_decode(s, dot1 - s, &header, &header_len) || strlen(header) != header_len)
			raise_unauthorized("The token's header or claims are not base64url.");
		hdr = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(header)));
		alg = JB_ROOT_IS_OBJECT(hdr) && !JB_ROOT_IS_SCALAR(hdr)
			? getKeyJsonValueFromContainer(&hdr->root, "alg", 3, NULL) : NULL;
		if (alg == NULL || alg->type != jbvString ||
			alg->val.string.len != 5 || memcmp(alg->val.string.val, "HS256", 5) != 0)
			raise_unauthorized("The token's algorithm is not HS256.");
	}
	claims = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(payload)));
	if (!JB_ROOT_IS_OBJECT(claims) || JB_ROOT_IS_SCALAR(claims))
		raise_unauthorized("The token's claims are not a JSON object.");

	now = (double) (GetCurrentTimestamp() - SetEpochTimestamp()) / USECS_PER_SEC;
	if (!numeric_claim(claims, "exp", &exp))
		raise_unauthorized("The token has no exp claim.");
	if (now >= exp)
		raise_unauthorized("The token has expired.");
	if (numeric_claim(claims, "nbf", &nbf) && now < nbf)
		raise_unauthorized("The token is not valid yet (nbf).");
	return claims;
}

Datum
bridgecore_jwt_verify(PG_FUNCTION_ARGS)
{
	PG_RETURN_JSONB_P(jwt_verify(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0)));
}

/* Whether v is the JSON string s. */
static bool
is_string(const JsonbValue *v, const char *s)
{
	return v != NULL && v->type == jbvString &&
		v->val.string.len == (int) strlen(s) && memcmp(v->val.string.val, s, v->val.string.len) == 0;
}

/* The claims of a valid token whose role a request may act as, and that role. */
static Jsonb *
request_claims(text *token, JsonbValue **role)
{
	Jsonb	   *claims = jwt_verify(token);

	*role = getKeyJsonValueFromContainer(&claims->root, "role", 4, NULL);
	if (!is_string(*role, "bridgecore_app") && !is_string(*role, "bridgecore_admin"))
		raise_unauthorized("The token's role is not bridgecore_app or bridgecore_admin.");
	return claims;
}

/*
 * bridgecore.verify_token(token text) returns jsonb: the claims of a valid
 * token (_jwt_verify) whose role is one a request may act as, bridgecore_app
 * or bridgecore_admin.  A request acts as its token's role, so a token for
 * any other role is refused here; the gateway verifies every request's
 * token with this function only.  In C and not SECURITY DEFINER: the secret
 * is read from the setting's variable, never through SQL, and a call costs
 * no change of user or search_path.
 */
PG_FUNCTION_INFO_V1(bridgecore_verify_token);

Datum
bridgecore_verify_token(PG_FUNCTION_ARGS)
{
	JsonbValue *role;

	PG_RETURN_JSONB_P(request_claims(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &role));
}

/*
 * bridgecore.authorize(token text): verify_token's check, then the rest of
 * the transaction acts as the token: its role, and its claims in
 * request.jwt.claims, as set_config(..., true) sets them (so they end with
 * the transaction, or with its error).  For a gateway that keeps one pool
 * of connections for every user: it calls this as bridgecore_anon, then the
 * request's statement.  The role is checked as SET ROLE checks it: the
 * session's user must be a member of it.
 */
PG_FUNCTION_INFO_V1(bridgecore_authorize);

Datum
bridgecore_authorize(PG_FUNCTION_ARGS)
{
	JsonbValue *role;
	Jsonb	   *claims = request_claims(PG_ARGISNULL(0) ? NULL : PG_GETARG_TEXT_PP(0), &role);
	char	   *claims_text = JsonbToCString(NULL, &claims->root, VARSIZE(claims));

	DirectFunctionCall3(set_config_by_name, CStringGetTextDatum("role"),
						PointerGetDatum(cstring_to_text_with_len(role->val.string.val, role->val.string.len)),
						BoolGetDatum(true));
	DirectFunctionCall3(set_config_by_name, CStringGetTextDatum("request.jwt.claims"),
						CStringGetTextDatum(claims_text), BoolGetDatum(true));
	bc_claims_remember(claims_text, claims);
	PG_RETURN_VOID();
}
