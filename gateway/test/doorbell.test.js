// The doorbell (POST /api/v1/webhooks/receive) and GET /metrics, with real
// HTTP clients against the gateway that test/run.sh started. No poller runs
// in this database (the workers run in bridgecore.database), so a ring that
// is let in finds none ("no_poller"); test/integration/test_doorbell.py
// rings running pollers through the gateway.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import pg from "pg";
import { assertError, call, signToken } from "./helpers.js";
import { GatewayMetrics } from "../src/metrics.js";

const G = process.env.GATEWAY_URL;
const now = () => Math.floor(Date.now() / 1000);
const token = (claims) => signToken(db, { exp: now() + 600, ...claims });
const KEY = "bell-test-push-key-0123456789abcdef0123456789";
const OTHER_KEY = "bell-test-other-key-0123456789abcdef012345678";

let db;

function ring({ key, bearer, body, raw, method = "POST", headers = {} } = {}) {
  return call(method, "/api/v1/webhooks/receive",
    { bearer, body, raw, headers: key === undefined ? headers : { ...headers, "X-API-Key": key } });
}


async function metricsText() {
  const res = await fetch(`${G}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type"), /^text\/plain; version=0\.0\.4/);
  return res.text();
}

// The value of one sample line, or undefined.
function sample(text, line) {
  const m = text.split("\n").find((l) => l.startsWith(line + " "));
  return m === undefined ? undefined : Number(m.slice(line.length + 1));
}

before(async () => {
  db = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  for (const [name, key] of [["bell", KEY], ["bell-other", OTHER_KEY]]) {
    await db.query("SELECT name FROM bridgecore.add_instance($1, $2, 'odoo', 'bridgecore', 'worker-key', enabled => false)",
      [name, process.env.STANDIN_URL]);
    await db.query("SELECT name FROM bridgecore.alter_instance($1, push_key => $2)", [name, key]);
  }
});

// The other test files count on the instances they make themselves.
after(async () => {
  await db?.query("SELECT bridgecore.remove_instance(name) FROM bridgecore.instance WHERE name IN ('bell', 'bell-other')");
  await db?.end();
});

test("receive: the instance's push key as X-API-Key rings it; the answer names the pushed event", async () => {
  const before = await db.query("SELECT cursor, config_version, events_ingested FROM bridgecore.instance WHERE name = 'bell'");
  // The cron envelope of auto_webhook
  let r = await ring({ key: KEY, body: { event_id: 41, model: "sale.order", record_id: 7, event: "write", timestamp: "2025-11-16 10:30:00" } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(Object.keys(r.json).sort(), ["event_id", "message", "processed_at", "success"]);
  assert.equal(r.json.success, true);
  assert.equal(r.json.event_id, 41);
  assert.match(r.json.message, /instance "bell"/);
  assert.ok(Math.abs(Date.parse(r.json.processed_at) - Date.now()) < 60000, r.json.processed_at);
  assert.match(r.json.processed_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
  // The instant push: the record's payload plus _webhook_metadata
  r = await ring({ key: KEY, body: { name: "S00042", amount_total: 12.5,
    _webhook_metadata: { event_id: "evt-42", event_type: "write", model: "sale.order", record_id: 42, timestamp: "2025-11-16T10:30:00" } } });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.event_id, "evt-42");
  // No body at all, or a body without an event id
  r = await ring({ key: KEY });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.event_id, null);
  assert.equal((await ring({ key: KEY, body: { event_id: { nested: 1 } } })).json.event_id, null);
  // It stores nothing
  const after = await db.query("SELECT cursor, config_version, events_ingested FROM bridgecore.instance WHERE name = 'bell'");
  assert.deepEqual(after.rows, before.rows);
  assert.equal((await db.query("SELECT count(*)::int AS n FROM bridgecore.event e JOIN bridgecore.instance i ON i.id = e.instance_id WHERE i.name LIKE 'bell%'")).rows[0].n, 0);
});

test("receive: each key names its own instance", async () => {
  const r = await ring({ key: OTHER_KEY, body: {} });
  assert.equal(r.status, 200, r.text);
  assert.match(r.json.message, /instance "bell-other"/);
});

test("receive: a wrong, empty or missing key is 401 and changes nothing", async () => {
  const before = await db.query("SELECT cursor, config_version FROM bridgecore.instance ORDER BY id");
  let r = await ring({ key: "not-the-key-0123456789abcdef0123456789abcdef", body: { event_id: 1 } });
  assertError(r, 401, "28000");
  assert.equal(r.json.detail, "invalid push key");
  assert.match(r.json.hint, /X-API-Key/);
  assertError(await ring({ key: "", body: {} }), 401, "28000");
  r = await ring({ body: { event_id: 1 } });
  assertError(r, 401);
  assert.match(r.headers.get("www-authenticate"), /^Bearer/);
  const after = await db.query("SELECT cursor, config_version FROM bridgecore.instance ORDER BY id");
  assert.deepEqual(after.rows, before.rows);
});

test("receive: an admin token rings the instance its claim names; app and bad tokens are 401", async () => {
  let r = await ring({ bearer: await token({ role: "bridgecore_admin", instance: "bell-other" }), body: { event_id: 5 } });
  assert.equal(r.status, 200, r.text);
  assert.match(r.json.message, /instance "bell-other"/);
  assert.equal(r.json.event_id, 5);
  assertError(await ring({ bearer: await token({ role: "bridgecore_app", user_id: 7, instance: "bell" }), body: {} }), 401);
  assertError(await ring({ bearer: await token({ role: "bridgecore_admin", instance: "bell", exp: now() - 5 }), body: {} }), 401, "28000");
  assertError(await ring({ bearer: await signToken(db, { role: "bridgecore_admin", instance: "bell", exp: now() + 60 }, "x".repeat(40)), body: {} }), 401, "28000");
  assertError(await ring({ bearer: await token({ role: "bridgecore_admin", instance: "ghost" }), body: {} }), 400, "22023");
});

test("receive: bad input is 400/405/413 with the error body", async () => {
  assertError(await ring({ key: KEY, raw: '{"event_id": 1,', headers: { "Content-Type": "application/json" } }), 400);
  assertError(await ring({ key: KEY, raw: "[1, 2]" }), 400);
  const r = await ring({ key: KEY, method: "GET" });
  assertError(r, 405);
  assert.equal(r.headers.get("allow"), "POST");
  assertError(await ring({ key: KEY, raw: JSON.stringify({ pad: "x".repeat(1024 * 1024) }) }), 413);
});

test("GET /metrics: the extension's and the gateway's families, each once, valid for promtool", async () => {
  await fetch(`${G}/health`);
  const text = await metricsText();
  const types = text.split("\n").filter((l) => l.startsWith("# TYPE ")).map((l) => l.split(" ")[2]);
  assert.equal(new Set(types).size, types.length, `a family twice: ${types}`);
  for (const name of ["webhook_received_total", "bridgecore_polls_total", "websocket_connections_active",
    "bridgecore_push_rings_total", "bridgecore_gateway_requests_total", "bridgecore_gateway_request_duration_seconds"]) {
    assert.ok(types.includes(name), `no family ${name}`);
  }
  assert.equal(sample(text, "websocket_connections_active"), 0);
  assert.ok(sample(text, 'bridgecore_push_rings_total{instance="bell",outcome="no_poller"}') >= 4, text);
  assert.ok(sample(text, 'bridgecore_push_rings_total{instance="",outcome="refused"}') >= 3, text);
  assert.ok(sample(text, 'bridgecore_gateway_requests_total{route="/health",status="200"}') >= 1);
  assert.ok(sample(text, 'bridgecore_gateway_requests_total{route="/api/v1/webhooks/receive",status="401"}') >= 3);
  assert.ok(sample(text, 'bridgecore_gateway_request_duration_seconds_count{route="/api/v1/webhooks/receive"}') >= 10);
  const p = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  assert.equal(p.error, undefined, `promtool: ${p.error}`);
  assert.equal(p.status, 0, `promtool check metrics: ${p.stdout}${p.stderr}`);
});

test("GET /metrics: unknown paths count as one route; only GET", async () => {
  await fetch(`${G}/no/such/path/${Math.random()}`);
  const text = await metricsText();
  assert.ok(sample(text, 'bridgecore_gateway_requests_total{route="other",status="404"}') >= 1);
  assert.ok(!text.includes("/no/such/path"));
  assert.equal((await fetch(`${G}/metrics`, { method: "POST" })).status, 405);
});

test("the WebSocket gauge's setter, and label values escaped", () => {
  const m = new GatewayMetrics();
  m.setWebsocketConnections(3);
  m.websocketOpened();
  m.websocketClosed();
  m.websocketClosed();
  m.countRing('we"ird\\name\n', "woken");
  const text = m.render();
  assert.equal(sample(text, "websocket_connections_active"), 2);
  assert.ok(text.includes('bridgecore_push_rings_total{instance="we\\"ird\\\\name\\n",outcome="woken"} 1'), text);
  const p = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
  assert.equal(p.status, 0, `${p.stdout}${p.stderr}`);
});
