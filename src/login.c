/*
 * login.c: bridgecore._odoo_authenticate(), the check of an app user's
 * credentials against the user's Odoo instance for bridgecore.login().
 *
 * The credentials go to Odoo's common.authenticate through the extension's
 * JSON-RPC client (odoo_client.c: the worker's timeouts and limits,
 * interrupts served while waiting, the password masked in every message).
 * Odoo answers false both for wrong credentials and while it refuses
 * logins: after login_cooldown_after (5) failures from one address it
 * refuses every login from that address for login_cooldown_duration (60 s),
 * and each failure after that starts the wait again, until a login
 * succeeds.  Every login of this server comes from one address, so the
 * failures are counted here too, per instance, in shared memory: while Odoo
 * is known to refuse, a login fails at once with PT429 and the seconds to
 * wait, instead of asking Odoo (and telling a user with the right password
 * that it is wrong).
 */
#include "bridgecore.h"
#include "odoo_client.h"

#include "storage/spin.h"

PG_FUNCTION_INFO_V1(bridgecore_odoo_authenticate);

/* Instances, over all databases, whose failed logins are counted. */
#define LOGIN_SLOTS 256

int			bridgecore_login_cooldown_after = 5;
int			bridgecore_login_cooldown_duration_s = 60;

typedef struct LoginSlot
{
	Oid			database_id;
	int32		instance_id;
	int32		failures;		/* since the last success; 0: slot free */
	TimestampTz last_failure;
} LoginSlot;

typedef struct LoginShared
{
	slock_t		mutex;
	LoginSlot	slots[LOGIN_SLOTS];
} LoginShared;

static LoginShared *login_shared = NULL;

void
LoginDefineGucs(void)
{
	DefineCustomIntVariable("bridgecore.login_cooldown_after",
							"Failed logins after which Odoo refuses logins for a while, as Odoo's base.login_cooldown_after (0 = never assume it does).",
							NULL, &bridgecore_login_cooldown_after, 5, 0, 1000,
							PGC_SUSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("bridgecore.login_cooldown_duration",
							"How long Odoo refuses logins after too many failures, as Odoo's base.login_cooldown_duration.",
							NULL, &bridgecore_login_cooldown_duration_s, 60, 1, 86400,
							PGC_SUSET, GUC_UNIT_S, NULL, NULL, NULL);
}

Size
LoginShmemSize(void)
{
	return sizeof(LoginShared);
}

void
LoginShmemInit(void)
{
	bool		found;

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	login_shared = ShmemInitStruct("bridgecore login failures", LoginShmemSize(), &found);
	if (!found)
	{
		memset(login_shared, 0, sizeof(LoginShared));
		SpinLockInit(&login_shared->mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/* The instance's slot, or NULL; with the mutex held. */
static LoginSlot *
slot_find(int32 instance_id)
{
	for (int i = 0; i < LOGIN_SLOTS; i++)
	{
		LoginSlot  *slot = &login_shared->slots[i];

		if (slot->failures > 0 && slot->database_id == MyDatabaseId &&
			slot->instance_id == instance_id)
			return slot;
	}
	return NULL;
}

/*
 * Seconds until Odoo accepts logins of the instance again, or 0 when it is
 * not known to refuse them.
 */
static long
cooldown_left(int32 instance_id, TimestampTz now)
{
	LoginSlot  *slot;
	long		left = 0;

	if (login_shared == NULL || bridgecore_login_cooldown_after == 0)
		return 0;
	SpinLockAcquire(&login_shared->mutex);
	slot = slot_find(instance_id);
	if (slot != NULL && slot->failures >= bridgecore_login_cooldown_after)
	{
		long		elapsed = (long) ((now - slot->last_failure) / USECS_PER_SEC);

		if (elapsed < bridgecore_login_cooldown_duration_s)
			left = bridgecore_login_cooldown_duration_s - elapsed;
	}
	SpinLockRelease(&login_shared->mutex);
	return left;
}

/* Counts a refused login (failed = true) or clears the count (a success). */
static void
note_outcome(int32 instance_id, bool failed, TimestampTz now)
{
	LoginSlot  *slot;

	if (login_shared == NULL)
		return;
	SpinLockAcquire(&login_shared->mutex);
	slot = slot_find(instance_id);
	if (slot == NULL && failed)
	{
		/* A free slot, else the one whose last failure is oldest. */
		for (int i = 0; i < LOGIN_SLOTS; i++)
		{
			LoginSlot  *s = &login_shared->slots[i];

			if (s->failures == 0)
			{
				slot = s;
				break;
			}
			if (slot == NULL || s->last_failure < slot->last_failure)
				slot = s;
		}
		slot->database_id = MyDatabaseId;
		slot->instance_id = instance_id;
		slot->failures = 0;
	}
	if (slot != NULL)
	{
		if (failed)
		{
			slot->failures++;
			slot->last_failure = now;
		}
		else
			slot->failures = 0;
	}
	SpinLockRelease(&login_shared->mutex);
}

/*
 * bridgecore._odoo_authenticate(instance_id int, login text, password text)
 * returns bigint: the Odoo user id of the credentials, or an error:
 *   28P01 (PT401 through PostgREST)  Odoo refused the credentials
 *   PT429                            Odoo refuses logins for a while
 *   08006                            Odoo could not be reached or did not
 *                                    answer JSON-RPC
 *   38000                            Odoo answered with an error
 */
Datum
bridgecore_odoo_authenticate(PG_FUNCTION_ARGS)
{
	int32		instance_id = PG_GETARG_INT32(0);
	char	   *login = text_to_cstring(PG_GETARG_TEXT_PP(1));
	char	   *password = text_to_cstring(PG_GETARG_TEXT_PP(2));
	InstanceAccess inst;
	OdooClient *volatile client = NULL;
	OdooError	err;
	volatile bool ok = false;
	volatile int64 uid = 0;
	long		wait_s;

	bc_read_instance(instance_id, &inst);
	explicit_bzero(inst.secret, strlen(inst.secret));	/* not needed here */

	wait_s = cooldown_left(instance_id, GetCurrentTimestamp());
	if (wait_s > 0)
		ereport(ERROR,
				(errcode(ERRCODE_BRIDGECORE_RATE_LIMITED),
				 errmsg("too many failed logins at Odoo instance \"%s\"", inst.name),
				 errdetail("After %d failed logins Odoo refuses every login from this server for %d seconds.",
						   bridgecore_login_cooldown_after, bridgecore_login_cooldown_duration_s),
				 errhint("Retry in %ld seconds.", wait_s)));

	PG_TRY();
	{
		client = odoo_client_create(inst.url, inst.database, login, password, inst.verify_tls);
		ok = odoo_login(client, &err);
		uid = client->uid;
	}
	PG_FINALLY();
	{
		odoo_client_destroy(client);
		explicit_bzero(password, strlen(password));
	}
	PG_END_TRY();

	if (ok)
	{
		note_outcome(instance_id, false, GetCurrentTimestamp());
		PG_RETURN_INT64(uid);
	}
	if (err.kind == ODOO_ERR_AUTH_FAILED || err.kind == ODOO_ERR_ACCESS_DENIED)
	{
		note_outcome(instance_id, true, GetCurrentTimestamp());
		ereport(ERROR,
				(errcode(bc_unauthorized_errcode(ERRCODE_INVALID_PASSWORD)),
				 errmsg("wrong username or password"),
				 errdetail("Odoo instance \"%s\" refused the login of \"%s\".", inst.name,
						   pnstrdup(login, bc_utf8_clip_length(login, 64))),
				 errhint("Check the username and password. After %d failed logins Odoo refuses every login for %d seconds.",
						 bridgecore_login_cooldown_after, bridgecore_login_cooldown_duration_s)));
	}
	if (err.kind == ODOO_ERR_RPC || err.kind == ODOO_ERR_SESSION_EXPIRED)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("Odoo instance \"%s\" answered the login with an error", inst.name),
				 errdetail("%s", err.message),
				 errhint("Check the instance's database name and Odoo's log.")));
	ereport(ERROR,
			(errcode(ERRCODE_CONNECTION_FAILURE),
			 errmsg("could not reach Odoo instance \"%s\"", inst.name),
			 errdetail("%s: %s", odoo_error_kind_name(err.kind), err.message),
			 errhint("Retry later; bridgecore.instances shows what the worker sees.")));
	PG_RETURN_NULL();			/* not reached */
}
