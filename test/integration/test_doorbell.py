#!/usr/bin/env python3
"""Integration tests of the doorbell: Odoo rings, the poller fetches at once.

The Odoo stand-in pushes each row it commits to the gateway's
POST /api/v1/webhooks/receive with X-API-Key (as the auto_webhook addon's
subscriber does); the gateway rings the instance's poller, whose poll
interval is 10 s.  Checked: a ring brings the event to NOTIFY far sooner
than the poll interval; a refused ring (a wrong key) is 401 and changes
nothing, and the event still comes with the next poll; a burst of rings
during one fetch causes exactly one more fetch (the stand-in's count of
search_reads, and the poller's doorbell counters); bridgecore.wake() from
SQL.

Runs against a cluster with shared_preload_libraries = 'bridgecore' whose
bridgecore.database is the database of the libpq environment (the pollers
run there).  The extension must not exist there yet: the test creates it,
and drops it at the end.  Needs the gateway's dependencies (gateway/run
--install).  Every wait is a condition polled until a deadline.  Prints
TAP; exits non-zero when a test fails.  Needs Python 3 with psycopg2 only.
"""
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_worker as w  # noqa: E402  (Tap, Standin, wait_for, holds_for, free_port)

T = w.T
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "a-doorbell-test-secret-of-32-characters"
KEY = "doorbell-test-key-0123456789abcdef0123456789abcdef"
POLL = "10 seconds"
# A ring must bring the event well within this; the poll interval is 10 s.
RING_DEADLINE = 4.0


def connect():
    conn = psycopg2.connect("", application_name="bridgecore doorbell test")
    conn.autocommit = True
    return conn


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone()
        return row[0] if row else None


def stop_process(proc):
    """Terminates a child process, killing it if it does not end in 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Gateway:
    """gateway/run on a free port, against the test's database."""

    def __init__(self, **extra_env):
        self.port = w.free_port()
        env = dict(os.environ, BRIDGECORE_JWT_SECRET=SECRET, PORT=str(self.port), **extra_env,
                   DATABASE_URL="postgresql:///%s?host=%s&port=%s&user=%s" % (
                       os.environ.get("PGDATABASE", "postgres"), os.environ["PGHOST"],
                       os.environ["PGPORT"], os.environ.get("PGUSER", "postgres")))
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen([os.path.join(ROOT, "gateway", "run")], env=env,
                                     stdout=self.out, stderr=subprocess.STDOUT)
        w.wait_for(self._ready, 60, "the gateway to answer /health", self.output)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def output(self):
        self.out.seek(0)
        return self.out.read().decode("utf-8", "replace")[-3000:]

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("the gateway exited:\n" + self.output())
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def ring(self, key, body=None):
        """(HTTP status, JSON answer) of one ring."""
        req = urllib.request.Request(self.url + "/api/v1/webhooks/receive",
                                     json.dumps(body or {}).encode(),
                                     {"Content-Type": "application/json", "X-API-Key": key})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def metrics(self):
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as r:
            return r.read().decode()

    def stop(self):
        stop_process(self.proc)


def doorbell_stats(conn):
    """(rings, coalesced, fetches) of the instance's running poller."""
    with conn.cursor() as cur:
        cur.execute("SELECT d.rings, d.coalesced, d.fetches FROM bridgecore._doorbell_stats() d"
                    " JOIN bridgecore.instance i ON i.id = d.instance_id WHERE i.name = 'bell'")
        return cur.fetchone()


def stored(conn, odoo_id):
    return one(conn, "SELECT count(*) FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id"
                     " WHERE i.name = 'bell' AND e.odoo_id = %s", (odoo_id,)) == 1


def quiet_window(conn, sd):
    """Makes the poller fetch now (bridgecore.wake) and waits for that fetch
    to end: the next scheduled poll is then a whole poll interval away."""
    before = sd.control("stats")["search_reads"]
    one(conn, "SELECT bridgecore.wake('bell')")
    w.wait_for(lambda: sd.control("stats")["search_reads"] > before, 5, "the woken poller's fetch")
    return time.monotonic()


def notifications(listener, timeout):
    """The bridgecore_events notifications that arrive within timeout."""
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not got:
        if select.select([listener], [], [], max(0.0, deadline - time.monotonic())) != ([], [], []):
            listener.poll()
            while listener.notifies:
                got.append(listener.notifies.pop(0))
    return got


def test_wake(conn, sd, gw):
    before = sd.control("stats")["search_reads"]
    outcome = one(conn, "SELECT bridgecore.wake('bell')")
    T.ok(outcome == {"instance": "bell", "outcome": "woken"}, "wake() from SQL wakes the running poller", outcome)
    T.wait(lambda: sd.control("stats")["search_reads"] > before, RING_DEADLINE,
           "the woken poller fetches at once, not at its 10 s poll")


def test_refused_ring(conn, sd, gw):
    started = quiet_window(conn, sd)
    sd.control("set", push_url=gw.url + "/api/v1/webhooks/receive", push_key="a-wrong-key-0123456789abcdef0123456789abcd")
    status, answer = gw.ring("a-wrong-key-0123456789abcdef0123456789abcd", {"event_id": 1})
    T.ok(status == 401 and answer["code"] == "28000", "a ring with a wrong key is 401", (status, answer))
    rings_before = doorbell_stats(conn)
    reads_before = sd.control("stats")["search_reads"]
    [odoo_id] = sd.add(model="sale.order")
    w.wait_for(lambda: any(p["id"] == odoo_id for p in sd.control("pushes")["pushes"]), 5, "the stand-in's push")
    push = [p for p in sd.control("pushes")["pushes"] if p["id"] == odoo_id][0]
    T.ok(push["status"] == 401, "the stand-in's push with a wrong key is refused (401)", push)
    T.ok(w.holds_for(lambda: not stored(conn, odoo_id) and sd.control("stats")["search_reads"] == reads_before,
                     max(0.0, 4.0 - (time.monotonic() - started))),
         "a refused ring changes nothing: no fetch, no event, before the poll is due")
    T.ok(doorbell_stats(conn) == rings_before, "the poller was not rung", (rings_before, doorbell_stats(conn)))
    T.wait(lambda: stored(conn, odoo_id), 15, "the event still comes with the next poll (a refused ring costs at most one interval)")


def test_ring_brings_event(conn, sd, gw):
    quiet_window(conn, sd)
    sd.control("set", push_url=gw.url + "/api/v1/webhooks/receive", push_key=KEY)
    listener = connect()
    with listener.cursor() as cur:
        cur.execute("LISTEN bridgecore_events")
    try:
        rings_before = doorbell_stats(conn)
        added = time.monotonic()
        [odoo_id] = sd.add(model="res.partner")
        got = notifications(listener, RING_DEADLINE)
        took = time.monotonic() - added
        payloads = [json.loads(n.payload) for n in got]
        T.ok(any(p.get("instance") == "bell" and p.get("model") == "res.partner" for p in payloads),
             "the pushed ring brings the event to NOTIFY far within the 10 s poll interval",
             "notifications %r after %.2f s" % (payloads, took))
        T.ok(stored(conn, odoo_id), "the event is stored")
        push = w.wait_for(lambda: [p for p in sd.control("pushes")["pushes"] if p["id"] == odoo_id], 5, "the push")[0]
        T.ok(push["status"] == 200, "the stand-in's push was accepted (200)", push)
        after = doorbell_stats(conn)
        T.ok(after[0] == rings_before[0] + 1 and after[2] >= rings_before[2] + 1,
             "the poller counted the ring and the fetch it started", (rings_before, after))
    finally:
        listener.close()


def test_burst_coalesces(conn, sd, gw):
    sd.control("set", push_url=None)
    quiet_window(conn, sd)
    sd.control("set", search_read_delay=2.0)     # a slow Odoo: the rings come during the fetch
    try:
        start = sd.control("stats")
        stats_before = doorbell_stats(conn)
        status, answer = gw.ring(KEY, {"event_id": "first"})
        T.ok(status == 200 and answer["success"] is True and answer["event_id"] == "first",
             "the first ring of the burst is answered", (status, answer))
        w.wait_for(lambda: sd.control("stats")["search_reads_started"] > start["search_reads_started"], 5,
                   "the fetch the first ring started")
        outcomes = []
        threads = []
        lock = threading.Lock()

        def one_ring(i):
            s, a = gw.ring(KEY, {"event_id": i})
            with lock:
                outcomes.append((s, a.get("message") if isinstance(a, dict) else a))
        for i in range(20):
            t = threading.Thread(target=one_ring, args=(i,))
            t.start()
            threads.append(t)
        for t in threads:
            t.join()
        during = sd.control("stats")
        T.ok(all(s == 200 for s, _ in outcomes) and len(outcomes) == 20, "20 rings during the fetch are all answered", outcomes)
        T.ok(during["search_reads_started"] == start["search_reads_started"] + 1,
             "the 20 rings arrived while the first fetch was still in flight", (start, during))
        w.wait_for(lambda: sd.control("stats")["search_reads"] >= start["search_reads"] + 2, 10,
                   "the one fetch that the burst asks for")
        T.ok(w.holds_for(lambda: sd.control("stats")["search_reads_started"] == start["search_reads_started"] + 2, 3.0),
             "21 rings made 2 fetches: the first one's, and one more for all the rings during it",
             (start, sd.control("stats")))
        after = doorbell_stats(conn)
        T.ok(after[0] - stats_before[0] == 21 and after[1] - stats_before[1] >= 19 and after[2] - stats_before[2] == 2,
             "the poller's counters: 21 rings, at least 19 coalesced, 2 fetches", (stats_before, after))
        text = gw.metrics()
        line = [l for l in text.splitlines() if l.startswith('bridgecore_push_rings_total{instance="bell",outcome="coalesced"}')]
        T.ok(line and int(line[0].split()[-1]) >= 19, "GET /metrics counts the coalesced rings", line)
    finally:
        sd.control("set", search_read_delay=0)


class Subscriber:
    """An app's GraphQL subscription over WebSocket in another process
    (gateway/bin/subscribe.js, the npm graphql-ws client): each message a
    JSON line."""

    def __init__(self, gw, token, app_type="sales_app"):
        self.proc = subprocess.Popen(
            [os.path.join(ROOT, "gateway", "node_modules", "node", "bin", "node"),
             os.path.join(ROOT, "gateway", "bin", "subscribe.js"), gw.url, token, app_type],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.buf = b""
        self.messages = []
        self.wait_for(lambda m: m.get("reason") == "LISTENING", 15, "the subscription to start")

    def wait_for(self, match, timeout, what):
        """The first message since the last wait that match accepts."""
        deadline = time.monotonic() + timeout
        while True:
            for i, m in enumerate(self.messages):
                if match(m):
                    del self.messages[:i + 1]
                    return m
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("%s: no such message within %.1f s (got %r)" % (what, timeout, self.messages))
            if select.select([self.proc.stdout], [], [], left)[0]:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError("%s: the subscriber exited: %r" % (what, self.buf.decode("utf-8", "replace")))
                self.buf += chunk
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    try:
                        self.messages.append(json.loads(line))
                    except ValueError:
                        self.messages.append({"text": line.decode("utf-8", "replace")})

    def stop(self):
        stop_process(self.proc)


def test_ring_reaches_subscriber(conn, sd, gw):
    """Odoo's commit, its push, the poller's fetch, the NOTIFY, the
    gateway's LISTEN connection and the app's WebSocket: end to end."""
    # The database setting applies to new sessions; this one set it.
    one(conn, "SELECT set_config('bridgecore.jwt_secret', %s, false)", (SECRET,))
    token = one(conn, "SELECT bridgecore._jwt_sign(jsonb_build_object('role', 'bridgecore_app', 'user_id', 1,"
                      " 'instance', 'bell', 'exp', extract(epoch FROM now() + interval '10 minutes')::bigint))")
    sub = Subscriber(gw, token)
    try:
        quiet_window(conn, sd)
        sd.control("set", push_url=gw.url + "/api/v1/webhooks/receive", push_key=KEY)
        added = time.monotonic()
        [odoo_id] = sd.add(model="sale.order")
        try:
            m = sub.wait_for(lambda m: m.get("reason") == "NOTIFIED" and m.get("model") == "sale.order",
                             RING_DEADLINE, "the subscription's message")
            T.ok(m["instance"] == "bell" and m["count"] >= 1 and m["maxId"] >= 1,
                 "a WebSocket subscriber hears of the pushed event far within the 10 s poll interval",
                 "%r after %.2f s" % (m, time.monotonic() - added))
        except AssertionError as e:
            T.ok(False, "a WebSocket subscriber hears of the pushed event far within the 10 s poll interval", str(e))
        T.ok(stored(conn, odoo_id), "the event is stored")
    finally:
        sub.stop()


def main():
    conn = connect()
    sd = gw = None
    dbname = one(conn, "SELECT current_database()")
    try:
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION bridgecore")
            cur.execute("ALTER DATABASE %s SET bridgecore.jwt_secret = %%s" % dbname, (SECRET,))
        sd = w.Standin(password="worker-key")
        gw = Gateway()
        one(conn, "SELECT name FROM bridgecore.add_instance('bell', %s, 'odoo', 'bridgecore', 'worker-key',"
                  " poll_interval => %s)", (sd.url, POLL))
        one(conn, "SELECT name FROM bridgecore.alter_instance('bell', push_key => %s)", (KEY,))
        w.wait_for(lambda: doorbell_stats(conn) is not None and sd.control("stats")["search_reads"] >= 1, 30,
                   "the poller of instance bell to start and poll")
        for test in (test_wake, test_refused_ring, test_ring_brings_event, test_ring_reaches_subscriber,
                     test_burst_coalesces):
            try:
                test(conn, sd, gw)
            except Exception:
                T.ok(False, "%s ran to its end" % test.__name__, traceback.format_exc())
    except Exception:
        T.ok(False, "setup", traceback.format_exc(), gw.output() if gw else "")
    finally:
        if gw is not None:
            gw.stop()
        if sd is not None:
            sd.stop()
        with conn.cursor() as cur:
            cur.execute("DROP EXTENSION IF EXISTS bridgecore CASCADE")
            cur.execute("ALTER DATABASE %s RESET bridgecore.jwt_secret" % dbname)
        conn.close()
    print("1..%d" % T.n)
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
