#!/usr/bin/env python3
"""Integration tests of pulls on a hot standby.

A real streaming standby of the test cluster (pg_basebackup -R, started on a
port and socket directory of its own) while the worker ingests from an Odoo
stand-in on the primary.  Checked: devices that alternate their pulls
between the primary and the standby, passing each answer's token to the
next pull, process every event of their models once and in order, while
new events keep arriving; the standby answers from the token alone and
stores nothing, and the device's stored state catches up on its next
primary pull; what a standby cannot do is refused with a clear SQLSTATE and
hint (a pull without a token 25006, sync_reset 25006, a token ahead of its
replay 40001, which the primary then answers); a token from before a
sync_reset is refused on both; the read-only functions work there; the
gateway (DATABASE_STANDBY_URLS) sends pulls with a token to the standby and
falls back to the primary when the standby is behind or down.

Runs against a cluster with shared_preload_libraries = 'bridgecore' whose
bridgecore.database is the database of the libpq environment, as root or
as the cluster's owner; CLUSTER_DIR names the cluster's directory (its
data directory is CLUSTER_DIR/data).  The extension must not exist there
yet: the test creates it and drops it at the end.  Every wait is a
condition polled until a deadline.  Prints TAP; exits non-zero when a test
fails.  Needs Python 3 with psycopg2 only.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import traceback
import urllib.error
import urllib.request

import psycopg2
import psycopg2.errors

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_worker as w  # noqa: E402  (Tap, Standin, wait_for, free_port)
import test_doorbell as bell  # noqa: E402  (Gateway, SECRET)

T = w.T
BINDIR = subprocess.check_output(["pg_config", "--bindir"], text=True).strip()
DEVICES = 3
PAGE = 7


def as_owner(cmd):
    return (["runuser", "-u", "postgres", "--"] + cmd) if os.geteuid() == 0 else cmd


def connect(**kw):
    conn = psycopg2.connect("", application_name="bridgecore standby test", **kw)
    conn.autocommit = True
    return conn


def one(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        row = cur.fetchone() if cur.description else None
        return row[0] if row else None


def error_of(conn, sql, args=None):
    """(SQLSTATE, message, hint) of the error sql raises, or None."""
    try:
        one(conn, sql, args)
    except psycopg2.Error as e:
        d = e.diag
        return (e.pgcode, d.message_primary, d.message_hint)
    return None


class Standby:
    """A streaming replica of the primary of the libpq environment."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bridgecore-standby.")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = w.free_port()
        subprocess.run(as_owner([os.path.join(BINDIR, "pg_basebackup"), "-h", os.environ["PGHOST"],
                                 "-p", os.environ["PGPORT"], "-U", os.environ.get("PGUSER", "postgres"),
                                 "-D", os.path.join(self.dir, "data"), "-R", "-X", "stream",
                                 "-c", "fast"]),
                       check=True, capture_output=True)
        conf = os.path.join(self.dir, "data", "postgresql.conf")
        subprocess.run(as_owner(["sh", "-c", "printf '%%s\\n' \"port = %d\" \"unix_socket_directories = '%s'\""
                                 " \"hot_standby = on\" \"hot_standby_feedback = on\" >> %s"
                                 % (self.port, self.dir, conf)]), check=True)
        subprocess.run(as_owner([os.path.join(BINDIR, "pg_ctl"), "-D", os.path.join(self.dir, "data"),
                                 "-l", os.path.join(self.dir, "server.log"), "-w", "-t", "60", "start"]),
                       check=True, capture_output=True)

    def connect(self):
        return connect(host=self.dir, port=self.port)

    def log(self):
        try:
            with open(os.path.join(self.dir, "server.log")) as f:
                return f.read()[-4000:]
        except OSError as e:
            return str(e)

    def stop(self):
        subprocess.run(as_owner([os.path.join(BINDIR, "pg_ctl"), "-D", os.path.join(self.dir, "data"),
                                 "-m", "immediate", "-w", "stop"]), capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def caught_up(primary, standby):
    """True once the standby replayed everything the primary wrote so far."""
    target = one(primary, "SELECT pg_current_wal_insert_lsn()::text")
    return lambda: one(standby, "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,))


def pull(conn, device, token, user=1, limit=PAGE):
    return json.loads(one(conn, "SELECT bridgecore.sync_pull(%s, %s, 'sales_app', %s, sync_token => %s)::text",
                          (user, device, limit, token)))


SALES = ("sale.order", "sale.order.line", "res.partner", "product.template", "product.product",
         "product.category", "mail.message", "mail.channel")


def wanted_ids(primary):
    with primary.cursor() as cur:
        cur.execute("SELECT id FROM bridgecore.event WHERE model = ANY (%s) ORDER BY id", (list(SALES),))
        return [r[0] for r in cur.fetchall()]


def test_alternating(primary, standby, sd, inst):
    """Devices alternate primary and standby pulls, with tokens, while events arrive."""
    devices = {"alt-%d" % d: {"token": "0", "ids": [], "standby_pulls": 0, "fallbacks": 0}
               for d in range(DEVICES)}
    rounds = 0
    for batch in range(6):
        sd.add(25)
        w.wait_for(lambda: one(primary, "SELECT cursor FROM bridgecore.instance WHERE id = %s", (inst,))
                   >= sd.stats()["max_id"], 30, "batch %d to be ingested" % batch)
        for turn in range(4):
            rounds += 1
            for name, dev in devices.items():
                on_standby = (rounds + len(dev["ids"])) % 2 == 0
                if on_standby and turn % 2 == 0:
                    # Most standby pulls come once the primary's last answer
                    # is replayed; the others may meet replication lag.
                    w.wait_for(caught_up(primary, standby), 30, "the standby to replay the last pull")
                try:
                    answer = pull(standby if on_standby else primary, name, dev["token"])
                    dev["standby_pulls"] += on_standby
                except psycopg2.errors.SerializationFailure:
                    # The standby has not replayed what the token names yet:
                    # the primary answers (as the gateway falls back).
                    dev["fallbacks"] += 1
                    answer = pull(primary, name, dev["token"])
                dev["ids"].extend(e["id"] for e in answer["events"])
                dev["token"] = answer["next_sync_token"]
    # Drain: primary and standby in turn until nothing more.
    w.wait_for(caught_up(primary, standby), 30, "the standby to replay the log")
    for name, dev in devices.items():
        for k in range(200):
            try:
                answer = pull(standby if k % 2 else primary, name, dev["token"])
            except psycopg2.errors.SerializationFailure:
                dev["fallbacks"] += 1       # the primary's last answer is not replayed yet
                answer = pull(primary, name, dev["token"])
            dev["ids"].extend(e["id"] for e in answer["events"])
            dev["token"] = answer["next_sync_token"]
            if not answer["has_more"] and k >= 1:
                break
    want = wanted_ids(primary)
    for name, dev in devices.items():
        T.ok(dev["ids"] == want, "%s: every event of its models once, in order, across %d standby pulls"
             " (%d fell back to the primary)" % (name, dev["standby_pulls"], dev["fallbacks"]),
             "got %d ids, want %d; first difference at %s" % (
                 len(dev["ids"]), len(want),
                 next((i for i, (a, b) in enumerate(zip(dev["ids"], want)) if a != b), min(len(dev["ids"]), len(want)))))
    T.ok(all(dev["standby_pulls"] > 0 for dev in devices.values()), "every device pulled on the standby")


def test_tokens(primary, standby, sd, inst):
    """A standby's token names its resets; the primary's state catches up from it."""
    first = pull(primary, "tok", "0", limit=5)
    T.ok(first["next_sync_token"].count(":") == 2, "the primary answers a bc1:<instance>:<event> token",
         first["next_sync_token"])
    w.wait_for(caught_up(primary, standby), 30, "the standby to replay the first pull")
    answer = pull(standby, "tok", first["next_sync_token"], limit=5)
    token = answer["next_sync_token"]
    T.ok(token.endswith(":0") and token.count(":") == 3 and answer["new_events_count"] == 5,
         "the standby answers the next page with a token that carries the device's resets", answer)
    stored = one(primary, "SELECT last_event_id FROM bridgecore.sync_state WHERE device_id = 'tok'")
    pos = int(token.split(":")[2])
    T.ok(stored < pos, "the standby's answer stored nothing on the primary", (stored, pos))
    again = pull(standby, "tok", first["next_sync_token"], limit=5)
    T.ok(again["events"] == answer["events"], "the same token on the standby gets the same page again")
    nxt = pull(primary, "tok", token, limit=5)
    after = one(primary, "SELECT last_event_id FROM bridgecore.sync_state WHERE device_id = 'tok'")
    T.ok(nxt["new_events_count"] == 5 and after >= int(nxt["next_sync_token"].split(":")[2]) > pos,
         "the primary takes the standby's token and its stored state catches up", (nxt, after))
    T.ok(nxt["events"][0]["id"] > answer["events"][-1]["id"], "the primary's page follows the standby's")

    # A reset on the primary makes every older token invalid, on both servers.
    one(primary, "SELECT bridgecore.sync_reset(1, 'tok')")
    w.wait_for(caught_up(primary, standby), 30, "the standby to replay the reset")
    for label, conn in (("primary", primary), ("standby", standby)):
        err = error_of(conn, "SELECT bridgecore.sync_pull(1, 'tok', 'sales_app', 5, sync_token => %s)", (token,))
        T.ok(err is not None and err[0] == "22023" and "before this device's last sync_reset" in err[1] and err[2],
             "on the %s, a standby token from before a sync_reset is refused (22023, with a hint)" % label, err)
    fresh = pull(standby, "tok", "0", limit=5)
    T.ok(fresh["next_sync_token"].endswith(":1") and fresh["events"][0]["id"] == first["events"][0]["id"],
         "after the reset the standby serves from the start, with the new resets", fresh)


def test_refusals(primary, standby, sd, inst):
    err = error_of(standby, "SELECT bridgecore.sync_pull(1, 'ref', 'sales_app', 5)")
    T.ok(err is not None and err[0] == "25006" and "needs a sync_token" in err[1] and err[2],
         "a pull without a token on the standby: 25006 with a hint", err)
    err = error_of(standby, "SELECT bridgecore.sync_reset(1, 'alt-0')")
    T.ok(err is not None and err[0] == "25006" and "standby" in err[1] and err[2] == "Call it on the primary.",
         "sync_reset on the standby: 25006 with a hint", err)
    err = error_of(standby, "SELECT bridgecore.sync_reset_all(1)")
    T.ok(err is not None and err[0] == "25006", "sync_reset_all on the standby: 25006", err)
    newest = one(primary, "SELECT max(id) FROM bridgecore.event")
    ahead = "bc1:%d:%d:0" % (inst, newest + 1000)
    err = error_of(standby, "SELECT bridgecore.sync_pull(1, 'ref2', 'sales_app', 5, sync_token => %s)", (ahead,))
    T.ok(err is not None and err[0] == "40001" and "not yet replayed" in err[1] and err[2],
         "a token beyond the standby's log: 40001 (retryable), with a hint", err)
    err = error_of(primary, "SELECT bridgecore.sync_pull(1, 'ref2', 'sales_app', 5, sync_token => %s)", (ahead,))
    T.ok(err is not None and err[0] == "22023" and err[1] == "sync_token is ahead of the event log",
         "the same token on the primary: 22023, ahead of the event log", err)
    # A primary's token whose state the standby has not replayed yet.
    one(standby, "SELECT pg_wal_replay_pause()")
    try:
        answer = pull(primary, "lag", "0", limit=5)
        err = error_of(standby, "SELECT bridgecore.sync_pull(1, 'lag', 'sales_app', 5, sync_token => %s)",
                       (answer["next_sync_token"],))
        T.ok(err is not None and err[0] == "40001" and err[2],
             "a primary's token the paused standby has not replayed: 40001 with a hint", err)
    finally:
        one(standby, "SELECT pg_wal_replay_resume()")
    w.wait_for(caught_up(primary, standby), 30, "the standby to resume")
    answer2 = pull(standby, "lag", answer["next_sync_token"], limit=5)
    T.ok(answer2["new_events_count"] == 5, "once replayed, the standby answers that token", answer2)


def test_read_only_api(primary, standby, sd, inst):
    state = json.loads(one(standby, "SELECT bridgecore.sync_state(1, 'alt-0')::text"))
    T.ok(state.get("device_id") == "alt-0",
         "sync_state works on the standby", state)
    events = json.loads(one(standby, "SELECT bridgecore.events(model_name => 'sale.order', \"limit\" => 3)::text"))
    T.ok(isinstance(events, (list, dict)), "events() works on the standby", events)
    check = json.loads(one(standby, "SELECT bridgecore.check_updates()::text"))
    T.ok(isinstance(check, dict), "check_updates() works on the standby", check)
    n = one(standby, "SELECT count(*) FROM bridgecore.event")
    T.ok(n == one(primary, "SELECT count(*) FROM bridgecore.event"), "the standby holds the primary's log")


def gateway_pull(gw, token, body):
    """(HTTP status, JSON answer) of POST /api/v2/sync/pull."""
    req = urllib.request.Request(gw.url + "/api/v2/sync/pull", json.dumps(body).encode(),
                                 {"Content-Type": "application/json", "Authorization": "Bearer " + token})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def standby_pulls(gw):
    """{outcome: count} of bridgecore_gateway_standby_pulls_total."""
    out = {}
    for line in gw.metrics().splitlines():
        m = re.match(r'bridgecore_gateway_standby_pulls_total\{outcome="(\w+)"\} (\d+)', line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def test_gateway(primary, standby, sd, inst, srv):
    """The gateway sends pulls with a token to the standby, others to the primary."""
    dbname = one(primary, "SELECT current_database()")
    one(primary, "ALTER DATABASE %s SET bridgecore.jwt_secret = %%s" % dbname, (bell.SECRET,))
    one(primary, "SET bridgecore.jwt_secret = %s", (bell.SECRET,))
    token = json.loads(one(primary, "SELECT bridgecore.issue_token('bridgecore_app', 1, 'replicated')::text"))
    token = token.get("access_token") or token.get("token")
    w.wait_for(caught_up(primary, standby), 30, "the standby to replay the secret")
    gw = bell.Gateway(DATABASE_STANDBY_URLS="postgresql:///%s?host=%s&port=%d&user=postgres"
                      % (dbname, srv.dir, srv.port))
    try:
        body = {"user_id": 1, "device_id": "gw", "app_type": "sales_app", "limit": 6}
        status, first = gateway_pull(gw, token, body)
        T.ok(status == 200 and first["next_sync_token"].count(":") == 2 and standby_pulls(gw) == {},
             "a pull without a token goes to the primary", (status, first))
        w.wait_for(caught_up(primary, standby), 30, "the standby to replay the pull")
        status, second = gateway_pull(gw, token, dict(body, sync_token=first["next_sync_token"]))
        T.ok(status == 200 and second["next_sync_token"].endswith(":0") and standby_pulls(gw) == {"answered": 1},
             "a pull with the token goes to the standby, which answers it", (status, second, standby_pulls(gw)))
        T.ok([e["id"] for e in first["events"] + second["events"]] == wanted_ids(primary)[:12],
             "the two answers are the device's first twelve events, in order")
        one(standby, "SELECT pg_wal_replay_pause()")
        try:
            # Without a token the primary answers (and stores the state the
            # paused standby does not replay); its token then meets the lag.
            status, third = gateway_pull(gw, token, body)
            status, fourth = gateway_pull(gw, token, {**body, "sync_token": third["next_sync_token"]})
        finally:
            one(standby, "SELECT pg_wal_replay_resume()")
        T.ok(status == 200 and standby_pulls(gw) == {"answered": 1, "fell_back": 1}
             and third["events"] == second["events"]     # the stored state had not seen the standby's answer
             and fourth["events"][0]["id"] > third["events"][-1]["id"],
             "a token the paused standby has not replayed is answered by the primary (fell back)",
             (status, fourth, standby_pulls(gw)))
        srv.stop()
        status, fifth = gateway_pull(gw, token, dict(body, sync_token=fourth["next_sync_token"]))
        T.ok(status == 200 and standby_pulls(gw) == {"answered": 1, "fell_back": 2}
             and fifth["events"][0]["id"] > fourth["events"][-1]["id"],
             "with the standby down, the primary answers", (status, fifth, standby_pulls(gw), gw.output()))
        status, bad = gateway_pull(gw, token, dict(body, sync_token="bc1:%d:999999999:0" % inst))
        T.ok(status == 400 and bad.get("code") == "22023", "a token ahead of the log is 400 from the primary", bad)
    finally:
        gw.stop()
        one(primary, "ALTER DATABASE %s RESET bridgecore.jwt_secret" % dbname)


def main():
    primary = connect()
    sd = standby_srv = standby = None
    try:
        one(primary, "CREATE EXTENSION bridgecore")
        one(primary, "SET bridgecore.rate_limit_sync_pull = 0")
        one(primary, "SET synchronous_commit = on")
        sd = w.Standin(password="standby-key")
        one(primary, "SELECT name FROM bridgecore.add_instance('replicated', %s, 'odoo', 'bridgecore',"
                     " 'standby-key', poll_interval => '100 milliseconds')", (sd.url,))
        inst = one(primary, "SELECT id FROM bridgecore.instance WHERE name = 'replicated'")
        sd.add(40)
        w.wait_for(lambda: one(primary, "SELECT count(*) FROM bridgecore.event") == 40, 30,
                   "the first events to be ingested")
        standby_srv = Standby()
        standby = w.wait_for(lambda: _try_connect(standby_srv), 60, "the standby to accept connections")
        T.ok(one(standby, "SELECT pg_is_in_recovery()"), "the standby runs in recovery")
        one(standby, "SET bridgecore.rate_limit_sync_pull = 0")
        w.wait_for(caught_up(primary, standby), 30, "the standby to replay the log")
        T.ok(one(standby, "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'bridgecore%%'") == 0,
             "no BridgeCore worker runs on the standby")
        for test in (test_alternating, test_tokens, test_refusals, test_read_only_api, test_gateway):
            try:
                if test is test_gateway:
                    test(primary, standby, sd, inst, standby_srv)   # stops the standby
                else:
                    test(primary, standby, sd, inst)
            except Exception:
                T.ok(False, "%s ran to its end" % test.__name__, traceback.format_exc(),
                     standby_srv.log() if standby_srv else "")
    except Exception:
        T.ok(False, "setup", traceback.format_exc(), standby_srv.log() if standby_srv else "")
    finally:
        if standby is not None:
            standby.close()
        if standby_srv is not None:
            standby_srv.stop()
        if sd is not None:
            sd.stop()
        one(primary, "DROP EXTENSION IF EXISTS bridgecore CASCADE")
        primary.close()
    print("1..%d" % T.n)
    return 1 if T.failed else 0


def _try_connect(srv):
    try:
        return srv.connect()
    except psycopg2.OperationalError:
        return None


if __name__ == "__main__":
    sys.exit(main())
