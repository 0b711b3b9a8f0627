/*
 * stubs.c: stand-ins for the backend functions the fuzzed sources call,
 * so they link without a server.
 *
 * PostgreSQL's frontend libraries (libpgcommon.a, libpgport.a) supply the
 * real StringInfo, psprintf, snprintf, the UTF-8 tables of wchar.c and
 * the JSON parser of jsonapi.c.  What only the backend has is written here
 * to the behaviour of PostgreSQL 15.20:
 *
 *   - palloc and friends: one list of chunks per input, freed by
 *     fuzz_reset_memory() the way the worker's per-batch memory context is
 *     reset, so LeakSanitizer reports only real leaks (json-c objects);
 *   - ereport/elog: ERROR and above record the error in fuzz_error and
 *     longjmp to PG_exception_stack, or abort when nothing catches them;
 *     lower levels are dropped;
 *   - the pg_mb* functions with the database encoding UTF8, including the
 *     bounds checks of 15.16 and later ("invalid byte sequence" for a
 *     character cut off by the length);
 *   - escape_json, day_tab and tm2timestamp (without time zone);
 *   - json_errdetail, which the frontend jsonapi.o lacks: the error code
 *     and the offending token, as the backend's messages quote it.
 */
#include "postgres.h"

#include "common/jsonapi.h"
#include "datatype/timestamp.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/datetime.h"
#include "utils/json.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include <setjmp.h>
#include <signal.h>

#include "fuzz.h"

/* ---------------------------------------------------------------- memory */

typedef struct Chunk
{
	struct Chunk *prev;
	struct Chunk *next;
	size_t		size;
	size_t		magic;
} Chunk;

#define CHUNK_MAGIC ((size_t) 0x6272636f72656663)

static Chunk chunks = {&chunks, &chunks, 0, 0};

MemoryContext CurrentMemoryContext = NULL;
MemoryContext TopMemoryContext = NULL;

static void
link_chunk(Chunk *c)
{
	c->next = chunks.next;
	c->prev = &chunks;
	chunks.next->prev = c;
	chunks.next = c;
}

static void
unlink_chunk(Chunk *c)
{
	c->prev->next = c->next;
	c->next->prev = c->prev;
}

static Chunk *
chunk_of(void *p)
{
	Chunk	   *c = (Chunk *) p - 1;

	if (c->magic != CHUNK_MAGIC)
	{
		fprintf(stderr, "pfree/repalloc of a pointer palloc did not return\n");
		abort();
	}
	return c;
}

void *
palloc_extended(Size size, int flags)
{
	Chunk	   *c;

	if (!((flags & MCXT_ALLOC_HUGE) ? AllocHugeSizeIsValid(size) : AllocSizeIsValid(size)))
		elog(ERROR, "invalid memory alloc request size %zu", size);
	c = malloc(sizeof(Chunk) + size);
	if (c == NULL)
	{
		if (flags & MCXT_ALLOC_NO_OOM)
			return NULL;
		elog(ERROR, "out of memory");
	}
	c->size = size;
	c->magic = CHUNK_MAGIC;
	link_chunk(c);
	if (flags & MCXT_ALLOC_ZERO)
		memset(c + 1, 0, size);
	return c + 1;
}

void *
palloc(Size size)
{
	return palloc_extended(size, 0);
}

void *
palloc0(Size size)
{
	return palloc_extended(size, MCXT_ALLOC_ZERO);
}

void *
MemoryContextAlloc(MemoryContext context, Size size)
{
	return palloc(size);
}

void *
MemoryContextAllocZero(MemoryContext context, Size size)
{
	return palloc0(size);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	return palloc_extended(size, flags);
}

void *
repalloc(void *pointer, Size size)
{
	Chunk	   *c = chunk_of(pointer);
	Chunk	   *n;

	if (!AllocSizeIsValid(size))
		elog(ERROR, "invalid memory alloc request size %zu", size);
	unlink_chunk(c);
	n = realloc(c, sizeof(Chunk) + size);
	if (n == NULL)
	{
		link_chunk(c);
		elog(ERROR, "out of memory");
	}
	n->size = size;
	link_chunk(n);
	return n + 1;
}

void
pfree(void *pointer)
{
	Chunk	   *c = chunk_of(pointer);

	unlink_chunk(c);
	c->magic = 0;
	free(c);
}

char *
pstrdup(const char *in)
{
	size_t		len = strlen(in);
	char	   *out = palloc(len + 1);

	memcpy(out, in, len + 1);
	return out;
}

char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);
	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

char *
MemoryContextStrdup(MemoryContext context, const char *string)
{
	return pstrdup(string);
}

void
fuzz_reset_memory(void)
{
	while (chunks.next != &chunks)
	{
		Chunk	   *c = chunks.next;

		unlink_chunk(c);
		c->magic = 0;
		free(c);
	}
}

/* ---------------------------------------------------------------- errors */

FuzzErrorData fuzz_error;
sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
volatile sig_atomic_t InterruptPending = false;

static int	pending_elevel;

bool
message_level_is_interesting(int elevel)
{
	return elevel >= ERROR;
}

bool
errstart(int elevel, const char *domain)
{
	if (elevel < ERROR)
		return false;
	memset(&fuzz_error, 0, sizeof(fuzz_error));
	pending_elevel = elevel;
	fuzz_error.elevel = elevel;
	fuzz_error.sqlerrcode = ERRCODE_INTERNAL_ERROR;
	return true;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
pg_re_throw(void)
{
	if (PG_exception_stack != NULL)
		siglongjmp(*PG_exception_stack, 1);
	fprintf(stderr, "ereport(%d) that nothing catches: %s (SQLSTATE %s)\n",
			fuzz_error.elevel, fuzz_error.message, unpack_sql_state(fuzz_error.sqlerrcode));
	abort();
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (pending_elevel >= ERROR)
	{
		if (PG_exception_stack == NULL)
			fprintf(stderr, "ERROR raised at %s:%d (%s)\n", filename, lineno, funcname);
		pg_re_throw();
	}
}

int
errcode(int sqlerrcode)
{
	fuzz_error.sqlerrcode = sqlerrcode;
	return 0;
}

#define FORMAT_INTO(field) \
	do { \
		va_list		ap; \
		va_start(ap, fmt); \
		vsnprintf(fuzz_error.field, sizeof(fuzz_error.field), fmt, ap); \
		va_end(ap); \
	} while (0)

int
errmsg(const char *fmt,...)
{
	FORMAT_INTO(message);
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	FORMAT_INTO(message);
	return 0;
}

int
errdetail(const char *fmt,...)
{
	FORMAT_INTO(detail);
	return 0;
}

int
errhint(const char *fmt,...)
{
	FORMAT_INTO(hint);
	return 0;
}

char *
unpack_sql_state(int sql_state)
{
	static char buf[12];

	for (int i = 0; i < 5; i++)
	{
		buf[i] = PGUNSIXBIT(sql_state);
		sql_state >>= 6;
	}
	buf[5] = '\0';
	return buf;
}

void
ProcessInterrupts(void)
{
	InterruptPending = false;
}

/* ------------------------------------------------------------- encodings */

int
GetDatabaseEncoding(void)
{
	return PG_UTF8;
}

int
pg_database_encoding_max_length(void)
{
	return 4;
}

/* 15.16+: a character running past the end is an encoding error. */
static void
report_cut_character(const char *mbstr, int len)
{
	StringInfoData bytes;

	initStringInfo(&bytes);
	for (int i = 0; i < len; i++)
		appendStringInfo(&bytes, "%s0x%02x", i ? " " : "", (unsigned char) mbstr[i]);
	ereport(ERROR,
			(errcode(ERRCODE_CHARACTER_NOT_IN_REPERTOIRE),
			 errmsg("invalid byte sequence for encoding \"UTF8\": %s", bytes.data)));
}

int
pg_mblen(const char *mbstr)
{
	return pg_utf_mblen((const unsigned char *) mbstr);
}

int
pg_mblen_with_len(const char *mbstr, int limit)
{
	int			l = pg_utf_mblen((const unsigned char *) mbstr);

	if (l > limit)
		report_cut_character(mbstr, limit);
	return l;
}

int
pg_mbstrlen_with_len(const char *mbstr, int limit)
{
	int			n = 0;

	while (limit > 0 && *mbstr)
	{
		int			l = pg_mblen_with_len(mbstr, limit);

		limit -= l;
		mbstr += l;
		n++;
	}
	return n;
}

int
pg_mbcharcliplen(const char *mbstr, int len, int limit)
{
	int			bytes = 0;
	int			nch = 0;

	/* as in 15.16+, the character after the limit is measured too */
	while (len > 0 && *mbstr)
	{
		int			l = pg_mblen_with_len(mbstr, len);

		if (++nch > limit)
			break;
		bytes += l;
		len -= l;
		mbstr += l;
	}
	return bytes;
}

/* ------------------------------------------------------------------ json */

void
escape_json(StringInfo buf, const char *str)
{
	appendStringInfoChar(buf, '"');
	for (const char *p = str; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		switch (c)
		{
			case '\b':
				appendStringInfoString(buf, "\\b");
				break;
			case '\f':
				appendStringInfoString(buf, "\\f");
				break;
			case '\n':
				appendStringInfoString(buf, "\\n");
				break;
			case '\r':
				appendStringInfoString(buf, "\\r");
				break;
			case '\t':
				appendStringInfoString(buf, "\\t");
				break;
			case '"':
				appendStringInfoString(buf, "\\\"");
				break;
			case '\\':
				appendStringInfoString(buf, "\\\\");
				break;
			default:
				if (c < ' ')
					appendStringInfo(buf, "\\u%04x", c);
				else
					appendStringInfoChar(buf, (char) c);
				break;
		}
	}
	appendStringInfoChar(buf, '"');
}

char *
json_errdetail(JsonParseErrorType error, JsonLexContext *lex)
{
	if (lex->token_start == NULL || lex->token_terminator == NULL ||
		lex->token_terminator < lex->token_start)
		return psprintf("JSON parse error %d.", (int) error);
	return psprintf("JSON parse error %d at \"%.*s\".", (int) error,
					(int) (lex->token_terminator - lex->token_start), lex->token_start);
}

/* ------------------------------------------------------------------ time */

const int	day_tab[2][13] = {
	{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 0},
	{31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 0}
};

/* Days from 2000-01-01 (proleptic Gregorian), by eras of 400 years. */
static int64
days_from_2000(int y, int m, int d)
{
	int64		era;
	int64		yoe;
	int64		doy;
	int64		doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468 - 10957;	/* 1970-01-01, then 2000-01-01 */
}

int
tm2timestamp(struct pg_tm *tm, fsec_t fsec, int *tzp, Timestamp *result)
{
	int64		days;

	if (tzp != NULL)
	{
		fprintf(stderr, "tm2timestamp stand-in: time zones are not supported\n");
		abort();
	}
	if (!IS_VALID_JULIAN(tm->tm_year, tm->tm_mon, tm->tm_mday))
		return -1;
	days = days_from_2000(tm->tm_year, tm->tm_mon, tm->tm_mday);
	*result = days * USECS_PER_DAY +
		((int64) tm->tm_hour * 3600 + tm->tm_min * 60 + tm->tm_sec) * USECS_PER_SEC + fsec;
	if (!IS_VALID_TIMESTAMP(*result))
		return -1;
	return 0;
}

/* ---------------------------------------------------------------- fmgr */

struct varlena *
pg_detoast_datum_packed(struct varlena *datum)
{
	if (VARATT_IS_COMPRESSED(datum) || VARATT_IS_EXTERNAL(datum))
	{
		fprintf(stderr, "pg_detoast_datum_packed stand-in: toasted datum\n");
		abort();
	}
	return datum;
}

/* ------------------------------------------------- the module's settings */

int			bridgecore_connect_timeout_ms = 5000;
int			bridgecore_request_timeout_ms = 30000;
int			bridgecore_max_response_kb = 10240;

/* mbutils.c: the encoding check the decoder uses (UTF8 only here). */
bool
pg_verify_mbstr(int encoding, const char *mbstr, int len, bool noError)
{
	if (pg_encoding_verifymbstr(encoding, mbstr, len) == len)
		return true;
	if (!noError)
		elog(ERROR, "invalid byte sequence for encoding");
	return false;
}

/* The fuzzers' nesting is bounded by the JSON parser's depth limit. */
void
check_stack_depth(void)
{
}
