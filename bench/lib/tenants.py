#!/usr/bin/python3
"""bench/tenants.sh's driver: events to many instances, one at a time, each
timed from the stand-in's commit to its NOTIFY on bridgecore_events.

Each event is added to one instance's database of the multi-database Odoo
stand-in; its poller is rung at once with bridgecore.wake(instance), as the
doorbell does. The instances take turns in a shuffled order, RATE events a
second; a listener connection receives the notifications. Prints one JSON
line: the latencies' p50, p99 and max, and how many were lost (no NOTIFY
within TIMEOUT seconds).

    tenants.py DSN STANDIN_URL EVENTS RATE NAME=DB [NAME=DB ...]
"""
import json
import random
import select
import sys
import time
import urllib.request

import psycopg2

TIMEOUT = 30.0


def control(url, **cmd):
    req = urllib.request.Request(url + "/control", json.dumps(cmd).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def pct(values, p):
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100.0 * (len(s) - 1))))]


def main():
    dsn, url, events, rate = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    instances = [a.split("=", 1) for a in sys.argv[5:]]
    listener = psycopg2.connect(dsn, application_name="bench tenants listener")
    listener.autocommit = True
    listener.cursor().execute("LISTEN bridgecore_events")
    ringer = psycopg2.connect(dsn, application_name="bench tenants ringer")
    ringer.autocommit = True
    ring = ringer.cursor()

    pending = {}      # instance name -> commit time of its event in flight
    latencies = []
    lost = 0
    order = []

    def receive(deadline):
        nonlocal lost
        while True:
            wait = deadline - time.time()
            if wait <= 0:
                return
            if select.select([listener], [], [], wait)[0]:
                listener.poll()
                now = time.time()
                while listener.notifies:
                    n = listener.notifies.pop(0)
                    inst = json.loads(n.payload).get("instance")
                    if inst in pending:
                        latencies.append((now - pending.pop(inst)) * 1000.0)

    start = time.time()
    for k in range(events):
        if not order:
            order = list(instances)
            random.shuffle(order)
        name, db = order.pop()
        receive(start + k / rate)
        now = time.time()
        for inst, t in list(pending.items()):
            if now - t > TIMEOUT:
                del pending[inst]
                lost += 1
        if name in pending:
            continue   # its previous event is still on its way: not sent twice
        committed = control(url, op="add_events", db=db, count=1)["committed_at"]
        pending[name] = committed
        ring.execute("SELECT bridgecore.wake(%s)", (name,))
    deadline = time.time() + TIMEOUT
    while pending and time.time() < deadline:
        receive(min(deadline, time.time() + 0.5))
    lost += len(pending)
    print(json.dumps({"events": len(latencies), "lost": lost,
                      "p50": pct(latencies, 50), "p99": pct(latencies, 99), "max": max(latencies or [0])}))


if __name__ == "__main__":
    main()
