/*
 * claims.h: the request's token claims (request.jwt.claims) and the
 * instance a call acts on.
 */
#ifndef BRIDGECORE_CLAIMS_H
#define BRIDGECORE_CLAIMS_H

#include "bridgecore.h"

#include "utils/jsonb.h"

extern void bc_claims_remember(const char *claims_text, Jsonb *claims);
extern text *bc_claim_user_id(void);
extern text *bc_claim_instance(void);
extern bool bc_instance_exists(int32 id);
extern int32 bc_instance_id(text *instance);

#endif
