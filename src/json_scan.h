/*
 * json_scan.h: what json-c's parse of a batch of records loses, read from
 * the text it parsed.
 *
 * json-c saturates integers beyond 64 bits, truncates a key at \u0000,
 * replaces an unpaired surrogate escape by U+FFFD and reads numbers JSON
 * cannot write (0625, 1e+) as ordinary ones; none of that can be seen in
 * the parsed values.  One pass over the same text finds it, per record.
 */
#ifndef BRIDGECORE_JSON_SCAN_H
#define BRIDGECORE_JSON_SCAN_H

#include "bridgecore.h"

/* What a record's text holds that its parsed values no longer show. */
#define JSON_SCAN_KEY_ESCAPE	0x01	/* \u0000 or an unpaired surrogate escape in a key */
#define JSON_SCAN_STRING_ESCAPE	0x02	/* the same in a string value */
#define JSON_SCAN_BAD_NUMBER	0x04	/* a number JSON cannot write: 0625, 1., 1e+ */
#define JSON_SCAN_BIG_INTEGER	0x08	/* an integer outside [-2^63, 2^64-1] */

typedef struct ScannedRecord
{
	uint8		flags;			/* JSON_SCAN_* */
	char	   *text;			/* the record's text when flags are set, else NULL */
} ScannedRecord;

typedef struct RecordScan
{
	int			nrecords;
	ScannedRecord *records;		/* one per element of the records array */
} RecordScan;

extern bool json_scan_records(const char *text, size_t len, bool rpc_answer, RecordScan *scan);
extern char *json_scan_quote_bad_numbers(const char *text);

#endif
