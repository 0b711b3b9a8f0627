/*
 * decode.h: update.webhook records (json-c) to validated events.
 *
 * The rules and the dead-letter reasons are those of the SQL function
 * bridgecore._decode(), which bridgecore.ingest() uses; the worker decodes
 * in C to avoid parsing every batch a second time.
 */
#ifndef BRIDGECORE_DECODE_H
#define BRIDGECORE_DECODE_H

#include "bridgecore.h"
#include "json_scan.h"

#include <json-c/json.h>

typedef struct DecodedEvent
{
	bool		has_odoo_id;
	int64		odoo_id;
	const char *model;
	int64		record_id;
	const char *event;
	TimestampTz occurred_at;
	const char *priority;		/* NULL when empty */
	const char *category;		/* NULL when empty */
	json_object *payload_value; /* the record's payload (not a copy), NULL when empty */
	char	   *payload;		/* its JSON text once decoded_payload_text() wrote it */
	char	   *changed_fields; /* text[] literal, NULL when absent */
	bool		has_user;
	int64		odoo_user_id;
	const char *odoo_user_name;
	char	   *problem;		/* NULL when storable, else the reason */
} DecodedEvent;

extern void decode_record(json_object *rec, uint8 scan_flags, DecodedEvent *out);
extern const char *decoded_payload_text(DecodedEvent *ev);
extern char *dead_letter_record_text(json_object *rec, const ScannedRecord *scanned);

#endif
