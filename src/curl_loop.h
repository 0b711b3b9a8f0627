/*
 * curl_loop.h: a curl multi handle driven beside the process latch.
 */
#ifndef BRIDGECORE_CURL_LOOP_H
#define BRIDGECORE_CURL_LOOP_H

#include <curl/curl.h>

typedef struct CurlLoop CurlLoop;

extern CurlLoop *curl_loop_create(void);
extern CURLM *curl_loop_multi(CurlLoop *loop);
extern void curl_loop_wait(CurlLoop *loop, long timeout_ms);
extern void curl_loop_kick(CurlLoop *loop);
extern CURL *curl_loop_next_done(CurlLoop *loop, CURLcode *rc);

#endif
