#!/usr/bin/env python3
"""Randomized histories: Odoo rows committed out of order and rolled back,
bad responses, poller kills, a crash restart, retention with late rows that
carry old timestamps, and devices pulling concurrently that lose answers and
replay old tokens.  A checker then asserts, for every device, that it
processed every retained event of its models once and in order, that every
event it missed was removed by retention and it was told resync_required,
and that resync_required was never said without such a removal; and that
every committed Odoo row was stored exactly once.

Seeded: BRIDGECORE_HISTORY_SEEDS (default "1,2") selects the schedules,
BRIDGECORE_HISTORY_SECONDS (default 12) their length.  Uses the libpq
environment and CLUSTER_DIR like test_worker.py, whose helpers it imports.
Prints TAP; exits non-zero when a check fails.
"""
import os
import random
import signal
import sys
import threading
import time
import traceback
from datetime import datetime, timedelta, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_worker as W          # noqa: E402  (helpers: Standin, Database, waits, TAP)
import psycopg2                  # noqa: E402

T = W.T
APPS = {"sales_app": None, "warehouse_app": None, "manager_app": None}


class Device(threading.Thread):
    """An app on one device: keeps the token of the last answer it processed,
    processes each event once (by id), sometimes loses an answer, sometimes
    replays an older token it had stored."""

    def __init__(self, name, app, rng, stop):
        super().__init__(daemon=True)
        self.name_, self.app, self.rng, self.stop = name, app, rng, stop
        self.token = "0"                 # the documented starting token
        self.tokens = ["0"]              # every token it persisted
        self.processed = []              # event ids, in processing order
        self.resyncs = []                # (position asked from, answer) of resync answers
        self.errors = []
        self.pulls = 0

    def pull(self, cur, token):
        cur.execute("SELECT bridgecore.sync_pull(1, %s, %s, 20, sync_token => %s)::text",
                    (self.name_, self.app, token))
        import json
        return json.loads(cur.fetchone()[0])

    def connect(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg2.connect("", application_name="bridgecore history device")
                conn.autocommit = True
                cur = conn.cursor()
                cur.execute("SET bridgecore.rate_limit_sync_pull = 0")
                cur.execute("SET synchronous_commit = on")
                return conn, cur
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def run(self):
        conn, cur = self.connect()
        try:
            drained = 0
            while True:
                try:
                    if not self.stop.is_set():
                        self.step(cur)
                        time.sleep(self.rng.uniform(0, 0.05))
                        continue
                    # Drain: pull without losses until up to date.
                    answer = self.step(cur, lossy=False)
                    drained += 1
                    if (answer and not answer["has_more"] and not answer["events"]) or drained > 500:
                        break
                except psycopg2.Error as e:
                    if e.pgcode is not None and e.pgcode not in ("57P01", "57P02", "57P03"):
                        raise
                    # The server restarted under us (a lost connection has no
                    # SQLSTATE; 57P0x: terminated): that answer is lost.
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass
                    conn, cur = self.connect()
        except Exception:
            self.errors.append(traceback.format_exc())
        finally:
            conn.close()

    def step(self, cur, lossy=True):
        token = self.token
        if lossy and self.rng.random() < 0.1:
            token = self.rng.choice(self.tokens)     # an app restored from an older backup
        answer = self.pull(cur, token)
        self.pulls += 1
        if lossy and self.rng.random() < 0.15:
            return None                               # the answer is lost on the network
        if answer["resync_required"]:
            self.resyncs.append((int(token.split(":")[-1]), answer))
        last = self.processed[-1] if self.processed else 0
        for e in answer["events"]:
            if e["id"] > last:
                self.processed.append(e["id"])
                last = e["id"]
        self.token = answer["next_sync_token"]
        self.tokens.append(self.token)
        return answer


def alive():
    try:
        W.DB.val("SELECT 1")
        return True
    except psycopg2.Error:
        return False


def odoo_ts(delta):
    return (datetime.now(timezone.utc) + delta).strftime("%Y-%m-%d %H:%M:%S")


def schedule(seed, seconds):
    rng = random.Random(seed)
    sd = W.Standin()
    # Old rows first: retention has a prefix to remove while devices are behind.
    old = odoo_ts(timedelta(days=-3))
    for _ in range(rng.randint(10, 30)):
        sd.control("add_raw", row={"model": rng.choice(["sale.order", "stock.picking", "res.partner"]),
                                   "record_id": rng.randint(1, 99), "event": "write", "timestamp": old,
                                   "priority": "low", "category": "business", "payload": False,
                                   "user_id": False})
    inst = W.add_instance("history%d" % seed, sd, batch_size=rng.choice([3, 7, 20]),
                          poll_interval="50 milliseconds")
    stop = threading.Event()
    devices = [Device("dev-%d-%d" % (seed, i), app, random.Random(seed * 100 + i), stop)
               for i, app in enumerate(rng.choice(list(APPS)) for _ in range(4))]
    removed = {}                       # local id -> model, removed by retention
    reserved = []
    crashed = False
    for d in devices:
        d.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        action = rng.random()
        if action < 0.35:
            sd.add(rng.randint(1, 8))
        elif action < 0.45:
            reserved += sd.control("reserve", count=rng.randint(1, 3))["ids"]
        elif action < 0.55 and reserved:
            rng.shuffle(reserved)
            n = rng.randint(1, len(reserved))
            sd.control("publish", ids=reserved[:n])
            reserved = reserved[n:]
        elif action < 0.6:
            sd.control("skip", count=rng.randint(1, 3))           # rolled back in Odoo
        elif action < 0.68:
            sd.control("fault", kind=rng.choice(["http500", "garbage", "truncated", "reset", "html"]))
        elif action < 0.72:
            W.DB.all("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                     " WHERE backend_type = 'bridgecore poller'")
        elif action < 0.78:
            # A late row with an old timestamp (a backfill, clock skew).
            sd.control("add_raw", row={"model": rng.choice(["sale.order", "stock.picking"]),
                                       "record_id": 1, "event": "write", "timestamp": old,
                                       "priority": "low", "category": "business", "payload": False,
                                       "user_id": False})
        elif action < 0.85:
            before = dict(W.DB.all("SELECT id, model FROM bridgecore.event WHERE instance_id = %s", (inst,)))
            W.DB.all("SELECT bridgecore.cleanup(now() - interval '1 day', 'history%d')" % seed)
            after = {r[0] for r in W.DB.all("SELECT id FROM bridgecore.event WHERE instance_id = %s", (inst,))}
            removed.update({i: m for i, m in before.items() if i not in after})
        elif action < 0.86 and not crashed and seed % 2 == 1:
            # A crash: a killed backend makes PostgreSQL restart every process
            # and recover from the WAL, in the middle of whatever was running.
            pid = W.DB.val("SELECT pid FROM pg_stat_activity WHERE backend_type = 'bridgecore poller' LIMIT 1")
            if pid:
                crashed = True
                os.kill(pid, signal.SIGKILL)
                W.wait_for(lambda: not alive(), 30, "PostgreSQL to notice the crash")
                W.wait_for(W._reconnect, 60, "PostgreSQL back after the crash")
        time.sleep(rng.uniform(0.01, 0.15))
    if reserved:
        sd.control("publish", ids=reserved)
    sd.control("clear_faults")
    sd.add(1)                          # the newest id is a committed one
    def caught_up():
        st = sd.stats()
        row = W.DB.one("SELECT (SELECT count(*) FROM bridgecore.event WHERE instance_id = i.id), i.cursor"
                       " FROM bridgecore.instance i WHERE i.id = %s", (inst,))
        return row[0] + len(removed) == st["rows"] and row[1] >= st["max_id"]
    W.wait_for(caught_up, 60, "history %d: every committed row stored" % seed,
               W.describe("history%d" % seed, inst, sd))
    stop.set()
    for d in devices:
        d.join(120)
    return sd, inst, devices, removed, crashed


def check(seed, sd, inst, devices, removed, crashed):
    name = "history %d" % seed
    # Exactly once: every committed Odoo row is stored once, or was removed by retention.
    rows = {r["id"] for r in sd.rows()}
    stored = W.DB.all("SELECT odoo_id, id FROM bridgecore.event WHERE instance_id = %s", (inst,))
    odoo_ids = [o for o, _ in stored]
    T.ok(len(odoo_ids) == len(set(odoo_ids)), "%s: no Odoo row stored twice" % name)
    missing = rows - set(odoo_ids)
    removed_count = len(removed)
    T.ok(len(missing) <= removed_count and len(rows) == len(set(odoo_ids)) + removed_count,
         "%s: every committed row stored once (%d rows, %d retained, %d removed by retention)"
         % (name, len(rows), len(odoo_ids), removed_count), sorted(missing)[:20])
    models = dict(W.DB.all("SELECT name, models FROM bridgecore.app_type"))
    retained = W.DB.all("SELECT id, model FROM bridgecore.event WHERE instance_id = %s ORDER BY id", (inst,))
    for d in devices:
        wanted = set(models[d.app])
        T.ok(not d.errors, "%s: %s pulled without errors" % (name, d.name_), *d.errors)
        T.ok(d.processed == sorted(set(d.processed)), "%s: %s processed each event once, in order"
             % (name, d.name_))
        got = set(d.processed)
        want = [i for i, m in retained if m in wanted]
        lost = [i for i in want if i not in got]
        T.ok(not lost, "%s: %s (%s) processed every retained event of its models (%d)"
             % (name, d.name_, d.app, len(want)), "not processed: %s" % lost[:20])
        missed_removed = [i for i, m in removed.items() if m in wanted and i not in got]
        T.ok(not missed_removed or d.resyncs,
             "%s: %s missed %d removed events and was told resync_required %d times"
             % (name, d.name_, len(missed_removed), len(d.resyncs)))
        unjustified = [pos for pos, _ in d.resyncs
                       if not any(i > pos and m in wanted for i, m in removed.items())]
        T.ok(not unjustified, "%s: %s was told resync_required only when a wanted event above its position"
             " was removed" % (name, d.name_), "positions: %s" % unjustified[:10])
        T.diag("%s: %s %d pulls, %d processed, %d resync answers" % (name, d.name_, d.pulls,
                                                                      len(d.processed), len(d.resyncs)))
    T.diag("%s: %d Odoo rows, %d removed by retention, crash restart: %s" % (name, len(rows), removed_count, crashed))


def main():
    seeds = [int(s) for s in os.environ.get("BRIDGECORE_HISTORY_SEEDS", "1,2").split(",") if s]
    seconds = float(os.environ.get("BRIDGECORE_HISTORY_SECONDS", "12"))
    W.DB = W.Database()
    W.DB.all("CREATE EXTENSION IF NOT EXISTS bridgecore")
    W.set_guc("bridgecore.gap_window", "30s")
    W.set_guc("bridgecore.max_backoff", "200ms")
    # A crash must not take back commits that devices already saw answered
    # (the suite's cluster runs with synchronous_commit = off for speed).
    W.DB.all("ALTER SYSTEM SET synchronous_commit = on")
    W.DB.all("SELECT pg_reload_conf()")
    try:
        for seed in seeds:
            try:
                sd, inst, devices, removed, crashed = schedule(seed, seconds)
                check(seed, sd, inst, devices, removed, crashed)
                W.remove_instance("history%d" % seed)
                sd.stop()
            except Exception:
                T.ok(False, "history %d ran to its end" % seed, traceback.format_exc())
                W.tidy_up()
    finally:
        try:
            W.DB.all("ALTER SYSTEM RESET synchronous_commit")
            W.DB.all("SELECT pg_reload_conf()")
        except Exception:
            pass
        W.cleanup()
    print("1..%d" % T.n)
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
