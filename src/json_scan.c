/*
 * json_scan.c: one pass over the text json-c parsed, finding per record
 * what json-c's values no longer show (see json_scan.h).
 *
 * The scanner reads the text as json-c 0.16 reads it in its default, not
 * strict, mode: strings in double or single quotes, comments, literals in
 * any case, NaN and Infinity.  It is run only on text json-c parsed
 * successfully, so it does not check syntax: it follows the nesting to find
 * the records, the elements of the top-level array (ingest()) or of the
 * "result" member of a JSON-RPC answer (the worker), and looks at every
 * escape and number in them.  The only memory it takes is one entry per
 * record and a copy of the records it flags.
 */
#include "json_scan.h"

#include "lib/stringinfo.h"

/* json-c refuses nesting deeper than BC_JSON_MAX_DEPTH (1000) anyway. */
#define SCAN_MAX_DEPTH 1024

typedef struct Scanner
{
	const char *p;
	const char *end;
	int			depth;
	uint8		is_object[SCAN_MAX_DEPTH / 8];	/* a bit per depth */
	bool		expect_key;		/* the next string is an object key */
	bool		rpc_answer;
	int			array_depth;	/* depth of the value that holds the records */
	bool		result_key;		/* the answer member being read is "result" */
	bool		collecting;		/* inside the records array */
	const char *record_start;	/* the record being read, or NULL */
	uint8		flags;			/* JSON_SCAN_* of that record */
	int			capacity;
	RecordScan *scan;
	StringInfo	quoted;			/* json_scan_quote_bad_numbers(): the copy */
	const char *copied;			/* the text up to here is in it */
} Scanner;

static inline bool
is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static inline bool
is_letter(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool
hex4(const char *p, unsigned int *cp)
{
	*cp = 0;
	for (int i = 0; i < 4; i++)
	{
		char		c = p[i];

		*cp <<= 4;
		if (is_digit(c))
			*cp |= c - '0';
		else if (c >= 'a' && c <= 'f')
			*cp |= c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			*cp |= c - 'A' + 10;
		else
			return false;
	}
	return true;
}

static void
value_start(Scanner *s, char c)
{
	if (s->depth == s->array_depth)
	{
		if (!s->rpc_answer || s->result_key)
		{
			/* the records; a later "result" member replaces them, as in json-c */
			s->scan->nrecords = 0;
			s->collecting = (c == '[');
		}
		s->result_key = false;
	}
	else if (s->collecting && s->depth == s->array_depth + 1)
	{
		s->record_start = s->p;
		s->flags = 0;
	}
}

/* At the end of a value, s->p just past it. */
static void
value_end(Scanner *s)
{
	if (s->record_start != NULL && s->depth == s->array_depth + 1)
	{
		ScannedRecord *r;

		if (s->scan->nrecords == s->capacity)
		{
			s->capacity *= 2;
			s->scan->records = repalloc(s->scan->records, sizeof(ScannedRecord) * s->capacity);
		}
		r = &s->scan->records[s->scan->nrecords++];
		r->flags = s->flags;
		r->text = s->flags ? pnstrdup(s->record_start, s->p - s->record_start) : NULL;
		s->record_start = NULL;
	}
	else if (s->depth == s->array_depth)
		s->collecting = false;
}

/*
 * Reads the string at s->p (at its opening quote) as json-c does; false if
 * it does not end.  Sets *odd when it holds \u0000 or a surrogate escape
 * that is not half of an adjacent pair (json-c cuts a key at the NUL and
 * reads the unpaired half as U+FFFD).  With match, *matches says whether
 * the key json-c makes of the string (cut at a NUL) is match.
 */
static bool
scan_string(Scanner *s, bool *odd, const char *match, bool *matches)
{
	const char *p = s->p + 1;
	const char *end = s->end;
	char		quote = *s->p;
	bool		pending_high = false;
	size_t		mpos = 0;
	bool		mok = true;
	bool		cut = false;

	for (;;)
	{
		unsigned int cp;

		if (pending_high)
		{
			/* only an escape right after it can be its low half */
			pending_high = false;
			if (end - p >= 6 && p[0] == '\\' && p[1] == 'u' && hex4(p + 2, &cp) &&
				cp >= 0xDC00 && cp <= 0xDFFF)
			{
				p += 6;
				continue;
			}
			*odd = true;
		}
		else if (match == NULL)
		{
			while (p < end && *p != quote && *p != '\\')
				p++;
		}
		if (p >= end)
			return false;
		if (*p == quote)
			break;
		if (*p == '\\')
		{
			if (end - p < 2)
				return false;
			switch (p[1])
			{
				case 'u':
					if (end - p < 6 || !hex4(p + 2, &cp))
						return false;
					if (cp == 0)
						*odd = true;
					else if (cp >= 0xD800 && cp <= 0xDBFF)
						pending_high = true;
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
						*odd = true;
					p += 4;
					break;
				case 'b':
					cp = '\b';
					break;
				case 'f':
					cp = '\f';
					break;
				case 'n':
					cp = '\n';
					break;
				case 'r':
					cp = '\r';
					break;
				case 't':
					cp = '\t';
					break;
				case '"':
				case '\\':
				case '/':
					cp = (unsigned char) p[1];
					break;
				default:
					return false;
			}
			p += 2;
		}
		else
			cp = (unsigned char) *p++;
		if (match != NULL && !cut)
		{
			if (cp == 0)
				cut = true;
			else if (cp < 0x80 && match[mpos] == (char) cp)
				mpos++;
			else
				mok = false;
		}
	}
	s->p = p + 1;
	if (match != NULL)
		*matches = mok && match[mpos] == '\0';
	return true;
}

/*
 * JSON_SCAN_BAD_NUMBER or JSON_SCAN_BIG_INTEGER for the number token
 * (len bytes), or 0.
 */
static uint8
number_flags(const char *start, size_t len)
{
	const char *q = start;
	const char *e = start + len;
	const char *digits;
	bool		negative = false;
	bool		integer = true;
	size_t		ndigits;
	const char *limit;

	if (q < e && *q == '-')
	{
		negative = true;
		q++;
	}
	digits = q;
	if (q < e && *q == '0')
		q++;
	else if (q < e && *q >= '1' && *q <= '9')
		while (q < e && is_digit(*q))
			q++;
	else
		return JSON_SCAN_BAD_NUMBER;
	ndigits = q - digits;
	if (q < e && *q == '.')
	{
		integer = false;
		if (++q >= e || !is_digit(*q))
			return JSON_SCAN_BAD_NUMBER;
		while (q < e && is_digit(*q))
			q++;
	}
	if (q < e && (*q == 'e' || *q == 'E'))
	{
		integer = false;
		q++;
		if (q < e && (*q == '+' || *q == '-'))
			q++;
		if (q >= e || !is_digit(*q))
			return JSON_SCAN_BAD_NUMBER;
		while (q < e && is_digit(*q))
			q++;
	}
	if (q != e)
		return JSON_SCAN_BAD_NUMBER;
	if (!integer)
		return 0;				/* json-c keeps a fraction's or exponent's text */
	/* json-c's int64 and uint64: -2^63 .. 2^64-1, no leading zeros here */
	limit = negative ? "9223372036854775808" : "18446744073709551615";
	if (ndigits > strlen(limit) ||
		(ndigits == strlen(limit) && memcmp(digits, limit, ndigits) > 0))
		return JSON_SCAN_BIG_INTEGER;
	return 0;
}

/*
 * Skips the comment at s->p; false if it does not end.  json-c looks at
 * the character after a '*' only once, so "**" then '/' does not end a
 * comment there (json-c 0.16): nor does it here.
 */
static bool
skip_comment(Scanner *s)
{
	const char *p = s->p + 1;

	if (p >= s->end)
		return false;
	if (*p == '/')
	{
		p = memchr(p, '\n', s->end - p);
		s->p = p ? p + 1 : s->end;
		return true;
	}
	if (*p != '*')
		return false;
	for (p++;; p += 2)
	{
		p = memchr(p, '*', s->end - p);
		if (p == NULL || s->end - p < 2)
			return false;
		if (p[1] == '/')
		{
			s->p = p + 2;
			return true;
		}
	}
}

/*
 * Follows the text from s.p to s.end; false when it cannot (json-c would
 * not have parsed it).
 */
static bool
follow_text(Scanner *sp)
{
	Scanner		s = *sp;

	while (s.p < s.end)
	{
		char		c = *s.p;

		switch (c)
		{
			case ' ':
			case '\t':
			case '\n':
			case '\r':
				s.p++;
				break;
			case '/':
				if (!skip_comment(&s))
					return false;
				break;
			case '{':
			case '[':
				value_start(&s, c);
				if (++s.depth >= SCAN_MAX_DEPTH)
					return false;
				if (c == '{')
					s.is_object[s.depth / 8] |= 1 << (s.depth % 8);
				else
					s.is_object[s.depth / 8] &= ~(1 << (s.depth % 8));
				s.expect_key = (c == '{');
				s.p++;
				break;
			case '}':
			case ']':
				if (s.depth == 0)
					return false;
				s.depth--;
				s.p++;
				s.expect_key = false;
				value_end(&s);
				break;
			case ',':
				s.expect_key = (s.is_object[s.depth / 8] & (1 << (s.depth % 8))) != 0;
				s.p++;
				break;
			case ':':
				s.expect_key = false;
				s.p++;
				break;
			case '"':
			case '\'':
				{
					bool		odd = false;

					if (s.expect_key)
					{
						bool		member = s.rpc_answer && s.depth == 1;
						bool		matches = false;

						if (!scan_string(&s, &odd, member ? "result" : NULL, &matches))
							return false;
						if (member)
							s.result_key = matches;
						if (odd)
							s.flags |= JSON_SCAN_KEY_ESCAPE;
						s.expect_key = false;
					}
					else
					{
						value_start(&s, c);
						if (!scan_string(&s, &odd, NULL, NULL))
							return false;
						if (odd)
							s.flags |= JSON_SCAN_STRING_ESCAPE;
						value_end(&s);
					}
					break;
				}
			default:
				if (is_letter(c) || (c == '-' && s.end - s.p > 1 && is_letter(s.p[1])))
				{
					/* true, false, null, NaN, Infinity, -Infinity, in any case */
					value_start(&s, c);
					for (s.p++; s.p < s.end && is_letter(*s.p); s.p++)
						;
					value_end(&s);
				}
				else if (is_digit(c) || c == '-')
				{
					/*
					 * The longest run of number characters: json-c fails
					 * when a number runs into anything else.
					 */
					const char *start = s.p;
					uint8		nflags;

					value_start(&s, c);
					while (s.p < s.end && (is_digit(*s.p) || *s.p == '.' || *s.p == 'e' ||
										   *s.p == 'E' || *s.p == '+' || *s.p == '-'))
						s.p++;
					nflags = number_flags(start, s.p - start);
					if (s.quoted != NULL && (nflags & JSON_SCAN_BAD_NUMBER))
					{
						appendBinaryStringInfo(s.quoted, s.copied, start - s.copied);
						appendStringInfoChar(s.quoted, '"');
						appendBinaryStringInfo(s.quoted, start, s.p - start);
						appendStringInfoChar(s.quoted, '"');
						s.copied = s.p;
					}
					s.flags |= nflags;
					value_end(&s);
				}
				else
					return false;
		}
	}
	*sp = s;
	return s.depth == 0 && s.record_start == NULL;
}

/*
 * Scans text (len bytes), which json-c parsed successfully, for the
 * records: the elements of the top-level array or, with rpc_answer, of the
 * answer's "result" array.  Fills scan in the current memory context.
 * Returns false when the text cannot be followed (which json-c would not
 * have parsed); scan->nrecords then means nothing.
 */
bool
json_scan_records(const char *text, size_t len, bool rpc_answer, RecordScan *scan)
{
	Scanner		s;

	memset(&s, 0, sizeof(s));
	s.p = text;
	s.end = text + len;
	s.rpc_answer = rpc_answer;
	s.array_depth = rpc_answer ? 1 : 0;
	s.capacity = 16;
	s.scan = scan;
	scan->nrecords = 0;
	scan->records = palloc(sizeof(ScannedRecord) * s.capacity);
	return follow_text(&s);
}

/*
 * A record's text (as json_scan_records() keeps it) with each number JSON
 * cannot write (json-c reads 0625 as 625) quoted as a string of its text,
 * as a dead letter keeps such a number; NULL if the text cannot be followed.
 */
char *
json_scan_quote_bad_numbers(const char *text)
{
	Scanner		s;
	StringInfoData buf;

	memset(&s, 0, sizeof(s));
	s.p = text;
	s.end = text + strlen(text);
	s.array_depth = -1;			/* no records to find */
	initStringInfo(&buf);
	s.quoted = &buf;
	s.copied = text;
	if (!follow_text(&s))
		return NULL;
	appendBinaryStringInfo(&buf, s.copied, s.end - s.copied);
	return buf.data;
}
