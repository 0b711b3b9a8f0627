/*
 * oracle.c: reference checks the targets compare results with.
 *
 * Written from the specifications (RFC 3629, RFC 8259, PostgreSQL's
 * documented json/jsonb and numeric limits, the Gregorian calendar), not
 * from the code under test, and deliberately in a different style: a
 * shared bug would hide itself.
 */
#include "postgres.h"

#include "fuzz.h"

/* ------------------------------------------------------------------ UTF-8 */

/* Length of the well-formed UTF-8 character at s (RFC 3629), or 0. */
static size_t
utf8_char(const unsigned char *s, size_t len)
{
	uint32		cp;
	size_t		n;

	if (len == 0)
		return 0;
	if (s[0] < 0x80)
		return s[0] == 0 ? 0 : 1;	/* PostgreSQL text holds no NUL */
	if (s[0] >= 0xC2 && s[0] <= 0xDF)
		n = 2, cp = s[0] & 0x1F;
	else if (s[0] >= 0xE0 && s[0] <= 0xEF)
		n = 3, cp = s[0] & 0x0F;
	else if (s[0] >= 0xF0 && s[0] <= 0xF4)
		n = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++)
	{
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		cp = (cp << 6) | (s[i] & 0x3F);
	}
	if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
		(cp >= 0xD800 && cp <= 0xDFFF))
		return 0;
	return n;
}

/* True when s is well-formed UTF-8 without NUL; *nchars gets the count. */
bool
oracle_utf8(const char *s, size_t len, size_t *nchars)
{
	const unsigned char *p = (const unsigned char *) s;
	size_t		count = 0;

	while (len > 0)
	{
		size_t		n = utf8_char(p, len);

		if (n == 0)
			return false;
		p += n;
		len -= n;
		count++;
	}
	if (nchars)
		*nchars = count;
	return true;
}

/* Bytes of the first max_chars characters of valid UTF-8 s. */
size_t
oracle_utf8_prefix(const char *s, size_t len, size_t max_chars)
{
	size_t		bytes = 0;

	while (bytes < len && max_chars-- > 0)
	{
		size_t		n = utf8_char((const unsigned char *) s + bytes, len - bytes);

		if (n == 0)
			break;
		bytes += n;
	}
	return bytes;
}

/* ------------------------------------------------------------------- JSON */

typedef struct Json
{
	const unsigned char *p;
	const unsigned char *end;
	bool		jsonb;			/* also what jsonb refuses */
	int			depth;
} Json;

static bool value(Json *j);

static void
skip_ws(Json *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
		j->p++;
}

static int
hex4(const unsigned char *p)
{
	int			v = 0;

	for (int i = 0; i < 4; i++)
	{
		int			c = p[i];

		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= c - '0';
		else if (c >= 'a' && c <= 'f')
			v |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v |= c - 'A' + 10;
		else
			return -1;
	}
	return v;
}

static bool
string(Json *j)
{
	int			pending_high = 0;	/* a high surrogate escape waits for its pair */

	j->p++;						/* the opening quote */
	for (;;)
	{
		if (j->p >= j->end)
			return false;
		if (*j->p == '"')
		{
			j->p++;
			return !(j->jsonb && pending_high);
		}
		if (*j->p < 0x20)
			return false;
		if (*j->p == '\\')
		{
			if (j->end - j->p < 2)
				return false;
			if (strchr("\"\\/bfnrt", j->p[1]) != NULL && j->p[1] != '\0')
			{
				if (j->jsonb && pending_high)
					return false;
				j->p += 2;
				continue;
			}
			if (j->p[1] != 'u' || j->end - j->p < 6)
				return false;
			{
				int			cp = hex4(j->p + 2);

				if (cp < 0)
					return false;
				if (j->jsonb)
				{
					if (cp == 0)
						return false;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						if (pending_high)
							return false;
						pending_high = 1;
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
					{
						if (!pending_high)
							return false;
						pending_high = 0;
					}
					else if (pending_high)
						return false;
				}
			}
			j->p += 6;
			continue;
		}
		if (j->jsonb && pending_high)
			return false;
		{
			size_t		n = utf8_char(j->p, j->end - j->p);

			if (n == 0)
				return false;
			j->p += n;
		}
	}
}

static bool
number(Json *j)
{
	const unsigned char *start = j->p;

	if (j->p < j->end && *j->p == '-')
		j->p++;
	if (j->p >= j->end || !isdigit(*j->p))
		return false;
	if (*j->p == '0')
		j->p++;
	else
		while (j->p < j->end && isdigit(*j->p))
			j->p++;
	if (j->p < j->end && *j->p == '.')
	{
		j->p++;
		if (j->p >= j->end || !isdigit(*j->p))
			return false;
		while (j->p < j->end && isdigit(*j->p))
			j->p++;
	}
	if (j->p < j->end && (*j->p == 'e' || *j->p == 'E'))
	{
		j->p++;
		if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
			j->p++;
		if (j->p >= j->end || !isdigit(*j->p))
			return false;
		while (j->p < j->end && isdigit(*j->p))
			j->p++;
	}
	/* a number runs into no letter or digit ("1true", "01") */
	if (j->p < j->end && (isalnum(*j->p) || *j->p == '_' || *j->p >= 0x80))
		return false;
	return !j->jsonb || oracle_numeric_fits((const char *) start, j->p - start);
}

static bool
word(Json *j, const char *w)
{
	size_t		n = strlen(w);

	if ((size_t) (j->end - j->p) < n || memcmp(j->p, w, n) != 0)
		return false;
	j->p += n;
	return !(j->p < j->end && (isalnum(*j->p) || *j->p == '_' || *j->p >= 0x80));
}

static bool
container(Json *j, char close)
{
	bool		first = true;

	if (++j->depth > 10000)
		return false;
	j->p++;
	for (;;)
	{
		skip_ws(j);
		if (j->p < j->end && *j->p == close && first)
		{
			j->p++;
			break;
		}
		if (close == '}')
		{
			if (j->p >= j->end || *j->p != '"' || !string(j))
				return false;
			skip_ws(j);
			if (j->p >= j->end || *j->p != ':')
				return false;
			j->p++;
		}
		if (!value(j))
			return false;
		skip_ws(j);
		if (j->p < j->end && *j->p == ',')
		{
			j->p++;
			first = false;
			continue;
		}
		if (j->p < j->end && *j->p == close)
		{
			j->p++;
			break;
		}
		return false;
	}
	j->depth--;
	return true;
}

static bool
value(Json *j)
{
	skip_ws(j);
	if (j->p >= j->end)
		return false;
	switch (*j->p)
	{
		case '{':
			return container(j, '}');
		case '[':
			return container(j, ']');
		case '"':
			return string(j);
		case 't':
			return word(j, "true");
		case 'f':
			return word(j, "false");
		case 'n':
			return word(j, "null");
		default:
			return number(j);
	}
}

/*
 * True when s is one JSON text PostgreSQL's json type accepts (RFC 8259 in
 * UTF-8); with as_jsonb, one jsonb accepts too: no \u0000, surrogate
 * escapes in pairs, numbers within numeric's range.
 */
bool
oracle_json(const char *s, size_t len, bool as_jsonb)
{
	Json		j = {(const unsigned char *) s, (const unsigned char *) s + len, as_jsonb, 0};

	if (!value(&j))
		return false;
	skip_ws(&j);
	return j.p == j.end;
}

/*
 * True when a JSON number fits numeric, as jsonb stores it: at most 131072
 * digits before the decimal point and a display scale of at most 16383;
 * exponents of a billion or more are refused outright.
 */
bool
oracle_numeric_fits(const char *s, size_t len)
{
	const char *p = s;
	const char *end = s + len;
	int64		int_digits = 0;
	int64		frac_digits = 0;
	int64		first_nonzero = -1;	/* index among all mantissa digits */
	int64		exponent = 0;
	int64		scale;
	bool		exp_negative = false;

	if (p < end && *p == '-')
		p++;
	for (; p < end && isdigit((unsigned char) *p); p++, int_digits++)
		if (*p != '0' && first_nonzero < 0)
			first_nonzero = int_digits;
	if (p < end && *p == '.')
		for (p++; p < end && isdigit((unsigned char) *p); p++, frac_digits++)
			if (*p != '0' && first_nonzero < 0)
				first_nonzero = int_digits + frac_digits;
	if (p < end && (*p == 'e' || *p == 'E'))
	{
		p++;
		if (p < end && (*p == '+' || *p == '-'))
			exp_negative = *p++ == '-';
		for (; p < end && isdigit((unsigned char) *p); p++)
			if (exponent < PG_INT32_MAX)
				exponent = exponent * 10 + (*p - '0');
		if (exponent >= PG_INT32_MAX / 2)
			return false;
		if (exp_negative)
			exponent = -exponent;
	}
	scale = frac_digits - exponent;
	if (scale > 16383)
		return false;
	/* the power of ten of the leading digit; a zero has none */
	if (first_nonzero >= 0 && int_digits - 1 - first_nonzero + exponent >= 131072)
		return false;
	return true;
}

/* ------------------------------------------------------------------- time */

static bool
leap(int y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static int
month_days(int y, int m)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};

	return days[m - 1] + (m == 2 && leap(y));
}

/* Days since 0001-01-01 of a date from year 1 on. */
static int64
ordinal(int y, int m, int d)
{
	int64		n = (int64) 365 * (y - 1) + (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400;

	for (int i = 1; i < m; i++)
		n += month_days(y, i);
	return n + d - 1;
}

static bool
digits(const char *s, int n, int *out)
{
	*out = 0;
	for (int i = 0; i < n; i++)
	{
		if (!isdigit((unsigned char) s[i]))
			return false;
		*out = *out * 10 + (s[i] - '0');
	}
	return true;
}

/*
 * "YYYY-MM-DD HH:MM:SS" ('T' may replace the space), then optionally '.'
 * and one or more digits (microseconds, further digits dropped), then
 * optionally 'Z'; a real date and time of day.  *usecs: since 2000-01-01.
 */
bool
oracle_timestamp(const char *s, size_t len, int64 *usecs)
{
	int			y,
				mo,
				d,
				h,
				mi,
				se;
	int64		frac = 0;
	size_t		i;

	if (len < 19 || s[4] != '-' || s[7] != '-' || (s[10] != ' ' && s[10] != 'T') ||
		s[13] != ':' || s[16] != ':' ||
		!digits(s, 4, &y) || !digits(s + 5, 2, &mo) || !digits(s + 8, 2, &d) ||
		!digits(s + 11, 2, &h) || !digits(s + 14, 2, &mi) || !digits(s + 17, 2, &se))
		return false;
	i = 19;
	if (i < len && s[i] == '.')
	{
		int			n = 0;

		i++;
		if (i >= len || !isdigit((unsigned char) s[i]))
			return false;
		for (; i < len && isdigit((unsigned char) s[i]); i++, n++)
			if (n < 6)
				frac = frac * 10 + (s[i] - '0');
		for (; n < 6; n++)
			frac *= 10;
	}
	if (i < len && s[i] == 'Z')
		i++;
	if (i != len)
		return false;
	if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > month_days(y, mo) ||
		h > 23 || mi > 59 || se > 59)
		return false;
	*usecs = ((ordinal(y, mo, d) - ordinal(2000, 1, 1)) * 86400 +
			  h * 3600 + mi * 60 + se) * INT64CONST(1000000) + frac;
	return true;
}

/* "YYYY-MM-DD HH:MM:SS.ffffff" of a time from year 1 to 9999. */
void
oracle_format_timestamp(int64 usecs, char *buf, size_t size)
{
	int64		secs_total = usecs / 1000000;
	int64		frac = usecs % 1000000;
	int64		days;
	int64		secs;
	int			y = 1;
	int			m = 1;

	if (frac < 0)
		frac += 1000000, secs_total--;
	days = secs_total / 86400;
	secs = secs_total % 86400;
	if (secs < 0)
		secs += 86400, days--;
	days += ordinal(2000, 1, 1);
	while (ordinal(y + 400, 1, 1) <= days)
		y += 400;
	while (ordinal(y + 1, 1, 1) <= days)
		y++;
	days -= ordinal(y, 1, 1);
	while (days >= month_days(y, m))
		days -= month_days(y, m++);
	snprintf(buf, size, "%04d-%02d-%02d %02d:%02d:%02d.%06d", y, m, (int) days + 1,
			 (int) (secs / 3600), (int) (secs / 60 % 60), (int) (secs % 60), (int) frac);
}

/* ------------------------------------------------------------------ model */

/* ^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$ and at most 128 characters. */
bool
oracle_model_name(const char *s)
{
	size_t		len = strlen(s);
	bool		after_dot = true;

	if (len == 0 || len > 128)
		return false;
	for (size_t i = 0; i < len; i++)
	{
		char		c = s[i];

		if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')
			after_dot = false;
		else if (c == '.' && !after_dot)
			after_dot = true;
		else
			return false;
	}
	return !after_dot;
}
