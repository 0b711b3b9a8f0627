/*
 * odoo_time.c: Odoo's datetime values.
 *
 * Odoo sends datetimes as naive UTC strings "YYYY-MM-DD HH:MM:SS" (some
 * versions add a fraction).  Ingestion must turn a bad one into a dead
 * letter rather than fail the whole batch, so the parser returns NULL on
 * any malformed or impossible value instead of raising an error.
 */
#include "bridgecore.h"

#include "datatype/timestamp.h"
#include "utils/builtins.h"
#include "utils/datetime.h"

PG_FUNCTION_INFO_V1(bridgecore_odoo_timestamp);

/* Reads exactly n digits at *p into *out; advances *p. */
static bool
read_digits(const char **p, const char *end, int n, int *out)
{
	int			v = 0;

	if (end - *p < n)
		return false;
	for (int i = 0; i < n; i++)
	{
		char		c = (*p)[i];

		if (c < '0' || c > '9')
			return false;
		v = v * 10 + (c - '0');
	}
	*p += n;
	*out = v;
	return true;
}

static bool
expect_char(const char **p, const char *end, char c)
{
	if (*p >= end || **p != c)
		return false;
	(*p)++;
	return true;
}

/*
 * Parses "YYYY-MM-DD HH:MM:SS[.ffffff][Z]" (a 'T' may replace the space) as
 * UTC.  Returns false when the text is not such a value or names an
 * impossible date or time.
 */
bool
parse_odoo_timestamp(const char *s, size_t len, TimestampTz *result)
{
	const char *p = s;
	const char *end = s + len;
	struct pg_tm tm;
	fsec_t		fsec = 0;
	Timestamp	ts;

	memset(&tm, 0, sizeof(tm));
	if (!read_digits(&p, end, 4, &tm.tm_year) || !expect_char(&p, end, '-') ||
		!read_digits(&p, end, 2, &tm.tm_mon) || !expect_char(&p, end, '-') ||
		!read_digits(&p, end, 2, &tm.tm_mday))
		return false;
	if (!expect_char(&p, end, ' ') && !expect_char(&p, end, 'T'))
		return false;
	if (!read_digits(&p, end, 2, &tm.tm_hour) || !expect_char(&p, end, ':') ||
		!read_digits(&p, end, 2, &tm.tm_min) || !expect_char(&p, end, ':') ||
		!read_digits(&p, end, 2, &tm.tm_sec))
		return false;
	if (p < end && *p == '.')
	{
		int			scale = 100000;

		p++;
		if (p >= end || *p < '0' || *p > '9')
			return false;
		while (p < end && *p >= '0' && *p <= '9')
		{
			fsec += (*p - '0') * scale;
			scale /= 10;
			p++;
		}
	}
	(void) expect_char(&p, end, 'Z');
	if (p != end)
		return false;

	if (tm.tm_year < 1 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
		tm.tm_mday > day_tab[isleap(tm.tm_year)][tm.tm_mon - 1] ||
		tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 59)
		return false;

	if (tm2timestamp(&tm, fsec, NULL, &ts) != 0 || !IS_VALID_TIMESTAMP(ts))
		return false;
	*result = (TimestampTz) ts;
	return true;
}

/*
 * bridgecore._odoo_timestamp(text) returns timestamptz: the UTC instant, or
 * NULL when the text is not a valid Odoo datetime.
 */
Datum
bridgecore_odoo_timestamp(PG_FUNCTION_ARGS)
{
	text	   *t = PG_GETARG_TEXT_PP(0);
	TimestampTz ts;

	if (!parse_odoo_timestamp(VARDATA_ANY(t), VARSIZE_ANY_EXHDR(t), &ts))
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(ts);
}
