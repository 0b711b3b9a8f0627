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
