// The gateway's one LISTEN connection (src/notifications.js) on its own,
// against the test database: matching by instance and model, the payload's
// fields, a subscriber that does not read, and close().
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { NotificationHub } from "../src/notifications.js";
import { waitFor } from "./helpers.js";

const DEADLINE = 10_000;
let db;
let hub;

const notify = (payload) => db.query("SELECT pg_notify('bridgecore_events', $1)", [JSON.stringify(payload)]);

before(async () => {
  db = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  hub = new NotificationHub(process.env.DATABASE_URL, { log: () => {} });
  await hub.start();
});

after(async () => {
  await hub?.close();
  await db?.end();
});

test("a subscription gets LISTENING, then the notifications of its instance and models only", async () => {
  const sub = hub.subscribe({ instance: "n1", models: ["sale.order", "res.partner"] });
  assert.deepEqual((await sub.next()).value, { reason: "LISTENING", instance: "n1" });
  await notify({ instance: "n2", model: "sale.order", count: 1, max_id: 1, high: 0 });
  await notify({ instance: "n1", model: "stock.move", count: 1, max_id: 2, high: 0 });
  await notify({ instance: "n1", model: "res.partner", count: 3, max_id: 9, high: 1 });
  const { value } = await sub.next();
  assert.deepEqual(value, { reason: "NOTIFIED", instance: "n1", model: "res.partner", count: 3, maxId: 9, high: 1 });
  assert.equal(hub.subscribers, 1);
  await sub.return();
  assert.equal(hub.subscribers, 0);
  assert.deepEqual(await sub.next(), { value: undefined, done: true });
});

test("a subscriber that does not read keeps at most 1,000 messages, collapsed into MISSED", async () => {
  const sub = hub.subscribe({ instance: "n3", models: ["sale.order"] });
  // 1,100 notifications in one transaction (distinct payloads: PostgreSQL
  // folds equal ones), delivered at its commit.
  await db.query(`SELECT pg_notify('bridgecore_events', json_build_object('instance', 'n3', 'model', 'sale.order',
                    'count', 1, 'max_id', g, 'high', 0)::text) FROM generate_series(1, 1100) g`);
  await waitFor(() => sub.queue.length > 0 && sub.queue[sub.queue.length - 1].maxId === 1100, DEADLINE, "the last notification queued");
  const first = (await sub.next()).value;
  assert.deepEqual(first, { reason: "MISSED", instance: "n3" }, "the first 1,000 collapsed");
  const rest = [];
  while (sub.queue.length > 0) rest.push((await sub.next()).value);
  // LISTENING and 999 notifications filled the queue; the 1,000th made it one MISSED
  assert.deepEqual(rest.map((m) => m.maxId), Array.from({ length: 100 }, (_, i) => 1001 + i));
  await sub.return();
});

test("close() ends every subscription", async () => {
  const other = new NotificationHub(process.env.DATABASE_URL, { log: () => {} });
  await other.start();
  const sub = other.subscribe({ instance: "n4", models: ["sale.order"] });
  assert.equal((await sub.next()).value.reason, "LISTENING");
  const pending = sub.next();
  await other.close();
  assert.deepEqual(await pending, { value: undefined, done: true });
  assert.equal(other.subscribers, 0);
  assert.equal(other.listening, false);
});

// A stand-in for the socket writer of src/websocket.js (nextFrames): what
// was sent, and a kernel buffer that is empty or not.
function writer(shape = "s") {
  const w = {
    sent: [],
    renders: 0,
    pending: 0,            // bytes the "socket" has not handed to the kernel
    isOpen: true,
    shape,
    render: (m) => {
      w.renders += 1;
      return JSON.stringify(m);
    },
    open: () => w.isOpen,
    buffered: () => w.pending,
    send: (text, flushed) => w.sent.push({ m: JSON.parse(text), flushed }),
  };
  return w;
}

test("attached: messages are written as they come, rendered once per notification and shape", async () => {
  const subs = [hub.subscribe({ instance: "n5", models: ["sale.order"] }), hub.subscribe({ instance: "n5", models: ["sale.order"] }),
    hub.subscribe({ instance: "n5", models: ["sale.order"] })];
  const same = writer("same");
  const outs = [same, { ...same, sent: [], send: (t) => outs[1].sent.push({ m: JSON.parse(t) }) }, writer("other")];
  const ended = subs.map((s, i) => s.attach(outs[i]));
  for (const o of outs) assert.deepEqual(o.sent.map((x) => x.m), [{ reason: "LISTENING", instance: "n5" }], "the queued LISTENING, at once");
  await notify({ instance: "n5", model: "sale.order", count: 2, max_id: 7, high: 1 });
  await waitFor(() => outs.every((o) => o.sent.length === 2), DEADLINE, "every subscriber written");
  const m = { reason: "NOTIFIED", instance: "n5", model: "sale.order", count: 2, maxId: 7, high: 1 };
  for (const o of outs) {
    assert.deepEqual(o.sent[1].m, m);
    assert.equal(o.sent[1].flushed, undefined, "no callback while the socket takes everything");
  }
  assert.equal(same.renders, 1 + 1 + 1, "LISTENING twice (one per subscriber, queued apart), the notification once for both");
  assert.equal(outs[2].renders, 2);
  await subs[0].return();
  assert.deepEqual(await ended[0], { value: undefined, done: true });
  assert.deepEqual(await subs[0].next(), { value: undefined, done: true });
  await notify({ instance: "n5", model: "sale.order", count: 1, max_id: 8, high: 0 });
  await waitFor(() => outs[2].sent.length === 3, DEADLINE, "the third subscriber written");
  assert.equal(same.sent.length, 2, "nothing after the end");
  for (const s of subs) await s.return();
  assert.equal(hub.subscribers, 0);
});

test("attached: a socket that does not take its writes gets nothing more until it has; at most 1,000 wait, collapsed into MISSED", async () => {
  const sub = hub.subscribe({ instance: "n6", models: ["sale.order"] });
  const w = writer();
  sub.attach(w);
  w.pending = 4096;
  await notify({ instance: "n6", model: "sale.order", count: 1, max_id: 1, high: 0 });
  await waitFor(() => w.sent.length === 2, DEADLINE, "the write made while the buffer is not empty");
  assert.equal(typeof w.sent[1].flushed, "function", "that write says when it is flushed");
  await db.query(`SELECT pg_notify('bridgecore_events', json_build_object('instance', 'n6', 'model', 'sale.order',
                    'count', 1, 'max_id', g, 'high', 0)::text) FROM generate_series(2, 1101) g`);
  await waitFor(() => sub.queue.length > 0 && sub.queue[sub.queue.length - 1].maxId === 1101, DEADLINE, "the last notification queued");
  assert.equal(w.sent.length, 2, "nothing written while blocked");
  w.pending = 0;
  w.sent[1].flushed();
  // 2..1001 filled the queue; 1002 made them, and itself, one MISSED; then 1003..1101
  assert.deepEqual(w.sent.slice(2).map((x) => x.m.reason === "MISSED" ? "MISSED" : x.m.maxId),
    ["MISSED", ...Array.from({ length: 99 }, (_, i) => 1003 + i)]);
  assert.ok(w.sent.slice(2).every((x) => x.flushed === undefined));
  // a socket that is closing gets nothing
  // (a pulling subscriber of the same instance sees when the hub has dispatched)
  w.isOpen = false;
  const witness = hub.subscribe({ instance: "n6", models: ["sale.order"] });
  assert.equal((await witness.next()).value.reason, "LISTENING");
  await notify({ instance: "n6", model: "sale.order", count: 1, max_id: 2000, high: 0 });
  assert.equal((await witness.next()).value.maxId, 2000);
  assert.equal(w.sent.length, 102);
  assert.equal(sub.queue.length, 0);
  await sub.return();
  await witness.return();
});
