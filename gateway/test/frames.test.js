// The frames of the syncAvailable subscription's short way, byte for byte,
// on the gateway that test/run.sh started (GATEWAY_URL): the gateway writes
// the graphql-ws "next" messages of a plain syncAvailable document itself
// (src/websocket.js, nextFrames), so what a raw ws client reads must be the
// text graphql-ws would send, {"id":...,"type":"next","payload":...}, with
// the payload PostGraphile's executor gives for the same selection (the
// same fields in an inline fragment, which the executor runs); and a real
// graphql-ws client must see the same. Nothing of another instance arrives.
// Every wait has a deadline; nothing sleeps: "nothing more arrived" is
// checked with a graphql-ws ping, whose pong the gateway writes after
// everything it wrote before.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import WebSocket from "ws";
import { createClient } from "graphql-ws";
import { signToken, waitFor, within } from "./helpers.js";

const WS_URL = process.env.GATEWAY_URL.replace(/^http/, "ws") + "/graphql";
const DEADLINE = 10_000;
const A = "frames_a";
const B = "frames_b";
const now = () => Math.floor(Date.now() / 1000);

let db;
let TOKEN_A;
let TOKEN_B;
let odooId = 5000;

// The selection apps send, with aliases, __typename and a field twice;
// short(...) is answered by the gateway's short way, executor(...) (the
// same fields in an inline fragment) by PostGraphile's executor. The short
// document is padded where the other has "... on SyncAvailable {", so that
// the fields stand at the same columns: the errors' locations are then
// equal too, and the two answers must be the same bytes.
const SELECTION = "r: reason instance m: model count maxId high __typename m: model";
const FRAGMENT = "... on SyncAvailable {";
const short = (appType, selection = SELECTION) =>
  `subscription Feed { feed: syncAvailable(appType: "${appType}") { ${" ".repeat(FRAGMENT.length)} ${selection} } }`;
const executor = (appType, selection = SELECTION) =>
  `subscription Feed { feed: syncAvailable(appType: "${appType}") { ${FRAGMENT} ${selection} } } }`;
const SHORT = short("sales_app");
const EXECUTOR = executor("sales_app");
const PLAIN = 'subscription { syncAvailable(appType: "sales_app") { reason instance model count maxId high } }';

async function ingest(instance, model, n = 1) {
  const events = [];
  for (let i = 0; i < n; i++) {
    odooId += 1;
    events.push({ id: odooId, model, record_id: odooId, event: "write", timestamp: "2025-11-16 10:30:00" });
  }
  await db.query("SELECT bridgecore.ingest($1, $2)", [instance, JSON.stringify(events)]);
  const { rows } = await db.query("SELECT max(id)::int AS id FROM bridgecore.event WHERE odoo_id = $1", [odooId]);
  return rows[0].id;
}

// A raw graphql-transport-ws client: every frame the gateway sends, as text.
async function rawClient(token) {
  const ws = new WebSocket(WS_URL, "graphql-transport-ws");
  const frames = [];
  const closed = new Promise((resolve) => ws.on("close", (code, reason) => resolve({ code, reason: String(reason) })));
  ws.on("message", (data, isBinary) => frames.push(isBinary ? { binary: data } : data.toString("utf8")));
  ws.on("error", () => {});
  await within(DEADLINE, new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  }), "the raw client's connection");
  const c = {
    ws,
    frames,
    closed,
    send: (m) => ws.send(JSON.stringify(m)),
    // The next n frames not read yet, waited for.
    read: 0,
    async take(n, what) {
      await waitFor(() => frames.length >= c.read + n, DEADLINE, what);
      const got = frames.slice(c.read, c.read + n);
      c.read += n;
      return got;
    },
    // Every frame sent before now has arrived: a ping, then its pong
    // (returns the frames read before the pong).
    async settle(what) {
      c.send({ type: "ping" });
      await waitFor(() => frames.slice(c.read).includes('{"type":"pong"}'), DEADLINE, `the pong (${what})`);
      const i = frames.indexOf('{"type":"pong"}', c.read);
      const got = frames.slice(c.read, i);
      c.read = i + 1;
      return got;
    },
  };
  c.send({ type: "connection_init", payload: { authorization: `Bearer ${token}` } });
  assert.deepEqual(await c.take(1, "connection_ack"), ['{"type":"connection_ack"}']);
  return c;
}

const next = (id, payload) => `{"id":${JSON.stringify(id)},"type":"next","payload":${payload}}`;
const feed = (instance, reason, model, count, maxId, high) =>
  JSON.stringify({ data: { feed: { r: reason, instance, m: model, count, maxId, high, __typename: "SyncAvailable" } } });

before(async () => {
  db = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  for (const name of [A, B]) {
    await db.query("SELECT name FROM bridgecore.add_instance($1, 'http://127.0.0.1:9', 'odoo', 'bot', 'worker-key', enabled => false)", [name]);
  }
  TOKEN_A = await signToken(db, { exp: now() + 600, role: "bridgecore_app", user_id: 7, instance: A });
  TOKEN_B = await signToken(db, { exp: now() + 600, role: "bridgecore_app", user_id: 7, instance: B });
});

after(async () => {
  for (const name of [A, B]) await db.query("SELECT bridgecore.remove_instance($1)", [name]).catch(() => {});
  await db?.end();
});

test("short way: a raw client reads exactly graphql-ws's next frames, the executor's payload, its own ids", async () => {
  const a = await rawClient(TOKEN_A);
  try {
    assert.equal(a.ws.protocol, "graphql-transport-ws");
    assert.equal(a.ws.extensions, "", "no permessage-deflate (the client offered it)");
    // ids as a client may choose them: JSON escapes included
    const ids = { short: 'short "1" \\ é', executor: "executor-1", plain: "p" };
    a.send({ id: ids.short, type: "subscribe", payload: { query: SHORT, operationName: "Feed" } });
    a.send({ id: ids.executor, type: "subscribe", payload: { query: EXECUTOR } });
    a.send({ id: ids.plain, type: "subscribe", payload: { query: PLAIN } });
    const listening = await a.take(3, "three LISTENING");
    const none = feed(A, "LISTENING", null, null, null, null);
    assert.deepEqual([...listening].sort(), [next(ids.short, none), next(ids.executor, none),
      next(ids.plain, '{"data":{"syncAvailable":{"reason":"LISTENING","instance":"frames_a","model":null,"count":null,"maxId":null,"high":null}}}')].sort());

    const maxId = await ingest(A, "sale.order", 2);
    const notified = await a.take(3, "three NOTIFIED");
    const payload = feed(A, "NOTIFIED", "sale.order", 2, maxId, 0);
    assert.deepEqual([...notified].sort(), [next(ids.short, payload), next(ids.executor, payload),
      next(ids.plain, `{"data":{"syncAvailable":{"reason":"NOTIFIED","instance":"frames_a","model":"sale.order","count":2,"maxId":${maxId},"high":0}}}`)].sort());
    // the short way's frame and the executor's differ by their id only
    const byId = (frames, id) => frames.find((f) => JSON.parse(f).id === id);
    assert.equal(byId(notified, ids.short).replace(JSON.stringify(ids.short), '"X"'),
      byId(notified, ids.executor).replace(JSON.stringify(ids.executor), '"X"'));
    assert.deepEqual(await a.settle("after the notification"), []);

    // A client's complete ends its subscription only: no frame for it, not even complete.
    a.send({ id: ids.short, type: "complete" });
    assert.deepEqual(await a.settle("the complete handled"), []);
    const maxId2 = await ingest(A, "res.partner", 1);
    assert.deepEqual(await a.take(2, "the two others' NOTIFIED").then((f) => f.sort()), [
      next(ids.executor, feed(A, "NOTIFIED", "res.partner", 1, maxId2, 0)),
      next(ids.plain, `{"data":{"syncAvailable":{"reason":"NOTIFIED","instance":"frames_a","model":"res.partner","count":1,"maxId":${maxId2},"high":0}}}`),
    ].sort());
    assert.deepEqual(await a.settle("after the complete"), []);

    // graphql-ws's rules on ids hold: an id in use closes the socket with 4409.
    a.send({ id: ids.plain, type: "subscribe", payload: { query: PLAIN } });
    const closed = await within(DEADLINE, a.closed, "the close of a duplicate id");
    assert.equal(closed.code, 4409);
    assert.equal(closed.reason, `Subscriber for ${ids.plain} already exists`);
  } finally {
    a.ws.terminate();
  }
});

test("short way: the executor's errors, byte for byte: an unknown app type, Int fields out of range", async () => {
  const a = await rawClient(TOKEN_A);
  const sameBut = (frame, id) => frame.replace(JSON.stringify(id), '"X"');
  try {
    // sync_scope fails: next with the error at the field, then complete
    a.send({ id: "bad-short", type: "subscribe", payload: { query: short("nope") } });
    a.send({ id: "bad-executor", type: "subscribe", payload: { query: executor("nope") } });
    const frames = await a.take(4, "next and complete of both");
    const of = (id) => frames.filter((f) => JSON.parse(f).id === id);
    const [n, c] = of("bad-short");
    assert.equal(c, '{"id":"bad-short","type":"complete"}');
    assert.deepEqual(of("bad-executor").map((f) => sameBut(f, "bad-executor")), [sameBut(n, "bad-short"), '{"id":"X","type":"complete"}']);
    const m = JSON.parse(n);
    assert.deepEqual(Object.keys(m), ["id", "type", "payload"]);
    assert.equal(m.type, "next");
    assert.deepEqual(Object.keys(m.payload), ["errors"]);
    assert.deepEqual(m.payload.errors[0].locations, [{ line: 1, column: 21 }]);
    assert.equal(m.payload.errors[0].extensions.code, "22023");

    // A notification whose Int fields do not fit (the hub passes on what
    // the channel says): those fields null, one masked error each.
    a.send({ id: "s", type: "subscribe", payload: { query: SHORT } });
    a.send({ id: "e", type: "subscribe", payload: { query: EXECUTOR } });
    await a.take(2, "both listening");
    await db.query("SELECT pg_notify('bridgecore_events', $1)", [JSON.stringify({ instance: A, model: "sale.order", count: 1.5, max_id: 2 ** 31, high: 0 })]);
    const [x, y] = await a.take(2, "both notified");
    const [fs, fe] = JSON.parse(x).id === "s" ? [x, y] : [y, x];
    assert.equal(sameBut(fs, "s"), sameBut(fe, "e"));
    const p = JSON.parse(fs).payload;
    assert.deepEqual(p.data, { feed: { r: "NOTIFIED", instance: A, m: "sale.order", count: null, maxId: null, high: 0, __typename: "SyncAvailable" } });
    assert.deepEqual(p.errors.map((e) => [e.message, e.path, e.extensions.status]), [["internal error", ["feed", "count"], 500], ["internal error", ["feed", "maxId"], 500]]);

    // a document that does not validate: graphql-ws's error message
    a.send({ id: "invalid", type: "subscribe", payload: { query: "subscription { syncAvailable(appType: 1) { reason } }" } });
    const [e] = await a.take(1, "the validation error");
    const v = JSON.parse(e);
    assert.deepEqual([v.id, v.type, Array.isArray(v.payload)], ["invalid", "error", true]);
    assert.deepEqual(await a.settle("after the errors"), []);
  } finally {
    a.ws.terminate();
  }
});

test("short way: another instance's events never arrive, on raw and graphql-ws clients", async () => {
  const a = await rawClient(TOKEN_A);
  const b = await rawClient(TOKEN_B);
  const gb = createClient({ url: WS_URL, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${TOKEN_B}` }, retryAttempts: 0, lazy: true });
  const gbMessages = [];
  gb.subscribe({ query: SHORT, operationName: "Feed" }, { next: (m) => gbMessages.push(m), error: (e) => gbMessages.push({ failed: e }), complete: () => {} });
  try {
    a.send({ id: "a", type: "subscribe", payload: { query: SHORT } });
    b.send({ id: "b", type: "subscribe", payload: { query: SHORT } });
    assert.deepEqual(await a.take(1, "A listening"), [next("a", feed(A, "LISTENING", null, null, null, null))]);
    assert.deepEqual(await b.take(1, "B listening"), [next("b", feed(B, "LISTENING", null, null, null, null))]);
    await waitFor(() => gbMessages.length === 1, DEADLINE, "the graphql-ws client of B listening");
    const a1 = await ingest(A, "sale.order", 3);
    const a2 = await ingest(A, "res.partner", 1);
    assert.deepEqual(await a.take(2, "A's two"), [next("a", feed(A, "NOTIFIED", "sale.order", 3, a1, 0)),
      next("a", feed(A, "NOTIFIED", "res.partner", 1, a2, 0))]);
    // Notifications reach the gateway in commit order on its one
    // connection: B's first notification comes after A's, and is B's own.
    const b1 = await ingest(B, "sale.order", 1);
    assert.deepEqual(await b.take(1, "B's own"), [next("b", feed(B, "NOTIFIED", "sale.order", 1, b1, 0))]);
    assert.deepEqual(await b.settle("B after its own"), []);
    assert.deepEqual(await a.settle("A after B's"), []);
    await waitFor(() => gbMessages.length >= 2, DEADLINE, "the graphql-ws client of B notified");
    assert.deepEqual(gbMessages, [JSON.parse(feed(B, "LISTENING", null, null, null, null)), JSON.parse(feed(B, "NOTIFIED", "sale.order", 1, b1, 0))]);
  } finally {
    a.ws.terminate();
    b.ws.terminate();
    await gb.dispose();
  }
});

test("short way: a graphql-ws client gets the executor's results, key order included", async () => {
  const client = createClient({ url: WS_URL, webSocketImpl: WebSocket, connectionParams: { authorization: `Bearer ${TOKEN_A}` }, retryAttempts: 0, lazy: true });
  const got = { short: [], executor: [] };
  const done = [];
  try {
    for (const [k, query] of [["short", SHORT], ["executor", EXECUTOR]]) {
      done.push(client.subscribe({ query }, { next: (m) => got[k].push(m), error: (e) => got[k].push({ failed: e }), complete: () => {} }));
    }
    await waitFor(() => got.short.length === 1 && got.executor.length === 1, DEADLINE, "both listening");
    const maxId = await ingest(A, "sale.order", 1);
    await waitFor(() => got.short.length === 2 && got.executor.length === 2, DEADLINE, "both notified");
    assert.equal(JSON.stringify(got.short), JSON.stringify(got.executor));
    assert.equal(JSON.stringify(got.short[1]), feed(A, "NOTIFIED", "sale.order", 1, maxId, 0));
  } finally {
    for (const d of done) d();
    await client.dispose();
  }
});
