// The gateway with real HTTP clients (fetch), against the gateway that
// test/run.sh started (GATEWAY_URL), its database (DATABASE_URL) and the Odoo
// stand-in (STANDIN_URL). Every status code of docs/gateway.md, the error
// body, the token rules and the startup checks.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import net from "node:net";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { assertError, call, signToken, waitFor } from "./helpers.js";
import { startGateway } from "../src/server.js";

const G = process.env.GATEWAY_URL;
const SECRET = process.env.BRIDGECORE_JWT_SECRET;
const RUN = fileURLToPath(new URL("../run", import.meta.url));
const PASSWORD = "alice's password";
const now = () => Math.floor(Date.now() / 1000);
// Tokens are signed by the database: the gateway has no signer.
const token = (claims, secret = null) => signToken(db, { exp: now() + 600, ...claims }, secret);
let APP;
let ADMIN;

let db;



async function standin(op, args = {}) {
  const res = await fetch(process.env.STANDIN_URL + "/control", { method: "POST", body: JSON.stringify({ op, ...args }) });
  return res.json();
}

before(async () => {
  db = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  APP = await token({ role: "bridgecore_app", user_id: 7, instance: "acme" });
  ADMIN = await token({ role: "bridgecore_admin" });
  await db.query("SELECT name FROM bridgecore.add_instance('acme', $1, 'odoo', 'bridgecore', 'worker-key', enabled => false)",
    [process.env.STANDIN_URL]);
  const events = [];
  for (let i = 1; i <= 5; i++) {
    events.push({ id: i, model: i % 2 ? "sale.order" : "res.partner", record_id: 100 + i, event: "create",
      timestamp: "2025-11-16 10:30:00" });
  }
  await db.query("SELECT bridgecore.ingest('acme', $1)", [JSON.stringify(events)]);
  await standin("add_user", { login: "alice", password: PASSWORD, uid: 7 });
});

after(async () => {
  await db?.end();
});

test("GET /health is 200 while the database answers", async () => {
  const r = await call("GET", "/health");
  assert.equal(r.status, 200);
  assert.deepEqual(r.json, { status: "ok" });
});

test("an unknown route is 404 with the error body", async () => {
  assertError(await call("GET", "/api/v9/nothing", { bearer: APP }), 404);
  assertError(await call("GET", "/"), 404);
});

test("a known route with another method is 405 with Allow", async () => {
  const r = await call("GET", "/api/v2/sync/pull", { bearer: APP });
  assertError(r, 405);
  assert.equal(r.headers.get("allow"), "POST");
});

const PROTECTED = [["POST", "/api/v2/sync/pull"], ["GET", "/api/v2/sync/state"], ["POST", "/api/v2/sync/reset"],
  ["GET", "/api/v1/webhooks/events"], ["GET", "/api/v1/webhooks/check-updates"], ["DELETE", "/api/v1/webhooks/cleanup"],
  ["POST", "/auth/refresh"], ["POST", "/graphql"]];

test("every route but login and health is 401 without a token", async () => {
  for (const [method, path] of PROTECTED) {
    const r = await call(method, path);
    assertError(r, 401);
    assert.match(r.headers.get("www-authenticate"), /^Bearer/);
  }
});

test("expired, badly signed, unsigned, other-role and malformed tokens are 401 on every route, refused by the database", async () => {
  const bad = [
    await token({ role: "bridgecore_app", user_id: 7, exp: now() - 1 }),
    await token({ role: "bridgecore_app", user_id: 7 }, "another-secret-of-at-least-32-characters"),
    APP.slice(0, -2) + (APP.endsWith("AA") ? "BB" : "AA"),
    Buffer.from('{"alg":"none"}').toString("base64url") + "." + Buffer.from(`{"role":"bridgecore_admin","exp":${now() + 600}}`).toString("base64url") + ".",
    await token({ role: "postgres", user_id: 7 }),
    await token({ role: "bridgecore_anon" }),
    await token({ role: "bridgecore_app", exp: undefined }),
    "not-a-token",
  ];
  for (const [method, path] of PROTECTED) {
    // refused by the database (bridgecore.verify_token): 28000 and its reason
    for (const t of bad) {
      const r = await call(method, path, { bearer: t });
      assertError(r, 401, "28000");
      assert.match(r.json.detail, /^invalid token: /);
    }
  }
  assertError(await call("GET", "/api/v2/sync/state", { headers: { Authorization: `Basic ${APP}` } }), 401);
});

test("POST /auth/login: the Odoo user's credentials give a bridgecore_app token", async () => {
  const r = await call("POST", "/auth/login", { body: { username: "alice", password: PASSWORD } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.token_type, "bearer");
  assert.equal(r.json.expires_in, 1800);
  assert.equal(r.json.user_id, 7);
  const claims = JSON.parse(Buffer.from(r.json.access_token.split(".")[1], "base64url"));
  assert.equal(claims.role, "bridgecore_app");
  assert.equal(claims.user_id, 7);
  assert.equal(claims.instance, "acme");
  assert.equal(claims.exp - claims.iat, 1800);
  const pull = await call("POST", "/api/v2/sync/pull", { bearer: r.json.access_token,
    body: { device_id: "login-phone", app_type: "sales_app" } });
  assert.equal(pull.status, 200, pull.text);
});

test("POST /auth/login: a wrong password is 401 (28P01)", async () => {
  const r = await call("POST", "/auth/login", { body: { username: "alice", password: "wrong" } });
  assertError(r, 401, "28P01");
  assert.equal(r.json.detail, "wrong username or password");
  await call("POST", "/auth/login", { body: { username: "alice", password: PASSWORD } });   // clears Odoo's count
});

test("POST /auth/login: missing fields are 400, malformed JSON is 400", async () => {
  assertError(await call("POST", "/auth/login", { body: { password: "x" } }), 400, "22004");
  assertError(await call("POST", "/auth/login", { body: { username: "alice", password: 42 } }), 400, "22023");
  assertError(await call("POST", "/auth/login", { raw: '{"username": "alice", ', headers: { "Content-Type": "application/json" } }), 400);
  assertError(await call("POST", "/auth/login", { raw: "[1, 2]" }), 400);
});

test("POST /auth/refresh renews a token without the password", async () => {
  const login = await call("POST", "/auth/login", { body: { username: "alice", password: PASSWORD } });
  const r = await call("POST", "/auth/refresh", { bearer: login.json.access_token });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Object.keys(r.json).sort(), ["access_token", "expires_in", "instance", "token_type", "user_id"]);
  assert.equal(r.json.user_id, 7);
  const before = JSON.parse(Buffer.from(login.json.access_token.split(".")[1], "base64url"));
  const claims = JSON.parse(Buffer.from(r.json.access_token.split(".")[1], "base64url"));
  assert.equal(claims.auth_time, before.auth_time);
  assert.equal(claims.role, "bridgecore_app");
  assert.equal((await call("GET", "/api/v1/webhooks/check-updates", { bearer: r.json.access_token })).status, 200);
  // a token without auth_time (not from login) cannot be refreshed
  assertError(await call("POST", "/auth/refresh", { bearer: APP }), 401, "28000");
});

test("POST /api/v2/sync/pull: the page, with user_id from the token", async () => {
  const r = await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "phone-1", app_type: "sales_app", limit: 2 } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.status, "success");
  assert.ok(Array.isArray(r.json.events));
  assert.equal(r.json.events.length, 2);
  assert.equal(r.json.has_more, true);
  const next = await call("POST", "/api/v2/sync/pull", { bearer: APP,
    body: { user_id: 7, device_id: "phone-1", app_type: "sales_app", sync_token: r.json.next_sync_token,
      models_filter: ["sale.order"], instance: "acme" } });
  assert.equal(next.status, 200, next.text);
  assert.ok(next.json.events.every((e) => e.model === "sale.order" && e.id > r.json.events[1].id));
});

test("POST /api/v2/sync/pull: another user's id is 403 (42501)", async () => {
  const r = await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { user_id: 8, device_id: "phone-1", app_type: "sales_app" } });
  assertError(r, 403, "42501");
  assert.equal(r.json.detail, "user_id 8 does not match the authenticated user");
  assert.equal(r.json.hint, "A device can only act on its own user's sync state.");
});

test("POST /api/v2/sync/pull: invalid arguments are 400 with SQLSTATE and hint", async () => {
  const r = await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "phone-1", app_type: "sales_app", limit: 0 } });
  assertError(r, 400, "22023");
  assert.equal(r.json.detail, "limit must be between 1 and 500, got 0");
  assert.equal(r.json.hint, "Pass a value from 1 to 500.");
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "phone-1", app_type: "nope" } }), 400, "22023");
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "phone-1", app_type: "sales_app", limit: "many" } }), 400, "22P02");
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "phone-1", app_type: "sales_app", sync_token: "x" } }), 400, "22023");
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { app_type: "sales_app" } }), 400, "22004");
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "p", app_type: "sales_app", models_filter: "sale.order" } }), 400, "22023");
});

test("POST /api/v2/sync/pull: malformed JSON and a body that is not an object are 400", async () => {
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: APP, raw: '{"device_id": "phone-1",' }), 400);
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: APP, raw: '"phone-1"' }), 400);
});

test("values reach the functions exactly: quotes, backslashes, arrays; a NUL is 400 (22021)", async () => {
  const device = "o'brien\\phone \"2\"; SELECT 1; --";
  const r = await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: device, app_type: "sales_app",
    models_filter: ["sale.order", "res.partner"], device_info: { note: "it's \\ fine" } } });
  assert.equal(r.status, 200, r.text);
  const state = await call("GET", `/api/v2/sync/state?device_id=${encodeURIComponent(device)}`, { bearer: APP });
  assert.equal(state.status, 200, state.text);
  assert.equal(state.json.device_id, device);
  const bad = await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "p", app_type: "sales_app",
    models_filter: ['sale.order"}', "x\\"] } });
  assertError(bad, 400, "22023");
  assert.match(bad.json.detail, /invalid model name/);
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "nul\u0000", app_type: "sales_app" } }), 400, "22021");
});

test("a body over 1 MB is 413", async () => {
  const big = JSON.stringify({ device_id: "phone-1", app_type: "sales_app", device_info: { pad: "x".repeat(1024 * 1024) } });
  const r = await call("POST", "/api/v2/sync/pull", { bearer: APP, raw: big });
  assertError(r, 413);
  const login = await call("POST", "/auth/login", { raw: big });
  assertError(login, 413);
});

test("GET /api/v2/sync/state: the device's state; an unknown device is 404 (P0002)", async () => {
  const r = await call("GET", "/api/v2/sync/state?device_id=phone-1", { bearer: APP });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.user_id, 7);
  assert.equal(r.json.device_id, "phone-1");
  assert.equal(r.json.is_active, true);
  const missing = await call("GET", "/api/v2/sync/state?user_id=7&device_id=never-seen", { bearer: APP });
  assertError(missing, 404, "P0002");
  assert.equal(missing.json.detail, "Sync state not found");
  assertError(await call("GET", "/api/v2/sync/state?user_id=9&device_id=phone-1", { bearer: APP }), 403, "42501");
});

test("POST /api/v2/sync/reset: back to the start; an unknown device is 404", async () => {
  const r = await call("POST", "/api/v2/sync/reset?user_id=7&device_id=phone-1", { bearer: APP });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { status: "success", message: "Sync state reset successfully" });
  assert.equal((await call("GET", "/api/v2/sync/state?device_id=phone-1", { bearer: APP })).json.last_event_id, 0);
  assertError(await call("POST", "/api/v2/sync/reset", { bearer: APP, body: { device_id: "never-seen" } }), 404, "P0002");
});

test("GET /api/v1/webhooks/events and check-updates", async () => {
  const r = await call("GET", "/api/v1/webhooks/events?model_name=sale.order&limit=2&record_id=&event=", { bearer: APP });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.status, "success");
  assert.equal(r.json.count, 2);
  assert.ok(r.json.data.every((e) => e.model === "sale.order"));
  assertError(await call("GET", "/api/v1/webhooks/events?limit=0", { bearer: APP }), 400, "22023");
  assertError(await call("GET", "/api/v1/webhooks/events?since=yesterday-ish", { bearer: APP }), 400, "22007");
  const c = await call("GET", "/api/v1/webhooks/check-updates?since=2025-01-01T00:00:00Z", { bearer: APP });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.json.has_update, true);
  assert.ok(Array.isArray(c.json.summary));
});

test("DELETE /api/v1/webhooks/cleanup: admin tokens only", async () => {
  assertError(await call("DELETE", "/api/v1/webhooks/cleanup?before=2000-01-01T00:00:00Z", { bearer: APP }), 403, "42501");
  const r = await call("DELETE", "/api/v1/webhooks/cleanup?before=2000-01-01T00:00:00Z", { bearer: ADMIN });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.ok, true);
  assert.equal(r.json.deleted, 0);
});

test("a token the gateway has seen still calls as its role: the call after bridgecore_gateway.authorize is checked as the token's", async () => {
  // The first use of a token checks it alone; later ones go as one pipeline (authorize, then the call).
  const app = await token({ role: "bridgecore_app", user_id: 7, instance: "acme", jti: "seen-app" });
  const admin = await token({ role: "bridgecore_admin", jti: "seen-admin" });
  for (let i = 1; i <= 3; i++) {
    const refused = await call("DELETE", "/api/v1/webhooks/cleanup?before=2000-01-01T00:00:00Z", { bearer: app });
    assertError(refused, 403, "42501");
    assert.equal(refused.json.detail, "permission denied for function cleanup");
    const r = await call("DELETE", "/api/v1/webhooks/cleanup?before=2000-01-01T00:00:00Z", { bearer: admin });
    assert.equal(r.status, 200, `call ${i}: ${r.text}`);
  }
  // The extension's errors come through it unchanged (SQLSTATE, message, hint).
  const bad = await call("POST", "/api/v2/sync/pull", { bearer: app, body: { device_id: "p", app_type: "sales_app", limit: 0 } });
  assertError(bad, 400, "22023");
  assert.equal(bad.json.detail, "limit must be between 1 and 500, got 0");
  assert.equal(bad.json.hint, "Pass a value from 1 to 500.");
});

test("bridgecore_gateway.authorize runs for the gateway's login role only", async () => {
  for (const role of ["bridgecore_anon", "bridgecore_app", "bridgecore_admin", "bridgecore_monitor"]) {
    const c = new pg.Client({ connectionString: process.env.DATABASE_URL });
    await c.connect();
    try {
      await c.query(`SET ROLE ${role}`);
      await assert.rejects(c.query("SELECT bridgecore_gateway.authorize($1)", [APP]), (e) => e.code === "42501", role);
    } finally {
      await c.end();
    }
  }
});

test("the documented login role (NOINHERIT, owner of bridgecore_gateway, no privilege on schema bridgecore): known tokens' calls in one pipeline", async () => {
  await db.query("DROP ROLE IF EXISTS bridgecore_gateway_owner");
  await db.query("CREATE ROLE bridgecore_gateway_owner LOGIN NOINHERIT;" +
    " GRANT bridgecore_anon, bridgecore_app, bridgecore_admin, bridgecore_monitor TO bridgecore_gateway_owner;" +
    " ALTER SCHEMA bridgecore_gateway OWNER TO bridgecore_gateway_owner;" +
    " ALTER FUNCTION bridgecore_gateway.authorize(text) OWNER TO bridgecore_gateway_owner;" +
    // its sessions count their calls of PL/pgSQL functions: authorize's
    " ALTER ROLE bridgecore_gateway_owner SET track_functions = 'pl'");
  const url = new URL(process.env.DATABASE_URL);
  url.searchParams.set("user", "bridgecore_gateway_owner");
  let gw;
  try {
    const { rows } = await db.query("SELECT has_schema_privilege('bridgecore_gateway_owner', 'bridgecore', 'USAGE') AS usage");
    assert.equal(rows[0].usage, false);
    gw = await startGateway({ databaseUrl: url.toString(), secret: SECRET, host: "127.0.0.1", port: 0, maxBodySize: 1024 * 1024 });
    const app = await token({ role: "bridgecore_app", user_id: 7, instance: "acme", jti: "owner-app" });
    const admin = await token({ role: "bridgecore_admin", jti: "owner-admin" });
    const send = (method, path, bearer, body) => fetch(gw.url + path, { method, headers: { Authorization: `Bearer ${bearer}` },
      body: body === undefined ? undefined : JSON.stringify(body) });
    for (let i = 1; i <= 3; i++) {    // the first use of each token, then the pipeline with its statements parsed, then reused
      const pull = await send("POST", "/api/v2/sync/pull", app, { device_id: "owner-phone", app_type: "sales_app", models_filter: ["sale.order"] });
      assert.equal(pull.status, 200, `pull ${i}: ${await pull.text()}`);
      // One statement for both roles: refused for the app token, run for the admin's.
      const refused = await send("DELETE", "/api/v1/webhooks/cleanup?before=2000-01-01T00:00:00Z", app);
      assert.equal(refused.status, 403);
      assert.equal((await refused.json()).detail, "permission denied for function cleanup");
      const cleanup = await send("DELETE", "/api/v1/webhooks/cleanup?before=2000-01-01T00:00:00Z", admin);
      assert.equal(cleanup.status, 200, `cleanup ${i}: ${await cleanup.text()}`);
      const bad = await send("POST", "/api/v2/sync/pull", app, { device_id: "owner-phone", app_type: "sales_app", limit: 0 });
      assert.equal(bad.status, 400);
      assert.deepEqual(await bad.json(), { detail: "limit must be between 1 and 500, got 0", code: "22023", hint: "Pass a value from 1 to 500." });
      const nul = await send("POST", "/api/v2/sync/pull", app, { device_id: "nul\u0000", app_type: "sales_app" });
      assert.equal(nul.status, 400);
      assert.equal((await nul.json()).code, "22021");
      // another route, another statement
      const state = await send("GET", "/api/v2/sync/state?device_id=owner-phone", app);
      assert.equal(state.status, 200, `state ${i}: ${await state.text()}`);
    }
    // Every request of a known token went through authorize (not the call's
    // text in one message): 11 of the app token's 15 (its first use is
    // checked alone, the NUL is refused before any call), 2 of the admin's
    // 3. The sessions' counts reach the statistics when they end.
    await gw.close();
    gw = null;
    const counted = () => db.query("SELECT coalesce(sum(calls), 0)::int AS calls FROM pg_stat_user_functions" +
      " WHERE schemaname = 'bridgecore_gateway' AND funcname = 'authorize'");
    await waitFor(async () => (await counted()).rows[0].calls >= 13, 10000, "authorize's calls counted");
    assert.equal((await counted()).rows[0].calls, 13);
  } finally {
    await gw?.close();
    await db.query("ALTER FUNCTION bridgecore_gateway.authorize(text) OWNER TO CURRENT_USER;" +
      " ALTER SCHEMA bridgecore_gateway OWNER TO CURRENT_USER; DROP ROLE bridgecore_gateway_owner");
  }
});

test("bridgecore_gateway.authorize calls bridgecore.authorize where bridgecore_anon may, else checks with verify_token as before 0.4.0", async () => {
  const body = async () => (await db.query("SELECT p.prosrc, p.proconfig, obj_description(p.oid, 'pg_proc') AS comment" +
    " FROM pg_proc p WHERE p.oid = 'bridgecore_gateway.authorize(text)'::regprocedure")).rows[0];
  const current = await body();
  assert.match(current.prosrc, /bridgecore\.authorize\(token\)/);
  assert.equal(current.proconfig, null);    // no SET search_path: everything it calls is schema-qualified
  assert.match(current.comment, /\(2\)$/);
  await db.query("REVOKE EXECUTE ON FUNCTION bridgecore.authorize(text) FROM bridgecore_anon");
  let gw;
  try {
    gw = await startGateway({ databaseUrl: process.env.DATABASE_URL, secret: SECRET, host: "127.0.0.1", port: 0, maxBodySize: 1024 * 1024 });
    const older = await body();
    assert.match(older.prosrc, /bridgecore\.verify_token\(token\)/);
    assert.match(older.comment, /\(1\)$/);
    const app = await token({ role: "bridgecore_app", user_id: 7, instance: "acme", jti: "older-app" });
    for (let i = 1; i <= 2; i++) {    // the token's first use, then the pipeline through the older body
      const pull = await fetch(gw.url + "/api/v2/sync/pull", { method: "POST", headers: { Authorization: `Bearer ${app}` },
        body: JSON.stringify({ device_id: "older-phone", app_type: "sales_app" }) });
      assert.equal(pull.status, 200, await pull.text());
      const other = await fetch(gw.url + "/api/v2/sync/pull", { method: "POST", headers: { Authorization: `Bearer ${app}` },
        body: JSON.stringify({ user_id: 8, device_id: "older-phone", app_type: "sales_app" }) });
      assert.equal(other.status, 403);
      const refused = await fetch(gw.url + "/api/v1/webhooks/cleanup?before=2000-01-01T00:00:00Z",
        { method: "DELETE", headers: { Authorization: `Bearer ${app}` } });
      assert.equal(refused.status, 403);
      assert.equal((await refused.json()).code, "42501");
    }
  } finally {
    await gw?.close();
    await db.query("GRANT EXECUTE ON FUNCTION bridgecore.authorize(text) TO bridgecore_anon");
  }
  // The next start puts the current body back.
  gw = await startGateway({ databaseUrl: process.env.DATABASE_URL, secret: SECRET, host: "127.0.0.1", port: 0, maxBodySize: 1024 * 1024 });
  await gw.close();
  assert.match((await body()).comment, /\(2\)$/);
});

test("a login role that may not create authorize: known tokens' calls go as one message, with the same checks", async () => {
  await db.query("DROP ROLE IF EXISTS bridgecore_gateway_guest");
  await db.query("CREATE ROLE bridgecore_gateway_guest LOGIN NOINHERIT;" +
    " GRANT bridgecore_anon, bridgecore_app, bridgecore_admin, bridgecore_monitor TO bridgecore_gateway_guest");
  // As documented: no privilege of its own on schema bridgecore (the start's checks read the catalog).
  const url = new URL(process.env.DATABASE_URL);
  url.searchParams.set("user", "bridgecore_gateway_guest");
  const gw = await startGateway({ databaseUrl: url.toString(), secret: SECRET, host: "127.0.0.1", port: 0, maxBodySize: 1024 * 1024 });
  try {
    const app = await token({ role: "bridgecore_app", user_id: 7, instance: "acme", jti: "guest-app" });
    for (let i = 1; i <= 2; i++) {
      const pull = await fetch(gw.url + "/api/v2/sync/pull", { method: "POST", headers: { Authorization: `Bearer ${app}` },
        body: JSON.stringify({ device_id: "guest-phone", app_type: "sales_app" }) });
      assert.equal(pull.status, 200, await pull.text());
      const refused = await fetch(gw.url + "/api/v1/webhooks/cleanup?before=2000-01-01T00:00:00Z",
        { method: "DELETE", headers: { Authorization: `Bearer ${app}` } });
      assert.equal(refused.status, 403);
      assert.equal((await refused.json()).code, "42501");
    }
  } finally {
    await gw.close();
    await db.query("DROP ROLE bridgecore_gateway_guest");
  }
});

test("a pull's answer is one body with Content-Length, not chunked", async () => {
  for (let i = 0; i < 2; i++) {   // the token's first use, then a known token
    const r = await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "length-phone", app_type: "sales_app" } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.headers.get("transfer-encoding"), null);
    assert.equal(Number(r.headers.get("content-length")), Buffer.byteLength(r.text));
  }
});

test("the 201st pull of a device in a minute is 429 with Retry-After", async () => {
  let last;
  for (let i = 1; i <= 201; i++) {
    last = await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "busy-phone", app_type: "sales_app" } });
    if (i <= 200) assert.equal(last.status, 200, `pull ${i}: ${last.text}`);
  }
  assertError(last, 429, "PT429");
  assert.equal(last.json.detail, "rate limit exceeded for sync_pull: 200 requests per minute");
  const retry = Number(last.headers.get("retry-after"));
  assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
  assert.equal(last.json.hint, `Retry in ${retry} seconds.`);
});

test("a token for another instance: its instance, and 403 for naming another", async () => {
  await db.query("SELECT name FROM bridgecore.add_instance('down', 'http://127.0.0.1:9', 'odoo', 'bot', 'worker-key', enabled => false)");
  const other = await token({ role: "bridgecore_app", user_id: 7, instance: "down" });
  const r = await call("POST", "/api/v2/sync/pull", { bearer: other, body: { device_id: "phone-2", app_type: "sales_app" } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.new_events_count, 0, "instance down has no events");
  const named = await call("POST", "/api/v2/sync/pull", { bearer: other, body: { device_id: "phone-2", app_type: "sales_app", instance: "acme" } });
  assertError(named, 403, "42501");
  assert.equal(named.json.detail, 'instance "acme" does not match the authenticated instance');
  assertError(await call("GET", "/api/v2/sync/state?device_id=phone-1", { bearer: await token({ role: "bridgecore_app", user_id: 7, instance: "ghost" }) }), 400, "22023");
  // A token without an instance claim, two instances: the sync token names it.
  const plain = await token({ role: "bridgecore_app", user_id: 7 });
  assertError(await call("POST", "/api/v2/sync/pull", { bearer: plain, body: { device_id: "phone-3", app_type: "sales_app" } }), 400, "22004");
  const first = await call("POST", "/api/v2/sync/pull", { bearer: APP, body: { device_id: "phone-3", app_type: "sales_app", sync_token: "0" } });
  const again = await call("POST", "/api/v2/sync/pull", { bearer: plain,
    body: { device_id: "phone-3", app_type: "sales_app", sync_token: first.json.next_sync_token } });
  assert.equal(again.status, 200, again.text);
});

test("POST /auth/login: an Odoo that does not answer is 503 (08006); instance omitted among several is 400", async () => {
  const r = await call("POST", "/auth/login", { body: { username: "alice", password: PASSWORD, instance: "down" } });
  assertError(r, 503, "08006");
  assertError(await call("POST", "/auth/login", { body: { username: "alice", password: PASSWORD } }), 400, "22004");
  assert.equal((await call("POST", "/auth/login", { body: { username: "alice", password: PASSWORD, instance: "acme" } })).status, 200);
});

test("POST /graphql (PostGraphile) takes the same tokens", async () => {
  const r = await call("POST", "/graphql", { bearer: APP, body: { query: "{ __typename }" } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { data: { __typename: "Query" } });
});

test("a database that goes away: 503 on every route, /health included", async () => {
  const socketPath = `${process.env.PGHOST}/.s.PGSQL.${process.env.PGPORT}`;
  const sockets = new Set();
  const proxy = net.createServer((client) => {
    const upstream = net.connect(socketPath);
    sockets.add(client).add(upstream);
    client.pipe(upstream).pipe(client);
    client.on("error", () => upstream.destroy());
    upstream.on("error", () => client.destroy());
  });
  await new Promise((resolve) => proxy.listen(0, "127.0.0.1", resolve));
  const dbName = new URL(process.env.DATABASE_URL).pathname.slice(1);
  const gw = await startGateway({ databaseUrl: `postgresql://${process.env.PGUSER || "postgres"}@127.0.0.1:${proxy.address().port}/${dbName}`,
    secret: SECRET, host: "127.0.0.1", port: 0, maxBodySize: 1024 * 1024 });
  try {
    assert.equal((await fetch(gw.url + "/health")).status, 200);
    proxy.close();
    for (const s of sockets) s.destroy();
    for (const [method, path, body] of [["GET", "/health"], ["POST", "/api/v2/sync/pull", { device_id: "p", app_type: "sales_app" }],
      ["POST", "/auth/login", { username: "alice", password: PASSWORD }]]) {
      const res = await fetch(gw.url + path, { method, headers: { Authorization: `Bearer ${APP}` }, body: body && JSON.stringify(body) });
      const json = await res.json();
      assert.equal(res.status, 503, `${path}: ${JSON.stringify(json)}`);
      assert.deepEqual(Object.keys(json).sort(), ["code", "detail", "hint"]);
    }
  } finally {
    await gw.close().catch(() => {});
  }
});

function runGateway(env) {
  const r = spawnSync(RUN, [], { env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: "0", ...env }, encoding: "utf8", timeout: 30000 });
  return { status: r.status, stderr: r.stderr };
}

test("gateway/run exits non-zero with a clear message without its database, extension or secret", () => {
  const url = process.env.DATABASE_URL;
  let r = runGateway({ BRIDGECORE_JWT_SECRET: SECRET });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /DATABASE_URL is not set/);
  r = runGateway({ DATABASE_URL: url, BRIDGECORE_JWT_SECRET: "short" });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /BRIDGECORE_JWT_SECRET must be at least 32 characters/);
  r = runGateway({ DATABASE_URL: url.replace(/\/[^/?]+\?/, "/no_such_database?"), BRIDGECORE_JWT_SECRET: SECRET });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /cannot connect to the database: .*no_such_database/);
  r = runGateway({ DATABASE_URL: process.env.EMPTY_DATABASE_URL, BRIDGECORE_JWT_SECRET: SECRET });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /the extension bridgecore is not installed in database/);
  r = runGateway({ DATABASE_URL: url, BRIDGECORE_JWT_SECRET: "a-different-secret-of-at-least-32-characters" });
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /BRIDGECORE_JWT_SECRET is not the bridgecore.jwt_secret of database/);
});
