#!/usr/bin/env python3
"""Integration tests of bridgecore.login() against the Odoo stand-in.

Right and wrong passwords, an Odoo that is down or answers with an error,
Odoo's lockout after failed logins (which BridgeCore answers with PT429
without asking Odoo), the per-username rate limit, and that the password
appears in no error and not in the server log.

Runs against a cluster with shared_preload_libraries = 'bridgecore' given by
the libpq environment; creates and drops its own database. CLUSTER_DIR, if
set, enables the server log check. Prints TAP; exits non-zero when a test
fails. Needs Python 3 with psycopg2 only.
"""
import os
import sys
import time
import traceback

import psycopg2

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_worker as w  # noqa: E402  (Tap, Standin, wait_for)

T = w.T
DBNAME = "bridgecore_login_test"
SECRET = "an-integration-test-secret-of-32+chars"
PASSWORD = "Correct horse 42"


def connect(dbname="postgres"):
    conn = psycopg2.connect(dbname=dbname, application_name="bridgecore login test")
    conn.autocommit = True
    return conn


def call(conn, sql, args=None):
    """(sqlstate or None, result or message, detail, hint)"""
    with conn.cursor() as cur:
        try:
            cur.execute(sql, args)
            return None, cur.fetchone()[0], None, None
        except psycopg2.Error as e:
            d = e.diag
            return e.pgcode, d.message_primary, d.message_detail, d.message_hint


def login(conn, username, password, instance="acme"):
    return call(conn, "SELECT bridgecore.login(%s, %s, %s)", (username, password, instance))


def test_login(conn, sd):
    sd.control("add_user", login="alice", password=PASSWORD, uid=7)
    state, answer, _, _ = login(conn, "alice", PASSWORD)
    T.ok(state is None and answer.get("user_id") == 7 and answer.get("token_type") == "bearer"
         and answer.get("expires_in") == 1800 and answer.get("instance") == "acme",
         "the right password gets a token for the Odoo user id", (state, answer))
    if state is None:
        st, claims, _, _ = call(conn, "SELECT bridgecore.verify_token(%s)", (answer["access_token"],))
        T.ok(st is None and claims["role"] == "bridgecore_app" and claims["user_id"] == 7
             and claims["instance"] == "acme" and claims["exp"] - claims["iat"] == 1800,
             "its claims: role bridgecore_app, user_id, instance, exp", claims)
    state, msg, detail, hint = login(conn, "alice", "wrong password")
    T.ok(state == "28P01" and msg == "wrong username or password"
         and detail == 'Odoo instance "acme" refused the login of "alice".',
         "a wrong password is 28P01", (state, msg, detail, hint))
    T.ok(sd.stats()["failed_logins"] == 1, "... which Odoo counted")
    with conn.cursor() as cur:
        cur.execute("SET request.method = 'POST'")
        state = login(conn, "alice", "wrong again")[0]
        cur.execute("RESET request.method")
    T.ok(state == "PT401", "through PostgREST a wrong password is PT401 (HTTP 401)", state)
    T.ok(login(conn, "alice", PASSWORD)[0] is None, "the right password again")
    T.ok(sd.stats()["failed_logins"] == 0, "... resets Odoo's count")
    state, _, _, _ = login(conn, "nobody", PASSWORD)
    T.ok(state == "28P01", "an unknown user is 28P01 too", state)
    login(conn, "alice", PASSWORD)   # clears the count


def test_odoo_errors(conn, sd):
    sd.control("fault", kind="rpc_error", name="psycopg2.OperationalError", message="database odoo does not exist")
    state, msg, detail, _ = login(conn, "alice", PASSWORD)
    T.ok(state == "38000" and "database odoo does not exist" in (detail or ""),
         "an Odoo error envelope is 38000 with Odoo's message", (state, msg, detail))
    sd.control("fault", kind="http502")
    state, msg, detail, _ = login(conn, "alice", PASSWORD)
    T.ok(state == "08006" and msg == 'could not reach Odoo instance "acme"',
         "a proxy's 502 page is 08006", (state, msg, detail))


def test_lockout(conn, sd):
    login(conn, "alice", PASSWORD)
    with conn.cursor() as cur:
        cur.execute("SET bridgecore.rate_limit_login = 0")
    states = [login(conn, "alice", "bad %d" % i)[0] for i in range(5)]
    T.ok(states == ["28P01"] * 5, "five wrong passwords: 28P01 each", states)
    asked = sd.stats()["logins"]
    state, msg, detail, hint = login(conn, "alice", PASSWORD)
    T.ok(state == "PT429" and msg == 'too many failed logins at Odoo instance "acme"'
         and hint and hint.startswith("Retry in ") and 50 <= int(hint.split()[2]) <= 60,
         "then even the right password is PT429 with the seconds to wait", (state, msg, detail, hint))
    T.ok(sd.stats()["logins"] == asked, "... and Odoo was not asked", (asked, sd.stats()))
    # Odoo's own cooldown is 60 s; make both short.
    sd.control("set", reset_lockout=True)
    with conn.cursor() as cur:
        cur.execute("SET bridgecore.login_cooldown_duration = 1")
    time.sleep(1.2)
    state, answer, _, _ = login(conn, "alice", PASSWORD)
    T.ok(state is None and answer["user_id"] == 7, "after the cooldown the right password works", (state, answer))
    T.ok(login(conn, "alice", "bad again")[0] == "28P01",
         "... and the count started over: one failure is a wrong password again")
    login(conn, "alice", PASSWORD)
    with conn.cursor() as cur:
        cur.execute("RESET bridgecore.login_cooldown_duration")
        cur.execute("RESET bridgecore.rate_limit_login")


def test_rate_limit(conn, sd):
    sd.control("add_user", login="bob", password=PASSWORD, uid=8)
    with conn.cursor() as cur:
        cur.execute("SET bridgecore.rate_limit_login = 3")
    states = [login(conn, name, PASSWORD)[0] for name in ("bob", "Bob", "BOB")]
    T.ok(states == [None, "28P01", "28P01"], "three logins of one username in a minute", states)
    state, msg, detail, hint = login(conn, "bob", PASSWORD)
    T.ok(state == "PT429" and msg == "rate limit exceeded for login: 3 requests per minute"
         and detail == "The limit applies per username.",
         "the fourth, whatever its case, is PT429", (state, msg, detail, hint))
    sd.control("add_user", login="carol", password=PASSWORD, uid=9)
    T.ok(login(conn, "carol", PASSWORD)[0] is None, "other usernames are not limited")
    with conn.cursor() as cur:
        cur.execute("RESET bridgecore.rate_limit_login")


def test_odoo_down(conn, sd):
    sd.stop()
    state, msg, detail, _ = login(conn, "alice", PASSWORD)
    T.ok(state == "08006" and msg == 'could not reach Odoo instance "acme"' and detail.startswith("transport: "),
         "Odoo down: 08006", (state, msg, detail))


def test_password_not_logged(conn, secret_texts):
    leaked = [t for t in secret_texts if PASSWORD in (t or "")]
    T.ok(not leaked, "no error message, detail or hint holds the password", leaked)
    log = os.path.join(os.environ["CLUSTER_DIR"], "server.log") if os.environ.get("CLUSTER_DIR") else None
    if log and os.path.exists(log):
        with open(log, encoding="utf-8", errors="replace") as f:
            text = f.read()
        T.ok("bad again" not in text and "wrong password" not in text,
             "the server log holds no password of a failed login")
    else:
        T.skip("the server log holds no password of a failed login", "CLUSTER_DIR not set")


def main():
    admin = connect()
    with admin.cursor() as cur:
        cur.execute("DROP DATABASE IF EXISTS %s" % DBNAME)
        cur.execute("CREATE DATABASE %s" % DBNAME)
    sd = None
    texts = []
    try:
        conn = connect(DBNAME)
        original_call = globals()["call"]

        def recording_call(c, sql, args=None):
            r = original_call(c, sql, args)
            texts.extend(r[1:] if r[0] else [])
            return r
        globals()["call"] = recording_call
        with conn.cursor() as cur:
            cur.execute("CREATE EXTENSION bridgecore")
            cur.execute("ALTER DATABASE %s SET bridgecore.jwt_secret = %%s" % DBNAME, (SECRET,))
        conn.close()
        conn = connect(DBNAME)
        sd = w.Standin(password="worker-key")
        with conn.cursor() as cur:
            cur.execute("SELECT name FROM bridgecore.add_instance('acme', %s, 'odoo', 'bridgecore', 'worker-key',"
                        " enabled => false)", (sd.url,))
        for test in (test_login, test_odoo_errors, test_lockout, test_rate_limit, test_odoo_down):
            try:
                test(conn, sd)
            except Exception:
                T.ok(False, "%s ran to its end" % test.__name__, traceback.format_exc())
        test_password_not_logged(conn, texts)
        conn.close()
    except Exception:
        T.ok(False, "setup", traceback.format_exc())
    finally:
        if sd is not None:
            sd.stop()
        with admin.cursor() as cur:
            cur.execute("DROP DATABASE IF EXISTS %s" % DBNAME)
    print("1..%d" % T.n)
    return 1 if T.failed else 0


if __name__ == "__main__":
    sys.exit(main())
