/*
 * odoo_client.h: Odoo's JSON-RPC API over libcurl and json-c.
 *
 * Knows nothing about tables.  Every call reports failures in an OdooError
 * that says what kind of failure it was, so callers can decide between
 * retrying, logging in again and backing off.
 */
#ifndef BRIDGECORE_ODOO_CLIENT_H
#define BRIDGECORE_ODOO_CLIENT_H

#include "bridgecore.h"
#include "json_scan.h"

#include <curl/curl.h>
#include <json-c/json.h>

typedef enum OdooErrorKind
{
	ODOO_OK = 0,
	ODOO_ERR_TRANSPORT,			/* connect failure, timeout, reset, TLS */
	ODOO_ERR_TOO_LARGE,			/* response above bridgecore.max_response_size */
	ODOO_ERR_HTTP,				/* HTTP status other than 200 */
	ODOO_ERR_BAD_RESPONSE,		/* not JSON, truncated, not a JSON-RPC answer */
	ODOO_ERR_RPC,				/* JSON-RPC error envelope */
	ODOO_ERR_ACCESS_DENIED,		/* odoo.exceptions.AccessDenied */
	ODOO_ERR_SESSION_EXPIRED,	/* odoo.http.SessionExpiredException */
	ODOO_ERR_AUTH_FAILED,		/* login answered false: wrong credentials */
	ODOO_ERR_STORE				/* storing the batch failed in the database */
} OdooErrorKind;

typedef struct OdooError
{
	OdooErrorKind kind;
	long		http_status;
	int			retry_after_s;	/* from Retry-After, or -1 */
	const char *secret;			/* masked in message before it is cut */
	bool		record_sized;	/* a failure one record can cause: too large, too deep */
	char		message[512];	/* valid UTF-8, free of the secret */
} OdooError;

typedef struct OdooClient
{
	CURL	   *easy;			/* kept between calls, so connections are reused */
	CURLM	   *multi;			/* the client's own, or the caller's (odoo_client_create_in) */
	bool		owns_multi;
	char	   *endpoint;		/* <url>/jsonrpc */
	char	   *database;
	char	   *login;
	char	   *secret;
	bool		verify_tls;
	int64		uid;			/* 0 until logged in */
	int64		request_id;
	uint64		bytes_received;
	void	   *pending;		/* a call started and not read yet, or NULL */
	void	   *owner;			/* odoo_client_create_in's owner */
} OdooClient;

/* An instance's access settings (odoo_call.c), read by the extension owner. */
typedef struct InstanceAccess
{
	char	   *name;
	char	   *url;
	char	   *database;
	char	   *login;
	char	   *secret;
	bool		verify_tls;
} InstanceAccess;

extern void bc_read_instance(int32 instance_id, InstanceAccess *out);

extern const char *odoo_error_kind_name(OdooErrorKind kind);
extern void odoo_scrub_secret(char *msg, size_t size, const char *secret);
extern OdooClient *odoo_client_create(const char *url, const char *database,
									  const char *login, const char *secret,
									  bool verify_tls);
extern void odoo_client_destroy(OdooClient *client);
extern bool odoo_login(OdooClient *client, OdooError *err);
extern json_object *odoo_classify_answer(const char *body, size_t len, RecordScan *scan,
										 OdooError *err);
extern OdooClient *odoo_client_create_in(CURLM *multi, void *owner, const char *url,
										 const char *database, const char *login,
										 const char *secret, bool verify_tls);
extern OdooClient *odoo_client_of(CURL *easy);
extern void odoo_start_login(OdooClient *client);
extern void odoo_start_execute_kw(OdooClient *client, const char *model, const char *method,
								  json_object *args, json_object *kwargs);
extern bool odoo_call_pending(OdooClient *client);
extern void odoo_call_done(OdooClient *client, CURLcode rc);
extern bool odoo_call_finished(OdooClient *client);
extern json_object *odoo_finish_call(OdooClient *client, RecordScan *scan, OdooError *err);
extern bool odoo_finish_login(OdooClient *client, OdooError *err);
extern void odoo_cancel_call(OdooClient *client);
extern json_object *odoo_execute_kw(OdooClient *client, const char *model,
									const char *method, json_object *args,
									json_object *kwargs, RecordScan *scan,
									OdooError *err);

#endif
