// GraphQL on the gateway that test/run.sh started (GATEWAY_URL), with real
// clients: fetch for POST /graphql, the npm graphql-ws client over ws for
// GET /graphql as WebSocket. The seed's query verbatim, every query and
// mutation, error extensions, the token rules, and the syncAvailable
// subscription: delivery after an ingest, nothing of other tenants or
// other models, refused connections, and the loss of the gateway's LISTEN
// connection. Every wait has a deadline; nothing sleeps.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import WebSocket from "ws";
import { createClient } from "graphql-ws";
import { signToken, waitFor, within } from "./helpers.js";
import { startGateway } from "../src/server.js";

const G = process.env.GATEWAY_URL;
const WS_URL = G.replace(/^http/, "ws") + "/graphql";
const DEADLINE = 10_000;          // a liveness bound, not a speed target (bench/ws_fanout.js)
const A = "gql_a";
const B = "gql_b";
const now = () => Math.floor(Date.now() / 1000);

let db;
let TOKEN_A;   // user 7 of instance A
let TOKEN_B;   // user 7 of instance B
let odooId = 1000;

const token = (claims) => signToken(db, { exp: now() + 600, ...claims });

async function gql(query, { bearer = TOKEN_A, variables } = {}) {
  const headers = { "Content-Type": "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  const res = await fetch(G + "/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: JSON.parse(text), text };
}

// The one error of an answer, with its extensions.
function theError(r, code, status) {
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.errors?.length, 1, r.text);
  const e = r.json.errors[0];
  assert.deepEqual(Object.keys(e.extensions).sort(), ["code", "detail", "hint", "status"], r.text);
  assert.equal(e.extensions.code, code, r.text);
  assert.equal(e.extensions.status, status, r.text);
  return e;
}

async function ingest(instance, model, n = 1, priority = null) {
  const events = [];
  for (let i = 0; i < n; i++) {
    odooId += 1;
    events.push({ id: odooId, model, record_id: odooId, event: "write", timestamp: "2025-11-16 10:30:00", priority });
  }
  const { rows } = await db.query("SELECT bridgecore.ingest($1, $2)::text AS r", [instance, JSON.stringify(events)]);
  return JSON.parse(rows[0].r);
}

function wsClient(connectionParams, extra = {}) {
  return createClient({ url: WS_URL, webSocketImpl: WebSocket, connectionParams, retryAttempts: 0, lazy: true, ...extra });
}

// A subscription's messages, each waited for with a deadline.
function subscribe(client, query) {
  const messages = [];
  let failure = null;
  let completed = false;
  let wake = () => {};
  const dispose = client.subscribe({ query }, {
    next: (m) => {
      messages.push(m);
      wake();
    },
    error: (e) => {
      failure = e;
      wake();
    },
    complete: () => {
      completed = true;
      wake();
    },
  });
  let read = 0;
  return {
    dispose,
    get failure() {
      return failure;
    },
    get completed() {
      return completed;
    },
    // The next message (its data.syncAvailable), or a rejection after the deadline.
    async next(what) {
      const deadline = Date.now() + DEADLINE;
      while (read >= messages.length) {
        if (failure) throw new Error(`${what}: the subscription failed: ${failure.message ?? failure.reason ?? JSON.stringify(failure)}`);
        if (completed) throw new Error(`${what}: the subscription completed`);
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`not within ${DEADLINE} ms: ${what}`);
        await new Promise((resolve) => {
          const t = setTimeout(resolve, left);
          wake = () => {
            clearTimeout(t);
            resolve();
          };
        });
      }
      const m = messages[read++];
      assert.equal(m.errors, undefined, JSON.stringify(m));
      return m.data.syncAvailable;
    },
    // Waits for the subscription to fail; returns the error (a close event or GraphQL errors).
    async failed(what) {
      await waitFor(() => failure !== null || messages.some((m) => m.errors), DEADLINE, what);
      return failure ?? messages.find((m) => m.errors).errors;
    },
  };
}

const SUBSCRIPTION = 'subscription { syncAvailable(appType: "sales_app") { reason instance model count maxId high } }';

before(async () => {
  db = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  for (const name of [A, B]) {
    await db.query("SELECT name FROM bridgecore.add_instance($1, 'http://127.0.0.1:9', 'odoo', 'bot', 'worker-key', enabled => false)", [name]);
  }
  const events = [];
  for (let i = 1; i <= 6; i++) {
    events.push({ id: i, model: i % 2 ? "sale.order" : "res.partner", record_id: 500 + i, event: "create", timestamp: `2025-11-16 10:3${i}:00` });
  }
  await db.query("SELECT bridgecore.ingest($1, $2)", [A, JSON.stringify(events)]);
  TOKEN_A = await token({ role: "bridgecore_app", user_id: 7, instance: A });
  TOKEN_B = await token({ role: "bridgecore_app", user_id: 7, instance: B });
});

after(async () => {
  for (const name of [A, B]) await db.query("SELECT bridgecore.remove_instance($1)", [name]).catch(() => {});
  await db?.end();
});

test("the seed's query, verbatim, answers a list with Int ids and UTC timestamps", async () => {
  for (const query of [
    'query { webhookEvents(filter: {model: "sale.order"}, limit: 100) { id model recordId event timestamp } }',
    'query { webhookEvents(filter: {model: "sale.order"}) { id model recordId event timestamp } }',
  ]) {
    const r = await gql(query);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.errors, undefined, r.text);
    const list = r.json.data.webhookEvents;
    assert.ok(Array.isArray(list) && list.length === 3, r.text);
    for (const e of list) {
      assert.deepEqual(Object.keys(e), ["id", "model", "recordId", "event", "timestamp"]);
      assert.ok(Number.isInteger(e.id) && Number.isInteger(e.recordId), r.text);
      assert.equal(e.model, "sale.order");
      assert.equal(e.event, "create");
      assert.match(e.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
    }
    // newest first, as GET /api/v1/webhooks/events
    assert.deepEqual(list.map((e) => e.recordId), [505, 503, 501]);
  }
});

test("the gateway's authorize is not a GraphQL field", async () => {
  const r = await gql("{ __schema { queryType { fields { name } } mutationType { fields { name } } } }");
  assert.equal(r.status, 200, r.text);
  const names = [...r.json.data.__schema.queryType.fields, ...(r.json.data.__schema.mutationType?.fields ?? [])].map((f) => f.name);
  assert.ok(names.length > 0);
  assert.ok(!names.some((n) => /authorize|callAs/i.test(n)), names.join(", "));
});

test("webhookEvents: the filters, limit and offset of bridgecore.events", async () => {
  const r = await gql('{ webhookEvents(filter: {recordId: 502, event: "create", since: "2025-11-16T10:30:00Z"}, limit: 5, offset: 0) { id model recordId occurredAt priority category changedFields payload userId userName } }');
  assert.equal(r.json.errors, undefined, r.text);
  assert.equal(r.json.data.webhookEvents.length, 1);
  assert.equal(r.json.data.webhookEvents[0].model, "res.partner");
  assert.equal(r.json.data.webhookEvents[0].occurredAt, "2025-11-16T10:32:00Z");
  const page = await gql("{ webhookEvents(limit: 2, offset: 1) { recordId } }");
  assert.deepEqual(page.json.data.webhookEvents.map((e) => e.recordId), [505, 504]);
});

test("syncPull: typed fields and raw, the same JSON as bridgecore.sync_pull", async () => {
  const q = `mutation($t: String) { syncPull(deviceId: "gql-phone", appType: "sales_app", limit: 4, syncToken: $t) {
    status hasUpdates newEventsCount nextSyncToken lastSyncTime hasMore resyncRequired
    events { id model recordId event timestamp } raw } }`;
  const r = await gql(q, { variables: { t: "0" } });
  assert.equal(r.json.errors, undefined, r.text);
  const p = r.json.data.syncPull;
  assert.equal(p.status, "success");
  assert.equal(p.hasUpdates, true);
  assert.equal(p.newEventsCount, 4);
  assert.equal(p.hasMore, true);
  assert.equal(p.resyncRequired, false);
  assert.equal(p.events.length, 4);
  assert.ok(p.events.every((e) => Number.isInteger(e.id) && /Z$/.test(e.timestamp)));
  // The SQL function's answer for the same position, as the same user and instance.
  const { rows } = await db.query(
    "SELECT bridgecore.sync_pull(7, 'gql-phone-sql', 'sales_app', \"limit\" => 4, instance => $1, sync_token => '0')::jsonb AS r", [A]);
  const sql = rows[0].r;
  assert.deepEqual(Object.keys(p.raw).sort(), Object.keys(sql).sort());
  assert.deepEqual(p.raw.events, sql.events);
  assert.equal(p.raw.next_sync_token, sql.next_sync_token);
  assert.equal(p.nextSyncToken, p.raw.next_sync_token);
  assert.deepEqual(p.events.map((e) => e.id), sql.events.map((e) => e.id));
  assert.deepEqual(p.events.map((e) => e.recordId), sql.events.map((e) => e.record_id));
  // the next page, from the token, with modelsFilter
  const next = await gql(`mutation { syncPull(userId: 7, deviceId: "gql-phone", appType: "sales_app", modelsFilter: ["sale.order"],
    syncToken: "${p.nextSyncToken}", instance: "${A}", deviceInfo: {os: "android", v: [1, 2]}, appVersion: "2.1") { events { id model } hasMore lastSyncTime } }`);
  assert.equal(next.json.errors, undefined, next.text);
  const ids = next.json.data.syncPull.events;
  assert.ok(ids.length >= 1 && ids.every((e) => e.model === "sale.order" && e.id > p.events[3].id), next.text);
  assert.match(next.json.data.syncPull.lastSyncTime, /Z$/);
});

test("syncState, checkUpdates and syncReset", async () => {
  const s = await gql('{ syncState(deviceId: "gql-phone") { userId deviceId appType lastEventId lastSyncTime syncCount isActive nextSyncToken raw } }');
  assert.equal(s.json.errors, undefined, s.text);
  const st = s.json.data.syncState;
  assert.equal(st.userId, 7);
  assert.equal(st.deviceId, "gql-phone");
  assert.equal(st.appType, "sales_app");
  assert.equal(st.syncCount, 2);
  assert.equal(st.isActive, true);
  assert.equal(st.raw.user_id, 7);
  const c = await gql('{ checkUpdates(since: "2025-01-01T00:00:00Z") { hasUpdate lastUpdateAt summary { model count } } }');
  assert.equal(c.json.errors, undefined, c.text);
  assert.equal(c.json.data.checkUpdates.hasUpdate, true);
  assert.equal(c.json.data.checkUpdates.lastUpdateAt, "2025-11-16T10:36:00Z");
  assert.deepEqual(c.json.data.checkUpdates.summary.map((x) => x.model).sort(), ["res.partner", "sale.order"]);
  const reset = await gql('mutation { syncReset(deviceId: "gql-phone") { status message } }');
  assert.deepEqual(reset.json.data.syncReset, { status: "success", message: "Sync state reset successfully" });
  const again = await gql('{ syncState(userId: 7, deviceId: "gql-phone", instance: "gql_a") { lastEventId syncCount } }');
  assert.deepEqual(again.json.data.syncState, { lastEventId: 0, syncCount: 0 });
});

test("errors carry the SQLSTATE, detail, hint and status in extensions", async () => {
  let e = theError(await gql('mutation { syncPull(deviceId: "gql-phone", appType: "sales_app", limit: 0) { status } }'), "22023", 400);
  assert.equal(e.message, "limit must be between 1 and 500, got 0");
  assert.equal(e.extensions.hint, "Pass a value from 1 to 500.");
  assert.deepEqual(e.path, ["syncPull"]);
  theError(await gql('mutation { syncPull(deviceId: "gql-phone", appType: "nope") { status } }'), "22023", 400);
  theError(await gql('mutation { syncPull(deviceId: "", appType: "sales_app") { status } }'), "22023", 400);
  theError(await gql('{ webhookEvents(filter: {since: "yesterday-ish"}) { id } }'), "22007", 400);
  e = theError(await gql('mutation { syncPull(userId: 8, deviceId: "gql-phone", appType: "sales_app") { status } }'), "42501", 403);
  assert.equal(e.message, "user_id 8 does not match the authenticated user");
  assert.equal(e.extensions.hint, "A device can only act on its own user's sync state.");
  theError(await gql('{ syncState(userId: 9, deviceId: "gql-phone") { userId } }'), "42501", 403);
  theError(await gql('mutation { syncReset(userId: 9, deviceId: "gql-phone") { status } }'), "42501", 403);
  e = theError(await gql(`{ checkUpdates(instance: "${B}") { hasUpdate } }`), "42501", 403);
  assert.equal(e.message, `instance "${B}" does not match the authenticated instance`);
  e = theError(await gql('{ syncState(deviceId: "never-seen") { userId } }'), "P0002", 404);
  assert.equal(e.message, "Sync state not found");
  assert.equal(e.extensions.detail, 'No sync state for user 7 and device "never-seen".');
  theError(await gql('mutation { syncReset(deviceId: "never-seen") { status } }'), "P0002", 404);
  // a document error is GraphQL's own, without a SQLSTATE
  const bad = await gql("{ webhookEvents(limit: \"ten\") { id } }");
  assert.ok(bad.json.errors?.length >= 1 && bad.json.errors[0].extensions?.code === undefined, bad.text);
});

test("POST /graphql without a token or with a bad one is 401 with the gateway's error body", async () => {
  let r = await gql("{ __typename }", { bearer: null });
  assert.equal(r.status, 401);
  assert.deepEqual(r.json, { detail: "a bearer token is required", code: null, hint: null });
  assert.match(r.headers.get("www-authenticate"), /^Bearer/);
  for (const bad of ["x.y.z", await token({ role: "postgres", user_id: 7 }), await token({ role: "bridgecore_app", exp: now() - 5 })]) {
    r = await gql("{ __typename }", { bearer: bad });
    assert.equal(r.status, 401, r.text);
    assert.equal(r.json.code, "28000", r.text);
    assert.match(r.json.detail, /^invalid token: /);
  }
  r = await fetch(G + "/graphql", { method: "POST", headers: { Authorization: `Basic ${TOKEN_A}`, "Content-Type": "application/json" }, body: "{}" });
  assert.equal(r.status, 401);
});

// --- WebSocket ---------------------------------------------------------------

test("WebSocket: syncAvailable announces an ingest of the token's instance and the app type's models", async () => {
  const client = wsClient({ authorization: `Bearer ${TOKEN_A}` });
  const sub = subscribe(client, SUBSCRIPTION);
  try {
    assert.deepEqual(await sub.next("LISTENING"), { reason: "LISTENING", instance: A, model: null, count: null, maxId: null, high: null });
    const stored = await ingest(A, "sale.order", 3, "high");
    assert.equal(stored.inserted, 3);
    const m = await sub.next("the notification of the ingest");
    const { rows } = await db.query("SELECT max(id)::int AS id FROM bridgecore.event WHERE odoo_id = $1", [odooId]);
    assert.deepEqual(m, { reason: "NOTIFIED", instance: A, model: "sale.order", count: 3, maxId: rows[0].id, high: 3 });
    // one message per (instance, model) of one store
    await ingest(A, "res.partner", 2);
    const m2 = await sub.next("res.partner");
    assert.equal(m2.model, "res.partner");
    assert.equal(m2.count, 2);
    assert.equal(m2.high, 0);
  } finally {
    sub.dispose();
    await client.dispose();
  }
});

test("WebSocket: nothing of another instance, nor of models outside the app type", async () => {
  const clientA = wsClient({ authorization: `Bearer ${TOKEN_A}` });
  const clientB = wsClient({ authorization: `Bearer ${TOKEN_B}` });
  const subA = subscribe(clientA, SUBSCRIPTION);
  const subB = subscribe(clientB, SUBSCRIPTION);
  try {
    assert.equal((await subA.next("A listening")).reason, "LISTENING");
    assert.equal((await subB.next("B listening")).instance, B);
    // Notifications reach the gateway in commit order on its one
    // connection: were B's or stock.picking's passed to A, A would see
    // them before its own.
    await ingest(B, "sale.order", 2);
    await ingest(A, "stock.picking", 1);
    await ingest(A, "sale.order", 1);
    const a = await subA.next("A's own event");
    assert.equal(a.instance, A);
    assert.equal(a.model, "sale.order");
    assert.equal(a.count, 1);
    const b = await subB.next("B's event");
    assert.deepEqual([b.instance, b.model, b.count], [B, "sale.order", 2]);
    await ingest(A, "res.partner", 1);
    await ingest(B, "res.partner", 4);
    const b2 = await subB.next("B's second event");
    assert.deepEqual([b2.instance, b2.count], [B, 4]);
    assert.equal((await subA.next("A's second event")).model, "res.partner");
  } finally {
    subA.dispose();
    subB.dispose();
    await clientA.dispose();
    await clientB.dispose();
  }
});

test("WebSocket: a syncAvailable document with fragments, aliases or variables gets the same messages", async () => {
  // The plain form takes the gateway's short way; a fragment makes
  // PostGraphile's executor run it: both must answer alike.
  const docs = [
    "subscription S { mine: syncAvailable(appType: \"sales_app\") { ...F } } fragment F on SyncAvailable { __typename reason instance model count }",
    "subscription($t: String!) { mine: syncAvailable(appType: $t) { __typename reason instance model count } }",
  ];
  const clients = docs.map(() => wsClient({ authorization: `Bearer ${TOKEN_A}` }));
  const subs = [];
  try {
    for (let i = 0; i < docs.length; i++) {
      const messages = [];
      let wake = () => {};
      clients[i].subscribe({ query: docs[i], variables: { t: "sales_app" } }, {
        next: (m) => {
          messages.push(m);
          wake();
        },
        error: (e) => messages.push({ failed: e }),
        complete: () => {},
      });
      subs.push({ messages, wait: (n) => waitFor(() => messages.length >= n, DEADLINE, `${n} messages of ${docs[i]}`) });
    }
    for (const s of subs) await s.wait(1);
    await ingest(A, "sale.order", 2);
    for (const s of subs) await s.wait(2);
    for (const s of subs) {
      assert.deepEqual(s.messages.map((m) => m.data), [
        { mine: { __typename: "SyncAvailable", reason: "LISTENING", instance: A, model: null, count: null } },
        { mine: { __typename: "SyncAvailable", reason: "NOTIFIED", instance: A, model: "sale.order", count: 2 } },
      ]);
    }
  } finally {
    for (const c of clients) await c.dispose();
  }
});

test("WebSocket: an unknown app type ends the subscription with the SQLSTATE", async () => {
  const client = wsClient({ authorization: `Bearer ${TOKEN_A}` });
  try {
    for (const query of ['subscription { syncAvailable(appType: "nope") { reason } }',
      'subscription { syncAvailable(appType: "nope") { ...F } } fragment F on SyncAvailable { reason }']) {
      const sub = subscribe(client, query);
      const errors = await sub.failed("the subscription's error");
      sub.dispose();
      assert.ok(Array.isArray(errors), JSON.stringify(errors));
      assert.equal(errors[0].extensions.code, "22023", JSON.stringify(errors));
      assert.equal(errors[0].extensions.status, 400);
      assert.match(errors[0].message, /unknown app_type "nope"/);
    }
  } finally {
    await client.dispose();
  }
});

test("WebSocket: queries and mutations run with the connection's token", async () => {
  const client = wsClient({ authorization: `Bearer ${TOKEN_A}` });
  try {
    const first = await within(DEADLINE, new Promise((resolve, reject) => {
      let result;
      client.subscribe({ query: 'mutation { syncPull(deviceId: "ws-phone", appType: "sales_app", limit: 1) { newEventsCount events { id } } }' },
        { next: (v) => (result = v), error: reject, complete: () => resolve(result) });
    }), "a mutation over WebSocket");
    assert.equal(first.errors, undefined, JSON.stringify(first));
    assert.equal(first.data.syncPull.newEventsCount, 1);
    const refused = await within(DEADLINE, new Promise((resolve, reject) => {
      let result;
      client.subscribe({ query: 'mutation { syncPull(userId: 1, deviceId: "ws-phone", appType: "sales_app") { status } }' },
        { next: (v) => (result = v), error: (e) => resolve({ errors: e }), complete: () => resolve(result) });
    }), "a refused mutation over WebSocket");
    const errors = Array.isArray(refused.errors) ? refused.errors : [];
    assert.equal(errors[0]?.extensions?.code, "42501", JSON.stringify(refused));
    assert.equal(errors[0].extensions.status, 403);
  } finally {
    await client.dispose();
  }
});

// What a raw WebSocket sees: the HTTP answer of a refused upgrade, or the
// close code and reason.
function rawSocket({ headers = {}, init } = {}) {
  return within(DEADLINE, new Promise((resolve) => {
    const ws = new WebSocket(WS_URL, "graphql-transport-ws", { headers });
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode, headers: res.headers, body: JSON.parse(body) }));
    });
    ws.on("open", () => {
      if (init !== undefined) ws.send(JSON.stringify(init));
    });
    ws.on("message", (data) => {
      const m = JSON.parse(data.toString());
      if (m.type === "connection_ack") {
        ws.close(1000);
        resolve({ ack: true });
      }
    });
    ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() }));
    ws.on("error", () => {});
  }), "the WebSocket's answer");
}

test("WebSocket without a token, or with a bad one, is refused", async () => {
  // no token anywhere: closed with 4401 after connection_init
  let r = await rawSocket({ init: { type: "connection_init" } });
  assert.deepEqual(r, { code: 4401, reason: "a bearer token is required" });
  r = await rawSocket({ init: { type: "connection_init", payload: {} } });
  assert.equal(r.code, 4401);
  // a bad token in connectionParams: 4401 with the database's reason
  r = await rawSocket({ init: { type: "connection_init", payload: { authorization: "Bearer x.y.z" } } });
  assert.equal(r.code, 4401);
  assert.match(r.reason, /^invalid token: The signature does not match/);
  r = await rawSocket({ init: { type: "connection_init", payload: { authorization: `Bearer ${await token({ role: "postgres" })}` } } });
  assert.equal(r.code, 4401);
  assert.match(r.reason, /^invalid token: The token's role/);
  r = await rawSocket({ init: { type: "connection_init", payload: { authorization: TOKEN_A } } });
  assert.equal(r.code, 4401, "not Bearer");
  // a bad Authorization header on the upgrade: HTTP 401 and the error body
  r = await rawSocket({ headers: { Authorization: "Bearer x.y.z" } });
  assert.equal(r.status, 401);
  assert.equal(r.body.code, "28000");
  assert.match(r.body.detail, /^invalid token: /);
  assert.match(r.headers["www-authenticate"], /^Bearer/);
  // a good header is enough, without connectionParams
  r = await rawSocket({ headers: { Authorization: `Bearer ${TOKEN_A}` }, init: { type: "connection_init" } });
  assert.deepEqual(r, { ack: true });
  // and the graphql-ws client reports the 4401 (it does not retry it)
  const client = wsClient({ authorization: "Bearer x.y.z" }, { retryAttempts: 3 });
  const sub = subscribe(client, SUBSCRIPTION);
  const failure = await sub.failed("the client's error");
  assert.equal(failure.code, 4401);
  await client.dispose();
  // another path is 404
  const other = await within(DEADLINE, new Promise((resolve) => {
    const ws = new WebSocket(G.replace(/^http/, "ws") + "/nothing", "graphql-transport-ws");
    ws.on("unexpected-response", (_req, res) => resolve(res.statusCode));
    ws.on("error", () => {});
  }), "another path");
  assert.equal(other, 404);
});

test("WebSocket: the connection closes with 4401 when its token expires", async () => {
  const short = await token({ role: "bridgecore_app", user_id: 7, instance: A, exp: now() + 2 });
  const r = await rawSocket({ init: { type: "connection_init", payload: { authorization: `Bearer ${short}` } } });
  // acked first, then (raw socket closed by us on the ack) - connect again and wait for the close
  assert.deepEqual(r, { ack: true });
  const closed = await within(DEADLINE, new Promise((resolve) => {
    const ws = new WebSocket(WS_URL, "graphql-transport-ws");
    ws.on("open", () => ws.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${short}` } })));
    ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() }));
    ws.on("error", () => {});
  }), "the close at expiry");
  assert.equal(closed.code, 4401);
  assert.match(closed.reason, /expired/);
});

test("WebSocket: when the LISTEN connection is killed, subscribers are told to pull and notifications go on", async () => {
  const clients = [wsClient({ authorization: `Bearer ${TOKEN_A}` }), wsClient({ authorization: `Bearer ${TOKEN_B}` })];
  const subs = clients.map((c) => subscribe(c, SUBSCRIPTION));
  try {
    for (const s of subs) assert.equal((await s.next("listening")).reason, "LISTENING");
    const listener = async () => (await db.query(
      "SELECT pid FROM pg_stat_activity WHERE application_name = 'bridgecore gateway listener' AND datname = current_database()")).rows.map((r) => r.pid);
    const [pid] = await listener();
    assert.ok(pid, "the gateway has a listener");
    const { rows } = await db.query("SELECT pg_terminate_backend($1) AS done", [pid]);
    assert.equal(rows[0].done, true);
    assert.deepEqual(await subs[0].next("A told to pull"), { reason: "MISSED", instance: A, model: null, count: null, maxId: null, high: null });
    assert.equal((await subs[1].next("B told to pull")).reason, "MISSED");
    const pids = await waitFor(async () => {
      const p = await listener();
      return p.length === 1 && p[0] !== pid ? p : null;
    }, DEADLINE, "one new listener");
    assert.equal(pids.length, 1, "still ONE listener");
    await ingest(A, "sale.order", 1);
    const m = await subs[0].next("a notification after the reconnect");
    assert.deepEqual([m.reason, m.instance, m.model], ["NOTIFIED", A, "sale.order"]);
    await ingest(B, "mail.message", 1);
    assert.equal((await subs[1].next("B's notification after the reconnect")).model, "mail.message");
  } finally {
    for (const s of subs) s.dispose();
    for (const c of clients) await c.dispose();
  }
});

test("one LISTEN connection serves every subscriber", async () => {
  const clients = Array.from({ length: 5 }, () => wsClient({ authorization: `Bearer ${TOKEN_A}` }));
  const subs = clients.map((c) => subscribe(c, SUBSCRIPTION));
  try {
    for (const s of subs) assert.equal((await s.next("listening")).reason, "LISTENING");
    const { rows } = await db.query(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'bridgecore gateway listener' AND datname = current_database()");
    assert.equal(rows[0].n, 1);
    await ingest(A, "product.product", 1);
    for (const s of subs) assert.equal((await s.next("each subscriber's message")).model, "product.product");
  } finally {
    for (const s of subs) s.dispose();
    for (const c of clients) await c.dispose();
  }
});

test("a subscriber that goes away leaves the hub, by either way of answering", async () => {
  const gw = await startGateway({ databaseUrl: process.env.DATABASE_URL, secret: process.env.BRIDGECORE_JWT_SECRET,
    host: "127.0.0.1", port: 0, maxBodySize: 1024 * 1024 });
  try {
    const url = gw.url.replace(/^http/, "ws") + "/graphql";
    const docs = [SUBSCRIPTION, 'subscription { syncAvailable(appType: "sales_app") { ...F } } fragment F on SyncAvailable { reason }'];
    for (const how of ["complete", "close"]) {
      const clients = docs.map(() => createClient({ url, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${TOKEN_A}` }, retryAttempts: 0, lazy: true }));
      const subs = clients.map((c, i) => subscribe(c, docs[i]));
      for (const s of subs) assert.equal((await s.next("listening")).reason, "LISTENING");
      assert.equal(gw.hub.subscribers, 2);
      assert.equal(gw.websocket.connections, 2);
      if (how === "complete") for (const s of subs) s.dispose();   // the client completes the subscription
      else for (const c of clients) await c.dispose();              // the socket closes
      await waitFor(() => gw.hub.subscribers === 0, DEADLINE, `the hub forgets subscribers whose ${how === "complete" ? "subscription completed" : "socket closed"}`);
      for (const c of clients) await c.dispose();
      await waitFor(() => gw.websocket.connections === 0, DEADLINE, "the sockets are closed");
    }
  } finally {
    await gw.close();
  }
});

test("a WebSocket message over MAX_BODY_SIZE closes the socket with 1009", async () => {
  const closed = await within(DEADLINE, new Promise((resolve) => {
    const ws = new WebSocket(WS_URL, "graphql-transport-ws");
    ws.on("open", () => ws.send(JSON.stringify({ type: "connection_init", payload: { authorization: `Bearer ${TOKEN_A}`, pad: "x".repeat(1024 * 1024) } })));
    ws.on("close", (code) => resolve(code));
    ws.on("error", () => {});
  }), "the close of an oversized message");
  assert.equal(closed, 1009);
});
