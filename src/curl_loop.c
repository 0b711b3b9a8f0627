/*
 * curl_loop.c: one curl multi handle driven beside the process latch.
 *
 * A poller drives the HTTP calls of all its instances through one multi
 * handle, and must still wake at once for its latch (a ring, the launcher,
 * SIGTERM) and for postmaster death.  On Linux, curl tells us its sockets
 * (CURLMOPT_SOCKETFUNCTION) and we keep them in an epoll set of our own; the
 * process waits in one WaitEventSet on its latch, postmaster death and that
 * epoll descriptor (readable when any curl socket is ready), with a timeout
 * no later than curl's own timer (CURLMOPT_TIMERFUNCTION).  This is the
 * curl_multi_socket_action() pattern, so the cost of a wake is the sockets
 * that are ready, not the number of transfers.  Elsewhere, the loop waits on
 * the latch in steps of at most 10 ms and calls curl_multi_perform().
 */
#include "bridgecore.h"
#include "curl_loop.h"

#include "miscadmin.h"
#include "pgstat.h"
#include "portability/instr_time.h"
#include "storage/latch.h"
#include "utils/memutils.h"

#ifdef __linux__
#include <sys/epoll.h>
#define BC_CURL_LOOP_EPOLL 1
#endif

#include <math.h>
#include <unistd.h>

/* ready sockets read per wake; more are simply read at the next one */
#define MAX_READY_SOCKETS 64
/* without epoll: longest wait before curl is driven again */
#define POLL_STEP_MS 10

struct CurlLoop
{
	CURLM	   *multi;
	WaitEventSet *wait_set;
	int			epoll_fd;		/* -1 without epoll */
	bool		timer_set;		/* curl asked to be called timer_ms after timer_from */
	instr_time	timer_from;		/* monotonic: a clock step moves no timeout */
	long		timer_ms;
	int			running;
};

#ifdef BC_CURL_LOOP_EPOLL
/* curl says which events it wants on a socket, or that it is done with it. */
static int
on_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	CurlLoop   *loop = (CurlLoop *) userp;
	struct epoll_event ev;

	if (what == CURL_POLL_REMOVE)
	{
		/* the socket may already be closed: then the kernel dropped it */
		(void) epoll_ctl(loop->epoll_fd, EPOLL_CTL_DEL, s, NULL);
		return 0;
	}
	memset(&ev, 0, sizeof(ev));
	ev.data.fd = s;
	ev.events = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	/*
	 * A descriptor number can come back for a new socket before curl said
	 * REMOVE for the old one (closed, so already out of the set): try both.
	 */
	if (epoll_ctl(loop->epoll_fd, EPOLL_CTL_MOD, s, &ev) != 0 &&
		epoll_ctl(loop->epoll_fd, EPOLL_CTL_ADD, s, &ev) != 0)
		ereport(LOG,
				(errcode_for_socket_access(),
				 errmsg("bridgecore could not watch an HTTP socket: %m"),
				 errdetail("The transfer then ends at its timeout.")));
	return 0;
}
#endif

/* curl asks to be called in timeout_ms (-1: its timer is off). */
static int
on_timer(CURLM *multi, long timeout_ms, void *userp)
{
	CurlLoop   *loop = (CurlLoop *) userp;

	loop->timer_set = timeout_ms >= 0;
	if (loop->timer_set)
	{
		INSTR_TIME_SET_CURRENT(loop->timer_from);
		loop->timer_ms = timeout_ms;
	}
	return 0;
}

/* Milliseconds until curl's timer is due (0: due now); only while it is set. */
static long
timer_left_ms(CurlLoop *loop)
{
	instr_time	elapsed;
	double		left;

	INSTR_TIME_SET_CURRENT(elapsed);
	INSTR_TIME_SUBTRACT(elapsed, loop->timer_from);
	left = (double) loop->timer_ms - INSTR_TIME_GET_MILLISEC(elapsed);
	return left <= 0 ? 0 : (long) ceil(left);
}

CurlLoop *
curl_loop_create(void)
{
	CurlLoop   *loop = MemoryContextAllocZero(TopMemoryContext, sizeof(CurlLoop));

	loop->epoll_fd = -1;
	loop->multi = curl_multi_init();
	if (loop->multi == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_OUT_OF_MEMORY),
				 errmsg("could not initialise libcurl")));
#if PG_VERSION_NUM >= 170000
	loop->wait_set = CreateWaitEventSet(NULL, 3);
#else
	loop->wait_set = CreateWaitEventSet(TopMemoryContext, 3);
#endif
	AddWaitEventToSet(loop->wait_set, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(loop->wait_set, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
#ifdef BC_CURL_LOOP_EPOLL
	loop->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	if (loop->epoll_fd < 0)
		ereport(ERROR,
				(errcode_for_socket_access(),
				 errmsg("could not create an epoll descriptor: %m")));
	AddWaitEventToSet(loop->wait_set, WL_SOCKET_READABLE, loop->epoll_fd, NULL, NULL);
	curl_multi_setopt(loop->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(loop->multi, CURLMOPT_SOCKETDATA, loop);
#endif
	curl_multi_setopt(loop->multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(loop->multi, CURLMOPT_TIMERDATA, loop);
	return loop;
}

CURLM *
curl_loop_multi(CurlLoop *loop)
{
	return loop->multi;
}

/*
 * Waits until the latch is set, a curl socket is ready, curl's timer is
 * due or timeout_ms passed (-1: no limit of the caller's), then lets curl
 * act on what is ready.  Resets the latch: the caller looks at everything
 * a latch can mean after every call.
 */
void
curl_loop_wait(CurlLoop *loop, long timeout_ms)
{
	WaitEvent	events[3];
	long		wait_ms = timeout_ms;
	int			nready;

	if (loop->timer_set)
	{
		long		left = timer_left_ms(loop);

		wait_ms = (wait_ms < 0) ? left : Min(wait_ms, left);
	}
#ifndef BC_CURL_LOOP_EPOLL
	if (loop->running > 0)
		wait_ms = (wait_ms < 0) ? POLL_STEP_MS : Min(wait_ms, POLL_STEP_MS);
#endif
	nready = WaitEventSetWait(loop->wait_set, wait_ms, events, lengthof(events),
							  PG_WAIT_EXTENSION);
	for (int i = 0; i < nready; i++)
		if (events[i].events & WL_LATCH_SET)
			ResetLatch(MyLatch);

#ifdef BC_CURL_LOOP_EPOLL
	{
		struct epoll_event ready[MAX_READY_SOCKETS];
		int			n = epoll_wait(loop->epoll_fd, ready, lengthof(ready), 0);

		for (int i = 0; i < n; i++)
		{
			int			mask = ((ready[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) ? CURL_CSELECT_IN : 0) |
				((ready[i].events & EPOLLOUT) ? CURL_CSELECT_OUT : 0) |
				((ready[i].events & EPOLLERR) ? CURL_CSELECT_ERR : 0);

			curl_multi_socket_action(loop->multi, ready[i].data.fd, mask, &loop->running);
		}
	}
#endif
	curl_loop_kick(loop);
}

/*
 * Lets curl act now without waiting on what is due (its timer; without
 * epoll, everything): after transfers were started, so that their requests
 * go out before the caller does other work.
 */
void
curl_loop_kick(CurlLoop *loop)
{
#ifdef BC_CURL_LOOP_EPOLL
	if (loop->timer_set && timer_left_ms(loop) == 0)
	{
		loop->timer_set = false;
		curl_multi_socket_action(loop->multi, CURL_SOCKET_TIMEOUT, 0, &loop->running);
	}
#else
	curl_multi_perform(loop->multi, &loop->running);
#endif
}

/*
 * The next transfer curl finished (its easy handle, and its result code in
 * *rc), or NULL when none is left to report.
 */
CURL *
curl_loop_next_done(CurlLoop *loop, CURLcode *rc)
{
	CURLMsg    *msg;
	int			queued;

	while ((msg = curl_multi_info_read(loop->multi, &queued)) != NULL)
	{
		if (msg->msg == CURLMSG_DONE)
		{
			*rc = msg->data.result;
			return msg->easy_handle;
		}
	}
	return NULL;
}
