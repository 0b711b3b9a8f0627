/*
 * stats.h: counters kept in shared memory by the worker and the SQL
 * functions.  They cost no table writes, survive a worker restart and are
 * reset by a server restart or bridgecore.stats_reset().
 */
#ifndef BRIDGECORE_STATS_H
#define BRIDGECORE_STATS_H

#include "bridgecore.h"

/* Kinds of failed polls; the order of OdooErrorKind after ODOO_OK. */
#define STATS_ERROR_KINDS 9

/* Histogram bucket upper bounds, in seconds (plus +Inf). */
#define STATS_BUCKETS 11

extern int	bridgecore_max_instances;
extern int	bridgecore_max_stat_models;

extern void BcStatsDefineGucs(void);
extern Size BcStatsShmemSize(void);
extern void BcStatsShmemInit(void);

extern void stats_count_poll(int32 instance_id, int error_kind, uint64 bytes,
							 double seconds);
extern void stats_count_ingest(int32 instance_id, int64 inserted, int64 duplicates,
							   int64 dead_letters, int64 notifications, double seconds);
extern void stats_note_success(int32 instance_id);
extern void stats_count_model(int32 instance_id, const char *model, int64 events,
							  double seconds);

#endif
