/*
 * sync_token.h: the sync tokens bridgecore.sync_pull() hands out.
 */
#ifndef BRIDGECORE_SYNC_TOKEN_H
#define BRIDGECORE_SYNC_TOKEN_H

#include "bridgecore.h"

extern bool sync_token_parse(const char *s, size_t len, int32 *instance_id, int64 *position,
							 int64 *resets);
extern int64 sync_token_position(text *token, int32 inst, int64 *resets);

#endif
