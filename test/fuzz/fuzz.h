/*
 * fuzz.h: what the libFuzzer targets share.
 *
 * The targets link BridgeCore's parsers with stand-ins for the few backend
 * functions they call (stubs.c) and with independent reference checks
 * (oracle.c), written separately from the code under test, so a target
 * checks results, not only the absence of crashes.
 */
#ifndef BRIDGECORE_FUZZ_H
#define BRIDGECORE_FUZZ_H

#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

/* stubs.c: the memory of one input, released like a reset memory context */
extern void fuzz_reset_memory(void);

/*
 * stubs.c: the last ereport(ERROR).  Targets whose code may raise errors
 * catch them by pointing PG_exception_stack at a sigjmp_buf, as the
 * backend's main loop does; with PG_exception_stack NULL an ERROR is
 * reported as a finding (the code promised not to throw).
 */
typedef struct FuzzErrorData
{
	int			elevel;
	int			sqlerrcode;
	char		message[2048];
	char		detail[2048];
	char		hint[2048];
} FuzzErrorData;

extern FuzzErrorData fuzz_error;

/* oracle.c */
extern bool oracle_utf8(const char *s, size_t len, size_t *nchars);
extern size_t oracle_utf8_prefix(const char *s, size_t len, size_t max_chars);
extern bool oracle_json(const char *s, size_t len, bool as_jsonb);
extern bool oracle_numeric_fits(const char *s, size_t len);
extern bool oracle_timestamp(const char *s, size_t len, int64 *usecs);
extern void oracle_format_timestamp(int64 usecs, char *buf, size_t size);
extern bool oracle_model_name(const char *s);

/* Reports a broken invariant with the input's context and aborts. */
#define FUZZ_CHECK(cond, ...) \
	do { \
		if (!(cond)) \
		{ \
			fprintf(stderr, "invariant broken at %s:%d: %s\n  ", __FILE__, __LINE__, #cond); \
			fprintf(stderr, __VA_ARGS__); \
			fputc('\n', stderr); \
			abort(); \
		} \
	} while (0)

#endif
