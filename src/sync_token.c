/*
 * sync_token.c: the sync tokens of bridgecore.sync_pull().
 *
 * An answer's next_sync_token is "bc1:<instance id>:<event id>"; tokens of
 * 0.1.0 were a bare event id and are still accepted.  A hot standby, which
 * cannot store the device's state, answers "bc1:<instance id>:<event
 * id>:<resets>", where resets is the device's count of sync_resets that the
 * standby saw: the primary then knows whether a reset came after the token's
 * chain began.  The grammar:
 *
 *     ^[0-9]{1,18}$  |  ^bc1:([0-9]{1,9}):([0-9]{1,18})(:([0-9]{1,18}))?$
 *
 * so every accepted number fits: 9 digits in an int32, 18 in an int64.
 */
#include "sync_token.h"

#include "mb/pg_wchar.h"

PG_FUNCTION_INFO_V1(bridgecore_token_position);

#define TOKEN_EXCERPT_CHARS 64

/*
 * Reads 1 to max_digits ASCII digits at *p (not past end) into *out and
 * advances *p.  False when there is no digit or more than max_digits.
 */
static bool
read_number(const char **p, const char *end, int max_digits, int64 *out)
{
	int64		v = 0;
	int			n = 0;

	while (*p < end && **p >= '0' && **p <= '9')
	{
		if (++n > max_digits)
			return false;
		v = v * 10 + (**p - '0');
		(*p)++;
	}
	*out = v;
	return n > 0;
}

/*
 * Parses a sync token of len bytes (not NUL-terminated).  On success
 * returns true with the event position, the instance id (-1 for the bare
 * decimal form, which names no instance) and the resets a standby's token
 * carries (-1 for every other form).  On failure returns false and leaves
 * the outputs alone.
 */
bool
sync_token_parse(const char *s, size_t len, int32 *instance_id, int64 *position, int64 *resets)
{
	const char *p = s;
	const char *end = s + len;
	int64		inst;
	int64		pos;
	int64		r = -1;

	if (len >= 4 && memcmp(s, "bc1:", 4) == 0)
	{
		p += 4;
		if (!read_number(&p, end, 9, &inst) || p >= end || *p != ':')
			return false;
		p++;
		if (!read_number(&p, end, 18, &pos))
			return false;
		if (p < end && *p == ':')
		{
			p++;
			if (!read_number(&p, end, 18, &r))
				return false;
		}
		if (p != end)
			return false;
		*instance_id = (int32) inst;
		*position = pos;
		*resets = r;
		return true;
	}
	if (!read_number(&p, end, 18, &pos) || p != end)
		return false;
	*instance_id = -1;
	*position = pos;
	*resets = -1;
	return true;
}

/*
 * The position a token names, checked against the instance the call runs
 * for (any, when inst is negative), and its resets (-1 when it carries
 * none).  Errors as bridgecore._token_position() documents them.
 */
int64
sync_token_position(text *token, int32 inst, int64 *resets)
{
	const char *s = VARDATA_ANY(token);
	int			len = VARSIZE_ANY_EXHDR(token);
	int32		instance_id;
	int64		position;

	if (!sync_token_parse(s, len, &instance_id, &position, resets))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed sync_token \"%s\"",
						pnstrdup(s, pg_mbcharcliplen(s, len, TOKEN_EXCERPT_CHARS))),
				 errhint("Pass back the next_sync_token of a previous answer unchanged, or omit it.")));
	if (instance_id >= 0 && inst >= 0 && instance_id != inst)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sync_token belongs to another instance"),
				 errhint("Pass the token with the instance whose answer it came from, or omit it.")));
	return position;
}

/*
 * bridgecore._token_position(token text, instance_id integer) returns
 * bigint: the event position a token names, or an error when it is
 * malformed or names another instance.  Not strict, like the plpgsql it
 * replaces: a NULL token is malformed, a NULL instance id matches any.
 */
Datum
bridgecore_token_position(PG_FUNCTION_ARGS)
{
	int64		resets;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed sync_token \"%s\"", "<NULL>"),
				 errhint("Pass back the next_sync_token of a previous answer unchanged, or omit it.")));
	PG_RETURN_INT64(sync_token_position(PG_GETARG_TEXT_PP(0), PG_ARGISNULL(1) ? -1 : PG_GETARG_INT32(1),
										&resets));
}

/*
 * bridgecore._token_instance_id(token text) returns integer: the instance
 * id a "bc1:" token names, or NULL for any other token (the bare decimal
 * form, the starting token, a malformed one: _token_position() judges
 * those).
 */
PG_FUNCTION_INFO_V1(bridgecore_token_instance_id);

Datum
bridgecore_token_instance_id(PG_FUNCTION_ARGS)
{
	text	   *token = PG_GETARG_TEXT_PP(0);
	int32		instance_id;
	int64		position;
	int64		resets;

	if (!sync_token_parse(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), &instance_id, &position, &resets) ||
		instance_id < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(instance_id);
}
