/*
 * fuzz_decode.c: decode_record() on what the worker would hand it.
 *
 * The input is the body of a search_read answer: it goes through
 * odoo_classify_answer() as in rpc_call(), and every element of the
 * resulting list (or the result itself when it is no list) is decoded.
 *
 * A separate reference decoder, written from the documented ingestion
 * rules (docs/sql-api.md, ingest), names the reason each record must get
 * (or none).
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
				const char *text = json_object_to_json_string_ext(v, JSON_C_TO_STRING_PLAIN);

				if (!isfinite(json_object_get_double(v)))
					why = "unstorable record: NaN or Infinity is not a JSON number";
				else if (!oracle_json(text, strlen(text), false))
					why = "unstorable record: invalid JSON number";
				else if (!oracle_numeric_fits(text, strlen(text)))
					why = "unstorable record: value overflows numeric format";
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
reference_reason(json_object *rec, bool *has_id, int64 *id)
{
	json_object *v;
	int64		n;
	size_t		chars;
	const char *reason;

	*has_id = false;
	if (json_object_get_type(rec) != json_type_object)
		return "record is not a JSON object";
	*has_id = whole(get(rec, "id"), id) && *id >= 1;
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

static void
check_record(json_object *rec)
{
	DecodedEvent ev;
	bool		has_id;
	int64		id = 0;
	const char *want = reference_reason(rec, &has_id, &id);

	memset(&ev, 0xa5, sizeof(ev));
	decode_record(rec, &ev);

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
			FUZZ_CHECK(ev.payload == NULL && ev.changed_fields == NULL, "payload for an empty one");
		else
		{
			json_object *changed = get(v, "_changed_fields");

			FUZZ_CHECK(ev.payload != NULL, "no payload");
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
		char	   *copy = dead_letter_record_text(rec);

		FUZZ_CHECK(oracle_json(copy, strlen(copy), false), "dead-letter copy is not JSON: %.200s", copy);
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
	json_object *result;

	memcpy(body, data, size);
	body[size] = '\0';
	memset(&err, 0, sizeof(err));
	result = odoo_classify_answer(body, size, &err);
	if (result != NULL)
	{
		if (json_object_get_type(result) == json_type_array)
			for (size_t i = 0; i < json_object_array_length(result); i++)
				check_record(json_object_array_get_idx(result, i));
		else
			check_record(result);
	}
	json_object_put(result);
	free(body);
	fuzz_reset_memory();
	return 0;
}
