/*
 * fuzz_decode.c: decode_record() on what the worker would hand it.
 *
 * The input is the body of a search_read answer: it goes through
 * odoo_classify_answer() as in rpc_call(), and every element of the
 * resulting list (or the result itself when it is no list) is decoded.
 *
 * A separate reference decoder, written from the documented ingestion
 * rules (docs/sql-api.md, ingest), names the reason each record must get
 * (or none).  What json-c's values no longer show (integers beyond 64
 * bits, \u0000 and unpaired surrogate escapes, numbers JSON cannot write)
 * it reads from the body itself, with a recursive reader of json-c 0.16's
 * grammar of its own (not src/json_scan.c), which finds the records'
 * texts; where one of those is found, the dead letter's copy must be the
 * record's text as sent whenever PostgreSQL's json type takes it.
 * Invariants: the same reason, or none; when there is none, every
 * required field is set to the record's value (the timestamp to the
 * reference parser's microsecond, the model a valid name), every text is
 * valid UTF-8, the payload is text jsonb accepts and changed_fields a
 * text[] literal of the _changed_fields elements; when there is one, the
 * quoted value in it is valid UTF-8 of at most 64 characters.  Nothing
 * throws.
 */
#include "decode.h"
#include "odoo_client.h"

#include "fuzz.h"

#include <math.h>

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static json_object *
get(json_object *rec, const char *key)
{
	json_object *v = NULL;

	json_object_object_get_ex(rec, key, &v);
	return v;
}

static bool
empty(json_object *v)
{
	return v == NULL || (json_object_get_type(v) == json_type_boolean && !json_object_get_boolean(v));
}

static bool
is_string(json_object *v)
{
	return json_object_get_type(v) == json_type_string;
}

/*
 * An integral number.  json-c turns integers beyond 64 bits into
 * INT64_MIN / INT64_MAX (or UINT64_MAX), so those values are not numbers
 * Odoo can be trusted to have sent and are refused.
 */
static bool
whole(json_object *v, int64 *out)
{
	if (json_object_get_type(v) == json_type_int)
	{
		int64		i = json_object_get_int64(v);

		*out = i;
		return i != PG_INT64_MAX && i != PG_INT64_MIN;
	}
	if (json_object_get_type(v) == json_type_double)
	{
		double		d = json_object_get_double(v);

		if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0) || d != trunc(d))
			return false;
		*out = (int64) d;
		return true;
	}
	return false;
}

/*
 * What jsonb would refuse in v, first in document order: a string holding
 * a NUL, a number numeric cannot hold.  NULL when nothing.
 */
static const char *
refused_by_jsonb(json_object *v)
{
	const char *why = NULL;

	switch (json_object_get_type(v))
	{
		case json_type_string:
			if (memchr(json_object_get_string(v), '\0', json_object_get_string_len(v)) != NULL)
				why = "unstorable record: unsupported Unicode escape sequence";
			else if (!oracle_utf8(json_object_get_string(v), json_object_get_string_len(v), NULL))
				why = "unstorable record: invalid UTF-8 in a string";
			break;
		case json_type_double:
			{
				/* json-c keeps the text as read; NaN and Infinity have none */
				const char *text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);

				if (oracle_json(text, strlen(text), false))
				{
					if (!oracle_numeric_fits(text, strlen(text)))
						why = "unstorable record: value overflows numeric format";
				}
				else if (!isfinite(json_object_get_double(v)))
					why = "unstorable record: NaN or Infinity is not a JSON number";
				else
					why = "unstorable record: invalid JSON number";
				break;
			}
		case json_type_array:
			for (size_t i = 0; why == NULL && i < json_object_array_length(v); i++)
				why = refused_by_jsonb(json_object_array_get_idx(v, i));
			break;
		case json_type_object:
			{
				struct json_object_iterator it = json_object_iter_begin(v);
				struct json_object_iterator end = json_object_iter_end(v);

				for (; why == NULL && !json_object_iter_equal(&it, &end); json_object_iter_next(&it))
				{
					const char *key = json_object_iter_peek_name(&it);

					if (!oracle_utf8(key, strlen(key), NULL))
						why = "unstorable record: invalid UTF-8 in a key";
					else if (json_object_iter_peek_value(&it) != NULL)
						why = refused_by_jsonb(json_object_iter_peek_value(&it));
				}
				break;
			}
		default:
			break;
	}
	return why;
}

/* ---- the reference reading of the body's text --------------------------- */

/* What a record's text shows that json-c's values do not. */
typedef struct RawIssues
{
	bool		key_escape;		/* \u0000 or an unpaired surrogate escape in a key */
	bool		string_escape;	/* the same in a string */
	bool		bad_number;		/* a number that is not RFC 8259's */
	bool		big_integer;	/* an integer below -2^63 or above 2^64-1 */
} RawIssues;

typedef struct RawRecord
{
	const char *text;
	size_t		len;
	RawIssues	issues;
} RawRecord;

typedef struct Raw
{
	const char *p;
	const char *end;
	int			nrecords;
	RawRecord  *records;		/* those of the last "result" member */
} Raw;

static bool raw_value(Raw *r, RawIssues *is, int depth);

static int
raw_peek(Raw *r)
{
	return r->p < r->end ? (unsigned char) *r->p : -1;
}

/*
 * Whitespace and comments as json-c 0.16 skips them: after "/ *" it looks
 * for a '*' and then takes one more character, which ends the comment only
 * if it is '/'.
 */
static bool
raw_ws(Raw *r)
{
	for (;;)
	{
		int			c = raw_peek(r);

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			r->p++;
		else if (c == '/')
		{
			r->p++;
			c = raw_peek(r);
			r->p++;
			if (c == '/')
			{
				while (raw_peek(r) != -1 && raw_peek(r) != '\n')
					r->p++;
			}
			else if (c == '*')
			{
				enum
				{
					IN_COMMENT, AFTER_STAR
				}			st = IN_COMMENT;

				for (;;)
				{
					c = raw_peek(r);
					if (c == -1)
						return false;
					r->p++;
					if (st == IN_COMMENT && c == '*')
						st = AFTER_STAR;
					else if (st == AFTER_STAR)
					{
						if (c == '/')
							break;
						st = IN_COMMENT;
					}
				}
			}
			else
				return false;
		}
		else
			return true;
	}
}

static int
raw_hex(const char *p)
{
	int			v = 0;

	for (int i = 0; i < 4; i++)
	{
		char		c = p[i];
		int			d = (c >= '0' && c <= '9') ? c - '0' :
			(c >= 'a' && c <= 'f') ? c - 'a' + 10 :
			(c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;

		if (d < 0)
			return -1;
		v = v * 16 + d;
	}
	return v;
}

/*
 * A string in quote (" or '), decoded into out (at most outsize - 1 bytes
 * kept, cut at the first NUL as json-c keeps a key), *odd set for \u0000
 * or an unpaired surrogate escape.
 */
static bool
raw_string(Raw *r, bool *odd, char *out, size_t outsize)
{
	char		quote = *r->p++;
	size_t		n = 0;
	bool		cut = false;

	for (;;)
	{
		int			c = raw_peek(r);
		int			cp;

		if (c == -1)
			return false;
		r->p++;
		if (c == quote)
			break;
		if (c != '\\')
			cp = c;
		else
		{
			c = raw_peek(r);
			r->p++;
			switch (c)
			{
				case '"':
				case '\\':
				case '/':
					cp = c;
					break;
				case 'b':
					cp = 8;
					break;
				case 'f':
					cp = 12;
					break;
				case 'n':
					cp = 10;
					break;
				case 'r':
					cp = 13;
					break;
				case 't':
					cp = 9;
					break;
				case 'u':
					if (r->end - r->p < 4 || (cp = raw_hex(r->p)) < 0)
						return false;
					r->p += 4;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						int			lo = -1;

						if (r->end - r->p >= 6 && r->p[0] == '\\' && r->p[1] == 'u')
							lo = raw_hex(r->p + 2);
						if (lo >= 0xDC00 && lo <= 0xDFFF)
						{
							r->p += 6;
							cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
						}
						else
						{
							*odd = true;
							cp = 0xFFFD;
						}
					}
					else if (cp >= 0xDC00 && cp <= 0xDFFF)
					{
						*odd = true;
						cp = 0xFFFD;
					}
					else if (cp == 0)
						*odd = true;
					break;
				default:
					return false;
			}
		}
		/* keep the key's bytes: only ASCII matters for "result" */
		if (cp == 0)
			cut = true;
		if (!cut && out != NULL && n + 1 < outsize)
			out[n++] = cp < 0x80 ? (char) cp : '\x7f';
	}
	if (out != NULL)
		out[n] = '\0';
	return true;
}

/*
 * A number as json-c's state machine takes it: digits, one '.' before any
 * exponent, one e/E, a '-' first or right after the '.' or the e, a '+'
 * right after the '.' or the e.
 */
static bool
raw_number(Raw *r, RawIssues *is)
{
	const char *start = r->p;
	bool		seen_dot = false;
	bool		seen_e = false;
	bool		minus_ok = true;
	bool		plus_ok = false;
	size_t		len;

	for (;;)
	{
		int			c = raw_peek(r);

		if (c >= '0' && c <= '9')
			minus_ok = plus_ok = false;
		else if ((c == 'e' || c == 'E') && !seen_e)
		{
			seen_e = true;
			minus_ok = plus_ok = true;
		}
		else if (c == '.' && !seen_dot && !seen_e)
		{
			seen_dot = true;
			minus_ok = plus_ok = true;
		}
		else if ((c == '-' && minus_ok) || (c == '+' && plus_ok))
			minus_ok = plus_ok = false;
		else
			break;
		r->p++;
	}
	len = r->p - start;
	if (len == 1 && *start == '-' && (raw_peek(r) == 'I' || raw_peek(r) == 'i'))
		return raw_value(r, is, 0); /* -Infinity: no number */
	if (!oracle_json(start, len, false))
		is->bad_number = true;
	else if (!seen_dot && !seen_e)
	{
		/* RFC 8259 form, so at most one leading zero: count the value */
		bool		neg = *start == '-';
		unsigned __int128 v = 0;
		unsigned __int128 limit = neg ? ((unsigned __int128) 1 << 63) : (((unsigned __int128) 1 << 64) - 1);

		for (const char *q = start + neg; q < r->p; q++)
		{
			v = v * 10 + (*q - '0');
			if (v > limit)
			{
				is->big_integer = true;
				break;
			}
		}
	}
	return true;
}

/* true, false, null, NaN, Infinity: in any case, as json-c reads them. */
static bool
raw_word(Raw *r)
{
	static const char *const words[] = {"true", "false", "null", "nan", "infinity"};

	for (size_t i = 0; i < lengthof(words); i++)
	{
		size_t		n = strlen(words[i]);

		if ((size_t) (r->end - r->p) >= n && pg_strncasecmp(r->p, words[i], n) == 0)
		{
			r->p += n;
			return true;
		}
	}
	return false;
}

/*
 * A value at r->p (after whitespace), its issues ORed into is.  At depth 1
 * of an object (the answer), a "result" member that is an array sets the
 * records: each element with its text and its own issues.
 */
static bool
raw_value(Raw *r, RawIssues *is, int depth)
{
	int			c;

	if (depth > 1000)
		return false;
	c = raw_peek(r);
	if (c == '{' || c == '[')
	{
		char		close = c == '{' ? '}' : ']';

		r->p++;
		if (!raw_ws(r))
			return false;
		if (raw_peek(r) == close)
		{
			r->p++;
			return true;
		}
		for (;;)
		{
			bool		records = false;

			if (close == '}')
			{
				char		key[8];
				bool		odd = false;

				if (raw_peek(r) != '"' && raw_peek(r) != '\'')
					return false;
				if (!raw_string(r, &odd, key, sizeof(key)))
					return false;
				is->key_escape |= odd;
				records = depth == 0 && strcmp(key, "result") == 0;
				if (!raw_ws(r) || raw_peek(r) != ':')
					return false;
				r->p++;
				if (!raw_ws(r))
					return false;
			}
			if (records)
			{
				/* json-c keeps the last "result" */
				r->nrecords = 0;
				if (raw_peek(r) == '[')
				{
					r->p++;
					if (!raw_ws(r))
						return false;
					while (raw_peek(r) != ']')
					{
						RawRecord *rec;

						r->records = realloc(r->records, sizeof(RawRecord) * (r->nrecords + 1));
						rec = &r->records[r->nrecords++];
						memset(rec, 0, sizeof(*rec));
						rec->text = r->p;
						if (!raw_value(r, &rec->issues, depth + 2))
							return false;
						rec->len = r->p - rec->text;
						if (!raw_ws(r))
							return false;
						if (raw_peek(r) == ',')
						{
							r->p++;
							if (!raw_ws(r))
								return false;
						}
						else if (raw_peek(r) != ']')
							return false;
					}
					r->p++;
				}
				else if (!raw_value(r, is, depth + 1))
					return false;
			}
			else if (!raw_value(r, is, depth + 1))
				return false;
			if (!raw_ws(r))
				return false;
			if (raw_peek(r) == ',')
			{
				r->p++;
				if (!raw_ws(r))
					return false;
				if (raw_peek(r) == close)	/* json-c takes a trailing comma */
				{
					r->p++;
					return true;
				}
				continue;
			}
			if (raw_peek(r) != close)
				return false;
			r->p++;
			return true;
		}
	}
	if (c == '"' || c == '\'')
	{
		bool		odd = false;

		if (!raw_string(r, &odd, NULL, 0))
			return false;
		is->string_escape |= odd;
		return true;
	}
	if (c == '-' || (c >= '0' && c <= '9'))
		return raw_number(r, is);
	return raw_word(r);
}

/* Reads the answer body; false when it cannot (json-c could, a finding). */
static bool
raw_read(const char *body, size_t len, Raw *r)
{
	RawIssues	ignored;

	memset(r, 0, sizeof(*r));
	memset(&ignored, 0, sizeof(ignored));
	r->p = body;
	r->end = body + len;
	return raw_ws(r) && raw_value(r, &ignored, 0) && raw_ws(r) && r->p == r->end;
}

static bool
one_of(json_object *v, const char *a, const char *b, const char *c)
{
	const char *s;

	if (!is_string(v))
		return false;
	s = json_object_get_string(v);
	return strcmp(s, a) == 0 || strcmp(s, b) == 0 || strcmp(s, c) == 0;
}

/*
 * The reason the documented rules give, NULL for a storable record.  A
 * reason ending in a space is followed by the value's JSON.
 */
static const char *
reference_reason(json_object *rec, const RawIssues *raw, bool *has_id, int64 *id)
{
	json_object *v;
	int64		n;
	size_t		chars;
	const char *reason;

	*has_id = false;
	if (json_object_get_type(rec) != json_type_object)
		return "record is not a JSON object";
	*has_id = whole(get(rec, "id"), id) && *id >= 1;
	/* what only the text shows comes first, in the documented order */
	if (raw->key_escape)
		return "unstorable record: unsupported Unicode escape sequence in a key";
	if (raw->string_escape)
		return "unstorable record: unsupported Unicode escape sequence";
	if (raw->bad_number)
		return "unstorable record: invalid JSON number";
	if (raw->big_integer)
		return "unstorable record: integer outside the 64-bit range";
	if ((reason = refused_by_jsonb(rec)) != NULL)
		return reason;
	if (!*has_id)
		return "missing or invalid id";
	v = get(rec, "model");
	if (!is_string(v) || json_object_get_string_len(v) == 0)
		return "missing model";
	if (!oracle_model_name(json_object_get_string(v)))
		return "invalid model name";
	if (!whole(get(rec, "record_id"), &n) || n == 0)
		return "missing or invalid record_id";
	if (!one_of(get(rec, "event"), "create", "write", "unlink"))
		return "unknown event ";
	v = get(rec, "timestamp");
	if (!is_string(v) || !oracle_timestamp(json_object_get_string(v), json_object_get_string_len(v), &n))
		return "invalid timestamp ";
	v = get(rec, "priority");
	if (!one_of(v, "low", "medium", "high") && !empty(v))
		return "unknown priority ";
	v = get(rec, "category");
	if (!(is_string(v) && json_object_get_string_len(v) > 0 &&
		  oracle_utf8(json_object_get_string(v), json_object_get_string_len(v), &chars) && chars <= 64) &&
		!empty(v))
		return "invalid category ";
	v = get(rec, "user_id");
	if (!(json_object_get_type(v) == json_type_array && json_object_array_length(v) == 2 &&
		  whole(json_object_array_get_idx(v, 0), &n) && n >= 1 &&
		  is_string(json_object_array_get_idx(v, 1))) &&
		!empty(v))
		return "invalid user_id ";
	return NULL;
}

/* A text[] literal '{"a","b",NULL}' holds exactly the elements of arr. */
static void
check_array_literal(const char *lit, json_object *arr)
{
	const char *p = lit;
	size_t		n = json_object_array_length(arr);

	FUZZ_CHECK(oracle_utf8(lit, strlen(lit), NULL), "changed_fields not UTF-8: %s", lit);
	FUZZ_CHECK(*p == '{', "changed_fields %s", lit);
	p++;
	for (size_t i = 0; i < n; i++)
	{
		json_object *e = json_object_array_get_idx(arr, i);
		char	   *elem = palloc(strlen(lit) + 1);
		size_t		k = 0;

		if (i > 0)
		{
			FUZZ_CHECK(*p == ',', "changed_fields %s: no comma before element %zu", lit, i);
			p++;
		}
		if (e == NULL)
		{
			FUZZ_CHECK(strncmp(p, "NULL", 4) == 0, "changed_fields %s: element %zu not NULL", lit, i);
			p += 4;
			continue;
		}
		FUZZ_CHECK(*p == '"', "changed_fields %s: element %zu not quoted", lit, i);
		for (p++; *p != '"'; p++)
		{
			FUZZ_CHECK(*p != '\0', "changed_fields %s: unterminated", lit);
			if (*p == '\\')
				p++;
			elem[k++] = *p;
		}
		p++;
		elem[k] = '\0';
		if (is_string(e))
			FUZZ_CHECK(strcmp(elem, json_object_get_string(e)) == 0,
					   "changed_fields element %zu is \"%s\", not \"%s\"", i, elem, json_object_get_string(e));
		else
			FUZZ_CHECK(oracle_json(elem, k, false), "changed_fields element %zu: \"%s\"", i, elem);
	}
	FUZZ_CHECK(strcmp(p, "}") == 0, "changed_fields %s: trailing \"%s\"", lit, p);
}

static void
check_text(const char *what, const char *s)
{
	if (s != NULL)
		FUZZ_CHECK(oracle_utf8(s, strlen(s), NULL), "%s is not valid UTF-8: \"%s\"", what, s);
}

/*
 * rec with what the scanner found in its text (scanned) and what the
 * reference found there (raw, NULL for an answer that is no list).
 */
static void
check_record(json_object *rec, const ScannedRecord *scanned, const RawRecord *raw)
{
	static const RawIssues none;
	DecodedEvent ev;
	bool		has_id;
	int64		id = 0;
	const char *want = reference_reason(rec, raw ? &raw->issues : &none, &has_id, &id);

	memset(&ev, 0xa5, sizeof(ev));
	decode_record(rec, scanned->flags, &ev);

	FUZZ_CHECK(ev.has_odoo_id == has_id, "has_odoo_id %d, reference %d", ev.has_odoo_id, has_id);
	if (has_id)
		FUZZ_CHECK(ev.odoo_id == id, "odoo_id %lld, reference %lld", (long long) ev.odoo_id, (long long) id);

	if (want == NULL)
	{
		json_object *v;
		int64		n = 0;

		FUZZ_CHECK(ev.problem == NULL, "reason \"%s\" for a storable record: %s", ev.problem,
				   json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN));
		FUZZ_CHECK(ev.model && strcmp(ev.model, json_object_get_string(get(rec, "model"))) == 0 &&
				   oracle_model_name(ev.model), "model");
		(void) whole(get(rec, "record_id"), &n);
		FUZZ_CHECK(ev.record_id == n && n != 0, "record_id %lld, reference %lld", (long long) ev.record_id, (long long) n);
		FUZZ_CHECK(ev.event && strcmp(ev.event, json_object_get_string(get(rec, "event"))) == 0, "event");
		v = get(rec, "timestamp");
		(void) oracle_timestamp(json_object_get_string(v), json_object_get_string_len(v), &n);
		FUZZ_CHECK(ev.occurred_at == n && IS_VALID_TIMESTAMP(ev.occurred_at),
				   "occurred_at %lld, reference %lld", (long long) ev.occurred_at, (long long) n);
		v = get(rec, "priority");
		FUZZ_CHECK(empty(v) ? ev.priority == NULL : strcmp(ev.priority, json_object_get_string(v)) == 0, "priority");
		v = get(rec, "category");
		FUZZ_CHECK(empty(v) ? ev.category == NULL : strcmp(ev.category, json_object_get_string(v)) == 0, "category");
		check_text("category", ev.category);
		v = get(rec, "payload");
		if (empty(v))
			FUZZ_CHECK(decoded_payload_text(&ev) == NULL && ev.changed_fields == NULL, "payload for an empty one");
		else
		{
			json_object *changed = get(v, "_changed_fields");

			FUZZ_CHECK(decoded_payload_text(&ev) != NULL, "no payload");
			FUZZ_CHECK(oracle_json(ev.payload, strlen(ev.payload), true),
					   "payload jsonb refuses: %.300s", ev.payload);
			if (json_object_get_type(v) == json_type_object &&
				json_object_get_type(changed) == json_type_array)
			{
				FUZZ_CHECK(ev.changed_fields != NULL, "no changed_fields");
				check_array_literal(ev.changed_fields, changed);
			}
			else
				FUZZ_CHECK(ev.changed_fields == NULL, "changed_fields without _changed_fields");
		}
		v = get(rec, "user_id");
		FUZZ_CHECK(ev.has_user == !empty(v), "has_user %d", ev.has_user);
		if (ev.has_user)
		{
			(void) whole(json_object_array_get_idx(v, 0), &n);
			FUZZ_CHECK(ev.odoo_user_id == n && n >= 1, "user id");
			FUZZ_CHECK(strcmp(ev.odoo_user_name, json_object_get_string(json_object_array_get_idx(v, 1))) == 0,
					   "user name");
			check_text("user name", ev.odoo_user_name);
		}
		return;
	}

	FUZZ_CHECK(ev.problem != NULL, "no reason, reference \"%s\": %s", want,
			   json_object_to_json_string_ext(rec, JSON_C_TO_STRING_PLAIN));
	check_text("reason", ev.problem);
	{
		/* the copy a dead letter keeps must be text PostgreSQL's json accepts */
		char	   *copy = dead_letter_record_text(rec, scanned);

		FUZZ_CHECK(oracle_json(copy, strlen(copy), false), "dead-letter copy is not JSON: %.200s", copy);
		/* ... and the record as sent, where json-c's values lost part of it */
		if (raw && (raw->issues.key_escape || raw->issues.string_escape ||
					raw->issues.bad_number || raw->issues.big_integer) &&
			oracle_utf8(raw->text, raw->len, NULL) && oracle_json(raw->text, raw->len, false))
			FUZZ_CHECK(strlen(copy) == raw->len && memcmp(copy, raw->text, raw->len) == 0,
					   "dead-letter copy %.200s, sent %.*s", copy, (int) Min(raw->len, 200), raw->text);
	}
	if (want[strlen(want) - 1] != ' ')
		FUZZ_CHECK(strcmp(ev.problem, want) == 0, "reason \"%s\", reference \"%s\"", ev.problem, want);
	else
	{
		const char *quoted = ev.problem + strlen(want);
		size_t		chars;

		FUZZ_CHECK(strncmp(ev.problem, want, strlen(want)) == 0, "reason \"%s\", reference \"%s...\"",
				   ev.problem, want);
		FUZZ_CHECK(oracle_utf8(quoted, strlen(quoted), &chars) && chars >= 1 && chars <= 64,
				   "quoted value \"%s\"", quoted);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char	   *body = malloc(size + 1);
	OdooError	err;
	RecordScan	scan;
	json_object *result;

	memcpy(body, data, size);
	body[size] = '\0';
	memset(&err, 0, sizeof(err));
	result = odoo_classify_answer(body, size, &scan, &err);
	FUZZ_CHECK(err.kind == ODOO_OK || strcmp(err.message, "the records of the answer could not be read from its text") != 0,
			   "json-c read the answer, the scanner did not follow it");
	if (result != NULL)
	{
		if (json_object_get_type(result) == json_type_array)
		{
			Raw			raw;
			size_t		n = json_object_array_length(result);

			FUZZ_CHECK(raw_read(body, size, &raw), "the reference could not read what json-c read");
			FUZZ_CHECK((size_t) raw.nrecords == n && (size_t) scan.nrecords == n,
					   "%zu records, the reference found %d, the scanner %d", n, raw.nrecords, scan.nrecords);
			for (size_t i = 0; i < n; i++)
				check_record(json_object_array_get_idx(result, i), &scan.records[i], &raw.records[i]);
			free(raw.records);
		}
		else
		{
			static const ScannedRecord unscanned;

			check_record(result, &unscanned, NULL);
		}
	}
	json_object_put(result);
	free(body);
	fuzz_reset_memory();
	return 0;
}
