/*
 * fuzz_odoo_time.c: parse_odoo_timestamp() and bridgecore._odoo_timestamp().
 *
 * Invariants: the parser accepts exactly the strings the reference grammar
 * accepts (oracle_timestamp), to the same microsecond; an accepted value is
 * a valid timestamp that formats back to the string's fields and parses
 * again to itself; a refused string leaves the result alone; the SQL
 * wrapper answers NULL exactly when the parser refuses.  Nothing throws.
 */
#include "bridgecore.h"

#include "fuzz.h"

/* odoo_time.c: the SQL-callable wrapper (PG_FUNCTION_INFO_V1 declares it there) */
extern Datum bridgecore_odoo_timestamp(PG_FUNCTION_ARGS);

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *) data;
	TimestampTz ts = -42;
	int64		expected = 0;
	bool		ok = parse_odoo_timestamp(s, size, &ts);
	bool		want = oracle_timestamp(s, size, &expected);

	FUZZ_CHECK(ok == want, "parser says %d, reference says %d for \"%.*s\"", ok, want, (int) size, s);
	if (ok)
	{
		char		back[64];
		TimestampTz again = -42;

		FUZZ_CHECK(ts == expected, "%lld, reference %lld", (long long) ts, (long long) expected);
		FUZZ_CHECK(IS_VALID_TIMESTAMP(ts), "%lld out of range", (long long) ts);
		oracle_format_timestamp(ts, back, sizeof(back));
		/* date and time of day as written, whichever separator */
		FUZZ_CHECK(memcmp(back, s, 10) == 0 && memcmp(back + 11, s + 11, 8) == 0,
				   "\"%.*s\" formats back as \"%s\"", (int) size, s, back);
		FUZZ_CHECK(parse_odoo_timestamp(back, strlen(back), &again) && again == ts,
				   "\"%s\" does not parse back to %lld", back, (long long) ts);
	}
	else
		FUZZ_CHECK(ts == -42, "a refused string wrote the result");

	/* The SQL wrapper, on the text the server would pass. */
	if (oracle_utf8(s, size, NULL))
	{
		text	   *t = palloc(VARHDRSZ + size);
		Datum		d;

		LOCAL_FCINFO(fcinfo, 1);

		SET_VARSIZE(t, VARHDRSZ + size);
		memcpy(VARDATA(t), s, size);
		InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
		fcinfo->args[0].value = PointerGetDatum(t);
		fcinfo->args[0].isnull = false;
		d = bridgecore_odoo_timestamp(fcinfo);
		FUZZ_CHECK(fcinfo->isnull == !ok, "SQL wrapper NULL=%d, parser %d", fcinfo->isnull, ok);
		if (ok)
			FUZZ_CHECK(DatumGetTimestampTz(d) == ts, "SQL wrapper gives another value");
	}
	fuzz_reset_memory();
	return 0;
}
