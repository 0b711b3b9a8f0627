#!/usr/bin/env python3
"""Integration tests of BridgeCore's background worker (launcher and pollers).

Runs against a cluster with shared_preload_libraries = 'bridgecore' whose
bridgecore.database is the database given by the libpq environment
(PGHOST, PGPORT, PGUSER, PGDATABASE).  The extension must not exist there
yet: the test creates it, and drops it at the end.  CLUSTER_DIR (the
directory test/lib/cluster.sh creates) enables the restart test and the
checks that read the server log.

Each test starts its own Odoo stand-ins (test/odoo_standin.py) and drives
them through their control API.  Every wait is a condition polled until a
deadline.  Prints TAP; exits non-zero when a test fails.  Arguments, if
any, select the tests whose function names contain one of them.

Needs Python 3 with psycopg2 only.
"""
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from datetime import datetime, timezone

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(os.path.dirname(HERE), "odoo_standin.py")
CLUSTER_DIR = os.environ.get("CLUSTER_DIR") or None
LOCK_KEY = 1112425298           # the pollers' advisory lock class (poller.c)
POLL = "100 milliseconds"       # poll interval of most test instances

# Settings the test changes with ALTER SYSTEM, and resets at the end.
GUCS = ("bridgecore.max_backoff", "bridgecore.gap_window", "bridgecore.request_timeout",
        "bridgecore.max_response_size")


# ---- TAP ---------------------------------------------------------------------

class Tap:
    def __init__(self):
        self.n = 0
        self.failed = []

    def ok(self, cond, name, *diag):
        self.n += 1
        print("%s %d - %s" % ("ok" if cond else "not ok", self.n, name))
        if not cond:
            self.failed.append("%d - %s" % (self.n, name))
            for d in diag:
                self.diag(d)
        sys.stdout.flush()
        return bool(cond)

    def skip(self, name, why):
        self.n += 1
        print("ok %d - %s # SKIP %s" % (self.n, name, why))
        sys.stdout.flush()

    @staticmethod
    def diag(text):
        for line in str(text).splitlines() or [""]:
            print("#   " + line)
        sys.stdout.flush()

    def wait(self, predicate, timeout, name, describe=None):
        """A TAP test that passes when predicate() turns true before timeout."""
        try:
            value = wait_for(predicate, timeout, name, describe)
        except WaitTimeout as e:
            self.ok(False, name, e)
            return None
        self.ok(True, name)
        return value


T = Tap()


class WaitTimeout(Exception):
    pass


def wait_for(predicate, timeout, what, describe=None, interval=0.05):
    """Polls predicate() until it returns a true value, which is returned.
    Raises WaitTimeout after timeout seconds, with describe()'s view of the
    state (or the last value) in the message."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            try:
                state = describe() if describe else value
            except Exception as e:      # the description must not hide the timeout
                state = "(could not describe: %s)" % e
            raise WaitTimeout("timed out after %.1f s waiting for %s; last state: %r"
                              % (timeout, what, state))
        time.sleep(interval)


def holds_for(predicate, seconds, interval=0.1):
    """True when predicate() stays true for the whole window (for negative
    properties: something that must not happen)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(interval)
    return bool(predicate())


# ---- database ----------------------------------------------------------------

class Database:
    def __init__(self):
        self.conn = None
        self.connect()

    def connect(self):
        if self.conn is not None and not self.conn.closed:
            self.conn.close()
        self.conn = psycopg2.connect("", application_name="bridgecore worker test")
        self.conn.autocommit = True

    def all(self, sql, args=None):
        with self.conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall() if cur.description else []

    def one(self, sql, args=None):
        rows = self.all(sql, args)
        return rows[0] if rows else None

    def val(self, sql, args=None):
        row = self.one(sql, args)
        return row[0] if row else None


DB = None


UNITS = {"ms": 1, "s": 1000, "min": 60000, "h": 3600000, "d": 86400000,
         "kB": 1, "MB": 1024, "GB": 1024 * 1024}


def set_guc(name, value):
    """ALTER SYSTEM SET name = value and reload; waits until this session sees
    the new value (compared in the setting's own unit, whatever it is)."""
    DB.all("ALTER SYSTEM SET %s = %%s" % name, (value,))
    DB.all("SELECT pg_reload_conf()")
    number, unit = re.fullmatch(r"(\d+)\s*([a-zA-Z]+)", value).groups()

    def seen():
        setting, base = DB.one("SELECT setting, unit FROM pg_settings WHERE name = %s", (name,))
        base_factor = UNITS[re.sub(r"^\d+", "", base) or base] * int(re.match(r"\d*", base).group() or 1)
        return int(setting) * base_factor == int(number) * UNITS[unit]
    wait_for(seen, 10, "%s = %s after reload" % (name, value))


def launcher_pid():
    return DB.val("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bridgecore launcher'")


def poller_pids():
    return [r[0] for r in DB.all("SELECT pid FROM pg_stat_activity"
                                 " WHERE backend_type = 'bridgecore poller' ORDER BY pid")]


def poller_pid(inst_id):
    """The poller serving an instance: the one holding its advisory lock."""
    return DB.val("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                  " WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s"
                  "   AND l.objsubid = 2 AND l.granted AND a.backend_type = 'bridgecore poller'",
                  (LOCK_KEY, inst_id))


def one_poller_each():
    """True when every enabled instance has its poller and no other runs."""
    enabled = [r[0] for r in DB.all("SELECT id FROM bridgecore.instance WHERE enabled")]
    return all(poller_pid(i) for i in enabled) and len(poller_pids()) == len(enabled)


def pid_alive(pid):
    return DB.val("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (pid,)) > 0


# ---- server log ----------------------------------------------------------------

def log_path():
    if CLUSTER_DIR and os.access(os.path.join(CLUSTER_DIR, "server.log"), os.R_OK):
        return os.path.join(CLUSTER_DIR, "server.log")
    return None


def log_offset():
    path = log_path()
    return os.path.getsize(path) if path else 0


def log_since(offset):
    path = log_path()
    if not path:
        return ""
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


# ---- Odoo stand-in -------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Standin:
    """One test/odoo_standin.py process (database odoo, login bridgecore)."""
    running = []

    def __init__(self, password="standin-key"):
        self.password = password
        self.port = free_port()
        self.out = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, STANDIN, "--port", str(self.port), "--password", password],
            stdout=self.out, stderr=subprocess.STDOUT)
        Standin.running.append(self)
        wait_for(self._ready, 15, "the stand-in on port %d to answer" % self.port)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def output(self):
        self.out.seek(0)
        return self.out.read().decode("utf-8", "replace")

    def _ready(self):
        if self.proc.poll() is not None:
            raise RuntimeError("stand-in exited:\n" + self.output())
        try:
            return self.control("stats")["ok"]
        except OSError:
            return False

    def _post(self, path, body, timeout=30):
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as e:
            raise RuntimeError("stand-in %s answered HTTP %d: %s" % (path, e.code, e.read()[:200]))

    def control(self, op, **kw):
        kw["op"] = op
        return self._post("/control", kw)

    def add(self, count=1, **kw):
        return self.control("add_events", count=count, **kw)["ids"]

    def stats(self):
        return self.control("stats")

    def set_password(self, password):
        self.control("set", password=password)
        self.password = password

    def rpc(self, service, method, args):
        answer = self._post("/jsonrpc", {"jsonrpc": "2.0", "method": "call", "id": 1,
                                         "params": {"service": service, "method": method,
                                                    "args": args}})
        if "error" in answer:
            raise RuntimeError("stand-in RPC error: %r" % answer["error"])
        return answer.get("result")

    def rows(self):
        """The visible update.webhook rows, as Odoo's search_read gives them.
        Goes through /jsonrpc, so only call it with no fault queued."""
        uid = self.rpc("common", "authenticate", ["odoo", "bridgecore", self.password, {}])
        fields = self.rpc("object", "execute_kw",
                          ["odoo", uid, self.password, "update.webhook", "fields_get", [], {}])
        wanted = [f for f in ("id", "model", "record_id", "event", "timestamp", "priority",
                              "category", "payload", "user_id") if f in fields]
        return self.rpc("object", "execute_kw",
                        ["odoo", uid, self.password, "update.webhook", "search_read", [[]],
                         {"fields": wanted, "order": "id asc"}])

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.out.close()
        if self in Standin.running:
            Standin.running.remove(self)


# ---- instances -----------------------------------------------------------------

def add_instance(name, sd, batch_size=100, poll_interval=POLL, secret=None):
    DB.all("SELECT name FROM bridgecore.add_instance(%s, %s, 'odoo', 'bridgecore', %s,"
           " poll_interval => %s::interval, batch_size => %s)",
           (name, sd.url, secret or sd.password, poll_interval, batch_size))
    return DB.val("SELECT id FROM bridgecore.instance WHERE name = %s", (name,))


def remove_instance(name):
    DB.all("SELECT bridgecore.remove_instance(%s)", (name,))


STATUS_COLUMNS = ("state", "cursor", "last_error", "last_error_at", "consecutive_failures",
                  "next_attempt_at", "events_ingested", "enabled")


def status(name):
    row = DB.one("SELECT %s FROM bridgecore.instances WHERE name = %%s" % ", ".join(STATUS_COLUMNS),
                 (name,))
    return dict(zip(STATUS_COLUMNS, row)) if row else None


def state_is(name, state):
    s = status(name)
    return s if s and s["state"] == state else None


def stored_ids(inst_id):
    """Odoo ids of an instance's events, in local (commit) order."""
    return [r[0] for r in DB.all("SELECT odoo_id FROM bridgecore.event WHERE instance_id = %s"
                                 " ORDER BY id", (inst_id,))]


def all_arrived(inst_id, sd, dead=0):
    """True once the instance holds as many events as the stand-in shows
    (minus the dead-lettered ones) and its cursor reached the newest id."""
    def check():
        st = sd.stats()
        row = DB.one("SELECT (SELECT count(*) FROM bridgecore.event WHERE instance_id = i.id),"
                     "       i.cursor, i.state FROM bridgecore.instance i WHERE i.id = %s",
                     (inst_id,))
        return (row is not None and row[0] == st["rows"] - dead and row[1] >= st["max_id"]
                and row[2] == "ok")
    return check


def describe(name, inst_id, sd):
    def show():
        st = sd.stats()
        return {"status": status(name), "stored": DB.val(
            "SELECT count(*) FROM bridgecore.event WHERE instance_id = %s", (inst_id,)),
            "standin_rows": st["rows"], "standin_max_id": st["max_id"],
            "faults_pending": st["faults_pending"], "pollers": poller_pids()}
    return show


def wait_all(name, inst_id, sd, timeout, what, dead=0):
    return T.wait(all_arrived(inst_id, sd, dead), timeout, what, describe(name, inst_id, sd))


def mirror_problems(inst_id, sd, skip_ids=()):
    """Compares the instance's events with the stand-in's rows: every row
    exactly once, with the same content.  Returns a list of problems."""
    rows = [r for r in sd.rows() if r["id"] not in skip_ids]
    got = DB.all("SELECT odoo_id, model, record_id, event::text,"
                 " to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'),"
                 " priority::text, category, payload, odoo_user_id, odoo_user_name"
                 " FROM bridgecore.event WHERE instance_id = %s ORDER BY odoo_id", (inst_id,))
    problems = []
    ids = [g[0] for g in got]
    if len(ids) != len(set(ids)):
        problems.append("duplicated odoo ids: %s" % sorted({i for i in ids if ids.count(i) > 1}))
    want = [r["id"] for r in rows]
    missing = sorted(set(want) - set(ids))
    extra = sorted(set(ids) - set(want))
    if missing:
        problems.append("missing odoo ids: %s" % missing[:20])
    if extra:
        problems.append("unexpected odoo ids: %s" % extra[:20])
    by_id = {g[0]: g for g in got}
    for r in rows:
        g = by_id.get(r["id"])
        if g is None:
            continue
        want_row = (r["id"], r["model"], r["record_id"], r["event"], r["timestamp"])
        if g[:5] != want_row:
            problems.append("odoo id %d differs: stored %r, Odoo %r" % (r["id"], g[:5], want_row))
        elif "payload" in r and (g[5], g[6], g[7]) != (r["priority"], r["category"], r["payload"]):
            problems.append("odoo id %d differs in priority, category or payload" % r["id"])
        elif "user_id" in r and list(g[8:10]) != (r["user_id"] or [None, None]):
            problems.append("odoo id %d: stored user %r, Odoo %r" % (r["id"], g[8:10], r["user_id"]))
        if len(problems) > 10:
            break
    return problems


def check_mirror(inst_id, sd, what, skip_ids=()):
    problems = mirror_problems(inst_id, sd, skip_ids)
    return T.ok(not problems, what, *problems)


def settle(sd, requests=3, timeout=10):
    """Waits until the stand-in has served a few more requests: a poller then
    has gone through its loop (and so re-read its settings) since now."""
    start = sd.stats()["requests"]
    wait_for(lambda: sd.stats()["requests"] >= start + requests, timeout,
             "%d more requests at the stand-in" % requests)


def odoo_now():
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


# ---- tests ---------------------------------------------------------------------

def test_order_and_full_batches():
    """95 events, batch_size 10: every event exactly once, in Odoo id order,
    and full batches are fetched back to back (not one per poll interval)."""
    sd = Standin()
    sd.add(95)
    start = time.monotonic()
    inst = add_instance("order", sd, batch_size=10, poll_interval="5 seconds")
    wait_all("order", inst, sd, 4,
             "order: 95 events in 10 batches arrive within 4 s although the poll interval is 5 s")
    T.diag("order: 95 events took %.2f s, %d search_read calls"
           % (time.monotonic() - start, sd.stats()["search_reads"]))
    ids = stored_ids(inst)
    T.ok(ids == sorted(ids) and len(ids) == 95, "order: local id order is Odoo id order",
         "odoo ids in local order: %s" % ids)
    check_mirror(inst, sd, "order: every event stored exactly once, content intact")

    # New settings restart the poller, which resumes from its cursor.
    DB.all("SELECT bridgecore.alter_instance('order', poll_interval => %s)", (POLL,))
    sd.add(25)
    wait_all("order", inst, sd, 10, "order: 25 more events arrive after alter_instance")
    ids = stored_ids(inst)
    T.ok(ids == sorted(ids) and len(ids) == 120, "order: still in Odoo id order, 120 events",
         "odoo ids in local order: %s" % ids)
    check_mirror(inst, sd, "order: 120 events exactly once")
    remove_instance("order")
    sd.stop()


def test_notify():
    """NOTIFY bridgecore_events: one per model and batch, with counts."""
    sd = Standin()
    inst = add_instance("notify", sd)
    wait_for(lambda: status("notify")["events_ingested"] == 0 and poller_pid(inst), 10,
             "the notify poller to start")
    listener = psycopg2.connect("")
    listener.autocommit = True
    try:
        listener.cursor().execute("LISTEN bridgecore_events")
        sd.add(3, model="sale.order")
        sd.add(2, model="res.partner")
        got = []

        def received():
            if select.select([listener], [], [], 0.05)[0]:
                listener.poll()
                while listener.notifies:
                    n = listener.notifies.pop(0)
                    got.append((n.channel, n.payload))
            mine = [json.loads(p) for c, p in got if json.loads(p).get("instance") == "notify"]
            return sum(p["count"] for p in mine) >= 5 and mine

        mine = T.wait(received, 10, "notify: notifications for 5 events arrive on bridgecore_events")
        if mine:
            T.ok(all(set(p) == {"instance", "model", "count", "max_id", "high"} for p in mine),
                 "notify: payload has instance, model, count, max_id, high", mine)
            totals = {}
            for p in mine:
                t = totals.setdefault(p["model"], [0, 0, 0])
                t[0] += p["count"]
                t[1] = max(t[1], p["max_id"])
                t[2] += p["high"]
            want = {m: [n, mx, h] for m, n, mx, h in DB.all(
                "SELECT model, count(*)::int, max(id)::int,"
                " (count(*) FILTER (WHERE priority = 'high'))::int"
                " FROM bridgecore.event WHERE instance_id = %s GROUP BY model", (inst,))}
            T.ok(totals == want and want.get("sale.order", [0])[0] == 3,
                 "notify: per-model count, max_id (local id) and high match the stored events",
                 "notified %r" % totals, "stored   %r" % want)
    finally:
        listener.close()
    remove_instance("notify")
    sd.stop()


def test_gaps():
    """A row that becomes visible late (commit order != id order) is ingested;
    an id that never shows leaves the gap table after bridgecore.gap_window."""
    set_guc("bridgecore.gap_window", "60s")
    sd = Standin()
    sd.add(2)
    inst = add_instance("gaps", sd)
    wait_all("gaps", inst, sd, 10, "gaps: first events arrive")

    late = sd.control("reserve", count=1)["ids"][0]
    sd.add(2)
    gap = lambda oid: DB.val("SELECT noticed_at FROM bridgecore.gap"  # noqa: E731
                             " WHERE instance_id = %s AND odoo_id = %s", (inst, oid))
    T.wait(lambda: gap(late) and all_arrived(inst, sd)(), 10,
           "gaps: the hole %d shows in bridgecore.gap while later ids are stored" % late,
           describe("gaps", inst, sd))
    sd.control("publish", ids=[late])
    T.wait(lambda: late in stored_ids(inst) and not gap(late), 10,
           "gaps: the late-visible row %d is ingested and its gap closed" % late,
           describe("gaps", inst, sd))
    check_mirror(inst, sd, "gaps: every event exactly once after the late row")

    set_guc("bridgecore.gap_window", "2s")
    skipped = sd.control("skip", count=1)["ids"][0]
    sd.add(2)
    noticed = T.wait(lambda: gap(skipped), 10,
                     "gaps: the skipped id %d shows in bridgecore.gap" % skipped,
                     describe("gaps", inst, sd))
    if noticed:
        T.wait(lambda: not gap(skipped), 10,
               "gaps: the skipped id leaves bridgecore.gap", describe("gaps", inst, sd))
        age = DB.val("SELECT extract(epoch FROM now() - %s)::float8", (noticed,))
        T.ok(age >= 1.9, "gaps: ...but not before bridgecore.gap_window (2 s) has passed",
             "gone %.2f s after it was noticed" % age)
    check_mirror(inst, sd, "gaps: every event exactly once after the skipped id")
    remove_instance("gaps")
    sd.stop()


FAULTS = [
    # kind, stand-in parameters, times, what last_error must say
    ("http500", {}, 2, r"HTTP 500"),
    ("http502", {}, 2, r"HTTP 502.*Bad Gateway"),
    ("http429", {"retry_after": 3}, 1, r"HTTP 429"),
    ("html", {}, 2, r"bad_response: invalid JSON.*under maintenance"),
    ("garbage", {}, 2, r"bad_response: invalid JSON"),
    ("truncated", {}, 2, r"transport|truncated"),
    ("reset", {}, 2, r"transport"),
    ("not_rpc", {}, 2, r"not a JSON-RPC answer"),
    ("rpc_error", {"name": "psycopg2.errors.SerializationFailure",
                   "message": "could not serialize access"}, 2,
     r"rpc: psycopg2\.errors\.SerializationFailure: could not serialize access"),
    ("huge", {"bytes": 1 << 20}, 2, r"too_large: .*bridgecore\.max_response_size"),
]


def test_faults():
    """Each fault leaves the data intact and the status telling, then the
    poller recovers and catches up."""
    sd = Standin()
    sd.add(3)
    inst = add_instance("faults", sd)
    wait_all("faults", inst, sd, 10, "faults: first events arrive")
    for kind, params, times, message in FAULTS:
        if kind == "huge":
            set_guc("bridgecore.max_response_size", "64kB")
            settle(sd)
        sd.control("fault", kind=kind, count=times, **params)
        sd.add(3)
        try:
            st = wait_for(lambda: state_is("faults", "backoff"), 10, "state backoff",
                          describe("faults", inst, sd), interval=0.02)
        except WaitTimeout as e:
            T.ok(False, "faults: %s puts the instance in backoff" % kind, e)
            sd.control("clear_faults")
        else:
            T.ok(re.search(message, st["last_error"] or "") and st["consecutive_failures"] > 0,
                 "faults: %s: state backoff, last_error tells (%s), consecutive_failures %d"
                 % (kind, st["last_error"], st["consecutive_failures"]),
                 "last_error should match %r" % message)
            if kind == "http429":
                wait = (st["next_attempt_at"] - DB.val(
                    "SELECT last_error_at FROM bridgecore.instance WHERE id = %s", (inst,))
                ).total_seconds()
                T.ok(wait >= 2.9, "faults: http429: Retry-After 3 s is honoured over"
                     " max_backoff 2 s (next attempt %.2f s later)" % wait)
            stats = sd.stats()
            n, distinct, top = DB.one("SELECT count(*), count(DISTINCT odoo_id), max(odoo_id)"
                                      " FROM bridgecore.event WHERE instance_id = %s", (inst,))
            T.ok(n == distinct and top <= stats["max_id"] and
                 DB.val("SELECT count(*) FROM bridgecore.dead_letter WHERE instance_id = %s",
                        (inst,)) == 0,
                 "faults: %s: stored data intact (no duplicate, bogus or dead-lettered rows)" % kind,
                 "count %d, distinct %d, max odoo id %s, Odoo max id %d"
                 % (n, distinct, top, stats["max_id"]))
        if kind == "huge":
            DB.all("ALTER SYSTEM RESET bridgecore.max_response_size")
            DB.all("SELECT pg_reload_conf()")
        if wait_all("faults", inst, sd, 15, "faults: %s: recovers to state ok with all events" % kind):
            check_mirror(inst, sd, "faults: %s: every event exactly once" % kind)
    remove_instance("faults")
    sd.stop()


def test_hung_instance():
    """A hung Odoo delays only its own instance."""
    hung, healthy = Standin(), Standin()
    hung.add(2)
    healthy.add(2)
    a = add_instance("hung", hung)
    b = add_instance("healthy", healthy)
    wait_all("hung", a, hung, 10, "hung: first events of the hung instance arrive")
    wait_all("healthy", b, healthy, 10, "hung: first events of the healthy instance arrive")
    hung.control("fault", kind="hang", seconds=30, count=2)
    late = hung.add(2)
    wait_for(lambda: hung.stats()["faults_pending"] < 2, 10, "the hung instance's request")
    healthy.add(3)
    start = time.monotonic()
    wait_all("healthy", b, healthy, 5,
             "hung: events of the other instance arrive while the first hangs")
    T.diag("hung: the healthy instance caught up in %.2f s" % (time.monotonic() - start))
    T.ok(not set(late) & set(stored_ids(a)),
         "hung: ...and the first instance was indeed still hung then")
    st = wait_for(lambda: state_is("hung", "backoff"), 10, "state backoff",
                  describe("hung", a, hung))
    T.ok(re.search(r"transport: .*(timed out|Timeout)", st["last_error"] or ""),
         "hung: request_timeout ends the hung request (%s)" % st["last_error"])
    wait_all("hung", a, hung, 20, "hung: the hung instance recovers with all events")
    check_mirror(a, hung, "hung: every event of the hung instance exactly once")
    check_mirror(b, healthy, "hung: every event of the healthy instance exactly once")
    remove_instance("hung")
    remove_instance("healthy")
    hung.stop()
    healthy.stop()


def test_sigterm_in_flight():
    """pg_terminate_backend stops a poller whose request is in flight."""
    set_guc("bridgecore.request_timeout", "60s")
    sd = Standin()
    inst = add_instance("sigterm", sd)
    wait_for(lambda: poller_pid(inst), 10, "the sigterm poller")
    settle(sd)                  # the poller has read request_timeout = 60 s
    sd.control("fault", kind="hang", seconds=30)
    wait_for(lambda: sd.stats()["faults_pending"] == 0, 10, "the poller's request to hang")
    pid = poller_pid(inst)
    T.ok(state_is("sigterm", "ok") and pid, "sigterm: the poller has a request in flight")
    start = time.monotonic()
    DB.all("SELECT pg_terminate_backend(%s)", (pid,))
    T.wait(lambda: not pid_alive(pid), 2,
           "sigterm: the poller exits within 2 s of SIGTERM during a hung request")
    T.diag("sigterm: exited after %.2f s" % (time.monotonic() - start))
    set_guc("bridgecore.request_timeout", "2s")
    sd.add(2)
    T.wait(lambda: (poller_pid(inst) or pid) != pid, 10, "sigterm: the poller is restarted")
    wait_all("sigterm", inst, sd, 10, "sigterm: the restarted poller stores new events")
    remove_instance("sigterm")
    sd.stop()


def test_credentials_and_session():
    """Wrong credentials: auth_failed with a clear message without the secret;
    new credentials recover.  An expired session costs one re-login."""
    old, new = "Old-Key-4f1c2e", "New-Key-9b7d03"
    sd = Standin(password=old)
    sd.add(2)
    inst = add_instance("creds", sd)
    wait_all("creds", inst, sd, 10, "creds: first events arrive")
    sd.set_password(new)
    sd.add(2)
    st = T.wait(lambda: state_is("creds", "auth_failed"), 10,
                "creds: wrong credentials put the instance in state auth_failed",
                describe("creds", inst, sd))
    if st:
        err = st["last_error"] or ""
        T.ok(re.search(r'login refused for user "bridgecore" on database "odoo"', err),
             "creds: last_error says the login was refused (%s)" % err)
        T.ok(old not in err and new not in err, "creds: last_error does not contain the secret")
        wait = (st["next_attempt_at"] - DB.val(
            "SELECT last_error_at FROM bridgecore.instance WHERE id = %s", (inst,))).total_seconds()
        T.ok(wait >= 59, "creds: the next login is at least a minute away (%.1f s)" % wait)
    T.ok(sd.stats()["failed_logins"] <= 2, "creds: no login retried in a loop",
         "failed logins: %d" % sd.stats()["failed_logins"])
    DB.all("SELECT bridgecore.alter_instance('creds', secret => %s)", (new,))
    wait_all("creds", inst, sd, 10, "creds: alter_instance(secret => ...) recovers at once")

    # An Odoo error that quotes the secret: masked in last_error.
    for secret in (new, "**"):
        if secret != sd.password:
            sd.set_password(secret)
            DB.all("SELECT bridgecore.alter_instance('creds', secret => %s)", (secret,))
            wait_for(lambda: poller_pid(inst) and state_is("creds", "ok"), 10, "the new poller")
            settle(sd)
        sd.control("fault", kind="rpc_error", name="odoo.exceptions.AccessError",
                   message="key %s may not read update.webhook" % secret)
        sd.add(1)
        st = T.wait(lambda: state_is("creds", "backoff"), 10,
                    "creds: an Odoo error quoting the secret (%d chars) puts it in backoff"
                    % len(secret), describe("creds", inst, sd))
        if st:
            T.ok(st["last_error"] == "search_read: rpc: odoo.exceptions.AccessError:"
                 " key *** may not read update.webhook",
                 "creds: ...and last_error shows the secret masked", st["last_error"])
        wait_all("creds", inst, sd, 10, "creds: recovers after the error quoting the secret")

    for how, trigger in (("session_valid false", lambda: sd.control("set", session_valid=False)),
                         ("fault session_expired",
                          lambda: sd.control("fault", kind="session_expired"))):
        before = status("creds")
        trigger()
        sd.add(3)
        wait_all("creds", inst, sd, 10, "creds: %s: events keep arriving" % how)
        after = status("creds")
        T.ok(after["last_error_at"] == before["last_error_at"] and
             after["consecutive_failures"] == 0 and sd.stats()["faults_pending"] == 0,
             "creds: %s: absorbed by a re-login, no failure recorded" % how,
             "before %r" % before, "after %r" % after)
        check_mirror(inst, sd, "creds: %s: every event exactly once" % how)
    remove_instance("creds")
    sd.stop()


def test_legacy_fields():
    """An older addon without priority/category/payload: NULLs, no error."""
    sd = Standin()
    sd.add(3)
    inst = add_instance("legacy", sd)
    wait_all("legacy", inst, sd, 10, "legacy: events with the full field set arrive")
    sd.control("set", legacy=True)
    new = sd.add(3)
    wait_all("legacy", inst, sd, 15, "legacy: events arrive after Odoo switched to the legacy fields")
    rows = DB.all("SELECT odoo_id, priority, category, payload FROM bridgecore.event"
                  " WHERE instance_id = %s ORDER BY odoo_id", (inst,))
    T.ok(all(r[1:] == (None, None, None) for r in rows if r[0] in new) and len(rows) == 6,
         "legacy: new events have NULL priority, category and payload", rows)
    T.ok(all(r[1] and r[2] and r[3] for r in rows if r[0] not in new),
         "legacy: older events keep their priority, category and payload")
    check_mirror(inst, sd, "legacy: every event exactly once")
    remove_instance("legacy")
    sd.stop()


def test_dead_letter():
    """A malformed record goes to dead_letter; the rest is stored; the cursor
    passes it."""
    sd = Standin()
    sd.add(2)
    bad = sd.control("add_raw", row={
        "model": "sale.order", "record_id": 7, "event": "archive", "timestamp": odoo_now(),
        "priority": "low", "category": "business", "payload": {"name": "S0007"},
        "user_id": False})["ids"][0]
    sd.add(2)
    inst = add_instance("dead", sd)
    wait_all("dead", inst, sd, 10, "dead: the well-formed events arrive", dead=1)
    reason = DB.val("SELECT reason FROM bridgecore.dead_letter WHERE instance_id = %s"
                    " AND odoo_id = %s", (inst, bad))
    T.ok(reason and "archive" in reason, "dead: the record is in dead_letter (%s)" % reason)
    st = status("dead")
    T.ok(st["cursor"] >= bad + 2 and not DB.val(
        "SELECT count(*) FROM bridgecore.gap WHERE instance_id = %s", (inst,)),
        "dead: the cursor passed it, no gap left", st)
    check_mirror(inst, sd, "dead: every other event exactly once", skip_ids={bad})
    remove_instance("dead")
    sd.stop()


def test_unicode_and_large():
    """Unicode text and a 2 MB payload arrive intact."""
    sd = Standin()
    inst = add_instance("unicode", sd)
    big = sd.add(1, unicode=True, payload_size=2000000)[0]
    sd.add(2, unicode=True)
    wait_all("unicode", inst, sd, 15, "unicode: events with unicode and a 2 MB payload arrive")
    names = {r["id"]: r["payload"]["name"] for r in sd.rows()}
    got = dict(DB.all("SELECT odoo_id, payload->>'name' FROM bridgecore.event"
                      " WHERE instance_id = %s", (inst,)))
    T.ok(got == names and all("\U0001F600" in n and "\u4e2d\u6587" in n for n in got.values()),
         "unicode: payload->>'name' equals Odoo's text", "stored %r" % got, "Odoo %r" % names)
    T.ok(DB.val("SELECT length(payload->>'note') FROM bridgecore.event"
                " WHERE instance_id = %s AND odoo_id = %s", (inst, big)) == 2000000,
         "unicode: the 2 MB payload is complete")
    check_mirror(inst, sd, "unicode: every event exactly once, payloads equal")
    remove_instance("unicode")
    sd.stop()


def pg_ctl(action):
    """pg_ctl stop or start on the test cluster, as its owner (test/lib/cluster.sh)."""
    bindir = subprocess.check_output(["pg_config", "--bindir"], text=True).strip()
    cmd = [os.path.join(bindir, "pg_ctl"), "-D", os.path.join(CLUSTER_DIR, "data"),
           "-l", os.path.join(CLUSTER_DIR, "server.log"), "-w", "-t", "60"]
    cmd += ["-m", "fast", "stop"] if action == "stop" else ["start"]
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--"] + cmd
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def test_disruptions():
    """Nothing lost or duplicated when the poller, the launcher, PostgreSQL or
    Odoo go away."""
    sd = Standin()
    inst = add_instance("robust", sd, batch_size=5)
    sd.add(5)
    wait_all("robust", inst, sd, 10, "robust: first events arrive")

    # The poller, killed while it works through 150 events in batches of 5.
    offset = log_offset()
    sd.add(150)
    wait_for(lambda: status("robust")["cursor"] > 20, 10, "the poller to be under way")
    pid = poller_pid(inst)
    cursor = status("robust")["cursor"]
    DB.all("SELECT pg_terminate_backend(%s)", (pid,))
    T.wait(lambda: (poller_pid(inst) or pid) != pid, 5,
           "robust: a terminated poller is restarted within seconds")
    wait_all("robust", inst, sd, 15, "robust: all events arrive after the poller was terminated")
    check_mirror(inst, sd, "robust: poller terminated: every event exactly once")
    if log_path():
        starts = [int(c) for c in re.findall(
            r'bridgecore poller for instance "robust" started at cursor (\d+)', log_since(offset))]
        T.ok(starts and starts[0] >= cursor > 0,
             "robust: the new poller resumed from its cursor (>= %d)" % cursor,
             "logged start cursors: %s" % starts)
    else:
        T.skip("robust: the new poller resumed from its cursor", "no server log")

    # The launcher: the postmaster restarts it, and it replaces the pollers.
    lpid = launcher_pid()
    ppid = poller_pid(inst)
    sd.add(100)
    DB.all("SELECT pg_terminate_backend(%s)", (lpid,))
    T.wait(lambda: (launcher_pid() or lpid) != lpid, 10,
           "robust: a terminated launcher is restarted")
    T.wait(lambda: (poller_pid(inst) or ppid) != ppid and one_poller_each(), 10,
           "robust: the new launcher runs exactly one poller per instance",
           lambda: poller_pids())
    wait_all("robust", inst, sd, 15, "robust: all events arrive after the launcher was terminated")
    check_mirror(inst, sd, "robust: launcher terminated: every event exactly once")

    # PostgreSQL stops; Odoo gets new events meanwhile; PostgreSQL starts.
    if CLUSTER_DIR:
        sd.add(10)
        DB.conn.close()
        pg_ctl("stop")
        sd.add(30)
        pg_ctl("start")
        wait_for(lambda: _reconnect(), 30, "PostgreSQL to accept connections")
        T.wait(lambda: poller_pid(inst), 15, "robust: the poller runs again after a restart")
        wait_all("robust", inst, sd, 15, "robust: events added while PostgreSQL was down arrive")
        check_mirror(inst, sd, "robust: restart: every event exactly once")
    else:
        T.skip("robust: PostgreSQL restart", "CLUSTER_DIR is not set")

    # Odoo goes away: connections reset, repeatedly.
    sd.control("fault", kind="reset", count=4)
    sd.add(20)
    worst = [0]

    def failing():
        s = status("robust")
        worst[0] = max(worst[0], s["consecutive_failures"])
        return worst[0] >= 3
    T.wait(failing, 15, "robust: an Odoo outage shows as consecutive failures",
           describe("robust", inst, sd))
    wait_all("robust", inst, sd, 20, "robust: all events arrive once Odoo is back")
    check_mirror(inst, sd, "robust: Odoo outage: every event exactly once")
    remove_instance("robust")
    sd.stop()


def _reconnect():
    try:
        DB.connect()
        return True
    except psycopg2.OperationalError:
        return False


def test_lifecycle():
    """enabled, remove_instance, DROP EXTENSION and CREATE EXTENSION start and
    stop pollers; the launcher survives the extension's absence quietly."""
    for (name,) in DB.all("SELECT name FROM bridgecore.instance"):
        remove_instance(name)
    T.wait(lambda: not poller_pids(), 10, "lifecycle: no poller without instances",
           lambda: poller_pids())
    sd = Standin()
    sd.add(2)
    inst = add_instance("life", sd)
    wait_all("life", inst, sd, 10, "lifecycle: a new instance is polled")
    T.ok(one_poller_each(), "lifecycle: one poller", poller_pids())

    DB.all("SELECT bridgecore.alter_instance('life', enabled => false)")
    T.wait(lambda: not poller_pids(), 10, "lifecycle: disabling stops the poller",
           lambda: poller_pids())
    T.ok(status("life")["state"] == "disabled", "lifecycle: instances shows state disabled")
    sd.add(2)
    T.ok(holds_for(lambda: not poller_pids() and len(stored_ids(inst)) == 2, 1.0),
         "lifecycle: a disabled instance is not polled")
    DB.all("SELECT bridgecore.alter_instance('life', enabled => true)")
    T.wait(lambda: poller_pid(inst), 10, "lifecycle: enabling starts the poller again")
    wait_all("life", inst, sd, 10, "lifecycle: events added while disabled arrive")
    remove_instance("life")
    T.wait(lambda: not poller_pids(), 10, "lifecycle: remove_instance stops the poller",
           lambda: poller_pids())

    # DROP EXTENSION while one poller waits out a long poll interval and
    # another backs off from an Odoo that is down: neither may linger.
    down = Standin()
    slow = add_instance("slow", sd, poll_interval="1 hour")
    add_instance("down", down)
    down.stop()
    wait_all("slow", slow, sd, 10, "lifecycle: an instance with a poll interval of 1 hour is polled")
    T.wait(lambda: len(poller_pids()) == 2 and state_is("down", "backoff"), 10,
           "lifecycle: two pollers, one of them failing", lambda: (poller_pids(), status("down")))
    lpid = launcher_pid()
    offset = log_offset()
    DB.all("DROP EXTENSION bridgecore")
    T.wait(lambda: not poller_pids(), 5, "lifecycle: DROP EXTENSION stops every poller",
           lambda: poller_pids())
    T.ok(holds_for(lambda: launcher_pid() == lpid and not poller_pids(), 2.0),
         "lifecycle: without the extension the launcher stays alive and starts nothing",
         "launcher %s (was %s), pollers %s" % (launcher_pid(), lpid, poller_pids()))
    if log_path():
        noise = [line for line in log_since(offset).splitlines()
                 if "[%d]" % lpid in line or "bridgecore launcher" in line]
        T.ok(not noise, "lifecycle: the launcher logs nothing without the extension", *noise[:10])
    else:
        T.skip("lifecycle: the launcher logs nothing without the extension", "no server log")

    DB.all("CREATE EXTENSION bridgecore")
    inst = add_instance("again", sd, poll_interval="1 hour")
    T.wait(lambda: poller_pid(inst), 10, "lifecycle: CREATE EXTENSION + add_instance start a poller")
    wait_all("again", inst, sd, 10, "lifecycle: the new instance gets every event")
    check_mirror(inst, sd, "lifecycle: every event exactly once after re-creation")
    T.ok(one_poller_each(), "lifecycle: exactly one poller", poller_pids())

    # Re-created in one transaction: the new instance has the old one's id
    # (1) and config version, but another Odoo.  The old poller must not
    # serve it.
    other = Standin()
    other.add(3, model="res.partner")
    old_pid = poller_pid(inst)
    DB.all("BEGIN; DROP EXTENSION bridgecore; CREATE EXTENSION bridgecore;"
           " SELECT bridgecore.add_instance('fresh', %s, 'odoo', 'bridgecore', %s,"
           "                                poll_interval => %s::interval);"
           " COMMIT", (other.url, other.password, POLL))
    fresh = DB.val("SELECT id FROM bridgecore.instance WHERE name = 'fresh'")
    T.diag("lifecycle: instance 'again' had id %s, 'fresh' has id %s" % (inst, fresh))
    T.wait(lambda: (poller_pid(fresh) or old_pid) != old_pid, 10,
           "lifecycle: DROP + CREATE EXTENSION in one transaction replace the old poller",
           lambda: (poller_pids(), old_pid))
    wait_all("fresh", fresh, other, 10, "lifecycle: the re-created instance gets its events")
    check_mirror(fresh, other,
                 "lifecycle: the re-created instance holds its own Odoo's events only")
    T.ok(one_poller_each(), "lifecycle: exactly one poller", poller_pids())
    other.stop()
    sd.stop()


def test_decode_parity():
    """The worker (C decoder, array INSERT) and bridgecore.ingest() (SQL)
    store the same records the same way and dead-letter the others with
    the same reasons."""
    ts = "2025-11-16 10:30:00"
    base = {"model": "sale.order", "record_id": 7, "event": "write", "timestamp": ts}
    variants = [
        {},                                                     # legacy field set
        {"priority": "high", "category": "business", "user_id": [2, "Mitchell Admin"],
         "payload": {"name": "S\u00e9 \"q\" \\ /", "_changed_fields": ["name", 1, None, {"b": 1, "a": [2, 3]}]}},
        {"priority": False, "category": False, "user_id": False, "payload": False},
        {"timestamp": "2025-11-16T10:30:00.250Z", "record_id": -1, "event": "unlink"},
        {"record_id": 3000000000.0, "payload": {"n": 0.1, "big": 1e300, "neg": -0.0}},
        {"model": None}, {"model": ""}, {"model": "Sale Order"}, {"model": 5},
        {"record_id": 0}, {"record_id": "5"}, {"record_id": 1.5}, {"record_id": None},
        {"event": "archive"}, {"event": None}, {"event": 5}, {"event": {"b": 1, "a": [2, 3]}},
        {"timestamp": "2025-02-30 10:00:00"}, {"timestamp": False}, {"timestamp": "yesterday"},
        {"priority": "urgent"}, {"priority": 3},
        {"category": ""}, {"category": "c" * 65}, {"category": ["x"]},
        {"user_id": "bob"}, {"user_id": [0, "x"]}, {"user_id": [2]}, {"user_id": [2, 3]},
        {"payload": {"body": "a\u0000b"}},
    ]
    sd = Standin()
    for v in variants:
        row = dict(base)
        for k, val in v.items():
            if val is None:
                row.pop(k, None)
            else:
                row[k] = val
        sd.control("add_raw", row=row)
    # Both paths get exactly what search_read serves (false for what is missing).
    records = sd.rows()
    worker = add_instance("parity_c", sd)
    DB.all("SELECT count(*) FROM bridgecore.add_instance('parity_sql', 'http://127.0.0.1:9',"
           " 'odoo', 'x', 'x', enabled => false)")
    sql_inst = DB.val("SELECT id FROM bridgecore.instance WHERE name = 'parity_sql'")
    DB.all("SELECT bridgecore.ingest('parity_sql', %s::json)", (json.dumps(records),))
    T.wait(lambda: DB.val("SELECT cursor FROM bridgecore.instance WHERE id = %s", (worker,))
           >= records[-1]["id"], 10, "parity: the worker passed every record")

    def stored(inst):
        return DB.all("SELECT odoo_id, model, record_id, event::text, priority::text, category,"
                      " payload, changed_fields, odoo_user_id, odoo_user_name, occurred_at,"
                      " regexp_replace(doc::text, '^[{]\"id\" : [0-9]+, ', '{')"
                      " FROM bridgecore.event WHERE instance_id = %s ORDER BY odoo_id", (inst,))

    def dead(inst):
        return DB.all("SELECT odoo_id, reason FROM bridgecore.dead_letter"
                      " WHERE instance_id = %s ORDER BY odoo_id", (inst,))
    c_rows, sql_rows = stored(worker), stored(sql_inst)
    T.ok(len(c_rows) == 5 and c_rows == sql_rows,
         "parity: the same %d events, field by field" % len(c_rows),
         "C:   %r" % (c_rows,), "SQL: %r" % (sql_rows,))
    c_dead, sql_dead = dead(worker), dead(sql_inst)
    T.ok(len(c_dead) == len(variants) - 5 and c_dead == sql_dead,
         "parity: the same %d dead letters with the same reasons" % len(c_dead),
         *["%s | C: %r | SQL: %r" % (a[0], a[1], b[1]) for a, b in zip(c_dead, sql_dead) if a != b])
    remove_instance("parity_c")
    remove_instance("parity_sql")
    sd.stop()


TESTS = [
    test_order_and_full_batches,
    test_notify,
    test_gaps,
    test_unicode_and_large,
    test_legacy_fields,
    test_dead_letter,
    test_decode_parity,
    test_credentials_and_session,
    test_faults,
    test_hung_instance,
    test_sigterm_in_flight,
    test_disruptions,
    test_lifecycle,
]


def setup():
    global DB
    DB = Database()
    if DB.val("SELECT count(*) FROM pg_extension WHERE extname = 'bridgecore'"):
        raise RuntimeError("the extension bridgecore exists already in database %s; this test"
                           " needs a database without it" % DB.val("SELECT current_database()"))
    if DB.val("SELECT current_setting('bridgecore.database')") != DB.val("SELECT current_database()"):
        raise RuntimeError("bridgecore.database is %s, not the current database"
                           % DB.val("SELECT current_setting('bridgecore.database')"))
    T.ok(wait_for(launcher_pid, 10, "the launcher"), "the launcher runs")
    set_guc("bridgecore.max_backoff", "2s")
    set_guc("bridgecore.request_timeout", "2s")
    set_guc("bridgecore.gap_window", "2s")
    DB.all("CREATE EXTENSION bridgecore")


def cleanup():
    try:
        if DB is None or DB.conn.closed:
            _reconnect()
        DB.all("DROP EXTENSION IF EXISTS bridgecore CASCADE")
        for name in GUCS:
            DB.all("ALTER SYSTEM RESET %s" % name)
        DB.all("SELECT pg_reload_conf()")
        wait_for(lambda: not poller_pids(), 10, "the pollers to stop")
    except Exception as e:
        T.diag("cleanup: %s" % e)
    for sd in list(Standin.running):
        sd.stop()


def tidy_up():
    """After a test that broke off: its instances and stand-ins go away."""
    try:
        if DB.conn.closed:
            wait_for(_reconnect, 30, "PostgreSQL to accept connections")
        if DB.val("SELECT count(*) FROM pg_extension WHERE extname = 'bridgecore'"):
            for (name,) in DB.all("SELECT name FROM bridgecore.instance"):
                remove_instance(name)
        else:
            DB.all("CREATE EXTENSION bridgecore")
    except Exception as e:
        T.diag("tidy up: %s" % e)
    for sd in list(Standin.running):
        sd.stop()


def main():
    # A terminated run still cleans up (the finally below).
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    start = time.monotonic()
    try:
        setup()
        chosen = [t for t in TESTS if not sys.argv[1:] or any(a in t.__name__ for a in sys.argv[1:])]
        for test in chosen:
            t0 = time.monotonic()
            try:
                test()
            except Exception:
                T.ok(False, "%s ran to its end" % test.__name__, traceback.format_exc())
                tidy_up()
            T.diag("%s: %.1f s" % (test.__name__, time.monotonic() - t0))
    except Exception:
        T.ok(False, "setup", traceback.format_exc())
    finally:
        cleanup()
    print("1..%d" % T.n)
    T.diag("%d of %d failed, %.0f s" % (len(T.failed), T.n, time.monotonic() - start))
    for f in T.failed:
        T.diag("failed: " + f)
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
