/*
 * decode.c: one update.webhook record, as Odoo's search_read returns it
 * (false for empty values, [id, "name"] many2ones, naive UTC timestamps,
 * integers above 2^31 as floats, fields missing on older addons), to a
 * validated event or the reason it is a dead letter.
 *
 * Mirrors bridgecore._decode() in the install script: the same checks in
 * the same order, with the same reasons.
 */
#include "decode.h"

#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "mb/pg_wchar.h"
#include "common/jsonapi.h"
#include "utils/json.h"

#include <ctype.h>
#include <math.h>

#define EXCERPT_CHARS 64

/* Odoo's false (and JSON null, and a missing key) mean "empty". */
static bool
is_empty(json_object *v)
{
	return v == NULL || (json_object_is_type(v, json_type_boolean) && !json_object_get_boolean(v));
}

static json_object *
field(json_object *rec, const char *key)
{
	json_object *v = NULL;

	json_object_object_get_ex(rec, key, &v);
	return v;
}

/* An integral JSON number (an int, or a float without fraction) in range. */
static bool
integral(json_object *v, int64 *out)
{
	if (json_object_is_type(v, json_type_int))
	{
		/*
		 * json-c saturates what does not fit in 64 bits to the extremes, so
		 * they cannot be told from a real 2^63-1 or -2^63: both are refused.
		 */
		errno = 0;
		*out = json_object_get_int64(v);
		return errno == 0 && *out != PG_INT64_MAX && *out != PG_INT64_MIN;
	}
	if (json_object_is_type(v, json_type_double))
	{
		double		d = json_object_get_double(v);

		if (!isfinite(d) || d != floor(d) || d < -9.2233720368547758e18 || d >= 9.2233720368547758e18)
			return false;
		*out = (int64) d;
		return true;
	}
	return false;
}

/* jsonb orders object keys: shorter first, then bytewise. */
static int
jsonb_key_cmp(const void *a, const void *b)
{
	const char *ka = *(const char *const *) a;
	const char *kb = *(const char *const *) b;
	size_t		la = strlen(ka);
	size_t		lb = strlen(kb);

	if (la != lb)
		return la < lb ? -1 : 1;
	return memcmp(ka, kb, la);
}

/* Appends v as jsonb's text output writes it, so reasons match the SQL path. */
static void
append_jsonb_style(StringInfo buf, json_object *v)
{
	switch (json_object_get_type(v))
	{
		case json_type_array:
			appendStringInfoChar(buf, '[');
			for (size_t i = 0; i < json_object_array_length(v); i++)
			{
				if (i > 0)
					appendStringInfoString(buf, ", ");
				append_jsonb_style(buf, json_object_array_get_idx(v, i));
			}
			appendStringInfoChar(buf, ']');
			break;
		case json_type_object:
			{
				int			nkeys = json_object_object_length(v);
				const char **keys = palloc(sizeof(char *) * Max(nkeys, 1));
				int			k = 0;

				json_object_object_foreach(v, key, val)
				{
					(void) val;
					keys[k++] = key;
				}
				qsort(keys, nkeys, sizeof(char *), jsonb_key_cmp);
				appendStringInfoChar(buf, '{');
				for (k = 0; k < nkeys; k++)
				{
					if (k > 0)
						appendStringInfoString(buf, ", ");
					escape_json(buf, keys[k]);
					appendStringInfoString(buf, ": ");
					append_jsonb_style(buf, json_object_object_get(v, keys[k]));
				}
				appendStringInfoChar(buf, '}');
				pfree(keys);
				break;
			}
		case json_type_string:
			escape_json(buf, json_object_get_string(v));
			break;
		default:				/* null, boolean, number */
			appendStringInfoString(buf, v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "null");
			break;
	}
}

/* JSON text of a value for a reason, at most 64 characters, or "null". */
static char *
excerpt(json_object *v)
{
	StringInfoData buf;

	if (v == NULL)
		return pstrdup("null");
	initStringInfo(&buf);
	append_jsonb_style(&buf, v);
	return pnstrdup(buf.data, pg_mbcharcliplen(buf.data, buf.len, EXCERPT_CHARS));
}

static bool
valid_model_name(const char *s)
{
	bool		need_word = true;

	if (strlen(s) > 128)
		return false;
	for (; *s; s++)
	{
		if (isalnum((unsigned char) *s) || *s == '_')
			need_word = false;
		else if (*s == '.' && !need_word)
			need_word = true;
		else
			return false;
	}
	return !need_word;
}

/*
 * True when numeric, which jsonb stores numbers in, holds the JSON number
 * s: at most 131072 digits before the decimal point, a display scale of
 * at most 16383 and an exponent below a billion.
 */
static bool
numeric_holds(const char *s)
{
	size_t		nint;
	size_t		nfrac = 0;
	const char *q;
	long		exponent = 0;

	if (*s == '-')
		s++;
	nint = strspn(s, "0123456789");
	q = s + nint;
	if (*q == '.')
	{
		nfrac = strspn(q + 1, "0123456789");
		q += 1 + nfrac;
	}
	if (*q == 'e' || *q == 'E')
	{
		errno = 0;
		exponent = strtol(q + 1, NULL, 10);
		if (errno == ERANGE || exponent >= PG_INT32_MAX / 2 || exponent <= -(PG_INT32_MAX / 2))
			return false;
	}
	if ((int64) nfrac - exponent > 16383)
		return false;
	/* the power of ten of the first digit that is not 0; a zero has none */
	for (size_t i = 0; i < nint + nfrac; i++)
	{
		char		c = i < nint ? s[i] : s[i + 1];

		if (c != '0')
			return (int64) nint - 1 - (int64) i + exponent < 131072;
	}
	return true;
}

/*
 * True when s is a number as JSON writes it.  json-c also reads forms
 * such as 0625.5 and keeps their text, which jsonb would then refuse.
 */
static bool
json_number_syntax(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (*s >= '1' && *s <= '9')
		s += strspn(s, "0123456789");
	else
		return false;
	if (*s == '.')
	{
		size_t		n = strspn(s + 1, "0123456789");

		if (n == 0)
			return false;
		s += 1 + n;
	}
	if (*s == 'e' || *s == 'E')
	{
		size_t		n;

		s++;
		if (*s == '+' || *s == '-')
			s++;
		n = strspn(s, "0123456789");
		if (n == 0)
			return false;
		s += n;
	}
	return *s == '\0';
}

/* True when s (len bytes) is valid UTF-8 without NUL. */
static bool
storable_string(const char *s, size_t len)
{
	return pg_verify_mbstr(PG_UTF8, s, (int) len, true) && strlen(s) == len;
}

/*
 * Why v (part of one record) cannot be stored as it is, or NULL: a string or
 * key that holds a NUL (which PostgreSQL cannot store) or invalid UTF-8, or
 * a number JSON cannot express (json-c, like Python's json module that Odoo
 * uses, reads NaN and Infinity).
 */
static const char *
unstorable_part(json_object *v)
{
	check_stack_depth();
	switch (json_object_get_type(v))
	{
		case json_type_string:
			if (strlen(json_object_get_string(v)) != (size_t) json_object_get_string_len(v))
				return "unstorable record: unsupported Unicode escape sequence";
			if (!storable_string(json_object_get_string(v), json_object_get_string_len(v)))
				return "unstorable record: invalid UTF-8 in a string";
			return NULL;
		case json_type_double:
			/*
			 * json-c keeps a number's text, which reaches jsonb as sent: a
			 * number too large for a double (1e400) is still one numeric
			 * holds.  NaN and Infinity have no text but their names.
			 */
			if (json_number_syntax(json_object_get_string(v)))
				return numeric_holds(json_object_get_string(v)) ? NULL :
					"unstorable record: value overflows numeric format";
			if (!isfinite(json_object_get_double(v)))
				return "unstorable record: NaN or Infinity is not a JSON number";
			return "unstorable record: invalid JSON number";
		case json_type_array:
			for (size_t i = 0; i < json_object_array_length(v); i++)
			{
				const char *why = unstorable_part(json_object_array_get_idx(v, i));

				if (why)
					return why;
			}
			return NULL;
		case json_type_object:
			{
				json_object_object_foreach(v, key, val)
				{
					const char *why;

					if (!storable_string(key, strlen(key)))
						return "unstorable record: invalid UTF-8 in a key";
					if (val && (why = unstorable_part(val)) != NULL)
						return why;
				}
				return NULL;
			}
		default:
			return NULL;
	}
}

/* Appends s (len bytes) as a JSON string, invalid UTF-8 as U+FFFD. */
static void
append_safe_string(StringInfo buf, const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *) s;
	const unsigned char *end = p + len;

	appendStringInfoChar(buf, '"');
	while (p < end)
	{
		if (*p < 0x80)
		{
			switch (*p)
			{
				case '"':
					appendStringInfoString(buf, "\\\"");
					break;
				case '\\':
					appendStringInfoString(buf, "\\\\");
					break;
				default:
					if (*p < 0x20)
						appendStringInfo(buf, "\\u%04x", *p);
					else
						appendStringInfoChar(buf, (char) *p);
			}
			p++;
			continue;
		}
		{
			int			n = bc_utf8_char_length(p, end - p);

			if (n > 0)
			{
				appendBinaryStringInfo(buf, (const char *) p, n);
				p += n;
			}
			else
			{
				appendStringInfoString(buf, "\\ufffd");
				p++;
			}
		}
	}
	appendStringInfoChar(buf, '"');
}

/*
 * Appends v as JSON that PostgreSQL's json type and a dump/restore accept,
 * whatever Odoo sent: invalid UTF-8 becomes U+FFFD, NUL is escaped, NaN,
 * Infinity and numbers JSON cannot write become strings.  For dead letters, which keep the record.
 */
static void
append_safe_json(StringInfo buf, json_object *v)
{
	check_stack_depth();
	switch (json_object_get_type(v))
	{
		case json_type_array:
			appendStringInfoChar(buf, '[');
			for (size_t i = 0; i < json_object_array_length(v); i++)
			{
				if (i > 0)
					appendStringInfoChar(buf, ',');
				append_safe_json(buf, json_object_array_get_idx(v, i));
			}
			appendStringInfoChar(buf, ']');
			break;
		case json_type_object:
			{
				bool		first = true;

				appendStringInfoChar(buf, '{');
				{
					json_object_object_foreach(v, key, val)
					{
						if (!first)
							appendStringInfoChar(buf, ',');
						first = false;
						append_safe_string(buf, key, strlen(key));
						appendStringInfoChar(buf, ':');
						append_safe_json(buf, val);
					}
				}
				appendStringInfoChar(buf, '}');
				break;
			}
		case json_type_string:
			append_safe_string(buf, json_object_get_string(v), json_object_get_string_len(v));
			break;
		case json_type_double:
			{
				double		d = json_object_get_double(v);

				if (!isfinite(d))
				{
					appendStringInfoString(buf, isnan(d) ? "\"NaN\"" : d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
					break;
				}
				/* a number JSON cannot write (json-c keeps 0625.5 as read): as text */
				if (!json_number_syntax(json_object_get_string(v)))
				{
					const char *text = json_object_get_string(v);

					append_safe_string(buf, text, strlen(text));
					break;
				}
			}
			/* FALLTHROUGH */
		default:				/* null, boolean, number */
			appendStringInfoString(buf, v ? json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN) : "null");
			break;
	}
}

/* True when PostgreSQL's json type takes text as it is. */
static bool
json_type_accepts(char *text)
{
	size_t		len = strlen(text);
#if PG_VERSION_NUM >= 170000
	JsonLexContext lex;
	bool		ok;

	/* PostgreSQL 17 lexes into a context the caller gives and frees. */
	if (!pg_verify_mbstr(PG_UTF8, text, (int) len, true))
		return false;
	makeJsonLexContextCstringLen(&lex, text, len, PG_UTF8, false);
	ok = pg_parse_json(&lex, &nullSemAction) == JSON_SUCCESS;
	freeJsonLexContext(&lex);
	return ok;
#else
	return pg_verify_mbstr(PG_UTF8, text, (int) len, true) &&
		pg_parse_json(makeJsonLexContextCstringLen(text, (int) len, PG_UTF8, false),
					  &nullSemAction) == JSON_SUCCESS;
#endif
}

/*
 * The copy of a record a dead letter keeps: valid JSON text.  Where json-c's
 * values lost what the record's text held (a saturated integer, a key cut at
 * a NUL, U+FFFD for a surrogate escape, 625 for 0625), the text as Odoo sent
 * it, if the json type takes it: so the copy shows the record as it was, and
 * a retry of it is refused again instead of storing json-c's changed values.
 * Else that text with its numbers JSON cannot write quoted (as below), if
 * the json type takes that.  Otherwise, the record rebuilt from json-c's
 * values (see above).
 */
char *
dead_letter_record_text(json_object *rec, const ScannedRecord *scanned)
{
	StringInfoData buf;

	if (scanned->text != NULL)
	{
		char	   *quoted;

		if (json_type_accepts(scanned->text))
			return scanned->text;
		if ((scanned->flags & JSON_SCAN_BAD_NUMBER) &&
			(quoted = json_scan_quote_bad_numbers(scanned->text)) != NULL &&
			json_type_accepts(quoted))
			return quoted;
	}
	initStringInfo(&buf);
	append_safe_json(&buf, rec);
	return buf.data;
}

/* '{"a","b"}': a text[] literal of the elements as jsonb_array_elements_text gives them. */
static char *
text_array_literal(json_object *arr)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '{');
	for (size_t i = 0; i < json_object_array_length(arr); i++)
	{
		json_object *e = json_object_array_get_idx(arr, i);
		const char *s;

		if (i > 0)
			appendStringInfoChar(&buf, ',');
		if (e == NULL)
		{
			appendStringInfoString(&buf, "NULL");
			continue;
		}
		if (json_object_is_type(e, json_type_string))
			s = json_object_get_string(e);
		else
		{
			StringInfoData elem;

			initStringInfo(&elem);
			append_jsonb_style(&elem, e);
			s = elem.data;
		}
		appendStringInfoChar(&buf, '"');
		for (; *s; s++)
		{
			if (*s == '"' || *s == '\\')
				appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *s);
		}
		appendStringInfoChar(&buf, '"');
	}
	appendStringInfoChar(&buf, '}');
	return buf.data;
}

/*
 * Why a record whose text holds what scan_flags (JSON_SCAN_*) say cannot be
 * stored, or NULL.  json-c's values no longer show any of it, so these come
 * before what unstorable_part() finds in them, in this order.
 */
static const char *
unstorable_text(uint8 scan_flags)
{
	if (scan_flags & JSON_SCAN_KEY_ESCAPE)
		return "unstorable record: unsupported Unicode escape sequence in a key";
	if (scan_flags & JSON_SCAN_STRING_ESCAPE)
		return "unstorable record: unsupported Unicode escape sequence";
	if (scan_flags & JSON_SCAN_BAD_NUMBER)
		return "unstorable record: invalid JSON number";
	if (scan_flags & JSON_SCAN_BIG_INTEGER)
		return "unstorable record: integer outside the 64-bit range";
	return NULL;
}

/*
 * The payload of a decoded event as JSON text (json-c's serialization,
 * which jsonb_in takes), or NULL when it has none: written only when asked
 * for, since the store path builds the jsonb from the parsed value.
 */
const char *
decoded_payload_text(DecodedEvent *ev)
{
	if (ev->payload == NULL && ev->payload_value != NULL)
		ev->payload = pstrdup(json_object_to_json_string_ext(ev->payload_value,
															 JSON_C_TO_STRING_PLAIN |
															 JSON_C_TO_STRING_NOSLASHESCAPE));
	return ev->payload;
}

/*
 * Decodes rec, one element of a batch json-c parsed; scan_flags are what
 * json_scan_records() found in its text.
 */
void
decode_record(json_object *rec, uint8 scan_flags, DecodedEvent *out)
{
	json_object *v;
	int64		n;

	memset(out, 0, sizeof(*out));
	if (!json_object_is_type(rec, json_type_object))
	{
		out->problem = pstrdup("record is not a JSON object");
		return;
	}
	out->has_odoo_id = integral(field(rec, "id"), &out->odoo_id) && out->odoo_id >= 1;
	{
		const char *why = unstorable_text(scan_flags);

		if (why == NULL)
			why = unstorable_part(rec);

		if (why)
		{
			out->problem = pstrdup(why);
			return;
		}
	}
	if (!out->has_odoo_id)
	{
		out->problem = pstrdup("missing or invalid id");
		return;
	}

	v = field(rec, "model");
	if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0)
	{
		out->problem = pstrdup("missing model");
		return;
	}
	out->model = json_object_get_string(v);
	if (!valid_model_name(out->model))
	{
		out->problem = pstrdup("invalid model name");
		return;
	}

	if (!integral(field(rec, "record_id"), &out->record_id) || out->record_id == 0)
	{
		out->problem = pstrdup("missing or invalid record_id");
		return;
	}

	v = field(rec, "event");
	if (json_object_is_type(v, json_type_string) &&
		(strcmp(json_object_get_string(v), "create") == 0 ||
		 strcmp(json_object_get_string(v), "write") == 0 ||
		 strcmp(json_object_get_string(v), "unlink") == 0))
		out->event = json_object_get_string(v);
	else
	{
		out->problem = psprintf("unknown event %s", excerpt(v));
		return;
	}

	v = field(rec, "timestamp");
	if (!json_object_is_type(v, json_type_string) ||
		!parse_odoo_timestamp(json_object_get_string(v), json_object_get_string_len(v), &out->occurred_at))
	{
		out->problem = psprintf("invalid timestamp %s", excerpt(v));
		return;
	}

	v = field(rec, "priority");
	if (json_object_is_type(v, json_type_string) &&
		(strcmp(json_object_get_string(v), "low") == 0 ||
		 strcmp(json_object_get_string(v), "medium") == 0 ||
		 strcmp(json_object_get_string(v), "high") == 0))
		out->priority = json_object_get_string(v);
	else if (!is_empty(v))
	{
		out->problem = psprintf("unknown priority %s", excerpt(v));
		return;
	}

	v = field(rec, "category");
	if (json_object_is_type(v, json_type_string) && json_object_get_string_len(v) > 0 &&
		pg_mbstrlen_with_len(json_object_get_string(v), json_object_get_string_len(v)) <= 64)
		out->category = json_object_get_string(v);
	else if (!is_empty(v))
	{
		out->problem = psprintf("invalid category %s", excerpt(v));
		return;
	}

	v = field(rec, "payload");
	if (!is_empty(v))
	{
		json_object *changed = NULL;

		out->payload_value = v;
		if (json_object_is_type(v, json_type_object) &&
			json_object_object_get_ex(v, "_changed_fields", &changed) &&
			json_object_is_type(changed, json_type_array))
			out->changed_fields = text_array_literal(changed);
	}

	v = field(rec, "user_id");
	if (json_object_is_type(v, json_type_array) && json_object_array_length(v) == 2 &&
		integral(json_object_array_get_idx(v, 0), &n) && n >= 1 &&
		json_object_is_type(json_object_array_get_idx(v, 1), json_type_string))
	{
		out->has_user = true;
		out->odoo_user_id = n;
		out->odoo_user_name = json_object_get_string(json_object_array_get_idx(v, 1));
	}
	else if (!is_empty(v))
	{
		out->problem = psprintf("invalid user_id %s", excerpt(v));
		return;
	}
}
