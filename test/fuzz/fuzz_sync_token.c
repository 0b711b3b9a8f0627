/*
 * fuzz_sync_token.c: sync_token_parse() and bridgecore_token_position().
 *
 * Invariants: the parser accepts exactly what a separate matcher of
 *
 *     ^[0-9]{1,18}$  |  ^bc1:([0-9]{1,9}):([0-9]{1,18})(:([0-9]{1,18}))?$
 *
 * accepts, with the same numbers (instance id -1 for the bare form, resets
 * -1 without the standby's fourth part); a
 * refused token leaves the outputs alone.  The SQL function, called on the
 * text the server would pass (valid UTF-8), returns the position for the
 * token's own instance and raises 22023 with the documented messages and
 * hints otherwise: 'malformed sync_token "<first 64 characters>"', 'sync_token
 * belongs to another instance'.
 */
#include "sync_token.h"

#include "fuzz.h"

#include <setjmp.h>

extern Datum bridgecore_token_position(PG_FUNCTION_ARGS);

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define HINT_MALFORMED "Pass back the next_sync_token of a previous answer unchanged, or omit it."
#define HINT_OTHER "Pass the token with the instance whose answer it came from, or omit it."

/* A run of 1 to max ASCII digits from s[*i]; its value through strtoll. */
static bool
digit_run(const char *s, size_t len, size_t *i, int max, int64 *value)
{
	char		buf[32];
	size_t		start = *i;

	while (*i < len && s[*i] >= '0' && s[*i] <= '9')
		(*i)++;
	if (*i == start || *i - start > (size_t) max)
		return false;
	memcpy(buf, s + start, *i - start);
	buf[*i - start] = '\0';
	*value = strtoll(buf, NULL, 10);
	return true;
}

static bool
reference(const char *s, size_t len, int64 *inst, int64 *pos, int64 *resets)
{
	size_t		i = 0;

	*inst = -1;
	*resets = -1;
	if (digit_run(s, len, &i, 18, pos) && i == len)
		return true;
	i = 0;
	if (len < 4 || strncmp(s, "bc1:", 4) != 0)
		return false;
	i = 4;
	if (!digit_run(s, len, &i, 9, inst) || i >= len || s[i] != ':')
		return false;
	i++;
	if (!digit_run(s, len, &i, 18, pos))
		return false;
	if (i == len)
		return true;
	if (s[i] != ':')
		return false;
	i++;
	return digit_run(s, len, &i, 18, resets) && i == len;
}

typedef struct Call
{
	bool		raised;
	int64		result;
} Call;

/* bridgecore_token_position(token, instance) as fmgr would call it. */
static Call
call_sql(const char *s, size_t len, bool token_null, int32 instance, bool instance_null)
{
	sigjmp_buf	jb;
	volatile bool raised = false;
	volatile int64 result = 0;
	Call		c;
	text	   *t = palloc(VARHDRSZ + len);

	LOCAL_FCINFO(fcinfo, 2);

	SET_VARSIZE(t, VARHDRSZ + len);
	memcpy(VARDATA(t), s, len);
	InitFunctionCallInfoData(*fcinfo, NULL, 2, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = PointerGetDatum(t);
	fcinfo->args[0].isnull = token_null;
	fcinfo->args[1].value = Int32GetDatum(instance);
	fcinfo->args[1].isnull = instance_null;
	if (sigsetjmp(jb, 0) == 0)
	{
		PG_exception_stack = &jb;
		result = DatumGetInt64(bridgecore_token_position(fcinfo));
		FUZZ_CHECK(!fcinfo->isnull, "the function returned NULL");
	}
	else
		raised = true;
	PG_exception_stack = NULL;
	c.raised = raised;
	c.result = result;
	return c;
}

static void
expect_error(Call c, const char *message, const char *hint)
{
	FUZZ_CHECK(c.raised, "no error, returned %lld; expected \"%s\"", (long long) c.result, message);
	FUZZ_CHECK(fuzz_error.elevel == ERROR, "elevel %d", fuzz_error.elevel);
	FUZZ_CHECK(fuzz_error.sqlerrcode == ERRCODE_INVALID_PARAMETER_VALUE,
			   "SQLSTATE %s", unpack_sql_state(fuzz_error.sqlerrcode));
	FUZZ_CHECK(strcmp(fuzz_error.message, message) == 0, "message \"%s\", expected \"%s\"",
			   fuzz_error.message, message);
	FUZZ_CHECK(strcmp(fuzz_error.hint, hint) == 0, "hint \"%s\"", fuzz_error.hint);
	FUZZ_CHECK(fuzz_error.detail[0] == '\0', "detail \"%s\"", fuzz_error.detail);
}

static void
expect_value(Call c, int64 value)
{
	FUZZ_CHECK(!c.raised, "raised \"%s\", expected %lld", fuzz_error.message, (long long) value);
	FUZZ_CHECK(c.result == value, "returned %lld, expected %lld", (long long) c.result, (long long) value);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *) data;
	int32		inst = -7;
	int64		pos = -7;
	int64		resets = -7;
	int64		want_inst;
	int64		want_pos;
	int64		want_resets;
	bool		ok = sync_token_parse(s, size, &inst, &pos, &resets);
	bool		want = reference(s, size, &want_inst, &want_pos, &want_resets);

	FUZZ_CHECK(ok == want, "parser says %d, reference %d for \"%.*s\"", ok, want, (int) size, s);
	if (ok)
	{
		FUZZ_CHECK(inst == want_inst && pos == want_pos && resets == want_resets,
				   "(%d, %lld, %lld), reference (%lld, %lld, %lld)", inst, (long long) pos,
				   (long long) resets, (long long) want_inst, (long long) want_pos, (long long) want_resets);
		FUZZ_CHECK(resets >= -1 && resets <= INT64CONST(999999999999999999), "resets %lld", (long long) resets);
		FUZZ_CHECK(inst >= -1 && inst <= 999999999, "instance %d", inst);
		FUZZ_CHECK(pos >= 0 && pos <= INT64CONST(999999999999999999), "position %lld", (long long) pos);
	}
	else
		FUZZ_CHECK(inst == -7 && pos == -7 && resets == -7, "a refused token wrote the outputs");

	/* The SQL function sees only text: valid UTF-8 without NUL. */
	if (oracle_utf8(s, size, NULL))
	{
		int32		other = (int32) (size * 7919 % 1000);

		if (!ok)
		{
			char		message[512];

			snprintf(message, sizeof(message), "malformed sync_token \"%.*s\"",
					 (int) oracle_utf8_prefix(s, size, 64), s);
			expect_error(call_sql(s, size, false, other, false), message, HINT_MALFORMED);
		}
		else if (inst < 0)
		{
			expect_value(call_sql(s, size, false, other, false), pos);
			expect_value(call_sql(s, size, false, 0, true), pos);
		}
		else
		{
			expect_value(call_sql(s, size, false, inst, false), pos);
			/* SQL: NULL <> instance is not true, so no error */
			expect_value(call_sql(s, size, false, 0, true), pos);
			expect_error(call_sql(s, size, false, inst == other ? other + 1 : other, false),
						 "sync_token belongs to another instance", HINT_OTHER);
		}
		/* RAISE shows a NULL argument as <NULL> */
		expect_error(call_sql("", 0, true, 1, false), "malformed sync_token \"<NULL>\"", HINT_MALFORMED);
	}
	fuzz_reset_memory();
	return 0;
}
