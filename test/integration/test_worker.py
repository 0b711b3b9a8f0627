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
import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import psycopg2

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(os.path.dirname(HERE), "odoo_standin.py")
CLUSTER_DIR = os.environ.get("CLUSTER_DIR") or None
LOCK_KEY = 1112425298           # the pollers' advisory lock class (poller.c)
POLL = "100 milliseconds"       # poll interval of most test instances

# Settings the test changes with ALTER SYSTEM, and resets at the end.
GUCS = ("bridgecore.max_backoff", "bridgecore.gap_window", "bridgecore.request_timeout", "bridgecore.pollers",
        "bridgecore.max_response_size", "bridgecore.retention", "bridgecore.maintenance_interval",
        "bridgecore.cleanup_batch_size", "bridgecore.device_idle_timeout", "bridgecore.partition_size")


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
    the new value (compared in the setting's own unit, whatever it is; a
    value without a unit is in that unit already)."""
    DB.all("ALTER SYSTEM SET %s = %%s" % name, (value,))
    DB.all("SELECT pg_reload_conf()")
    number, unit = re.fullmatch(r"(\d+)\s*([a-zA-Z]*)", value).groups()

    def seen():
        setting, base = DB.one("SELECT setting, unit FROM pg_settings WHERE name = %s", (name,))
        if not unit:
            return int(setting) == int(number)
        base_factor = UNITS[re.sub(r"^\d+", "", base) or base] * int(re.match(r"\d*", base).group() or 1)
        return int(setting) * base_factor == int(number) * UNITS[unit]
    wait_for(seen, 10, "%s = %s after reload" % (name, value))


def reset_guc(name):
    """ALTER SYSTEM RESET name and reload; waits until this session sees the
    default again."""
    DB.all("ALTER SYSTEM RESET %s" % name)
    DB.all("SELECT pg_reload_conf()")
    wait_for(lambda: DB.val("SELECT setting = boot_val FROM pg_settings WHERE name = %s", (name,)),
             10, "%s back to its default after reload" % name)


@contextlib.contextmanager
def guc(name, value):
    """set_guc for the duration of a with block, then reset_guc."""
    set_guc(name, value)
    try:
        yield
    finally:
        reset_guc(name)


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


def pollers_wanted():
    """How many poller processes the enabled instances need: poller k of n
    runs the instances whose id is k modulo n (bridgecore.pollers)."""
    return DB.val("SELECT count(DISTINCT id % current_setting('bridgecore.pollers')::int)"
                  " FROM bridgecore.instance WHERE enabled")


def one_poller_each():
    """True when every enabled instance has its poller and no other runs."""
    enabled = [r[0] for r in DB.all("SELECT id FROM bridgecore.instance WHERE enabled")]
    return all(poller_pid(i) for i in enabled) and len(poller_pids()) == pollers_wanted()


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
    """A hung Odoo delays only its own instance, also when one poller
    process runs both instances."""
    set_guc("bridgecore.pollers", "1")
    hung, healthy = Standin(), Standin()
    hung.add(2)
    healthy.add(2)
    a = add_instance("hung", hung)
    b = add_instance("healthy", healthy)
    wait_all("hung", a, hung, 10, "hung: first events of the hung instance arrive")
    wait_all("healthy", b, healthy, 10, "hung: first events of the healthy instance arrive")
    T.ok(poller_pid(a) is not None and poller_pid(a) == poller_pid(b) and len(poller_pids()) == 1,
         "hung: with bridgecore.pollers = 1 one process runs both instances",
         (poller_pid(a), poller_pid(b), poller_pids()))
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
    reset_guc("bridgecore.pollers")
    hung.stop()
    healthy.stop()


def test_pollers_bounded():
    """Instances share at most bridgecore.pollers processes, each instance
    run by exactly one; a changed setting moves them while events flow,
    without losing or repeating one."""
    set_guc("bridgecore.pollers", "2")
    sds = [Standin() for _ in range(6)]
    ids = []
    for i, sd in enumerate(sds):
        sd.add(3)
        ids.append(add_instance("many%d" % i, sd))
    for i, (inst, sd) in enumerate(zip(ids, sds)):
        wait_all("many%d" % i, inst, sd, 15, "pollers: events of instance %d of 6 arrive" % (i + 1))
    T.wait(one_poller_each, 10, "pollers: 6 instances on %d processes (bridgecore.pollers = 2)"
           % pollers_wanted(), lambda: (poller_pids(), [poller_pid(i) for i in ids]))
    T.ok(len(poller_pids()) <= 2, "pollers: at most 2 poller processes", poller_pids())
    for sd in sds:
        sd.add(4)
    set_guc("bridgecore.pollers", "3")
    for sd in sds:
        sd.add(4)
    T.wait(lambda: one_poller_each() and len(poller_pids()) == 3, 15,
           "pollers: bridgecore.pollers = 3 moves them to 3 processes",
           lambda: (poller_pids(), [poller_pid(i) for i in ids]))
    for i, (inst, sd) in enumerate(zip(ids, sds)):
        wait_all("many%d" % i, inst, sd, 15, "pollers: instance %d of 6 caught up after the move" % (i + 1))
        check_mirror(inst, sd, "pollers: every event of instance %d of 6 exactly once" % (i + 1))
    for i in range(len(sds)):
        remove_instance("many%d" % i)
    T.wait(lambda: not poller_pids(), 10, "pollers: none left without instances", poller_pids)
    reset_guc("bridgecore.pollers")
    for sd in sds:
        sd.stop()


def test_failed_commit_keeps_cursor():
    """A store whose commit fails (here a deferred constraint trigger; in
    life a full NOTIFY queue or a serialization failure) leaves the poller
    asking for the same rows again: its cursor moves only with a commit.
    Before, it moved in memory, and rows beyond the gap budget (1000) were
    never asked for again once newer rows came."""
    DB.all("CREATE TABLE public.bc_fail_commit (x int)")
    DB.all("CREATE FUNCTION public.bc_fail_commit() RETURNS trigger LANGUAGE plpgsql AS $$"
           " BEGIN IF EXISTS (SELECT 1 FROM public.bc_fail_commit) THEN"
           "   RAISE EXCEPTION 'commit refused by the test'; END IF; RETURN NULL; END $$")
    DB.all("CREATE CONSTRAINT TRIGGER bc_fail_commit AFTER UPDATE ON bridgecore.instance"
           " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.bc_fail_commit()")
    sd = Standin()
    try:
        # (the suite runs with bridgecore.max_backoff = 2 s)
        DB.all("INSERT INTO public.bc_fail_commit VALUES (1)")
        sd.add(1600)
        inst = add_instance("commitfail", sd, batch_size=2000)
        wait_for(lambda: sd.stats()["search_reads"] >= 1 and
                 DB.val("SELECT count(*) FROM bridgecore.event WHERE instance_id = %s", (inst,)) == 0
                 and log_since(0).count("commit refused by the test") >= 1, 15,
                 "a store whose commit was refused")
        sd.add(5)           # newer rows, fetched by the next poll
        DB.all("DELETE FROM public.bc_fail_commit")
        wait_all("commitfail", inst, sd, 20,
                 "failed commit: every row arrives once commits work again (1,605)")
        check_mirror(inst, sd, "failed commit: every event exactly once")
        remove_instance("commitfail")
    finally:
        DB.all("DROP TRIGGER IF EXISTS bc_fail_commit ON bridgecore.instance")
        DB.all("DROP FUNCTION IF EXISTS public.bc_fail_commit()")
        DB.all("DROP TABLE IF EXISTS public.bc_fail_commit")
        sd.stop()


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
    for secret in (new, "**-secret"):
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


# ---- operations (0.2.0) -------------------------------------------------------

# The middleware's model classification (odoo-contract.md, "Models for discovery").
IGNORED_PARTS = ("ir.", "base.", "mail.message", "mail.followers", "mail.activity", "bus.bus",
                 "report.", "wizard")
CRITICAL_MODELS = ("sale.order", "purchase.order", "account.move", "stock.picking", "res.partner",
                   "account.payment")
IMPORTANT_PREFIXES = ("sale.", "purchase.", "stock.", "account.", "product.", "hr.", "project.", "crm.")
CLASS_ORDER = ("critical", "important", "standard", "ignored", "transient")


def classify(model, transient):
    """(classification, priority) of a model, by the contract's rules in their order."""
    if transient:
        return "transient", None
    if any(part in model for part in IGNORED_PARTS):
        return "ignored", None
    if model in CRITICAL_MODELS:
        return "critical", "high"
    if model.startswith(IMPORTANT_PREFIXES):
        return "important", "medium"
    return "standard", "low"


def odoo_call(sd, model, method, args, kwargs=None):
    """One execute_kw on a stand-in, as its configured user."""
    uid = sd.rpc("common", "authenticate", ["odoo", "bridgecore", sd.password, {}])
    return sd.rpc("object", "execute_kw",
                  ["odoo", uid, sd.password, model, method, args, kwargs or {}])


def add_disabled_instance(name, sd, secret=None):
    """An instance no poller serves: only the calls of the test reach its stand-in
    (and so consume its faults)."""
    DB.all("SELECT name FROM bridgecore.add_instance(%s, %s, 'odoo', 'bridgecore', %s, enabled => false)",
           (name, sd.url, secret or sd.password))
    return DB.val("SELECT id FROM bridgecore.instance WHERE name = %s", (name,))


def sql_error(sql, args=None, conn=None):
    """Runs sql expecting it to fail.  Returns (sqlstate, everything the error
    says: message, detail and hint), or (None, None) when it succeeded."""
    conn = conn or DB.conn
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
    except psycopg2.Error as e:
        text = "\n".join(x for x in (e.diag.message_primary, e.diag.message_detail, e.diag.message_hint) if x)
        return e.pgcode, text
    return None, None


def stats_row(name):
    row = DB.one("SELECT to_jsonb(s) FROM bridgecore.stats s WHERE s.instance = %s", (name,))
    return row[0] if row else None


def test_discovery():
    """discover_models(): the stand-in's models with the contract's
    classification, from ir.model or (without access) get_available_models;
    refused credentials, an unreachable or hung Odoo, statement_timeout and
    pg_cancel_backend."""
    secret = "Disco-Key-5e1f0a"
    sd = Standin(password=secret)
    inst = add_disabled_instance("disco", sd)
    ir = odoo_call(sd, "ir.model", "search_read", [[]], {"fields": ["model", "name", "transient"]})
    want = sorted(((m["model"], m["name"], m["transient"]) + classify(m["model"], m["transient"])
                   for m in ir), key=lambda r: (CLASS_ORDER.index(r[3]), r[0]))
    got = DB.all("SELECT model, name, transient, classification, priority"
                 " FROM bridgecore.discover_models('disco')")
    T.ok(len(ir) > 30 and got == want,
         "discovery: discover_models returns Odoo's %d models, classified as the middleware does,"
         " critical first" % len(ir),
         *(["got  %r" % (g,) for g in got if g not in want][:10]
           + ["want %r" % (w,) for w in want if w not in got][:10]))
    spot = dict((r[0], r[3:]) for r in got)
    T.ok(spot.get("repair.order") == ("ignored", None) and spot.get("account.payment") == ("critical", "high")
         and spot.get("account.payment.term") == ("important", "medium")
         and spot.get("sale.advance.payment.inv") == ("transient", None)
         and spot.get("res.partner.bank") == ("standard", "low"),
         "discovery: repair.order ignored, account.payment critical, account.payment.term important,"
         " wizards transient, res.partner.bank standard", spot)
    stored = DB.all("SELECT model, name, transient, odoo_model_id, classification, priority::text"
                    " FROM bridgecore.odoo_model WHERE instance_id = %s ORDER BY model", (inst,))
    want_stored = sorted((m["model"], m["name"], m["transient"], m["id"])
                         + classify(m["model"], m["transient"]) for m in ir)
    T.ok(stored == want_stored, "discovery: bridgecore.odoo_model holds the result, with Odoo's model ids",
         *["stored %r" % (s,) for s in stored if s not in want_stored][:10])

    # Without "Access Rights" (Odoo 15+), ir.model is refused: get_available_models.
    sd.control("set", ir_model_access=False)
    try:
        odoo_call(sd, "ir.model", "search_read", [[]], {"fields": ["model"]})
        refused = False
    except RuntimeError as e:
        refused = "AccessError" in str(e)
    available = odoo_call(sd, "ir.model", "get_available_models", [])
    want = sorted(((m["model"], m["display_name"], None) + classify(m["model"], None) for m in available),
                  key=lambda r: (CLASS_ORDER.index(r[3]), r[0]))
    got = DB.all("SELECT model, name, transient, classification, priority"
                 " FROM bridgecore.discover_models('disco')")
    T.ok(refused and got == want and len(got) == len(available) < len(ir),
         "discovery: without access to ir.model, get_available_models: %d models, transient unknown"
         " (NULL), still classified" % len(available),
         "ir.model refused: %s" % refused, *["got  %r" % (g,) for g in got if g not in want][:10])
    T.ok(DB.val("SELECT count(*) FROM bridgecore.odoo_model WHERE instance_id = %s"
                " AND (transient IS NOT NULL OR odoo_model_id IS NOT NULL)", (inst,)) == 0
         and DB.val("SELECT count(*) FROM bridgecore.odoo_model WHERE instance_id = %s", (inst,)) == len(got),
         "discovery: odoo_model was replaced by the new result (no transient flags, no Odoo ids)")
    sd.control("set", ir_model_access=True)

    # Refused credentials: 28000, a clear message, no secret.
    wrong = "Wrong-Secret-93c7d1"
    DB.all("SELECT count(*) FROM bridgecore.alter_instance('disco', secret => %s)", (wrong,))
    code, text = sql_error("SELECT count(*) FROM bridgecore.discover_models('disco')")
    T.ok(code == "28000" and 'Odoo instance "disco" refused the credentials' in (text or ""),
         "discovery: wrong credentials: SQLSTATE 28000, the instance refused the credentials (%s)" % code,
         text)
    T.ok(text and wrong not in text and secret not in text,
         "discovery: ...and the error does not contain the secret")
    DB.all("SELECT count(*) FROM bridgecore.alter_instance('disco', secret => %s)", (secret,))

    # Odoo errors: 38000. One at login that quotes the secret: masked.
    sd.control("fault", kind="rpc_error", name="odoo.exceptions.AccessError",
               message="key %s may not log in" % secret)
    code, text = sql_error("SELECT count(*) FROM bridgecore.discover_models('disco')")
    T.ok(code == "38000" and "odoo.exceptions.AccessError: key *** may not log in" in (text or "")
         and secret not in text,
         "discovery: an Odoo error at login: SQLSTATE 38000 (%s), the secret it quotes masked" % code, text)
    sd.control("set", session_valid=False)
    code, text = sql_error("SELECT count(*) FROM bridgecore.discover_models('disco')")
    T.ok(code == "38000" and "Session expired" in (text or ""),
         "discovery: an Odoo error other than AccessError on ir.model: SQLSTATE 38000 (%s)" % code, text)

    # An unreachable Odoo (a closed port): 08006.
    DB.all("SELECT count(*) FROM bridgecore.alter_instance('disco', url => %s)",
           ("http://127.0.0.1:%d" % free_port(),))
    start = time.monotonic()
    code, text = sql_error("SELECT count(*) FROM bridgecore.discover_models('disco')")
    T.ok(code == "08006" and 'could not reach Odoo instance "disco"' in (text or ""),
         "discovery: unreachable Odoo: SQLSTATE 08006 (%s) after %.2f s" % (code, time.monotonic() - start),
         text)
    DB.all("SELECT count(*) FROM bridgecore.alter_instance('disco', url => %s)", (sd.url,))

    # A hung Odoo: statement_timeout and pg_cancel_backend end the call, not
    # bridgecore.request_timeout (60 s here).
    set_guc("bridgecore.request_timeout", "60s")
    conn = psycopg2.connect("", application_name="bridgecore worker test: discovery")
    conn.autocommit = True
    try:
        sd.control("fault", kind="hang", seconds=30)
        conn.cursor().execute("SET statement_timeout = '1s'")
        start = time.monotonic()
        code, text = sql_error("SELECT count(*) FROM bridgecore.discover_models('disco')", conn=conn)
        took = time.monotonic() - start
        T.ok(code == "57014" and took < 3,
             "discovery: hung Odoo with statement_timeout 1 s: SQLSTATE 57014 after %.2f s" % took, text)
        T.ok(sd.stats()["faults_pending"] == 0,
             "discovery: ...and it was the hung request that was cut short")
        conn.cursor().execute("RESET statement_timeout")
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM bridgecore.discover_models('disco')")
            n = cur.fetchone()[0]
        T.ok(n == len(ir), "discovery: the same backend discovers the models afterwards (%d)" % n)

        sd.control("fault", kind="hang", seconds=30)
        pid = conn.get_backend_pid()
        outcome = {}

        def call():
            outcome["error"] = sql_error("SELECT count(*) FROM bridgecore.discover_models('disco')",
                                         conn=conn)
            outcome["at"] = time.monotonic()
        worker = threading.Thread(target=call, daemon=True)
        worker.start()
        wait_for(lambda: sd.stats()["faults_pending"] == 0 and DB.val(
            "SELECT state = 'active' AND query LIKE '%%discover_models%%'"
            " FROM pg_stat_activity WHERE pid = %s", (pid,)), 10, "the discover_models call to hang")
        time.sleep(0.3)
        T.ok(worker.is_alive(), "discovery: discover_models is stuck in the hung request")
        start = time.monotonic()
        DB.all("SELECT pg_cancel_backend(%s)", (pid,))
        worker.join(5)
        took = outcome.get("at", float("inf")) - start
        T.ok(not worker.is_alive() and outcome["error"][0] == "57014" and took < 2,
             "discovery: pg_cancel_backend cancels a discover_models stuck in a hung Odoo"
             " (57014, %.2f s)" % took,
             outcome.get("error"))
        if not worker.is_alive():
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM bridgecore.discover_models('disco')")
                n = cur.fetchone()[0]
            T.ok(n == len(ir), "discovery: ...and the backend works afterwards")
        else:
            T.ok(False, "discovery: ...and the backend works afterwards", "the call is still running")
    finally:
        conn.close()
        set_guc("bridgecore.request_timeout", "2s")
    remove_instance("disco")
    sd.stop()


def test_initialize_audit():
    """initialize_audit(): plans, then creates, the webhook.config of every
    critical and important model Odoo does not track yet; leaves existing
    ones alone; include_standard adds the standard ones."""
    sd = Standin()
    add_disabled_instance("audit", sd)
    ir = {m["model"]: m for m in odoo_call(sd, "ir.model", "search_read", [[]],
                                           {"fields": ["model", "name", "transient"]})}
    cls = {m: classify(m, r["transient"]) for m, r in ir.items()}

    def of(*classes):
        """{model, priority} of the models of these classes, by priority then name."""
        rank = {"high": 0, "medium": 1, "low": 2}
        return [{"model": m, "priority": p}
                for m, (c, p) in sorted(cls.items(), key=lambda x: (rank.get(x[1][1], 3), x[0]))
                if c in classes]

    def configs():
        return sd.control("webhook_configs")["configs"]

    seeded = sd.control("add_webhook_config", row={"model_name": "sale.order", "priority": "low",
                                                   "enabled": False, "events": "create"})["id"]
    before = configs()
    wanted = [x for x in of("critical", "important") if x["model"] != "sale.order"]
    plan = DB.val("SELECT bridgecore.initialize_audit('audit')")
    T.ok(plan == {"instance": "audit", "dry_run": True, "created": [], "would_create": wanted,
                  "already_configured": ["sale.order"]},
         "audit: dry run (the default) plans the %d critical and important models, sale.order"
         " already configured" % len(wanted), plan, "want would_create %r" % wanted)
    T.ok(configs() == before, "audit: ...and creates nothing in Odoo", configs())

    done = DB.val("SELECT bridgecore.initialize_audit('audit', dry_run => false)")
    T.ok(done == {"instance": "audit", "dry_run": False, "created": wanted, "would_create": [],
                  "already_configured": ["sale.order"]},
         "audit: dry_run => false creates them", done)
    after = configs()
    made = {c["model_name"]: c for c in after if c["id"] != seeded}
    problems = []
    for x in wanted:
        c = made.get(x["model"])
        m = ir[x["model"]]
        want_c = {"model_name": x["model"], "model_id": [m["id"], m["name"]], "enabled": True,
                  "priority": x["priority"], "category": "business", "events": "create,write,unlink"}
        if c is None or {k: c.get(k) for k in want_c} != want_c:
            problems.append("%s: %r, want %r" % (x["model"], c, want_c))
    T.ok(len(made) == len(wanted) and not problems,
         "audit: one webhook.config per model: enabled, critical high, important medium, all events",
         *problems[:10])
    T.ok([c for c in after if c["id"] == seeded] == [c for c in before if c["id"] == seeded],
         "audit: the existing configuration of sale.order is left untouched",
         [c for c in after if c["id"] == seeded])

    again = DB.val("SELECT bridgecore.initialize_audit('audit', dry_run => false)")
    T.ok(again["created"] == [] and again["would_create"] == [] and
         sorted(again["already_configured"]) == sorted(x["model"] for x in of("critical", "important"))
         and configs() == after,
         "audit: a second run creates nothing: every model is already configured", again)

    standard = of("standard")
    more = DB.val("SELECT bridgecore.initialize_audit('audit', dry_run => false, include_standard => true)")
    T.ok(more["created"] == standard and len(standard) >= 3,
         "audit: include_standard => true adds the %d standard models, priority low" % len(standard),
         more, "want created %r" % standard)
    final = configs()
    T.ok(len(final) == len(after) + len(standard) and
         all(c["priority"] == "low" and c["enabled"] and c["events"] == "create,write,unlink"
             for c in final if c["model_name"] in {x["model"] for x in standard}),
         "audit: ...as enabled configurations of all events", final)
    T.ok(not {c["model_name"] for c in final}
         & {m for m, (c, p) in cls.items() if c in ("ignored", "transient")},
         "audit: ignored and transient models are never configured")
    remove_instance("audit")
    sd.stop()


def test_retention_and_devices():
    """The launcher makes partitions of the log ahead and applies
    bridgecore.retention by dropping whole partitions every
    bridgecore.maintenance_interval, and marks devices idle longer than
    bridgecore.device_idle_timeout inactive."""
    def parts():
        return [tuple(r) for r in DB.all("SELECT lo, hi FROM bridgecore._partitions()")]

    def top():
        return DB.val("SELECT max(hi) FROM bridgecore._partitions()")

    set_guc("bridgecore.partition_size", "100")
    try:
        # A fresh launcher runs maintenance at once: with the ids at the end
        # of the last partition, it makes the next one, 100 ids wide.
        DB.all("SELECT bridgecore._ensure_partitions()")
        DB.all("SELECT setval('bridgecore.event_id_seq', (SELECT max(hi) - 1 FROM bridgecore._partitions()))")
        first = top()
        lpid = launcher_pid()
        DB.all("SELECT pg_terminate_backend(%s)", (lpid,))
        T.wait(lambda: (launcher_pid() or lpid) != lpid and top() == first + 100, 10,
               "retention: a new launcher runs maintenance at its start, making a partition ahead",
               lambda: parts())
        set_guc("bridgecore.maintenance_interval", "1s")
        DB.all("SELECT setval('bridgecore.event_id_seq', %s)", (first + 50,))
        T.wait(lambda: top() == first + 200, 5,
               "retention: maintenance_interval lowered to 1 s takes effect at once", lambda: parts())
        DB.all("SELECT setval('bridgecore.event_id_seq', %s)", (first - 1,))

        sd = Standin()
        old_ts = (datetime.now(timezone.utc) - timedelta(hours=3)).strftime("%Y-%m-%d %H:%M:%S")
        for i in range(250):
            sd.control("add_raw", row={
                "model": "sale.order", "record_id": i + 1, "event": "write", "timestamp": old_ts,
                "priority": "high", "category": "business", "payload": {"name": "S%05d" % (i + 1)},
                "user_id": False})
        recent = sd.add(3, model="sale.order")
        inst = add_instance("retention", sd)
        wait_all("retention", inst, sd, 15, "retention: 253 events arrive, 250 of them 3 hours old")
        T.ok(DB.val("SELECT min(id) FROM bridgecore.event WHERE instance_id = %s", (inst,)) == first
             and top() >= first + 300,
             "retention: they fill the partitions from id %s, made as the ids come" % first, parts())

        def pull(device, limit=100):
            return DB.val("SELECT bridgecore.sync_pull(1, %s, 'sales_app', %s, instance => 'retention')",
                          (device, limit))

        def active(device):
            return DB.val("SELECT is_active FROM bridgecore.sync_state WHERE instance_id = %s AND device_id = %s",
                          (inst, device))
        behind = pull("ret-behind", 1)              # its cursor stays at the first event
        ahead = pull("ret-ahead", 500)              # its cursor passes every event
        T.ok(len(behind["events"]) == 1 and ahead["resync_required"] is False,
             "retention: one device stays behind, another has every event")
        T.ok(holds_for(lambda: len(stored_ids(inst)) == 253, 2.0),
             "retention: ...which keeps events younger than 30 days")

        # Retention removes a prefix of the log: the partitions below (events
        # of the earlier tests) must be due too.
        DB.all("UPDATE bridgecore.event SET occurred_at = occurred_at - interval '1 year' WHERE id < %s",
               (first,))
        # Written around ingestion: the partitions' summary is made again.
        DB.all("SELECT bridgecore._summarize_partitions()")
        set_guc("bridgecore.retention", "1h")
        # Ids first .. first + 249 are old, the 3 recent ones follow: the two
        # partitions of old events go (and every older one, whose events
        # are all older too), the third holds recent ones and stays.
        T.wait(lambda: len(stored_ids(inst)) == 53, 30,
               "retention: the launcher drops the partitions whose every event is older than"
               " bridgecore.retention (1 h)", lambda: (len(stored_ids(inst)), parts()))
        T.ok(parts()[0] == (first + 200, first + 300) and holds_for(lambda: len(stored_ids(inst)) == 53, 2.0),
             "retention: ...but not the partition that also holds the 3 recent events", parts())
        T.ok(DB.val("SELECT purged_through FROM bridgecore.instance WHERE id = %s", (inst,)) == first + 199,
             "retention: purged_through is the highest local id removed (%s)" % (first + 199))
        behind = pull("ret-behind")
        left = [r[0] for r in DB.all("SELECT id FROM bridgecore.event WHERE instance_id = %s ORDER BY id",
                                     (inst,))]
        T.ok(behind["resync_required"] is True and [e["id"] for e in behind["events"]] == left,
             "retention: the device behind the removed events gets resync_required, then what is left",
             behind)
        ahead = pull("ret-ahead")
        T.ok(ahead["resync_required"] is False and ahead["events"] == [],
             "retention: the device that had every event does not", ahead)
        T.ok(sorted(stored_ids(inst))[-3:] == recent, "retention: the recent events are kept")

        # Idle devices.
        set_guc("bridgecore.device_idle_timeout", "1s")
        pull("ret-idle")
        T.wait(lambda: active("ret-idle") is False, 10,
               "retention: a device idle for longer than bridgecore.device_idle_timeout (1 s)"
               " is made inactive",
               lambda: DB.all("SELECT device_id, is_active, now() - last_sync_time"
                              " FROM bridgecore.sync_state"))
        T.ok(pull("ret-idle")["status"] == "success" and active("ret-idle") is True,
             "retention: its next sync_pull makes it active again")
        set_guc("bridgecore.device_idle_timeout", "0")
        pull("ret-idle")
        T.ok(holds_for(lambda: active("ret-idle") is True, 3.0),
             "retention: with bridgecore.device_idle_timeout = 0 an idle device stays active")
        answer = DB.val("SELECT bridgecore.deactivate_idle_devices()")
        T.ok(answer["deactivated"] == 0 and active("ret-idle") is True,
             "retention: ...and deactivate_idle_devices() deactivates nothing", answer)
        remove_instance("retention")
        sd.stop()
    finally:
        for name in ("bridgecore.retention", "bridgecore.partition_size",
                     "bridgecore.device_idle_timeout", "bridgecore.maintenance_interval"):
            reset_guc(name)


def test_dump_restore():
    """pg_dump of a database whose log has several partitions restores into
    a fresh database with every event, the sequence position, and working
    ingestion and pulls."""
    set_guc("bridgecore.partition_size", "10")
    sd = Standin()
    try:
        DB.all("SELECT bridgecore._ensure_partitions()")
        DB.all("SELECT setval('bridgecore.event_id_seq', (SELECT max(hi) - 1 FROM bridgecore._partitions()))")
        sd.add(25, model="sale.order")
        inst = add_instance("dumped", sd)
        wait_all("dumped", inst, sd, 15, "dump: 25 events arrive")
        DB.val("SELECT bridgecore.sync_pull(1, 'dump-dev', 'sales_app', 10, instance => 'dumped')")
        DB.all("UPDATE bridgecore.instance SET enabled = false WHERE id = %s", (inst,))
        before = DB.all("SELECT id, odoo_id, doc::text FROM bridgecore.event WHERE instance_id = %s ORDER BY id",
                        (inst,))
        nparts = DB.val("SELECT count(*) FROM bridgecore._partitions() p"
                        " WHERE EXISTS (SELECT 1 FROM bridgecore.event e WHERE e.id >= p.lo AND e.id < p.hi)")
        seq = DB.val("SELECT last_value FROM bridgecore.event_id_seq")
        summary_sql = ("SELECT s.part::text, s.instance_id, s.model, s.deleted, s.events, s.max_id"
                       " FROM bridgecore.partition_summary s ORDER BY 1, 2, 3, 4")
        summary = DB.all(summary_sql)
        target = "bc_restore_%d" % os.getpid()
        DB.all("DROP DATABASE IF EXISTS %s" % target)
        DB.all("CREATE DATABASE %s" % target)
        env = dict(os.environ)
        dump = subprocess.run(["pg_dump", "-Fc", "-d", env.get("PGDATABASE", "postgres")],
                              capture_output=True, env=env)
        T.ok(dump.returncode == 0, "dump: pg_dump of %d partitions with events succeeds" % nparts,
             dump.stderr.decode(errors="replace"))
        restore = subprocess.run(["pg_restore", "--exit-on-error", "-d", target], input=dump.stdout,
                                 capture_output=True, env=env)
        T.ok(restore.returncode == 0, "dump: pg_restore into a fresh database succeeds without an error",
             restore.stderr.decode(errors="replace"))
        conn = psycopg2.connect(dbname=target)
        conn.autocommit = True
        try:
            cur = conn.cursor()
            cur.execute("SELECT e.id, e.odoo_id, e.doc::text FROM bridgecore.event e"
                        " JOIN bridgecore.instance i ON i.id = e.instance_id WHERE i.name = 'dumped' ORDER BY e.id")
            T.ok(cur.fetchall() == before and nparts >= 3,
                 "dump: every event is restored, in its partition (%d of them)" % nparts)
            cur.execute("SELECT last_value FROM bridgecore.event_id_seq")
            T.ok(cur.fetchone()[0] == seq, "dump: the sequence position is restored")
            cur.execute(summary_sql)
            restored = cur.fetchall()
            cur.execute("SELECT count(*) FROM bridgecore.partition_summary s"
                        " WHERE s.part NOT IN (SELECT p.part FROM bridgecore._partitions() p)")
            T.ok(restored == [tuple(r) for r in summary] and len(summary) >= nparts and cur.fetchone()[0] == 0,
                 "dump: the partition summary is restored, naming the restored partitions", restored)
            cur.execute("SET bridgecore.rate_limit_sync_pull = 0")
            cur.execute("SELECT bridgecore.sync_pull(1, 'dump-dev', 'sales_app', 100, instance => 'dumped')")
            got = cur.fetchone()[0]
            T.ok([e["id"] for e in got["events"]] == [r[0] for r in before[10:]],
                 "dump: a device continues where it was, in the restored database", got)
            cur.execute("SELECT bridgecore.ingest('dumped', %s)",
                        (json.dumps([{"id": 1000 + i, "model": "sale.order", "record_id": i + 1, "event": "create",
                                      "timestamp": "2025-11-16 10:00:00"} for i in range(15)]
                                    + [{"id": 1, "model": "sale.order", "record_id": 1, "event": "create",
                                        "timestamp": "2025-11-16 10:00:00"}]),))
            answer = cur.fetchone()[0]
            cur.execute("SELECT array_agg(odoo_id ORDER BY id) FROM bridgecore.event WHERE id > %s", (seq,))
            T.ok(answer["inserted"] == 15 and answer["duplicates"] == 1
                 and cur.fetchone()[0] == list(range(1000, 1015)),
                 "dump: ingestion goes on after the restored ids, into new partitions, exactly once", answer)
            cur.execute("DROP EXTENSION bridgecore CASCADE")
        finally:
            conn.close()
            DB.all("DROP DATABASE IF EXISTS %s" % target)
        remove_instance("dumped")
    finally:
        reset_guc("bridgecore.partition_size")
        sd.stop()


def test_dead_letter_refetch():
    """retry_dead_letter() of a record that is still malformed asks the poller
    for the Odoo row again (asking is not a failed attempt): a row still there
    comes back (still malformed: pending, one more attempt); a row gone from
    Odoo is given up after bridgecore.gap_window, and the dead letter is
    pending again."""
    set_guc("bridgecore.gap_window", "2s")
    sd = Standin()
    sd.add(2)
    malformed = {"model": "sale.order", "record_id": 7, "event": "archive", "timestamp": odoo_now(),
                 "priority": "low", "category": "business", "payload": {"name": "S0007"}, "user_id": False}
    bad = sd.control("add_raw", row=malformed)["ids"][0]
    gone = sd.control("add_raw", row=dict(malformed, record_id=8))["ids"][0]
    sd.add(2)
    inst = add_instance("refetch", sd)
    wait_all("refetch", inst, sd, 10, "refetch: the well-formed events arrive", dead=2)

    def letter(odoo_id):
        return DB.one("SELECT id, status::text, attempts, last_failed_at FROM bridgecore.dead_letter"
                      " WHERE instance_id = %s AND odoo_id = %s", (inst, odoo_id))

    def gap(odoo_id):
        return DB.val("SELECT count(*) FROM bridgecore.gap WHERE instance_id = %s AND odoo_id = %s",
                      (inst, odoo_id))
    T.ok(letter(bad)[1:3] == ("pending", 1) and letter(gone)[1:3] == ("pending", 1),
         "refetch: both malformed records are pending dead letters")

    def retry(odoo_id):
        """retry_dead_letter in a transaction, with what it left behind before
        the poller can see it: the dead letter's status and attempts, its gaps,
        the time, and the dead letters counted so far."""
        conn = psycopg2.connect("", application_name="bridgecore worker test: refetch")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT bridgecore.retry_dead_letter(%s)", (letter(odoo_id)[0],))
                answer = cur.fetchone()[0]
                cur.execute("SELECT d.status::text, d.attempts, (SELECT count(*) FROM bridgecore.gap g"
                            "  WHERE g.instance_id = d.instance_id AND g.odoo_id = d.odoo_id),"
                            " clock_timestamp(),"
                            " (SELECT s.dead_letters FROM bridgecore.stats s WHERE s.instance = 'refetch')"
                            " FROM bridgecore.dead_letter d WHERE d.instance_id = %s AND d.odoo_id = %s",
                            (inst, odoo_id))
                seen = cur.fetchone()
            conn.commit()
            return answer, seen
        finally:
            conn.close()

    # The row is still in Odoo, still malformed.
    reads = sd.stats()["search_reads"]
    tried = letter(bad)[2]
    answer, (st, attempts, gaps, at, dead_before) = retry(bad)
    T.ok(answer["status"] == "retrying" and (st, attempts, gaps) == ("retrying", tried, 1),
         "refetch: retry_dead_letter of a still malformed record: retrying, a gap, attempts unchanged",
         answer, (st, attempts, gaps))
    back = T.wait(lambda: letter(bad)[1] == "pending" and letter(bad)[2] == tried + 1 and letter(bad), 10,
                  "refetch: the poller fetches the row again: still malformed, pending, one more attempt",
                  lambda: (letter(bad), gap(bad)))
    if back:
        T.ok(back[3] > at and not gap(bad) and sd.stats()["search_reads"] > reads
             and stats_row("refetch")["dead_letters"] == dead_before + 1,
             "refetch: ...by a search_read of the worker (dead letter counted again), its gap closed",
             back, stats_row("refetch"))

    # The row is gone from Odoo: asked for until gap_window has passed.
    sd.control("delete", ids=[gone])
    tried = letter(gone)[2]
    answer, (st, attempts, gaps, at, _) = retry(gone)
    T.ok(answer["status"] == "retrying" and (st, attempts, gaps) == ("retrying", tried, 1),
         "refetch: retry_dead_letter of a row since deleted in Odoo: retrying, a gap",
         answer, (st, attempts, gaps))
    T.ok(holds_for(lambda: letter(gone)[1] == "retrying" and gap(gone), 1.5),
         "refetch: ...which stays open while Odoo does not show the row")
    T.wait(lambda: letter(gone)[1] == "pending" and not gap(gone), 10,
           "refetch: after bridgecore.gap_window (2 s) the gap is given up and the dead letter is pending",
           lambda: (letter(gone), gap(gone)))
    age = DB.val("SELECT extract(epoch FROM clock_timestamp() - %s)::float8", (at,))
    T.ok(age >= 1.9 and letter(gone)[2] == tried,
         "refetch: ...not before gap_window (%.2f s), attempts unchanged" % age, letter(gone))
    check_mirror(inst, sd, "refetch: every other event exactly once", skip_ids={bad})
    remove_instance("refetch")
    sd.stop()


def test_stats_from_worker():
    """bridgecore.stats, stats_models, stats_errors, metrics() and status()
    count what the worker does."""
    sd = Standin()
    sd.add(5, model="sale.order")
    sd.add(3, model="res.partner")
    sd.add(2, model="stock.picking")
    inst = add_instance("stats", sd)
    wait_all("stats", inst, sd, 10, "stats: 10 events arrive")
    stored = len(stored_ids(inst))
    s = stats_row("stats")
    T.ok(s and s["polls"] > 0 and s["events_ingested"] == stored and s["bytes_received"] > 0
         and s["failed_polls"] == 0 and s["errors"] == {} and s["dead_letters"] == 0
         and s["notifications"] >= 3 and s["ingest_count"] > 0 and s["poll_count"] > 0,
         "stats: polls, events_ingested = %d stored, bytes_received, no failure" % stored, s)
    models = dict(DB.all("SELECT model, events FROM bridgecore.stats_models WHERE instance = 'stats'"))
    T.ok(models == {"sale.order": 5, "res.partner": 3, "stock.picking": 2} and sum(models.values()) == stored,
         "stats: stats_models has each model's events, summing to the stored count", models)
    T.ok(float(s["events_per_second"]) > 0, "stats: events_per_second over the last minute (%s)"
         % s["events_per_second"])
    metrics = DB.val("SELECT bridgecore.metrics()")
    T.ok('\nwebhook_received_total{instance="stats"} %d\n' % stored in metrics and
         re.search(r'\nwebhook_processing_seconds_count\{instance="stats",model="res.partner"\} [1-9]',
                   metrics)
         and re.search(r'\nbridgecore_polls_total\{instance="stats"\} [1-9]', metrics),
         "stats: metrics() shows the stored events, the per-model histograms and the polls")
    row = DB.one("SELECT state, poller_pid, events_ingested, cursor FROM bridgecore.status()"
                 " WHERE instance = 'stats'")
    T.ok(row == ("ok", poller_pid(inst), stored, sd.stats()["max_id"]),
         "stats: status() shows state ok, the poller's pid, events ingested and the cursor", row)

    sd.control("fault", kind="http500")
    sd.add(2, model="sale.order")
    http = lambda: DB.val("SELECT count FROM bridgecore.stats_errors"  # noqa: E731
                          " WHERE instance = 'stats' AND kind = 'http'")
    T.wait(lambda: http() == 1, 10, "stats: an HTTP 500 counts one error of kind http in stats_errors",
           lambda: DB.all("SELECT kind, count FROM bridgecore.stats_errors WHERE instance = 'stats'"))
    wait_all("stats", inst, sd, 10, "stats: the poller recovers")
    s = stats_row("stats")
    T.ok(s["failed_polls"] == 1 and s["errors"] == {"http": 1} and s["events_ingested"] == stored + 2,
         "stats: failed_polls 1, errors {\"http\": 1}, the 2 new events counted", s)
    T.ok('\nwebhook_errors_total{instance="stats",kind="http"} 1\n' in DB.val("SELECT bridgecore.metrics()"),
         "stats: metrics() counts the error by kind")

    # Shared memory outlives the worker: a restarted poller keeps counting on.
    before = stats_row("stats")
    old_pid = poller_pid(inst)
    DB.all("SELECT pg_terminate_backend(%s)", (old_pid,))
    T.wait(lambda: poller_pid(inst) not in (None, old_pid), 10, "stats: the terminated poller is restarted")
    sd.add(1, model="sale.order")
    wait_all("stats", inst, sd, 10, "stats: the restarted poller stores a new event")
    after = stats_row("stats")
    T.ok(after["events_ingested"] == before["events_ingested"] + 1 and after["polls"] > before["polls"]
         and after["since"] == before["since"],
         "stats: the counters survive a worker restart", {"before": before, "after": after})
    remove_instance("stats")
    T.ok(DB.val("SELECT count(*) FROM bridgecore._stats_instances() WHERE instance_id = %s", (inst,)) == 0,
         "stats: a removed instance's counters are freed")
    sd.stop()



# ---- hardening (0.3.0) --------------------------------------------------------

def poll_requests(sd):
    return sd.stats()["search_reads"]


def test_search_path_is_pinned():
    """Whatever is planted in public or named by ALTER DATABASE ... SET
    search_path, the workers (superuser) never run it."""
    db = DB.val("SELECT current_database()")
    DB.all("DROP ROLE IF EXISTS bc_planter")
    DB.all("CREATE ROLE bc_planter")
    DB.all("GRANT CREATE ON SCHEMA public TO bc_planter")
    DB.all("CREATE TABLE public.bc_planted_ran (who text, super boolean)")
    DB.all("GRANT INSERT ON public.bc_planted_ran TO bc_planter")
    DB.all("SET ROLE bc_planter")
    try:
        # numeric * integer has no exact match in pg_catalog: a planted
        # public.*(numeric, integer) would win over numeric * numeric.
        DB.all("CREATE FUNCTION public.bc_planted_mul(numeric, integer) RETURNS numeric"
               " LANGUAGE plpgsql AS $$ BEGIN"
               "  INSERT INTO public.bc_planted_ran VALUES (current_user,"
               "    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user));"
               "  BEGIN EXECUTE 'ALTER ROLE bc_planter SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;"
               "  RETURN $1 * $2::numeric; END $$")
        DB.all("CREATE OPERATOR public.* (LEFTARG = numeric, RIGHTARG = integer,"
               " FUNCTION = public.bc_planted_mul)")
        DB.all("CREATE FUNCTION public.bc_planted_eq(bigint, bigint) RETURNS boolean"
               " LANGUAGE plpgsql AS $$ BEGIN"
               "  INSERT INTO public.bc_planted_ran VALUES (current_user, true);"
               "  RETURN $1 OPERATOR(pg_catalog.=) $2; END $$")
    finally:
        DB.all("RESET ROLE")
    DB.all("ALTER DATABASE %s SET search_path = public, pg_catalog" % db)
    sd = Standin()
    sd.add(3)
    try:
        inst = add_instance("pinned", sd)
        wait_all("pinned", inst, sd, 15, "search_path: events arrive with a planted operator in public")
        # A restarted poller and launcher read their settings again.
        DB.all("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
               " WHERE backend_type IN ('bridgecore launcher', 'bridgecore poller')")
        sd.add(2)
        wait_all("pinned", inst, sd, 20, "search_path: events arrive after the workers restarted")
        T.ok(DB.val("SELECT count(*) FROM public.bc_planted_ran") == 0,
             "search_path: the planted operator never ran in a worker",
             DB.all("SELECT * FROM public.bc_planted_ran"))
        T.ok(not DB.val("SELECT rolsuper FROM pg_roles WHERE rolname = 'bc_planter'"),
             "search_path: the planting role did not become superuser")
    finally:
        DB.all("ALTER DATABASE %s RESET search_path" % db)
        remove_instance("pinned")
        DB.all("DROP OPERATOR IF EXISTS public.* (numeric, integer)")
        DB.all("DROP FUNCTION IF EXISTS public.bc_planted_mul(numeric, integer)")
        DB.all("DROP FUNCTION IF EXISTS public.bc_planted_eq(bigint, bigint)")
        DB.all("DROP TABLE IF EXISTS public.bc_planted_ran")
        DB.all("REVOKE CREATE ON SCHEMA public FROM bc_planter")
        DB.all("ALTER ROLE bc_planter NOSUPERUSER")
        DB.all("DROP ROLE bc_planter")
        sd.stop()


def test_odoo_text_and_secret():
    """A long translated Odoo error is recorded (valid UTF-8, cut at a
    character), never crash-loops the poller, and no fragment of the secret
    survives in last_error or the server log."""
    secret = "Zq7-secret-7Hk2-vX9p-3LmN"
    sd = Standin(password=secret)
    inst = add_instance("texts", sd)
    wait_for(lambda: poller_pid(inst), 10, "the poller of texts")
    pid = poller_pid(inst)
    offset = log_offset()
    # Cyrillic (2-byte) text that crosses every cut, then the secret right at
    # the 512-byte message buffer's end and at the 700-byte status line's.
    long_ru = "Доступ запрещён: недостаточно прав для операции. " * 12
    # "odoo.exceptions.AccessError: " is 29 bytes: pads of 231 to 240 two-byte
    # characters put the secret across the 511th byte; an odd "x" shifts the
    # cut by one byte so that it also falls inside a character.
    for pad in (0, 1, 230, 233, 236, 238, 239, 240, 241):
        msg = ("ы" * pad) + ("x" * (pad % 2)) + secret + " " + long_ru
        sd.control("fault", kind="rpc_error", name="odoo.exceptions.AccessError", message=msg, count=1)
        want = sd.stats()["requests"] + 1
        wait_for(lambda: sd.stats()["requests"] >= want, 10, "the faulty answer to be served")
        wait_for(lambda: (status("texts") or {}).get("last_error_at") is not None, 10, "a recorded failure")
    wait_for(lambda: sd.stats()["faults_pending"] == 0, 30, "every faulty answer served")
    sd.add(2)
    with guc("bridgecore.max_backoff", "200ms"):
        wait_all("texts", inst, sd, 20, "texts: events flow after long non-ASCII errors")
    T.ok(poller_pid(inst) == pid, "texts: the poller never exited (pid %s, now %s)" % (pid, poller_pid(inst)))
    err = DB.val("SELECT last_error FROM bridgecore.instance WHERE id = %s", (inst,)) or ""
    log = log_since(offset)
    frags = {secret[i:i + 4] for i in range(len(secret) - 3)}
    T.ok(not any(f in err for f in frags), "texts: no 4-character fragment of the secret in last_error", err)
    leaked = [f for f in frags if f in log]
    T.ok(not leaked, "texts: no 4-character fragment of the secret in the server log", leaked)
    T.ok("invalid byte sequence" not in log, "texts: no encoding error while recording failures")
    # The same text reaches a client of discover_models() intact. The poller
    # is stopped first: the fault goes to whichever request comes next.
    DB.all("SELECT bridgecore.alter_instance('texts', enabled => false)")
    wait_for(lambda: poller_pid(inst) is None, 20, "the poller of texts to stop")
    sd.control("fault", kind="rpc_error", name="odoo.exceptions.AccessError",
               message=("ы" * 236) + "x" + secret + " " + long_ru, count=1)
    state, text = sql_error("SELECT bridgecore.discover_models('texts')")
    T.ok(state == "38000", "texts: discover_models reports Odoo's long error as 38000 (%s)" % state, text)
    T.ok(text and not any(f in text for f in frags), "texts: ... without a fragment of the secret")
    sd.control("clear_faults")
    remove_instance("texts")
    sd.stop()


def test_secret_needs_secret_to_move():
    """An admin who is not superuser cannot send the stored secret to a
    server of their own; a failing add_instance does not log the secret."""
    DB.all("DROP ROLE IF EXISTS bc_ops")
    DB.all("CREATE ROLE bc_ops LOGIN IN ROLE bridgecore_admin")
    sd = Standin()
    inst = add_instance("moving", sd)
    conn = psycopg2.connect("", user="bc_ops", application_name="bridgecore worker test (ops)")
    conn.autocommit = True
    try:
        state = sql_error("SELECT bridgecore.alter_instance('moving', url => 'http://127.0.0.1:9')", conn=conn)[0]
        T.ok(state == "42501", "secret: a new url without the secret is refused (%s)" % state)
        state = sql_error("SELECT bridgecore.alter_instance('moving', verify_tls => false)", conn=conn)[0]
        T.ok(state == "42501", "secret: verify_tls => false without the secret is refused (%s)" % state)
        T.ok(DB.val("SELECT url FROM bridgecore.instance WHERE id = %s", (inst,)) == sd.url,
             "secret: the url is unchanged")
        state = sql_error("SELECT bridgecore.alter_instance('moving', url => %s, secret => %s)",
                          (sd.url + "/", sd.password), conn=conn)[0]
        T.ok(state is None, "secret: a new url with the secret is accepted (%s)" % state)
        state = sql_error("SELECT bridgecore.alter_instance('moving', batch_size => 50)", conn=conn)[0]
        T.ok(state is None, "secret: other settings need no secret (%s)" % state)
        offset = log_offset()
        secret = "must-not-be-logged-4f1c"
        state = sql_error("SELECT bridgecore.add_instance('moving', 'http://127.0.0.1:9', 'db', 'bot', %s)",
                          (secret,), conn=conn)[0]
        T.ok(state == "23505", "secret: add_instance of an existing name fails (%s)" % state)
        wait_for(lambda: "already exists" in log_since(offset), 5, "the error in the server log")
        T.ok(secret not in log_since(offset), "secret: the failing statement is not logged with the secret")
    finally:
        conn.close()
        remove_instance("moving")
        DB.all("DROP ROLE bc_ops")
        sd.stop()


def test_large_id_jump():
    """One record far above the cursor (3*10^8, and near 2^62) is stored at
    once; gap bookkeeping is bounded by the batch, not the distance."""
    sd = Standin()
    sd.add(3)
    inst = add_instance("jump", sd)
    wait_all("jump", inst, sd, 10, "jump: the first events arrive")
    other_sd = Standin()
    other = add_instance("bystander", other_sd)
    for count in (300000000, 2 ** 62):
        sd.control("skip", count=count)
        ids = sd.add(1)
        t0 = time.monotonic()
        T.wait(lambda: DB.val("SELECT cursor FROM bridgecore.instance WHERE id = %s", (inst,)) >= ids[0],
               10, "jump: an id %d above the cursor is stored" % count)
        T.diag("jump of %d stored in %.2f s" % (count, time.monotonic() - t0))
        other_sd.add(1)
        wait_all("bystander", other, other_sd, 5, "jump: another instance is not held up")
    gaps = DB.val("SELECT count(*) FROM bridgecore.gap WHERE instance_id = %s", (inst,))
    T.ok(gaps <= 1000, "jump: at most 1000 gaps recorded (%d)" % gaps)
    for name, s in (("jump", sd), ("bystander", other_sd)):
        remove_instance(name)
        s.stop()


def test_poison_records():
    """NaN/Infinity, invalid UTF-8 and deep nesting in one record: that
    record is dead-lettered (or, for nesting, stored), the rest of the batch
    is stored and the cursor moves on, on the worker path."""
    sd = Standin()
    base = {"model": "sale.order", "record_id": 1, "event": "write", "timestamp": odoo_now()}
    sd.add(2)
    nan = sd.control("add_raw", row=dict(base, payload={"x": float("nan")}))["ids"][0]
    inf = sd.control("add_raw", row=dict(base, payload={"x": float("inf")}))["ids"][0]
    bad_utf8 = sd.control("add_raw", row=dict(base, payload={"name": "caf\udce9 \udcff"}))["ids"][0]
    bad_model = sd.control("add_raw", row=dict(base, model="sale\udcff.order"))["ids"][0]
    deep = {"v": 1}
    for _ in range(100):
        deep = {"d": deep}
    deep_id = sd.control("add_raw", row=dict(base, payload=deep))["ids"][0]
    sd.add(2)
    inst = add_instance("poison", sd)
    T.wait(lambda: DB.val("SELECT cursor FROM bridgecore.instance WHERE id = %s", (inst,))
           >= sd.stats()["max_id"], 15, "poison: the cursor passes every record")
    dead = dict(DB.all("SELECT odoo_id, reason FROM bridgecore.dead_letter WHERE instance_id = %s", (inst,)))
    T.ok(set(dead) == {nan, inf, bad_utf8, bad_model}, "poison: exactly the four bad records are dead letters", dead)
    T.ok("NaN or Infinity" in dead.get(nan, "") and "NaN or Infinity" in dead.get(inf, ""),
         "poison: NaN and Infinity have a reason", dead)
    T.ok("invalid UTF-8" in dead.get(bad_utf8, "") and "invalid UTF-8" in dead.get(bad_model, ""),
         "poison: invalid UTF-8 has a reason", dead)
    T.ok(DB.val("SELECT count(*) FROM bridgecore.event WHERE instance_id = %s", (inst,)) == 5,
         "poison: the five good records (one nested 100 deep) are stored")
    T.ok(DB.val("SELECT payload #>> '{d,d,d,d,d,d,d,d,d,d}' IS NOT NULL FROM bridgecore.event"
                " WHERE instance_id = %s AND odoo_id = %s", (inst, deep_id)),
         "poison: the deeply nested payload is stored whole")
    # Everything stored is valid UTF-8 that clients and pg_dump can read.
    T.ok(DB.val("SELECT bool_and(record::text IS NOT NULL AND convert_to(record::text, 'UTF8') IS NOT NULL)"
                " FROM bridgecore.dead_letter WHERE instance_id = %s", (inst,)),
         "poison: dead letters hold valid JSON text")
    T.ok(DB.val("SELECT record->'payload'->>'x' FROM bridgecore.dead_letter WHERE odoo_id = %s"
                " AND instance_id = %s", (nan, inst)) == "NaN", "poison: NaN is kept as the string \"NaN\"")
    remove_instance("poison")
    sd.stop()


def test_unreadable_record_isolated():
    """A record that makes every answer holding it unusable (here: larger
    than bridgecore.max_response_size) is isolated by asking for fewer
    records, then dead-lettered by its id; the records around it are stored."""
    sd = Standin()
    with guc("bridgecore.max_response_size", "256kB"), guc("bridgecore.max_backoff", "100ms"):
        before = sd.add(20)
        huge = sd.add(1, payload_size=400 * 1024)[0]
        after = sd.add(20)
        inst = add_instance("unreadable", sd, batch_size=50)
        T.wait(lambda: DB.val("SELECT cursor FROM bridgecore.instance WHERE id = %s", (inst,)) >= after[-1],
               30, "unreadable: the cursor passes the oversized record", describe("unreadable", inst, sd))
        stored = set(stored_ids(inst))
        T.ok(stored == set(before + after), "unreadable: the 40 records around it are stored",
             sorted(set(before + after) - stored))
        reason = DB.val("SELECT reason FROM bridgecore.dead_letter WHERE instance_id = %s AND odoo_id = %s",
                        (inst, huge))
        T.ok(reason and reason.startswith("unreadable record: too_large"),
             "unreadable: it is a dead letter with its reason (%s)" % reason)
        sd.add(60)
        wait_all("unreadable", inst, sd, 15, "unreadable: later batches go on (back to full size)", dead=1)
    remove_instance("unreadable")
    sd.stop()


def test_idless_records_do_not_spin():
    """A full batch of records the cursor cannot pass (no id, or id 2^63-1)
    is dead-lettered once and polled at the poll interval, not in a loop."""
    sd = Standin()
    base = {"model": "sale.order", "record_id": 1, "event": "write", "timestamp": odoo_now()}
    for i in range(3):
        sd.control("add_raw", row=dict(base, record_id=i + 1, __no_id=True))
    for i in range(2):
        sd.control("add_raw", row=dict(base, record_id=i + 10, __id_as=2 ** 63 - 1))
    inst = add_instance("idless", sd, batch_size=5, poll_interval="200 milliseconds")
    T.wait(lambda: DB.val("SELECT count(*) FROM bridgecore.dead_letter WHERE instance_id = %s", (inst,)) >= 5,
           10, "idless: the records are dead-lettered", lambda: DB.all("SELECT * FROM bridgecore.dead_letter"))
    start = poll_requests(sd)
    time.sleep(2.0)     # a window in which to count polls, not a wait for a condition
    polls = poll_requests(sd) - start
    T.ok(polls <= 20, "idless: a full batch without progress is polled at the interval (%d polls in 2 s)" % polls)
    n = DB.val("SELECT count(*) FROM bridgecore.dead_letter WHERE instance_id = %s", (inst,))
    T.ok(n == 5, "idless: each is kept once (3 id-less, 2 with id 2^63-1), not once per poll (%d)" % n)
    T.ok(DB.val("SELECT min(attempts) FROM bridgecore.dead_letter WHERE instance_id = %s AND odoo_id IS NULL",
                (inst,)) >= 2, "idless: repeats count as attempts")
    remove_instance("idless")
    sd.stop()


def test_holes_below_first_batch():
    """Rows that commit late just below an instance's first batch (a long
    Odoo transaction running when the instance is added) are fetched."""
    sd = Standin()
    late = sd.control("reserve", count=3)["ids"]
    sd.add(5)
    inst = add_instance("below", sd)
    T.wait(lambda: DB.val("SELECT count(*) FROM bridgecore.event WHERE instance_id = %s", (inst,)) == 5,
           10, "below: the first batch arrives")
    sd.control("publish", ids=late)
    wait_all("below", inst, sd, 10, "below: the ids just below the first batch arrive once committed")
    check_mirror(inst, sd, "below: every row exactly once")
    remove_instance("below")
    sd.stop()


def test_launcher_survives_a_failed_read():
    """A failing read of the instances (here: a column it needs is gone, as
    when DROP EXTENSION commits mid-read) is logged; the launcher stays."""
    pid = launcher_pid()
    offset = log_offset()
    DB.all("BEGIN")
    DB.all("ALTER TABLE bridgecore.instance RENAME COLUMN enabled TO enabled_renamed")
    DB.all("SELECT bridgecore._wake_poller()")
    DB.all("COMMIT")
    try:
        T.wait(lambda: "could not read the instances" in log_since(offset), 10,
               "launcher: the failed read is logged")
        T.ok(holds_for(lambda: launcher_pid() == pid, 1.5), "launcher: it did not exit (pid %s)" % pid)
    finally:
        DB.all("ALTER TABLE bridgecore.instance RENAME COLUMN enabled_renamed TO enabled")


def launcher_memory():
    """The launcher's total memory, as pg_log_backend_memory_contexts logs it."""
    pid = launcher_pid()
    offset = log_offset()
    DB.all("SELECT pg_log_backend_memory_contexts(%s)", (pid,))
    found = wait_for(lambda: re.search(r"\[%d\] LOG:  Grand total: (\d+) bytes" % pid, log_since(offset)),
                     10, "the launcher's memory contexts in the log")
    return int(found.group(1))


def test_launcher_memory_is_flat():
    """Each wake of the launcher frees what it allocated (a loop context)."""
    if not CLUSTER_DIR:
        T.skip("launcher: memory stays flat", "needs CLUSTER_DIR to read the server log")
        return
    sd = Standin()
    names = ["mem%d" % i for i in range(5)]
    for n in names:
        add_instance(n, sd, poll_interval="1 second")
    wait_for(lambda: all(poller_pid(DB.val("SELECT id FROM bridgecore.instance WHERE name = %s", (n,)))
                         for n in names), 15, "a poller for each of the five instances")
    for _ in range(20):
        DB.all("SELECT bridgecore._wake_poller()")
    before = launcher_memory()
    for _ in range(300):
        DB.all("SELECT bridgecore._wake_poller()")
        time.sleep(0.005)       # pacing, so that wakes are not coalesced into one

    wait_for(lambda: DB.val("SELECT wait_event = 'Extension' FROM pg_stat_activity"
                            " WHERE backend_type = 'bridgecore launcher'"), 10, "the launcher idle again")
    after = launcher_memory()
    T.ok(after - before < 8192, "launcher: 300 wakes with 5 instances grew its memory by %d bytes (< 8 kB)"
         % (after - before))
    for n in names:
        remove_instance(n)
    sd.stop()


def test_null_answer():
    """An answer of null where a list is due is a bad response, with a
    message, and the poller goes on."""
    sd = Standin()
    inst = add_instance("nullish", sd)
    wait_for(lambda: state_is("nullish", "ok") and sd.stats()["search_reads"] > 0, 10, "a first poll")
    sd.control("fault", kind="null_result")
    T.wait(lambda: (status("nullish")["last_error"] or "").startswith("search_read: bad_response: search_read answered null"),
           10, "null: recorded as a bad response with a message", lambda: status("nullish"))
    sd.add(2)
    with guc("bridgecore.max_backoff", "200ms"):
        wait_all("nullish", inst, sd, 10, "null: events flow afterwards")
    remove_instance("nullish")
    sd.stop()


def test_nonstandard_number():
    """A number JSON cannot write (json-c reads 0625.5 and keeps its text) is
    a dead letter whose copy is valid JSON; the batch is stored around it."""
    sd = Standin()
    inst = add_instance("numbers", sd)
    wait_for(lambda: state_is("numbers", "ok") and sd.stats()["search_reads"] > 0, 10, "a first poll")
    ts = odoo_now()
    sd.control("fault", kind="raw_result", result=(
        '[{"id": 900001, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "%s",'
        ' "payload": {"amount": 0625.5}},'
        ' {"id": 900002, "model": "sale.order", "record_id": 2, "event": "write", "timestamp": "%s"}]'
        % (ts, ts)))
    T.wait(lambda: DB.val("SELECT cursor FROM bridgecore.instance WHERE id = %s", (inst,)) >= 900002,
           10, "number: the cursor passes the batch", lambda: status("numbers"))
    reason, amount = DB.one("SELECT reason, record->'payload'->>'amount' FROM bridgecore.dead_letter"
                            " WHERE instance_id = %s AND odoo_id = 900001", (inst,)) or (None, None)
    T.ok(reason == "unstorable record: invalid JSON number" and amount == "0625.5",
         "number: dead-lettered with its reason, the number kept as text (%s, %s)" % (reason, amount))
    T.ok(stored_ids(inst) == [900002], "number: the other record of the batch is stored")
    remove_instance("numbers")
    sd.stop()


def test_lossy_values():
    """What json-c's values cannot show (an integer beyond 64 bits, \\u0000 in
    a key, unpaired surrogate escapes, a number JSON cannot write) is read
    from the answer's text: those records are dead-lettered with the reason
    and kept as sent, the others are stored exactly, the cursor passes."""
    sd = Standin()
    inst = add_instance("lossy", sd)
    wait_for(lambda: state_is("lossy", "ok") and sd.stats()["search_reads"] > 0, 10, "a first poll")
    ts = odoo_now()
    key = "unstorable record: unsupported Unicode escape sequence in a key"
    rows = [
        (910001, '"payload": {"big": 123456789012345678901234567890}',
         "unstorable record: integer outside the 64-bit range"),
        (910002, '"payload": {"neg": [-9223372036854775809]}', "unstorable record: integer outside the 64-bit range"),
        (910003, '"payload": {"a": 1, "a\\u0000b": 2}', key),
        (910004, '"payload": {"\\udc00x": 1}', key),
        (910005, '"payload": {"s": "\\ud800"}', "unstorable record: unsupported Unicode escape sequence"),
        (910006, '"payload": {"s": "\\ud800\\u0041"}', "unstorable record: unsupported Unicode escape sequence"),
        (910007, '"payload": {"n": 0625}', "unstorable record: invalid JSON number"),
        (910008, '"payload": {"u": 18446744073709551615, "m": -9223372036854775808, "p": "\\ud83d\\ude00"}', None),
        (910009, '"category": "plain"', None),
    ]
    texts = {i: '{"id": %d, "model": "sale.order", "record_id": 1, "event": "write", "timestamp": "%s", %s}'
             % (i, ts, extra) for i, extra, _ in rows}
    sd.control("fault", kind="raw_result", result="[" + ", ".join(texts[i] for i, _, _ in rows) + "]")
    T.wait(lambda: DB.val("SELECT cursor FROM bridgecore.instance WHERE id = %s", (inst,)) >= 910009,
           10, "lossy: the cursor passes the batch", lambda: status("lossy"))
    dead = dict(DB.all("SELECT odoo_id, reason FROM bridgecore.dead_letter WHERE instance_id = %s", (inst,)))
    want = {i: reason for i, _, reason in rows if reason}
    T.ok(dead == want, "lossy: each lossy record is dead-lettered with its reason", dead)
    T.ok(stored_ids(inst) == [910008, 910009], "lossy: the other records of the batch are stored",
         stored_ids(inst))
    T.ok(DB.val("SELECT payload = '{\"u\": 18446744073709551615, \"m\": -9223372036854775808,"
                " \"p\": \"\\ud83d\\ude00\"}'::jsonb FROM bridgecore.event"
                " WHERE instance_id = %s AND odoo_id = 910008", (inst,)),
         "lossy: 2^64-1, -2^63 and a surrogate pair are stored exactly")
    copies = dict(DB.all("SELECT odoo_id, record::text FROM bridgecore.dead_letter WHERE instance_id = %s", (inst,)))
    # The json type refuses 0625: the copy keeps it as the text sent.
    sent = {i: texts[i] if i != 910007 else texts[i].replace("0625", '"0625"') for i in texts}
    T.ok(all(copies.get(i) == sent[i] for i in want), "lossy: each dead letter keeps the record as sent",
         *["%s: %s" % (i, copies.get(i)) for i in want if copies.get(i) != sent[i]])
    remove_instance("lossy")
    sd.stop()


def test_recovery_defaults():
    """With default settings, a recovered Odoo is polled again within 30 s."""
    T.ok(DB.val("SELECT boot_val::int <= 30000 FROM pg_settings WHERE name = 'bridgecore.max_backoff'"),
         "recovery: bridgecore.max_backoff defaults to at most 30 s")


def test_idle_poll_writes_nothing():
    """An idle instance's polls write no WAL and take no ordering lock."""
    sd = Standin()
    sd.add(2)
    inst = add_instance("idle", sd)
    wait_all("idle", inst, sd, 10, "idle: events arrive")
    settle(sd, requests=3)
    xmin = DB.val("SELECT xmin::text::bigint FROM bridgecore.instance WHERE id = %s", (inst,))
    lsn = DB.val("SELECT pg_current_wal_insert_lsn()")
    before = DB.val("SELECT clock_timestamp()")
    settle(sd, requests=10)
    T.ok(DB.val("SELECT xmin::text::bigint FROM bridgecore.instance WHERE id = %s", (inst,)) == xmin,
         "idle: ten idle polls did not write the instance row")
    wal = DB.val("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (lsn,))
    T.diag("idle: %s bytes of WAL during ten idle polls (the whole cluster)" % wal)
    # The heartbeat is in shared memory: both views show it current.
    seen = DB.one("SELECT (SELECT last_success_at FROM bridgecore.instances WHERE name = 'idle'),"
                  "       (SELECT last_success_at FROM bridgecore.status() WHERE instance = 'idle')")
    T.ok(all(t is not None and t > before for t in seen),
         "idle: last_success_at moves with idle polls (instances, status())",
         "before the polls %s, after %s" % (before, seen))
    remove_instance("idle")
    sd.stop()


def test_waiting_poller_is_quiet():
    """A poller waiting out a backoff opens no transaction, yet a DROP
    EXTENSION ends it within a second or so (the lifecycle test checks the
    latter for a down Odoo; here the wait is a refused login's minute)."""
    sd = Standin()
    inst = add_instance("waiting", sd, secret="wrong-secret-key")
    wait_for(lambda: state_is("waiting", "auth_failed"), 10, "state auth_failed",
             lambda: status("waiting"))
    pid = poller_pid(inst)

    def activity():
        return DB.one("SELECT state_change, xact_start FROM pg_stat_activity WHERE pid = %s", (pid,))

    first = activity()
    T.ok(pid and holds_for(lambda: activity() == first and first[1] is None, 3.0),
         "waiting: a poller waiting a minute after a refused login opens no transaction in 3 s",
         "first %s, now %s" % (first, activity()))
    remove_instance("waiting")
    sd.stop()


def test_recovery_within_30s():
    """After eight failures in a row, with default settings, a recovered
    Odoo's events flow again within 30 s."""
    sd = Standin()
    sd.add(2)
    inst = add_instance("recover", sd)
    wait_all("recover", inst, sd, 10, "recovery: first events arrive")
    # Seven failures recorded already (as after a long outage), and the
    # eighth comes from Odoo: the restarted poller reads the count.
    reset_guc("bridgecore.max_backoff")     # the suite runs with 2 s
    try:
        DB.all("UPDATE bridgecore.instance SET consecutive_failures = 7 WHERE id = %s", (inst,))
        sd.control("fault", kind="http502", count=1)
        DB.all("SELECT pg_terminate_backend(%s)", (poller_pid(inst),))
        st = wait_for(lambda: (status("recover") or {}).get("consecutive_failures") == 8 and status("recover"),
                      15, "eighth failure", lambda: status("recover"))
        failed_at = DB.val("SELECT last_error_at FROM bridgecore.instance WHERE id = %s", (inst,))
        wait = (st["next_attempt_at"] - failed_at).total_seconds()
        T.ok(wait <= 30.0, "recovery: the eighth failure waits %.1f s (at most 30 s)" % wait)
        sd.add(3)
        wait_all("recover", inst, sd, 35, "recovery: events flow again after the wait")
        late = DB.val("SELECT extract(epoch FROM clock_timestamp() - %s)", (failed_at,))
        T.ok(late <= 31.0, "recovery: events flow again %.1f s after the eighth failure"
             " (at most 30 s, plus a poll)" % late)
    finally:
        set_guc("bridgecore.max_backoff", "2s")
    remove_instance("recover")
    sd.stop()


def test_rolled_back_change_wakes_nobody():
    """Admin changes wake the launcher at commit, in one session again and
    again; a rolled-back change changes nothing."""
    sd = Standin()
    sd.add(1)
    inst = add_instance("wake", sd)
    wait_all("wake", inst, sd, 10, "wake: first event arrives")
    pid = poller_pid(inst)
    DB.all("BEGIN; SELECT bridgecore.alter_instance('wake', enabled => false); ROLLBACK")
    T.ok(holds_for(lambda: poller_pid(inst) == pid, 2.0),
         "wake: a rolled-back disable leaves the poller running")
    for round_ in range(3):
        DB.all("SELECT bridgecore.alter_instance('wake', enabled => false)")
        T.wait(lambda: not poller_pid(inst), 5, "wake: disable %d stops the poller" % (round_ + 1))
        DB.all("SELECT bridgecore.alter_instance('wake', enabled => true)")
        T.wait(lambda: poller_pid(inst), 5, "wake: enable %d starts it again" % (round_ + 1))
    remove_instance("wake")
    sd.stop()


def test_model_stats_exact_under_churn():
    """Per-model counters stay exact while other instances' entries come and
    go: an entry is updated under the statistics lock, so a counter never
    lands in an entry that was removed and reused meanwhile."""
    import threading
    for name in ("churn_a", "churn_b"):
        DB.all("SELECT bridgecore.add_instance(%s, 'http://127.0.0.1:9', 'odoo', 'bot',"
               " 'churn-secret-key', enabled => false)", (name,))

    b = DB.val("SELECT id FROM bridgecore.instance WHERE name = 'churn_b'")
    batches, per_batch = 200, 5
    stop = threading.Event()
    errors = []

    def ingest_a():
        db = Database()
        try:
            for i in range(batches):
                db.all("SELECT bridgecore.ingest('churn_a', %s)", (json.dumps([
                    {"id": i * per_batch + k + 1, "model": "churn.model.%d" % (k % 3),
                     "record_id": 1, "event": "write", "timestamp": "2025-11-16 10:00:00"}
                    for k in range(per_batch)]),))
        except Exception as e:
            errors.append(e)
        finally:
            stop.set()
            db.conn.close()

    def churn_b():
        db = Database()
        n = 0
        try:
            while not stop.is_set():
                n += 1
                db.all("SELECT bridgecore.ingest('churn_b', %s)", (json.dumps([
                    {"id": n * 10 + k, "model": "other.model.%d" % k, "record_id": 1,
                     "event": "write", "timestamp": "2025-11-16 10:00:00"} for k in range(8)]),))
                db.all("SELECT bridgecore._stats_forget(%s)", (b,))
        except Exception as e:
            errors.append(e)
        finally:
            db.conn.close()

    threads = [threading.Thread(target=ingest_a), threading.Thread(target=churn_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    T.ok(not errors, "churn: concurrent ingestion and forgetting run without errors", *errors[:3])
    counts = dict(DB.all("SELECT model, events FROM bridgecore.stats_models WHERE instance = 'churn_a'"))
    want = {"churn.model.%d" % m: sum(1 for i in range(batches) for k in range(per_batch) if k % 3 == m)
            for m in range(3)}
    T.ok(counts == want, "churn: per-model counts of an instance are exact over %d batches while"
         " another's entries are removed and made again" % batches, "have %s, want %s" % (counts, want))
    T.ok(not DB.val("SELECT count(*) FROM bridgecore.stats_models WHERE instance = 'churn_a'"
                    " AND model LIKE 'other.%%'"),
         "churn: no counter of the other instance's models appears under this one")
    for name in ("churn_a", "churn_b"):
        remove_instance(name)


TESTS = [
    test_order_and_full_batches,
    test_notify,
    test_gaps,
    test_unicode_and_large,
    test_legacy_fields,
    test_dead_letter,
    test_credentials_and_session,
    test_faults,
    test_hung_instance,
    test_pollers_bounded,
    test_failed_commit_keeps_cursor,
    test_sigterm_in_flight,
    test_disruptions,
    test_lifecycle,
    test_discovery,
    test_initialize_audit,
    test_retention_and_devices,
    test_dump_restore,
    test_dead_letter_refetch,
    test_stats_from_worker,
    test_search_path_is_pinned,
    test_odoo_text_and_secret,
    test_secret_needs_secret_to_move,
    test_large_id_jump,
    test_poison_records,
    test_idless_records_do_not_spin,
    test_unreadable_record_isolated,
    test_holes_below_first_batch,
    test_launcher_survives_a_failed_read,
    test_recovery_defaults,
    test_null_answer,
    test_nonstandard_number,
    test_lossy_values,
    test_launcher_memory_is_flat,
    test_idle_poll_writes_nothing,
    test_waiting_poller_is_quiet,
    test_recovery_within_30s,
    test_rolled_back_change_wakes_nobody,
    test_model_stats_exact_under_churn,
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
