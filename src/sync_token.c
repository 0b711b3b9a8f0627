/*
 * sync_token.c: the sync tokens of bridgecore.sync_pull().
 *
 * An answer's next_sync_token is "bc1:<instance id>:<event id>"; tokens of
 * 0.1.0 were a bare event id and are still accepted.  The grammar is that
 * of bridgecore._token_position() in the install script:
 *
 *     ^[0-9]{1,18}$  |  ^bc1:([0-9]{1,9}):([0-9]{1,18})$
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
 * returns true with the event position and the instance id, -1 for the
 * bare decimal form, which names no instance.  On failure returns false
 * and leaves the outputs alone.
 */
bool
sync_token_parse(const char *s, size_t len, int32 *instance_id, int64 *position)
{
	const char *p = s;
	const char *end = s + len;
	int64		inst;
	int64		pos;

	if (len >= 4 && memcmp(s, "bc1:", 4) == 0)
	{
		p += 4;
		if (!read_number(&p, end, 9, &inst) || p >= end || *p != ':')
			return false;
		p++;
		if (!read_number(&p, end, 18, &pos) || p != end)
			return false;
		*instance_id = (int32) inst;
		*position = pos;
		return true;
	}
	if (!read_number(&p, end, 18, &pos) || p != end)
		return false;
	*instance_id = -1;
	*position = pos;
	return true;
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
	text	   *token;
	const char *s;
	int			len;
	int32		instance_id;
	int64		position;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed sync_token \"%s\"", "<NULL>"),
				 errhint("Pass back the next_sync_token of a previous answer unchanged, or omit it.")));
	token = PG_GETARG_TEXT_PP(0);
	s = VARDATA_ANY(token);
	len = VARSIZE_ANY_EXHDR(token);
	if (!sync_token_parse(s, len, &instance_id, &position))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("malformed sync_token \"%s\"",
						pnstrdup(s, pg_mbcharcliplen(s, len, TOKEN_EXCERPT_CHARS))),
				 errhint("Pass back the next_sync_token of a previous answer unchanged, or omit it.")));
	if (instance_id >= 0 && !PG_ARGISNULL(1) && instance_id != PG_GETARG_INT32(1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("sync_token belongs to another instance"),
				 errhint("Pass the token with the instance whose answer it came from, or omit it.")));
	PG_RETURN_INT64(position);
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

	if (!sync_token_parse(VARDATA_ANY(token), VARSIZE_ANY_EXHDR(token), &instance_id, &position) ||
		instance_id < 0)
		PG_RETURN_NULL();
	PG_RETURN_INT32(instance_id);
}
