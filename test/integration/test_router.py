#!/usr/bin/env python3
"""Integration tests of a router (extension bridgecore_router) and two shards.

Shard a is the test cluster (the libpq environment), shard b a second
cluster that the test makes (initdb, bridgecore preloaded); the router is a
database of the test cluster.  Each shard's worker polls an Odoo stand-in
of its own instance.  Checked:

- the router's functions have the shard's names, arguments, defaults,
  result types and grants;
- the sync API checks (the regression suite's input_validation cases, and
  the pgTAP suite's pulls, pages, filters, tokens, resync_required after
  cleanup, sync_reset and sync_reset_all, with sync_state, sync_scope,
  events, check_updates) give through the router what they give on the
  shard: the same JSON, or the same error (SQLSTATE, message, detail, hint),
  as a superuser and as bridgecore_app with a JWT's claims (the user and
  instance binding), and login against the stand-in;
- calls go to the shard of their instance: named, from the JWT, from a
  sync_token, or the only one;
- an app role gains nothing by calling the router's internals, and the
  shard's entry point is not callable by apps;
- the gateway, pointed at the router, logs in and serves the REST pull and
  state of both shards' instances, LISTENs on both shards for its
  subscribers, and rings the doorbell of the shard whose instance has the
  push key;
- an instance moved between shards (CALL bridgecore.move_instance) while
  devices pull through the router and events keep arriving: every device
  gets every event of its models once and in order, a token from before
  the move still continues where it was, and the same after a move back;
  the new shard polls the instance, the old one no longer holds it.

Every wait is a condition polled until a deadline.  Prints TAP; exits
non-zero when a test fails.  Needs Python 3 with psycopg2 only.
"""
import json
import os
import re
import shutil
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
import test_worker as w  # noqa: E402  (Tap, Standin, wait_for, free_port)
import test_doorbell as bell  # noqa: E402  (Gateway, SECRET)
import test_standby as sb  # noqa: E402  (as_owner, connect, one)

T = w.T
BINDIR = subprocess.check_output(["pg_config", "--bindir"], text=True).strip()
ROUTER_DB = "bridgecore_router_test"
SALES = ("sale.order", "res.partner", "product.product", "mail.message")
MODELS = SALES + ("stock.picking",)
SECRET = bell.SECRET             # the gateway's too
ROUTED = ("sync_pull", "sync_state", "sync_scope", "sync_reset", "sync_reset_all", "events", "check_updates",
          "cleanup", "deactivate_idle_devices", "login", "refresh_token", "verify_token", "issue_token", "wake",
          "status", "metrics", "ring")


as_owner = sb.as_owner
connect = sb.connect
one = sb.one


def rows(conn, sql, args=None):
    with conn.cursor() as cur:
        cur.execute(sql, args)
        return cur.fetchall()


def outcome(conn, sql, args=None):
    """('ok', value) or ('error', SQLSTATE, message, detail, hint)."""
    try:
        return ("ok", one(conn, sql, args))
    except psycopg2.Error as e:
        d = e.diag
        return ("error", e.pgcode, d.message_primary, d.message_detail, d.message_hint)


class Cluster:
    """A second cluster with bridgecore preloaded, on a socket directory of its own."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bridgecore-shard.")
        os.chmod(self.dir, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.port = w.free_port()
        data = os.path.join(self.dir, "data")
        subprocess.run(as_owner([os.path.join(BINDIR, "initdb"), "-D", data, "-U", "postgres", "-A", "trust",
                                 "-E", "UTF8", "--no-locale"]), check=True, capture_output=True)
        conf = "\n".join(["shared_preload_libraries = 'bridgecore'", "bridgecore.database = 'postgres'",
                          "port = %d" % self.port, "listen_addresses = ''",
                          "unix_socket_directories = '%s'" % self.dir, "fsync = off", "synchronous_commit = off",
                          "max_connections = 40", ""])
        subprocess.run(as_owner(["sh", "-c", "cat >> %s/postgresql.conf" % data]), input=conf.encode(), check=True)
        subprocess.run(as_owner([os.path.join(BINDIR, "pg_ctl"), "-D", data, "-l",
                                 os.path.join(self.dir, "server.log"), "-w", "-t", "60", "start"]),
                       check=True, capture_output=True)

    def connect(self, dbname="postgres"):
        return connect(host=self.dir, port=self.port, dbname=dbname, user="postgres")

    def conninfo(self):
        return "host=%s port=%d dbname=postgres" % (self.dir, self.port)

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


class Setup:
    def __init__(self):
        self.a = connect()                      # shard a: the test cluster
        self.a_db = one(self.a, "SELECT current_database()")
        self.b_srv = Cluster()
        self.b = self.b_srv.connect()
        self.sd_a = w.Standin(password="acme-key-1234")
        self.sd_b = w.Standin(password="beta-key-1234")
        for conn, db in ((self.a, self.a_db), (self.b, "postgres")):
            one(conn, "CREATE EXTENSION bridgecore")
            one(conn, "ALTER DATABASE %s SET bridgecore.jwt_secret = %%s" % db, (SECRET,))
            one(conn, "SET bridgecore.jwt_secret = %s", (SECRET,))
            if not one(conn, "SELECT count(*) FROM pg_roles WHERE rolname = 'bc_router_login'"):
                one(conn, "CREATE ROLE bc_router_login LOGIN IN ROLE bridgecore_router")
            # The test's devices pull in tight loops.
            one(conn, "ALTER ROLE bc_router_login SET bridgecore.rate_limit_sync_pull = 0")
            one(conn, "ALTER ROLE bc_router_login SET bridgecore.rate_limit_sync_state = 0")
            one(conn, "ALTER ROLE bc_router_login SET bridgecore.rate_limit_sync_reset = 0")
        # Instance ids unique across shards.
        one(self.b, "ALTER TABLE bridgecore.instance ALTER COLUMN id RESTART WITH 1001")
        one(self.a, "SELECT name FROM bridgecore.add_instance('acme', %s, 'odoo', 'bridgecore', %s,"
                    " poll_interval => '50 milliseconds')", (self.sd_a.url, self.sd_a.password))
        one(self.b, "SELECT name FROM bridgecore.add_instance('beta', %s, 'odoo', 'bridgecore', %s,"
                    " poll_interval => '50 milliseconds')", (self.sd_b.url, self.sd_b.password))
        self.acme = one(self.a, "SELECT id FROM bridgecore.instance WHERE name = 'acme'")
        self.beta = one(self.b, "SELECT id FROM bridgecore.instance WHERE name = 'beta'")
        self.seq = 0
        self.add(self.sd_a, 60)
        self.add(self.sd_b, 30)
        self.wait_ingested(self.a, self.acme, self.sd_a)
        self.wait_ingested(self.b, self.beta, self.sd_b)

        one(self.a, "DROP DATABASE IF EXISTS %s" % ROUTER_DB)
        one(self.a, "CREATE DATABASE %s" % ROUTER_DB)
        self.r = connect(dbname=ROUTER_DB)
        one(self.r, "CREATE EXTENSION bridgecore_router CASCADE")
        one(self.r, "SELECT bridgecore.add_shard('a', %s)",
            ("host=%s port=%s dbname=%s" % (os.environ["PGHOST"], os.environ["PGPORT"], self.a_db),))
        one(self.r, "SELECT bridgecore.add_shard('b', %s)", (self.b_srv.conninfo(),))
        one(self.r, "CREATE USER MAPPING FOR PUBLIC SERVER bridgecore_shards OPTIONS (user 'bc_router_login')")
        self.placed = one(self.r, "SELECT bridgecore.sync_placement()")
        for conn in (self.a, self.b, self.r):
            one(conn, "SET bridgecore.rate_limit_sync_pull = 0")

    def add(self, sd, n, model=None):
        """n events, each with a unique payload marker (seq)."""
        for _ in range(n):
            self.seq += 1
            sd.add(1, model=model or MODELS[self.seq % len(MODELS)], event="create", payload={"seq": self.seq})

    def wait_ingested(self, conn, inst, sd, timeout=30):
        w.wait_for(lambda: one(conn, "SELECT cursor FROM bridgecore.instance WHERE id = %s", (inst,))
                   >= sd.stats()["max_id"], timeout, "instance %s to ingest its stand-in's events" % inst)

    def close(self):
        for conn in ("r",):
            c = getattr(self, conn, None)
            if c is not None:
                c.close()
        try:
            one(self.a, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % ROUTER_DB)
            one(self.a, "ALTER DATABASE %s RESET bridgecore.jwt_secret" % self.a_db)
            one(self.a, "DROP EXTENSION IF EXISTS bridgecore CASCADE")
            one(self.a, "DROP ROLE IF EXISTS bc_router_login")
        finally:
            self.a.close()
            self.b.close()
            self.b_srv.stop()
            self.sd_a.stop()
            self.sd_b.stop()


# ---- the same API ------------------------------------------------------------

def test_signatures(s):
    """Names, arguments, defaults, result types and grants as on the shard."""
    q = ("SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),"
         " array(SELECT a.grantee::regrole::text || ':' || a.privilege_type FROM aclexplode(p.proacl) a"
         "        WHERE a.grantee <> p.proowner ORDER BY 1)"
         " FROM pg_proc p WHERE p.pronamespace = 'bridgecore'::regnamespace AND p.proname = ANY (%s) ORDER BY 1, 2")
    shard = rows(s.a, q, (list(ROUTED),))
    router = rows(s.r, q, (list(ROUTED),))
    T.ok(len(router) == len(ROUTED) and router == shard,
         "the router's %d functions have the shard's names, arguments, defaults, results and grants" % len(ROUTED),
         "\n".join("shard:  %r\nrouter: %r" % (x, y) for x, y in zip(shard, router) if x != y) or (shard, router))


# Calls whose answer (or error) must be the same through the router as on
# the shard. {dev} is a device id of its own on each side (a pull changes
# the device's state); {other} is the instance on the other shard.
SAME = [
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', 5, instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', 500, instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', 7, models_filter => '{{res.partner}}', instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'delivery_app', instance => 'acme', sync_token => '0')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', 3, instance => 'acme', sync_token => 'bc1:{acme}:4')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', 3, sync_token => 'bc1:{acme}:0', instance => 'acme',"
    " device_info => '{{\"os\": \"android\"}}', app_version => '2.1.0')",
    # The input_validation cases.
    "SELECT bridgecore.sync_pull(0, '{dev}', 'sales_app', instance => 'acme')",
    "SELECT bridgecore.sync_pull(-5, '{dev}', 'sales_app', instance => 'acme')",
    "SELECT bridgecore.sync_pull(NULL, '{dev}', 'sales_app', instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, NULL, 'sales_app', instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '', 'sales_app', instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, repeat('x', 300), 'sales_app', instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', NULL, instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'nope_app', instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', 0, instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', 100000, instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', NULL, instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', models_filter => '{{\"bad model!\"}}', instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', models_filter => ARRAY[NULL::text], instance => 'acme')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', instance => 'acme', sync_token => 'garbage')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', instance => 'acme', sync_token => 'bc1:{beta}:3')",
    "SELECT bridgecore.sync_pull(1, '{dev}', 'sales_app', instance => 'acme', sync_token => 'bc1:{acme}:999999999')",
    "SELECT bridgecore.sync_state(1, '{dev}', 'acme')",
    "SELECT bridgecore.sync_state(1, 'never-seen-{dev}', 'acme')",
    "SELECT bridgecore.sync_state(0, '{dev}', 'acme')",
    "SELECT bridgecore.sync_reset(1, 'never-seen-{dev}', 'acme')",
    "SELECT bridgecore.sync_scope('delivery_app', 'acme')",
    "SELECT bridgecore.sync_scope(NULL, 'acme')",
    "SELECT bridgecore.sync_scope('nope_app', 'acme')",
    "SELECT bridgecore.events('sale.order', \"limit\" => 5, instance => 'acme')",
    "SELECT bridgecore.events(\"limit\" => 3, \"offset\" => 2, instance => 'acme')",
    "SELECT bridgecore.events(event => 'explode', instance => 'acme')",
    "SELECT bridgecore.events(\"limit\" => -1, instance => 'acme')",
    "SELECT bridgecore.events(since => '2000-01-01', \"limit\" => 2, priority => 'high', instance => 'acme')",
    "SELECT bridgecore.check_updates('2000-01-01', instance => 'acme')",
    "SELECT bridgecore.check_updates(\"limit\" => 0, instance => 'acme')",
    "SELECT bridgecore.issue_token('superuser')",
    "SELECT bridgecore.issue_token('bridgecore_app', -1)",
    "SELECT bridgecore.verify_token('not.a.token')",
    "SELECT bridgecore.refresh_token('not.a.token')",
    "SELECT bridgecore.login('', 'x', 'acme')",
    "SELECT bridgecore.login('alice', 'wrong-password', 'acme')",
    "SELECT bridgecore.login('alice', 'alice-password', 'acme') ->> 'user_id'",
    "SELECT bridgecore.wake('acme') ->> 'instance'",
    "SELECT bridgecore.cleanup('2000-01-01', 'acme')",
]

# The same calls as an app with a JWT for user 7 of acme.
SAME_AS_APP = [
    "SELECT bridgecore.sync_pull(7, '{dev}', 'sales_app', 4)",
    "SELECT bridgecore.sync_pull(8, '{dev}', 'sales_app', 4)",
    "SELECT bridgecore.sync_pull(7, '{dev}', 'sales_app', 4, instance => 'beta')",
    "SELECT bridgecore.sync_pull(7, '{dev}', 'sales_app', 4, instance => 'acme')",
    "SELECT bridgecore.sync_state(7, '{dev}')",
    "SELECT bridgecore.sync_state(8, '{dev}')",
    "SELECT bridgecore.sync_reset(8, '{dev}')",
    "SELECT bridgecore.sync_scope('sales_app')",
    "SELECT bridgecore.events(\"limit\" => 2)",
    "SELECT bridgecore.check_updates('2000-01-01')",
    "SELECT bridgecore.cleanup()",
    "SELECT bridgecore.issue_token('bridgecore_admin')",
    "SELECT bridgecore.wake()",
]

VOLATILE_KEYS = re.compile(r'"(last_sync_time|created_at|access_token|processed_at)" ?: ?"[^"]*"')


def normal(result, dev):
    """An outcome with the parts that differ by device or by moment masked."""
    text = json.dumps(result)
    text = text.replace(dev, "<dev>")
    return VOLATILE_KEYS.sub(r'"\1": "<t>"', text)


def as_app(conn, claims):
    one(conn, "SET ROLE bridgecore_app")
    one(conn, "SELECT set_config('request.jwt.claims', %s, false)", (json.dumps(claims),))


def reset_role(conn):
    one(conn, "RESET ROLE")
    one(conn, "RESET request.jwt.claims")


def compare(s, calls, shard, router, label):
    same = 0
    for k, call in enumerate(calls):
        sql_direct = call.format(dev="d-%s-shard-%d" % (label, k), acme=s.acme, beta=s.beta)
        sql_routed = call.format(dev="d-%s-router-%d" % (label, k), acme=s.acme, beta=s.beta)
        direct = normal(outcome(shard, sql_direct), "d-%s-shard-%d" % (label, k))
        routed = normal(outcome(router, sql_routed), "d-%s-router-%d" % (label, k))
        if T.ok(direct == routed, "%s: %s" % (label, call.format(dev="<dev>", acme=s.acme, beta=s.beta)[:110]),
                "on the shard: %s" % direct[:600], "through the router: %s" % routed[:600]):
            same += 1
    return same


def test_same_answers(s):
    """The sync API through the router answers as the shard does."""
    s.sd_a.control("add_user", login="alice", password="alice-password", uid=7)
    compare(s, SAME, s.a, s.r, "superuser")
    claims = {"role": "bridgecore_app", "user_id": 7, "instance": "acme"}
    as_app(s.a, claims)
    as_app(s.r, claims)
    try:
        compare(s, SAME_AS_APP, s.a, s.r, "app")
    finally:
        reset_role(s.a)
        reset_role(s.r)


def test_tokens(s):
    """Tokens of the router's login work on the router and on the shard alike."""
    issued = one(s.r, "SELECT bridgecore.login('alice', 'alice-password', 'acme')")
    T.ok(issued.get("user_id") == 7 and issued.get("token_type") == "bearer",
         "login through the router checks the credentials against the instance's Odoo", issued)
    claims_r = one(s.r, "SELECT bridgecore.verify_token(%s)", (issued["access_token"],))
    claims_a = one(s.a, "SELECT bridgecore.verify_token(%s)", (issued["access_token"],))
    T.ok(claims_r == claims_a and claims_r["instance"] == "acme", "the router and the shard accept the same token",
         claims_r, claims_a)
    refreshed = one(s.r, "SELECT bridgecore.refresh_token(%s)", (issued["access_token"],))
    T.ok(one(s.b, "SELECT bridgecore.verify_token(%s) ->> 'user_id'", (refreshed["access_token"],)) == "7",
         "a token refreshed through the router is valid on every shard (one shared secret)")


def test_routing(s):
    """Each call goes to the shard of its instance."""
    direct = one(s.b, "SELECT bridgecore.events(\"limit\" => 3, instance => 'beta')")
    routed = one(s.r, "SELECT bridgecore.events(\"limit\" => 3, instance => 'beta')")
    T.ok(routed == direct and routed, "a call naming beta is answered by shard b", routed)
    first = one(s.r, "SELECT bridgecore.sync_pull(3, 'route-1', 'sales_app', 2, instance => 'beta')")
    second = one(s.r, "SELECT bridgecore.sync_pull(3, 'route-1', 'sales_app', 2, sync_token => %s)",
                 (first["next_sync_token"],))
    T.ok(second["events"] and second["events"][0]["id"] > first["events"][-1]["id"]
         and one(s.b, "SELECT last_event_id FROM bridgecore.sync_state WHERE device_id = 'route-1'")
         == int(second["next_sync_token"].split(":")[2]),
         "a pull that names no instance goes where its sync_token's instance lives", second)
    as_app(s.r, {"role": "bridgecore_app", "user_id": 3, "instance": "beta"})
    try:
        by_claim = one(s.r, "SELECT bridgecore.sync_state(3, 'route-1')")
    finally:
        reset_role(s.r)
    T.ok(by_claim.get("device_id") == "route-1", "a call of a JWT for beta goes to beta's shard", by_claim)
    err = outcome(s.r, "SELECT bridgecore.sync_pull(1, 'route-2', 'sales_app', instance => 'nowhere')")
    T.ok(err[0] == "error" and err[1] == "22023" and err[2] == 'unknown instance "nowhere"'
         and err[4] == "Known instances: acme, beta.", "an unknown instance: 22023, with every shard's instances in the hint", err)
    err = outcome(s.r, "SELECT bridgecore.sync_state(3, 'route-1')")
    T.ok(err[0] == "error" and err[1] == "22004" and "acme, beta" in (err[4] or ""),
         "no instance, no token, two instances: 22004 with the instances in the hint", err)
    text = one(s.r, "SELECT bridgecore.metrics()")
    helps = [l.split(" ")[2] for l in text.splitlines() if l.startswith("# HELP ")]
    samples = [l for l in text.splitlines() if l and not l.startswith("#")]
    T.ok(len(helps) == len(set(helps)) > 5 and all('shard="a"' in l or 'shard="b"' in l for l in samples)
         and any('instance="beta"' in l and 'shard="b"' in l for l in samples)
         and any('instance="acme"' in l and 'shard="a"' in l for l in samples),
         "metrics(): every shard's samples, labelled with their shard, each family once", text[:1500])
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True)
        T.ok(check.returncode == 0, "promtool check metrics accepts the router's metrics", check.stdout + check.stderr)
    else:
        T.skip("promtool check metrics accepts the router's metrics", "no promtool")
    every = one(s.r, "SELECT bridgecore.cleanup('2000-01-01')")
    T.ok(every.get("ok") is True and every.get("deleted") == 0 and set(every.get("shards", {})) == {"a", "b"}
         and every["shards"]["a"] == one(s.a, "SELECT bridgecore.cleanup('2000-01-01')"),
         "cleanup() without an instance runs on every shard and sums their answers", every)
    every = one(s.r, "SELECT bridgecore.deactivate_idle_devices('1000 days')")
    T.ok(every.get("ok") is True and every.get("deactivated") == 0 and set(every.get("shards", {})) == {"a", "b"},
         "deactivate_idle_devices() without an instance runs on every shard", every)
    status = rows(s.r, "SELECT instance, state FROM bridgecore.status() ORDER BY 1")
    T.ok([x[0] for x in status] == ["acme", "beta"], "status() shows the instances of every shard", status)


def test_privileges(s):
    """Nothing of the router's or the shard's routing raises an app's privileges."""
    as_app(s.r, {"role": "bridgecore_app", "user_id": 7, "instance": "acme"})
    try:
        err = outcome(s.r, "SELECT bridgecore.cleanup('2000-01-01', 'acme')")
        T.ok(err[0] == "error" and err[1] == "42501", "an app may not call cleanup through the router", err)
        err = outcome(s.r, "SELECT bridgecore._route('cleanup', '{\"before\": \"2000-01-01\", \"instance\": \"acme\"}')")
        T.ok(err[0] == "error" and err[1] == "42501", "an app may not call the router's _route()", err)
        err = outcome(s.r, "SELECT bridgecore._shard_call(0, 'cleanup', '{}', 'bridgecore_admin', '{}')")
        T.ok(err[0] == "error" and err[1] == "42501", "an app may not call the router's PL/Proxy functions", err)
        err = outcome(s.r, "SELECT * FROM bridgecore.placement")
        T.ok(err[0] == "error" and err[1] == "42501", "an app may not read the placement", err)
    finally:
        reset_role(s.r)
    one(s.a, "SET ROLE bridgecore_app")
    try:
        err = outcome(s.a, "SELECT bridgecore._routed_call('cleanup', '{}', 'bridgecore_admin', '{}')")
        T.ok(err[0] == "error" and err[1] == "42501", "an app may not call a shard's _routed_call()", err)
        err = outcome(s.a, "SELECT bridgecore._shard_step('out_begin', '{\"instance\": \"acme\"}')")
        T.ok(err[0] == "error" and err[1] == "42501", "an app may not call a shard's _shard_step()", err)
    finally:
        one(s.a, "RESET ROLE")
    err = outcome(s.a, "SET ROLE bc_router_login; SELECT bridgecore._routed_call('sync_state', '{}', 'postgres', '{}')")
    one(s.a, "RESET ROLE")
    T.ok(err[0] == "error" and err[1] == "22023", "a routed call may act as a bridgecore role only", err)
    err = outcome(s.a, "SET ROLE bc_router_login; SELECT bridgecore._routed_call('remove_instance', '{}', 'bridgecore_admin', '{}')")
    one(s.a, "RESET ROLE")
    T.ok(err[0] == "error" and err[1] == "42883", "a routed call may call the routed API only", err)
    one(s.b, "INSERT INTO bridgecore.moving_out (instance_id) VALUES (%s)", (s.beta,))
    err = outcome(s.b, "SELECT bridgecore.ingest('beta', '[{\"id\": 99999, \"model\": \"sale.order\", \"record_id\": 1,"
                       " \"event\": \"create\", \"timestamp\": \"2026-01-01 00:00:00\"}]')")
    one(s.b, "DELETE FROM bridgecore.moving_out")
    T.ok(err[0] == "error" and err[1] == "55000" and "moving to another shard" in err[2] and err[4],
         "an instance being moved out stores nothing (an administrator's ingest() too): 55000", err)


def test_resync(s):
    """The pgTAP suite's resync, reset and paging checks: the router answers as the shard."""
    # An instance of its own on shard b, its events a minute apart (the
    # stand-ins' are all of the same few seconds), fed by ingest().
    one(s.b, "SELECT name FROM bridgecore.add_instance('gamma', 'http://odoo.invalid', 'odoo', 'bot',"
             " 'gamma-key-1234', enabled => false)")
    one(s.b, "SELECT bridgecore.ingest('gamma', (SELECT json_agg(json_build_object('id', g, 'model', 'sale.order',"
             " 'record_id', g, 'event', 'create', 'timestamp',"
             " to_char(timestamp '2026-01-01' + g * interval '1 minute', 'YYYY-MM-DD HH24:MI:SS')))"
             " FROM generate_series(1, 30) g))")
    one(s.r, "SELECT bridgecore.sync_placement()")
    pull = "SELECT bridgecore.sync_pull(4, %s, 'sales_app', 4, instance => 'gamma', sync_token => %s)"
    tokens = {}
    for conn, dev in ((s.r, "resync-r"), (s.b, "resync-d")):
        tokens[dev] = one(conn, pull, (dev, "0"))["next_sync_token"]
    removed = one(s.r, "SELECT bridgecore.cleanup('2026-01-01 00:10:30+00', 'gamma')")
    T.ok(removed.get("deleted") == 10, "cleanup(before, instance) through the router removes gamma's 10 oldest events",
         removed)
    after = {dev: normal(outcome(conn, pull, (dev, tokens[dev])), dev)
             for conn, dev in ((s.r, "resync-r"), (s.b, "resync-d"))}
    T.ok(after["resync-r"] == after["resync-d"] and '"resync_required": true' in after["resync-r"],
         "a device that missed removed events is told resync_required, through the router as on the shard",
         after["resync-r"][:400], after["resync-d"][:400])
    pages = {}
    for conn, dev in ((s.r, "resync-r"), (s.b, "resync-d")):
        one(conn, "SELECT bridgecore.sync_reset(4, %s, 'gamma')", (dev,))
        pages[dev] = [normal(outcome(conn, "SELECT bridgecore.sync_pull(4, %s, 'sales_app', 3, instance => 'gamma')",
                                     (dev,)), dev) for _ in range(3)]
    T.ok(pages["resync-r"] == pages["resync-d"] and all('"has_more": true' in p for p in pages["resync-r"]),
         "after sync_reset, pages of 3 with has_more: the same through the router", pages["resync-r"][0][:300],
         pages["resync-d"][0][:300])
    reset_all = [normal(outcome(conn, "SELECT bridgecore.sync_reset_all(4, 'gamma')"), "-") for conn in (s.r, s.b)]
    T.ok(reset_all[0] == reset_all[1] and '"devices_reset": 2' in reset_all[0],
         "sync_reset_all through the router answers as the shard", reset_all)
    one(s.b, "SELECT bridgecore.remove_instance('gamma')")
    one(s.r, "SELECT bridgecore.sync_placement()")

# ---- the gateway in front of the router ------------------------------------

def http(gw, method, path, token=None, body=None):
    """(HTTP status, JSON answer)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = "Bearer " + token
    req = urllib.request.Request(gw.url + path, json.dumps(body).encode() if body is not None else None,
                                 headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def test_gateway(s):
    """The gateway, pointed at the router, serves both shards' instances."""
    s.sd_b.control("add_user", login="bob", password="bob-password", uid=8)
    saved = os.environ.get("PGDATABASE")
    os.environ["PGDATABASE"] = ROUTER_DB
    try:
        gw = bell.Gateway()
    finally:
        if saved is None:
            del os.environ["PGDATABASE"]
        else:
            os.environ["PGDATABASE"] = saved
    try:
        status, alice = http(gw, "POST", "/auth/login", body={"username": "alice", "password": "alice-password",
                                                              "instance": "acme"})
        T.ok(status == 200 and alice.get("user_id") == 7, "POST /auth/login through the router: acme's Odoo", alice)
        status, bob = http(gw, "POST", "/auth/login", body={"username": "bob", "password": "bob-password",
                                                            "instance": "beta"})
        T.ok(status == 200 and bob.get("user_id") == 8, "POST /auth/login through the router: beta's Odoo", bob)
        status, wrong = http(gw, "POST", "/auth/login", body={"username": "bob", "password": "nope", "instance": "beta"})
        T.ok(status == 401 and wrong.get("code") == "28P01", "wrong credentials through the router: 401", wrong)
        body = {"device_id": "gw-phone", "app_type": "sales_app", "limit": 5}
        status, a = http(gw, "POST", "/api/v2/sync/pull", alice["access_token"], body)
        direct = one(s.a, "SELECT bridgecore.sync_pull(7, 'gw-phone-direct', 'sales_app', 5, instance => 'acme')")
        T.ok(status == 200 and [e["id"] for e in a["events"]] == [e["id"] for e in direct["events"]] and a["events"],
             "POST /api/v2/sync/pull with acme's token: acme's events from shard a", (status, a))
        status, b = http(gw, "POST", "/api/v2/sync/pull", bob["access_token"], body)
        direct = one(s.b, "SELECT bridgecore.sync_pull(8, 'gw-phone-direct', 'sales_app', 5, instance => 'beta')")
        T.ok(status == 200 and [e["id"] for e in b["events"]] == [e["id"] for e in direct["events"]] and b["events"],
             "POST /api/v2/sync/pull with beta's token: beta's events from shard b", (status, b))
        status, st = http(gw, "GET", "/api/v2/sync/state?device_id=gw-phone", bob["access_token"])
        T.ok(status == 200 and st.get("next_sync_token") == b["next_sync_token"],
             "GET /api/v2/sync/state through the router", (status, st))
        status, other = http(gw, "POST", "/api/v2/sync/pull", bob["access_token"], dict(body, user_id=7))
        T.ok(status == 403 and other.get("code") == "42501", "a body naming another user: 403, from the shard", other)
        status, other = http(gw, "POST", "/api/v2/sync/pull", bob["access_token"], dict(body, instance="acme"))
        T.ok(status == 403 and other.get("code") == "42501", "a body naming another instance: 403", other)
        status, bad = http(gw, "POST", "/api/v2/sync/pull", bob["access_token"], dict(body, app_type="nope"))
        T.ok(status == 400 and bad.get("code") == "22023" and bad.get("detail") == 'unknown app_type "nope"'
             and bad.get("hint"), "a shard's error reaches the app as the shard raised it", bad)

        # Subscriptions: the gateway LISTENs on every shard of the router.
        subs = {"acme": bell.Subscriber(gw, alice["access_token"]), "beta": bell.Subscriber(gw, bob["access_token"])}
        try:
            s.add(s.sd_b, 1, model="sale.order")
            got = subs["beta"].wait_for(lambda m: m.get("reason") == "NOTIFIED", 15, "beta's notification")
            T.ok(got.get("instance") == "beta" and got.get("model") == "sale.order",
                 "a subscriber of beta hears of beta's new event, NOTIFYed on shard b", got)
            s.add(s.sd_a, 1, model="sale.order")
            got = subs["acme"].wait_for(lambda m: m.get("reason") == "NOTIFIED", 15, "acme's notification")
            T.ok(got.get("instance") == "acme", "a subscriber of acme hears of acme's, NOTIFYed on shard a", got)
            T.ok(not [m for m in subs["beta"].messages if m.get("instance") == "acme"],
                 "beta's subscriber hears nothing of acme", subs["beta"].messages)
        finally:
            for sub in subs.values():
                sub.stop()

        # The doorbell: a push key routes the ring to its instance's shard.
        one(s.b, "SELECT name FROM bridgecore.alter_instance('beta', push_key => 'beta-push-key-0123456789abcdef0123456789')")
        status, rung = gw.ring("beta-push-key-0123456789abcdef0123456789", {"event_id": 42})
        T.ok(status == 200 and rung.get("success") is True and rung.get("event_id") == 42
             and "beta" in rung.get("message", ""), "POST /api/v1/webhooks/receive with beta's push key rings shard b", rung)
        status, refused = gw.ring("not-a-push-key-at-all-0123456789abcdef0123")
        T.ok(status == 401, "an unknown push key through the router: 401", (status, refused))
    finally:
        gw.stop()


# ---- moving an instance ------------------------------------------------------

class Puller(threading.Thread):
    """A device pulling acme through the router, passing each answer's token on."""

    def __init__(self, name, stop):
        super().__init__(daemon=True)
        self.name_ = name
        self.stop = stop
        self.token = "0"
        self.seqs = []
        self.ids = []
        self.pulls = 0
        self.errors = []
        self.conn = connect(dbname=ROUTER_DB)
        one(self.conn, "SET bridgecore.rate_limit_sync_pull = 0")

    def pull(self):
        # The first pull names the instance; the next ones only pass the
        # token, which names it.
        a = one(self.conn, "SELECT bridgecore.sync_pull(1, %s, 'sales_app', 9, sync_token => %s, instance => %s)",
                (self.name_, self.token, "acme" if self.token == "0" else None))
        self.pulls += 1
        self.seqs.extend(e["payload"]["seq"] for e in a["events"])
        self.ids.extend(e["id"] for e in a["events"])
        self.token = a["next_sync_token"]
        return a

    def run(self):
        while not self.stop.is_set():
            try:
                self.pull()
            except Exception as e:      # reported, not raised: the test checks none happened
                self.errors.append(repr(e))
                time.sleep(0.05)

    def drain(self):
        for _ in range(500):
            if not self.pull()["has_more"]:
                return


def wanted(s, sd):
    """The payload markers of the stand-in's events of the device's models, in Odoo order."""
    return [r["payload"]["seq"] for r in sd.rows() if r["model"] in SALES]


def move_while_pulling(s, to_shard, pullers, label):
    feeding = threading.Event()

    def feed():
        while not feeding.is_set():
            s.add(s.sd_a, 3)
            time.sleep(0.02)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    w.wait_for(lambda: all(p.pulls >= 3 for p in pullers), 30, "the devices to pull")
    t0 = time.monotonic()
    notices = []
    conn = connect(dbname=ROUTER_DB)
    try:
        conn.notices = notices
        one(conn, "CALL bridgecore.move_instance('acme', %s, batch_size => 40)", (to_shard,))
    finally:
        conn.close()
    took = time.monotonic() - t0
    before = s.sd_a.stats()["max_id"]
    w.wait_for(lambda: before <= s.sd_a.stats()["max_id"] - 9, 30, "events to keep arriving after the move")
    feeding.set()
    feeder.join()
    T.ok(True, "%s: moved in %.2f s while %d devices pulled (%s)" % (
        label, took, len(pullers), " ".join(n.strip() for n in notices)[-200:]))


def test_move(s):
    stop = threading.Event()
    pullers = [Puller("mover-%d" % k, stop) for k in range(3)]
    # Devices that pull once before the first move and then wait with their
    # token: one until after the first move, one until after both.
    sleeper = Puller("sleeper", stop)
    sleeper.pull()
    sleeper_long = Puller("sleeper-long", stop)
    sleeper_long.pull()
    for p in pullers:
        p.start()
    try:
        # A move that fails half way (an app type the shards disagree on),
        # then succeeds once it is fixed: the devices pull all along.
        one(s.a, "SELECT bridgecore.set_app_type('field_app', '{sale.order}')")
        one(s.b, "SELECT bridgecore.set_app_type('field_app', '{stock.picking}')")
        mover = connect(dbname=ROUTER_DB)
        try:
            err = outcome(mover, "CALL bridgecore.move_instance('acme', 'b')")
            T.ok(err[0] == "error" and err[1] == "55000" and "field_app" in (err[3] or "") and err[4],
                 "a move to a shard whose app type has other models is refused", err)
            err2 = outcome(s.r, "CALL bridgecore.move_instance('acme', 'b')")
            T.ok(err2[0] == "error" and err2[1] == "55P03",
                 "while the session of the stopped move is open, another session may not move the instance", err2)
        finally:
            mover.close()
        w.wait_for(lambda: one(s.r, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                    " AND classid = (bridgecore._placement_lock_key() + 1)::oid") == 0,
                   15, "the stopped move's session to end")
        T.ok(rows(s.r, "SELECT shard FROM bridgecore.placement WHERE instance = 'acme'") == [(0,)]
             and one(s.b, "SELECT count(*) FROM bridgecore.instance WHERE name = 'acme'") == 0,
             "the refused move left the placement and the other shard as they were")
        one(s.b, "SELECT bridgecore.set_app_type('field_app', '{sale.order}')")
        move_while_pulling(s, "b", pullers, "a to b")
        placed = rows(s.r, "SELECT instance, shard FROM bridgecore.placement ORDER BY 1")
        T.ok(placed == [("acme", 1), ("beta", 1)], "the placement names shard b for acme", placed)
        T.ok(one(s.a, "SELECT count(*) FROM bridgecore.instance WHERE name = 'acme'") == 0
             and one(s.a, "SELECT count(*) FROM bridgecore.event") == 0,
             "shard a no longer holds acme or its events")
        s.wait_ingested(s.b, s.acme, s.sd_a)
        T.ok(True, "shard b's poller ingests acme's new events")
        sleeper.drain()
        want = wanted(s, s.sd_a)
        T.ok(sleeper.seqs == want, "a token from before the move continues where it was: every event once, in order",
             "got %d, want %d; first difference at %s" % (len(sleeper.seqs), len(want), first_diff(sleeper.seqs, want)))
        s.add(s.sd_a, 10)

        move_while_pulling(s, "a", pullers, "b to a")
        T.ok(rows(s.r, "SELECT shard FROM bridgecore.placement WHERE instance = 'acme'") == [(0,)]
             and one(s.b, "SELECT count(*) FROM bridgecore.event WHERE instance_id = %s", (s.acme,)) == 0,
             "back on shard a, gone from shard b")
        s.wait_ingested(s.a, s.acme, s.sd_a)
        stop.set()
        for p in pullers:
            p.join(30)
        want = wanted(s, s.sd_a)
        for p in pullers:
            p.drain()
            T.ok(not p.errors, "%s: no pull failed during the moves (%d pulls)" % (p.name_, p.pulls), p.errors[:3])
            T.ok(p.seqs == want, "%s: every event of its models once, in order, across two moves" % p.name_,
                 "got %d, want %d; first difference at %s" % (len(p.seqs), len(want), first_diff(p.seqs, want)))
        sleeper.drain()
        sleeper_long.drain()
        T.ok(sleeper.seqs == want, "a token from between the moves continues where it was",
             "got %d, want %d; first difference at %s" % (len(sleeper.seqs), len(want), first_diff(sleeper.seqs, want)))
        T.ok(sleeper_long.seqs == want, "a token from before both moves continues where it was",
             "got %d, want %d; first difference at %s" % (len(sleeper_long.seqs), len(want),
                                                         first_diff(sleeper_long.seqs, want)))
        state_r = one(s.r, "SELECT bridgecore.sync_state(1, 'mover-0', 'acme')")
        state_a = one(s.a, "SELECT last_event_id FROM bridgecore.sync_state WHERE device_id = 'mover-0'")
        T.ok(state_r["next_sync_token"] == "bc1:%d:%d" % (s.acme, state_a) and state_r["sync_count"] > 0,
             "the device's state moved with it", state_r)
        ids = pullers[0].ids
        T.ok(all(x < y for x, y in zip(ids, ids[1:])), "the event ids a device sees only grow, across moves")
        holder = connect(dbname=ROUTER_DB)
        try:
            one(holder, "SELECT pg_advisory_lock(bridgecore._placement_lock_key() + 1, %s)", (s.acme,))
            err = outcome(s.r, "CALL bridgecore.move_instance('acme', 'b')")
        finally:
            holder.close()
        T.ok(err[0] == "error" and err[1] == "55P03" and "another session" in err[2]
             and rows(s.r, "SELECT shard FROM bridgecore.placement WHERE instance = 'acme'") == [(0,)],
             "a second move of an instance while one runs is refused, and changes nothing", err)
        err = outcome(s.r, "CALL bridgecore.move_instance('acme', 'nowhere')")
        T.ok(err[0] == "error" and err[1] == "22023" and "a, b" in (err[4] or ""), "a move to an unknown shard: 22023", err)
    finally:
        stop.set()


def first_diff(a, b):
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return "%d (%r != %r)" % (k, x, y)
    return "end (lengths %d and %d)" % (len(a), len(b))


def main():
    s = None
    try:
        s = Setup()
        T.ok(s.placed == {"ok": True, "added": 2, "removed": 0, "instances": 2},
             "sync_placement() finds acme on shard a and beta on shard b", s.placed)
        for test in (test_signatures, test_same_answers, test_tokens, test_routing, test_privileges, test_gateway,
                     test_resync, test_move):
            try:
                test(s)
            except Exception:
                T.ok(False, "%s ran to its end" % test.__name__, traceback.format_exc(), s.b_srv.log())
    except Exception:
        T.ok(False, "setup", traceback.format_exc(), s.b_srv.log() if s else "")
    finally:
        if s is not None:
            s.close()
    print("1..%d" % T.n)
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
