/*
 * ingest.h: storing a batch of update.webhook records (the worker's path).
 */
#ifndef BRIDGECORE_INGEST_H
#define BRIDGECORE_INGEST_H

#include "bridgecore.h"
#include "decode.h"
#include "json_scan.h"

#include <json-c/json.h>

/*
 * Deepest nesting read from Odoo or ingest(): deep enough for any record
 * Odoo writes, small enough that the parser's stack stays a few kilobytes.
 */
#define BC_JSON_MAX_DEPTH 1000

typedef struct IngestSummary
{
	int64		inserted;
	int64		duplicates;
	int64		dead_lettered;
	int64		notifications;	/* one per model with new events */
	bool		has_newest;
	TimestampTz newest;			/* latest Odoo timestamp among valid records */
	int64	   *seen;			/* every valid Odoo id in the batch */
	int			nseen;
} IngestSummary;

extern void ingest_batch(int32 instance_id, const char *instance_name,
						 json_object *records, const RecordScan *scan,
						 IngestSummary *summary);

/* ingest_direct.c: the valid records straight into the log, if it is the known one */
extern bool ingest_direct(int32 instance_id, const char *instance_name, DecodedEvent **ev,
						  int n, bool keep_summary, TimestampTz started, IngestSummary *summary);

#endif
